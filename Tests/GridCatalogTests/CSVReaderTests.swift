import Testing
@testable import GridCatalog

@Suite("CSV reader")
struct CSVReaderTests {
    @Test func plainFieldsAndEmptyCells() throws {
        let records = try CSVReader.parse("a,b,c\n1,,3\n")
        #expect(records.map(\.fields) == [["a", "b", "c"], ["1", "", "3"]])
        #expect(records.map(\.line) == [1, 2])
    }

    @Test func quotedCommasDoubledQuotesAndLineBreaks() throws {
        let text = "x,y\n\"a, b\",\"say \"\"hi\"\"\"\n\"two\nlines\",z\nlast,row"
        let records = try CSVReader.parse(text)
        #expect(records.count == 4)
        #expect(records[1].fields == ["a, b", "say \"hi\""])
        #expect(records[2].fields == ["two\nlines", "z"])
        #expect(records[3].fields == ["last", "row"])
        #expect(records.map(\.line) == [1, 2, 3, 5])
    }

    @Test func lineNumbersAfterMultilineField() throws {
        let records = try CSVReader.parse("h1,h2\n\"a\nb\",c\nd,e\n")
        #expect(records.map(\.line) == [1, 2, 4])
        #expect(records[2].fields == ["d", "e"])
    }

    @Test func crlfBlankLinesAndBOM() throws {
        let records = try CSVReader.parse("\u{FEFF}a,b\r\n\r\n1,2\r\n")
        #expect(records.map(\.fields) == [["a", "b"], ["1", "2"]])
        #expect(records.map(\.line) == [1, 3])
    }

    @Test func emptyQuotedFieldAndNoTrailingNewline() throws {
        let records = try CSVReader.parse("a,\"\",c")
        #expect(records.map(\.fields) == [["a", "", "c"]])
    }

    @Test func unterminatedQuoteNamesLineAndColumn() {
        #expect {
            try CSVReader.parse("a,b\n1,\"open\n2,3\n")
        } throws: { error in
            guard let e = error as? CatalogError else { return false }
            return e.line == 2 && e.column == 2 && e.message.contains("never closed")
        }
    }

    @Test func textAfterClosingQuoteIsAnError() {
        #expect {
            try CSVReader.parse("a,b,c\n1,\"x\"y,3\n")
        } throws: { error in
            guard let e = error as? CatalogError else { return false }
            return e.line == 2 && e.column == 2
        }
    }

    @Test func strayQuoteInUnquotedField() {
        #expect {
            try CSVReader.parse("a,b\n1,2\nab\"c,d\n")
        } throws: { error in
            guard let e = error as? CatalogError else { return false }
            return e.line == 3 && e.column == 1 && e.description.contains("line 3, column 1")
        }
    }
}

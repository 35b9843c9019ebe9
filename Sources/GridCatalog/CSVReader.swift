/// Why catalog text could not be read. `line` is the 1-based physical line where the problem
/// is (for a quoted field spanning lines, the line where the bad character sits); `column` is
/// the 1-based CSV field number, and `columnName` its header name when known.
public struct CatalogError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int?
    public var columnName: String?
    public var message: String

    public init(line: Int, column: Int? = nil, columnName: String? = nil, message: String) {
        self.line = line
        self.column = column
        self.columnName = columnName
        self.message = message
    }

    public var description: String {
        var place = "line \(line)"
        if let column {
            place += ", column \(column)"
            if let columnName { place += " (\(columnName))" }
        }
        return "accelerator catalog \(place): \(message)"
    }
}

/// One CSV record: its fields and the physical line it starts on (1-based).
public struct CSVRecord: Sendable, Hashable {
    public var line: Int
    public var fields: [String]
}

/// A small RFC 4180 reader: comma-separated fields, optional double quotes around a field,
/// `""` for a quote inside a quoted field, CRLF or LF line ends, line breaks allowed inside
/// quoted fields. Blank lines are skipped. A UTF-8 byte-order mark at the start is ignored.
public enum CSVReader {
    public static func parse(_ text: String) throws(CatalogError) -> [CSVRecord] {
        var bytes = Array(text.utf8)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        let quote = UInt8(ascii: "\""), comma = UInt8(ascii: ","), cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")

        var records: [CSVRecord] = []
        var fields: [String] = []
        var field: [UInt8] = []
        var line = 1
        var recordLine = 1
        var i = 0
        // State for the current field.
        var inQuotes = false
        var wasQuoted = false
        var quoteOpenLine = 1

        func finishField() {
            fields.append(String(decoding: field, as: UTF8.self))
            field.removeAll(keepingCapacity: true)
            wasQuoted = false
        }
        func finishRecord() {
            finishField()
            // A record that is one empty unquoted field is a blank line.
            if !(fields.count == 1 && fields[0].isEmpty) {
                records.append(CSVRecord(line: recordLine, fields: fields))
            }
            fields.removeAll(keepingCapacity: true)
        }

        while i < bytes.count {
            let b = bytes[i]
            if inQuotes {
                if b == quote {
                    if i + 1 < bytes.count, bytes[i + 1] == quote {
                        field.append(quote)
                        i += 2
                        continue
                    }
                    inQuotes = false
                    i += 1
                    // After a closing quote only a separator or a line end may follow.
                    if i < bytes.count, bytes[i] != comma, bytes[i] != lf, bytes[i] != cr {
                        throw CatalogError(
                            line: line, column: fields.count + 1,
                            message: "unexpected character after closing quote (a quote inside a quoted field must be doubled)")
                    }
                    continue
                }
                if b == lf { line += 1 }
                field.append(b)
                i += 1
                continue
            }
            switch b {
            case comma:
                finishField()
                i += 1
            case cr:
                // CRLF or a lone CR ends the record.
                finishRecord()
                i += (i + 1 < bytes.count && bytes[i + 1] == lf) ? 2 : 1
                line += 1
                recordLine = line
            case lf:
                finishRecord()
                i += 1
                line += 1
                recordLine = line
            case quote:
                if field.isEmpty && !wasQuoted {
                    inQuotes = true
                    wasQuoted = true
                    quoteOpenLine = line
                    i += 1
                } else {
                    throw CatalogError(
                        line: line, column: fields.count + 1,
                        message: "quote inside an unquoted field (quote the whole field and double the quote)")
                }
            default:
                field.append(b)
                i += 1
            }
        }
        if inQuotes {
            throw CatalogError(
                line: quoteOpenLine, column: fields.count + 1,
                message: "quoted field is never closed")
        }
        // Last record without a trailing line break.
        if !field.isEmpty || !fields.isEmpty || wasQuoted {
            finishRecord()
        }
        return records
    }
}

import Foundation
import GridCore
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A small read-only element tree built from a SAX pass. nvidia-smi XML is a few hundred KB at
/// most, and path look-ups ("pci/pci_bus_id") keep the field mapping readable and independent
/// of element order, indentation and schema version.
struct XMLNode: Sendable, Hashable {
    var name: String
    var attributes: [String: String]
    /// Character data directly inside this element, trimmed.
    var text: String
    var children: [XMLNode]

    /// First child named `name`.
    func child(_ name: String) -> XMLNode? {
        children.first(where: { $0.name == name })
    }

    /// All children named `name`, in document order.
    func children(named name: String) -> [XMLNode] {
        children.filter { $0.name == name }
    }

    /// The element at a slash-separated path below this one.
    func node(_ path: String) -> XMLNode? {
        var current: XMLNode? = self
        for part in path.split(separator: "/") {
            current = current?.child(String(part))
        }
        return current
    }

    /// Raw trimmed text at `path`; nil when the element is missing.
    func value(_ path: String) -> String? {
        node(path)?.text
    }

    /// Text at the first of `paths` that holds a value (not an N/A spelling).
    func firstValue(_ paths: [String]) -> String? {
        for path in paths {
            if let value = ParseSupport.clean(value(path)) { return value }
        }
        return nil
    }
}

enum XMLTreeError: Error, Sendable, Equatable {
    /// The XML parser stopped; position and reason as libxml2 reports them.
    case syntax(line: Int, column: Int, reason: String)
    case tooDeep(line: Int)
    case empty
}

/// Builds an `XMLNode` tree with Foundation's SAX `XMLParser`. External entities and the
/// DTD named in `<!DOCTYPE>` are never fetched (captures reference `nvsmi_device_v11.dtd`,
/// which is not on disk).
enum XMLTreeBuilder {
    /// Deeper nesting than this is not nvidia-smi output; refusing it bounds memory and stack.
    static let maxDepth = 48

    static func parse(_ text: String) throws(XMLTreeError) -> XMLNode {
        if let line = processingInstructionLine(text) {
            throw .syntax(line: line, column: 1, reason: "a processing instruction (<?…?>) other than the XML declaration: nvidia-smi writes none")
        }
        let delegate = Delegate()
        let parser = XMLParser(data: Data(text.utf8))
        parser.shouldResolveExternalEntities = false
        parser.shouldProcessNamespaces = false
        parser.shouldReportNamespacePrefixes = false
        parser.delegate = delegate
        let ok = parser.parse()
        if let line = delegate.tooDeepAtLine { throw .tooDeep(line: line) }
        guard ok else {
            let reason = (parser.parserError as NSError?)?.localizedDescription ?? "unknown XML error"
            throw .syntax(line: parser.lineNumber, column: parser.columnNumber, reason: reason)
        }
        guard let root = delegate.root else {
            if let open = delegate.stack.last {
                // libxml2 on some platforms accepts a document cut off mid-element.
                throw .syntax(line: parser.lineNumber, column: parser.columnNumber,
                              reason: "input ends inside <\(open.name)> (truncated output?)")
            }
            throw .empty
        }
        return root
    }

    /// The line of the first `<?` that is not the XML declaration at the start, or nil.
    /// swift-corelibs-foundation's XMLParser reads a processing instruction's data with
    /// `strlen` even when libxml2 passes none (`<?name?>`), and the process dies (SIGSEGV; found
    /// by the `vendor` fuzz target, kept in Tests/Fixtures/fuzz/vendor/). nvidia-smi writes no
    /// processing instruction, so any is refused before the parser sees it (one inside a comment
    /// or CDATA too: not nvidia-smi output either).
    static func processingInstructionLine(_ text: String) -> Int? {
        var text = text
        return text.withUTF8 { bytes -> Int? in
            var line = 1
            var i = 0
            // The declaration may open the document (after a BOM or white space): `<?xml ` …
            var start = 0
            if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { start = 3 }
            while start < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[start]) { start += 1 }
            let declaration = Array("<?xml".utf8)
            var declarationAt = -1
            if bytes.count >= start + 6, Array(bytes[start..<(start + 5)]) == declaration,
               [0x20, 0x09, 0x0A, 0x0D].contains(bytes[start + 5]) {
                declarationAt = start
            }
            while i + 1 < bytes.count {
                if bytes[i] == 0x0A { line += 1 }
                if bytes[i] == UInt8(ascii: "<"), bytes[i + 1] == UInt8(ascii: "?"), i != declarationAt { return line }
                i += 1
            }
            return nil
        }
    }

    /// SAX callbacks; a stack of open elements. Not shared across threads: one per parse.
    private final class Delegate: NSObject, XMLParserDelegate {
        var stack: [XMLNode] = []
        var textStack: [String] = []
        var root: XMLNode?
        var tooDeepAtLine: Int?

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
            qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]
        ) {
            if stack.count >= XMLTreeBuilder.maxDepth {
                tooDeepAtLine = parser.lineNumber
                parser.abortParsing()
                return
            }
            stack.append(XMLNode(name: elementName, attributes: attributeDict, text: "", children: []))
            textStack.append("")
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            guard !textStack.isEmpty else { return }
            // Text beyond this size is not a field value; stop growing memory on hostile input.
            if textStack[textStack.count - 1].utf8.count < 65_536 {
                textStack[textStack.count - 1] += string
            }
        }

        func parser(
            _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?,
            qualifiedName qName: String?
        ) {
            guard var node = stack.popLast(), let text = textStack.popLast() else { return }
            node.text = text.trimmingSpacesAndNewlines()
            if stack.isEmpty {
                if root == nil { root = node }
            } else {
                stack[stack.count - 1].children.append(node)
            }
        }
    }
}

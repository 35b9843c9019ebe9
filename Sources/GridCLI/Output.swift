import Foundation
import GridCore
import Yams

/// How `gridctl` prints: a table (the columns a person scans), a wide table (every column,
/// nothing cut), JSON or YAML (the records, for scripts).
public enum OutputFormat: String, Sendable, CaseIterable {
    case table, wide, json, yaml
}

/// One column of a list: its header, whether only `wide` shows it, the cell, and for state
/// columns the word that picks the colour.
public struct Column<Row>: Sendable {
    public var name: String
    public var wideOnly: Bool
    public var cell: @Sendable (Row, _ wide: Bool) -> String
    public var colourBy: (@Sendable (Row) -> String)?

    public init(_ name: String, wide: Bool = false, colourBy: (@Sendable (Row) -> String)? = nil,
                _ cell: @escaping @Sendable (Row, _ wide: Bool) -> String) {
        self.name = name
        self.wideOnly = wide
        self.cell = cell
        self.colourBy = colourBy
    }
}

/// Prints lists and records in the chosen format. Colours only when asked for (`colour`:
/// standard output is a terminal, `NO_COLOR` is unset, `TERM` is not `dumb`).
public struct Printer: Sendable {
    public var format: OutputFormat
    /// Column names to show, in order (case-insensitive); nil = the format's own set.
    public var columns: [String]?
    public var colour: Bool

    public init(format: OutputFormat, columns: [String]? = nil, colour: Bool = false) {
        self.format = format
        self.columns = columns
        self.colour = colour
    }

    /// Whether colours suit this process's standard output and environment.
    public static func colourWanted(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        isatty(1) == 1 && environment["NO_COLOR"].map(\.isEmpty) ?? true && environment["TERM"] != "dumb"
    }

    /// A list: table/wide by the columns, JSON/YAML by the records.
    public func list<Row: Encodable>(_ rows: [Row], _ all: [Column<Row>]) throws -> String {
        switch format {
        case .json: return try Self.json(rows)
        case .yaml: return try Self.yaml(rows)
        case .table, .wide: return try table(rows, all)
        }
    }

    /// The table (or wide table) of any rows.
    public func table<Row>(_ rows: [Row], _ all: [Column<Row>]) throws -> String {
        switch format {
        case .json, .yaml, .table, .wide:
            let wide = format == .wide
            let chosen: [Column<Row>]
            if let columns {
                chosen = try columns.map { want in
                    guard let c = all.first(where: { $0.name.caseInsensitiveCompare(want) == .orderedSame }) else {
                        throw ClientError("--columns: '\(want)' is not a column here; choose from \(all.map { $0.name.lowercased() }.joined(separator: ", "))")
                    }
                    return c
                }
            } else {
                chosen = all.filter { wide || !$0.wideOnly }
            }
            let cells = rows.map { r in chosen.map { $0.cell(r, wide) } }
            let colours: [[String?]] = rows.map { r in chosen.map { c in colour ? c.colourBy.map { Self.paint($0(r)) } ?? nil : nil } }
            return Self.render(chosen.map(\.name), cells, colours: colours)
        }
    }

    /// One record as JSON or YAML (nil for the table formats: the caller prints its own text).
    public func record<T: Encodable>(_ value: T) throws -> String? {
        switch format {
        case .json: return try Self.json(value)
        case .yaml: return try Self.yaml(value)
        case .table, .wide: return nil
        }
    }

    public static func json<T: Encodable>(_ value: T) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.dateEncodingStrategy = .iso8601
        return String(decoding: try e.encode(value), as: UTF8.self)
    }

    /// JSON text (a protobuf message's, say) as YAML.
    public static func yaml(json text: String) throws -> String {
        try Yams.dump(object: try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]), sortKeys: true)
    }

    public static func yaml<T: Encodable>(_ value: T) throws -> String {
        // Through JSON, so dates and keys read the same as in --output json.
        let data = try JSONSerialization.jsonObject(with: Data(try json(value).utf8), options: [.fragmentsAllowed])
        return try Yams.dump(object: data, sortKeys: true)
    }

    /// The ANSI colour of a state word: green for what is fine, yellow for what waits or is in
    /// between, red for what failed or is gone.
    static func paint(_ word: String) -> String? {
        switch word {
        case "running", "succeeded", "ready", "live", "healthy", "yes": return "32"
        case "queued", "pending", "forwarded", "assigned", "draining", "drained", "degraded", "cordoned", "held", "unknown", "never": return "33"
        case "failed", "lost", "cancelled", "unhealthy", "stale", "no": return "31"
        default: return nil
        }
    }

    /// A state word in its colour (for lines outside tables).
    public static func painted(_ word: String) -> String {
        guard let code = paint(word) else { return word }
        return "\u{1B}[\(code)m\(word)\u{1B}[0m"
    }

    /// Columns padded by the text's visible width, colours added after padding.
    static func render(_ header: [String], _ rows: [[String]], colours: [[String?]] = []) -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String], _ paint: [String?]) -> String {
            cells.enumerated().map { i, c in
                let padded = i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                guard i < paint.count, let code = paint[i] else { return padded }
                let body = padded.prefix(c.count), rest = padded.dropFirst(c.count)
                return "\u{1B}[\(code)m\(body)\u{1B}[0m\(rest)"
            }.joined(separator: "  ")
        }
        return ([line(header, [])] + rows.enumerated().map { line($1, $0 < colours.count ? colours[$0] : []) }).joined(separator: "\n")
    }

    /// Text cut to `limit` characters at a word boundary, with "…" when cut.
    public static func clip(_ text: String, _ limit: Int) -> String {
        guard text.count > limit else { return text }
        let head = text.prefix(limit - 1)
        if let space = head.lastIndex(of: " "), head.distance(from: head.startIndex, to: space) > limit / 2 {
            return String(head[..<space]) + "…"
        }
        return String(head) + "…"
    }
}

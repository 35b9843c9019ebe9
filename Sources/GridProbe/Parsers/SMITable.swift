import Foundation
import GridCore

/// The boxed two-line-per-device table that nvidia-smi popularised and hl-smi and ixsmi copy:
///
///     | 0  Name ...          | Bus-Id ...     | ...        |
///     | Fan Temp Perf Pwr    | Memory-Usage   | Util  ...  |
///     +----------------------+----------------+------------+
///
/// Device blocks start after the `|====|` line under the column header and end at the first
/// process table or the end of the box.
enum SMITable {
    struct Block: Sendable {
        /// 1-based line number of the block's first row, for error messages.
        var line: Int
        var rows: [[String]]
    }

    static func deviceBlocks(_ lines: [Substring]) -> [Block] {
        guard let headerEnd = lines.firstIndex(where: { isRule($0, fill: "=") }) else { return [] }
        var blocks: [Block] = []
        var current: Block?
        for offset in (headerEnd + 1)..<lines.count {
            let line = lines[offset].trimmingSpaces()
            if line.isEmpty { break }
            if isRule(Substring(line), fill: "-") || isRule(Substring(line), fill: "=") {
                if let block = current { blocks.append(block) }
                current = nil
                continue
            }
            guard line.hasPrefix("|") else { break }
            let cells = NpuSMIParser.tableCells(line)
            if cells.joined(separator: " ").containsLiteral("Processes") { break }
            if current == nil { current = Block(line: offset + 1, rows: []) }
            current?.rows.append(cells)
        }
        if let block = current { blocks.append(block) }
        return blocks
    }

    /// "+----+----+", "|----+----|", "|====|" rules: only border characters and the fill.
    static func isRule(_ line: Substring, fill: Character) -> Bool {
        let trimmed = line.trimmingSpaces()
        guard trimmed.contains(fill), trimmed.count >= 3 else { return false }
        return trimmed.allSatisfy { $0 == fill || $0 == "+" || $0 == "|" }
    }

    /// "52W/250W" → (52, 250).
    static func pair(_ token: Substring?) -> (Double?, Double?) {
        guard let token else { return (nil, nil) }
        let halves = token.split(separator: "/", omittingEmptySubsequences: false)
        guard halves.count == 2 else { return (ParseSupport.double(String(token)), nil) }
        return (ParseSupport.double(String(halves[0])), ParseSupport.double(String(halves[1])))
    }

    /// "Key: value" from the text of a table cell or a log line.
    static func keyValue<S: StringProtocol>(_ text: S) -> (key: String, value: String)? {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let key = text[..<colon].trimmingSpaces()
        let value = text[text.index(after: colon)...].trimmingSpaces()
        return (key, value)
    }
}

import Foundation
import GridCore

/// Iluvatar CoreX `ixsmi`: the default table, `ixsmi -q -x` XML (nvidia-smi's schema under
/// `<ixsmi_log>`), or a terminal session holding both. The XML is preferred when present
/// (UUIDs, thresholds); the table is the fallback. `index` is the GPU's position, which is what
/// CUDA_VISIBLE_DEVICES counts on CoreX as on CUDA.
public enum IluvatarSMIParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        let toolVersion = ixmlVersion(text)
        if let xml = embeddedXML(text) {
            var result = try NvidiaSMIXMLParser.parse(xml, tool: .ixSMI, vendor: .iluvatar, rootName: "ixsmi_log")
            if let toolVersion { result.toolVersion = "IX-ML " + toolVersion }
            return result
        }
        return try parseTable(text, toolVersion: toolVersion)
    }

    /// The `<ixsmi_log>` document inside a capture, XML declaration included when present.
    static func embeddedXML(_ text: String) -> String? {
        guard let rootStart = text.range(of: "<ixsmi_log") else { return nil }
        var start = rootStart.lowerBound
        if let declaration = text.range(of: "<?xml", options: .backwards, range: text.startIndex..<rootStart.lowerBound) {
            start = declaration.lowerBound
        }
        // A truncated capture keeps going to the end; the XML parser then reports where it broke.
        let end = text.range(of: "</ixsmi_log>", range: rootStart.upperBound..<text.endIndex)?.upperBound ?? text.endIndex
        return String(text[start..<end])
    }

    /// "IX-ML: 2.3.1" in the table header.
    static func ixmlVersion(_ text: String) -> String? {
        guard let range = text.range(of: "IX-ML:") else { return nil }
        return ParseSupport.tokens(text[range.upperBound...].prefix(64)).first.map(String.init)
    }

    private static func parseTable(_ text: String, toolVersion: String?) throws -> VendorParseResult {
        let lines = ParseSupport.lines(text)
        var result = VendorParseResult(tool: .ixSMI, toolVersion: toolVersion.map { "IX-ML " + $0 })
        if let header = lines.first(where: { $0.containsLiteral("Driver Version:") }) {
            let tokens = ParseSupport.tokens(header)
            if let at = tokens.firstIndex(of: "Version:"), at + 1 < tokens.count {
                result.driverVersion = String(tokens[at + 1])
            }
        }
        guard lines.contains(where: { SMITable.isRule($0, fill: "=") }) else {
            throw VendorParseError.malformed(tool: .ixSMI, detail: "no ixsmi device table or <ixsmi_log> XML found")
        }
        for block in SMITable.deviceBlocks(lines) {
            guard block.rows.count >= 2, block.rows[0].count >= 2, block.rows[1].count >= 3 else {
                result.warnings.append("line \(block.line): device block is incomplete; skipped")
                continue
            }
            let nameTokens = ParseSupport.tokens(block.rows[0][0])
            guard let index = nameTokens.first.flatMap({ ParseSupport.count($0) }) else {
                throw VendorParseError.malformed(
                    tool: .ixSMI, detail: "line \(block.line): expected a GPU number, got \"\(block.rows[0][0])\"")
            }
            let busID = ParseSupport.pciBusID(block.rows[0][1])
            let readings = ParseSupport.tokens(ParseSupport.joinSlashPairs(block.rows[1][0]))
            let power = SMITable.pair(readings.last(where: { $0.containsLiteral("/") }))
            let memory = ParseSupport.usagePair(ParseSupport.joinSlashPairs(block.rows[1][1]))
            let temperature = readings.count > 1 ? ParseSupport.double(readings[1]) : nil
            var d = DeviceInventory(
                id: busID ?? "\(VendorTool.ixSMI.rawValue):\(index)", index: index, vendor: .iluvatar,
                model: nameTokens.dropFirst().joined(separator: " "))
            if d.model.isEmpty { d.model = "Iluvatar GPU" }
            d.pciBusID = busID
            d.memoryUsedMiB = memory.used
            d.memoryTotalMiB = memory.total
            d.powerDrawW = power.0
            d.powerLimitW = power.1
            d.temperatureC = temperature
            d.utilizationPercent = ParseSupport.tokens(block.rows[1][2]).first.flatMap { ParseSupport.double($0) }
            d.driverVersion = result.driverVersion
            d.signals = HealthSignals(temperatureC: temperature)
            d.health = ParseSupport.notEvaluated
            result.devices.append(d)
        }
        result.sortDevicesByIndex()
        return result
    }
}

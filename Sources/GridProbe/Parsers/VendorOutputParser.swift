import Foundation
import GridCore

/// Entry point for vendor-tool output: sniffs the format from content (captures arrive from
/// `--simulate` files, logs and pipes, so file names cannot be trusted) and dispatches to the
/// format's parser. Total over its input: any text yields a result or a `VendorParseError`.
///
/// Not inventories, and so not recognised (`detect` answers nil, `parse` throws
/// `.unrecognizedFormat`): `nvidia-smi --help-query-gpu`, `nvidia-smi -L`, text `nvidia-smi -q`,
/// exporter capture bundles, `amd-smi static` text, `intel_gpu_top -J`, KFD sysfs properties.
public enum VendorOutputParser {
    /// How much of the text sniffing looks at; every marker sits near the top of its format.
    static let sniffLength = 16_384

    public static func detect(_ text: String) -> VendorTool? {
        let head = ParseSupport.withoutTerminalEscapes(String(text.prefix(sniffLength)))
        let trimmed = head.drop(while: { $0.isWhitespace || $0 == "\u{FEFF}" })
        guard !trimmed.isEmpty else { return nil }

        if head.containsLiteral("<ixsmi_log") || head.containsLiteral("IX-ML:") || head.containsLiteral("IXSMI LOG") {
            return .ixSMI
        }
        if trimmed.hasPrefix("<") {
            return head.containsLiteral("<nvidia_smi_log") ? .nvidiaSMIXML : nil
        }
        if trimmed.hasPrefix("{") {
            if head.containsLiteral("\"device_list\"") { return .xpuSMIDiscovery }
            return containsCardKey(head) ? .rocmSMIJSON : nil
        }
        let firstLine = ParseSupport.head(head, lines: 1).first.map(String.init) ?? ""
        // nvidia-smi topo -m: a tab-separated header of GPU columns ending in the affinities.
        if firstLine.hasPrefix("\tGPU0"), firstLine.containsLiteral("Affinity") { return .nvidiaSMITopo }
        let firstFields = NvidiaSMICSVParser.splitRow(firstLine).map { $0.lowercased() }
        if firstFields.count >= 2, firstFields[0] == "timestamp", firstFields.contains("deviceid") {
            return .xpuSMIDump
        }
        if head.containsLiteral("HL-SMI LOG") { return .hlSMIList }
        if head.containsLiteral("HL-SMI Version"), head.containsLiteral("|") { return .hlSMI }
        if head.containsLiteral("| Device ID"), head.containsLiteral("Device Information") { return .xpuSMIDiscovery }
        if head.containsLiteral("npu-smi"), head.containsLiteral("Health"), head.containsLiteral("NPU") { return .npuSMI }
        if let line = ParseSupport.head(head, lines: 1).first, NpuSMIParser.isMappingHeader(line) { return .npuSMI }
        if looksLikeNvidiaCSV(head) { return .nvidiaSMICSV }
        return nil
    }

    public static func parse(_ raw: String, as tool: VendorTool? = nil) throws -> VendorParseResult {
        let text = ParseSupport.withoutTerminalEscapes(raw)
        guard let tool = tool ?? detect(text) else {
            throw VendorParseError.unrecognizedFormat(hint: hint(text))
        }
        switch tool {
        case .nvidiaSMIXML: return try NvidiaSMIXMLParser.parse(text)
        case .nvidiaSMICSV: return try NvidiaSMICSVParser.parse(text)
        case .rocmSMIJSON: return try RocmSMIJSONParser.parse(text)
        case .npuSMI: return try NpuSMIParser.parse(text)
        case .hlSMI: return try HabanaSMITableParser.parse(text)
        case .hlSMIList: return try HabanaSMIListParser.parse(text)
        case .xpuSMIDiscovery: return try XPUSMIDiscoveryParser.parse(text)
        case .xpuSMIDump: return try XPUSMIDumpParser.parse(text)
        case .ixSMI: return try IluvatarSMIParser.parse(text)
        case .nvidiaSMITopo: return try NvidiaTopologyParser.parse(text)
        }
    }

    /// First non-empty line, printable characters only, at most 80 of them.
    static func hint(_ text: String) -> String {
        let line = ParseSupport.head(String(text.prefix(sniffLength)), lines: 1).first ?? ""
        let printable = line.unicodeScalars.filter { !$0.properties.isWhitespace || $0 == " " }
            .filter { $0.value >= 0x20 && $0.value != 0x7f && $0 != "\u{FFFD}" }
        var out = String(String.UnicodeScalarView(printable)).trimmingSpaces()
        if out.count > 80 { out = String(out.prefix(80)) + "…" }
        return out
    }

    /// `"card0":` (rocm-smi) at the top level of a JSON object.
    private static func containsCardKey(_ head: String) -> Bool {
        var search = head[...]
        while let range = search.range(of: "\"card") {
            let rest = search[range.upperBound...]
            let digits = rest.prefix(while: { $0.isASCII && $0.isNumber })
            if !digits.isEmpty, rest.dropFirst(digits.count).first == "\"" { return true }
            search = rest
        }
        return false
    }

    /// Field names nvidia-smi's `--query-gpu` accepts, enough to tell its header from others.
    private static let nvidiaFieldStems = [
        "name", "uuid", "index", "serial", "driver_version", "pci.", "memory.", "temperature.",
        "utilization.", "power.", "clocks", "ecc.", "retired_pages.", "gpu_", "fan.", "pstate",
        "compute_cap", "mig.", "vbios_version", "timestamp",
    ]

    /// A header of query-gpu field names, or (noheader) rows of equal width ≥ 2 with no table or
    /// markup characters.
    private static func looksLikeNvidiaCSV(_ head: String) -> Bool {
        let lines = ParseSupport.head(head, lines: 200)
        guard let first = lines.first else { return false }
        let fields = NvidiaSMICSVParser.splitRow(first)
        if NvidiaSMICSVParser.isHeader(fields), fields.count >= 1 {
            let names = fields.map(NvidiaSMICSVParser.columnName)
            return names.contains { name in nvidiaFieldStems.contains { name.hasPrefix($0) } }
                && (fields.count >= 2 || names[0] != "timestamp")
        }
        guard fields.count >= 2 else { return false }
        return lines.allSatisfy { line in
            !line.containsLiteral("|") && !line.containsLiteral("{") && !line.containsLiteral("<") && !line.containsLiteral("\t")
                && NvidiaSMICSVParser.splitRow(line).count == fields.count
        }
    }
}

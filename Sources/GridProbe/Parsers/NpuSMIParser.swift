import Foundation
import GridCore

/// Huawei `npu-smi info` tables (Atlas 300I/310, 310B, 910A, 910B, Atlas A3) and the
/// `npu-smi info -m` chip mapping.
///
/// Each device row spans two table lines: `| NPU Name | Health | Power Temp Hugepages |` then
/// `| Chip [Device|Phy-ID] | Bus-Id | AICore Memory-Usage [HBM-Usage] |`. One `DeviceInventory`
/// per **chip** (die): an Atlas A3 NPU has two dies, each its own Bus-Id, HBM and logical
/// device, and ASCEND_RT_VISIBLE_DEVICES / aclrtSetDevice count logical chips, not NPU cards.
/// `index` is the logical device id: the 310-era `Device` column when printed (it is the logic
/// id), otherwise the chip row's position in the table, which npu-smi prints in logical order.
/// The process table that may follow ("NPU Chip | Process id | Process name | memory") gives
/// each chip's `processes` ([] when npu-smi says "No running processes found").
public enum NpuSMIParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        let lines = ParseSupport.lines(text)
        if let headerLine = lines.firstIndex(where: isMappingHeader) {
            return try parseMapping(lines, headerLine: headerLine)
        }
        var result = VendorParseResult(tool: .npuSMI)
        var sawHeader = false
        var pendingFirst: (cells: [String], line: Int)?
        var position = 0
        var chipColumnIsDevice = false
        var inProcesses = false
        var npuChip: [String: Int] = [:]   // "npu chip" -> device position
        var processes: [Int: [DeviceProcess]] = [:]
        var currentNPU: Int?
        for (offset, raw) in lines.enumerated() {
            let number = offset + 1
            let line = raw.trimmingSpaces()
            guard line.hasPrefix("|") else {
                // Borders (+---+, +===+) and text outside the table.
                continue
            }
            let cells = tableCells(line)
            let joined = cells.joined(separator: " ")
            if joined.hasPrefix("npu-smi") {
                readVersions(cells, into: &result)
                continue
            }
            if joined.containsLiteral("Process id") || joined.hasPrefix("No running processes") {
                // The process table follows the device table; nothing after it is a device.
                inProcesses = sawHeader
                continue
            }
            if inProcesses {
                // "| 0       0            | 37656         | hlt_host_devmm_          | 686 |"
                // (a bare "|" has no cells: found by the vendor fuzz target)
                guard let first = cells.first else { continue }
                let ids = ParseSupport.tokens(first).compactMap { ParseSupport.count($0) }
                if ids.count >= 2, cells.count >= 3, let position = npuChip["\(ids[0]) \(ids[1])"],
                   let pid = ParseSupport.count(cells[1]) {
                    processes[position, default: []].append(DeviceProcess(pid: pid, name: cells[2]))
                }
                continue
            }
            if let head = cells.first, head.hasPrefix("NPU"), head.containsLiteral("Name") {
                sawHeader = true
                continue
            }
            if let head = cells.first, head.hasPrefix("Chip") {
                // "Chip  Device" (310 layouts: Device is the logic id) or "Chip  Phy-ID" (A3).
                chipColumnIsDevice = ParseSupport.tokens(head).dropFirst().first == "Device"
                continue
            }
            guard sawHeader, cells.count >= 3 else { continue }
            if let first = pendingFirst {
                let device = try chip(
                    first: first.cells, second: cells, line: number, position: position,
                    logicalColumnIsDevice: chipColumnIsDevice)
                if let npu = ParseSupport.tokens(first.cells[0]).first.flatMap({ ParseSupport.count($0) }) { currentNPU = npu }
                if let npu = currentNPU, let chipID = ParseSupport.tokens(cells[0]).first.flatMap({ ParseSupport.count($0) }) {
                    npuChip["\(npu) \(chipID)"] = result.devices.count
                }
                result.devices.append(device)
                position += 1
                pendingFirst = nil
            } else {
                pendingFirst = (cells, number)
            }
        }
        guard sawHeader else {
            throw VendorParseError.malformed(tool: .npuSMI, detail: "no \"NPU  Name | Health\" table header found")
        }
        if let dangling = pendingFirst {
            result.warnings.append("line \(dangling.line): NPU row without its chip row (truncated table?); skipped")
        }
        for index in result.devices.indices {
            result.devices[index].driverVersion = result.driverVersion
            if inProcesses { result.devices[index].processes = processes[index] ?? [] }
        }
        result.sortDevicesByIndex()
        return result
    }

    /// "| a | b | c |" → ["a", "b", "c"], trimmed; empty edge cells dropped.
    static func tableCells<S: StringProtocol>(_ line: S) -> [String] {
        var cells = line.split(separator: "|", omittingEmptySubsequences: false)
            .map { $0.trimmingSpaces() }
        if cells.first == "" { cells.removeFirst() }
        while cells.last == "" { cells.removeLast() }
        return cells
    }

    private static func readVersions(_ cells: [String], into result: inout VendorParseResult) {
        let tokens = ParseSupport.tokens(cells.joined(separator: " "))
        if tokens.count >= 2, tokens[0] == "npu-smi" { result.toolVersion = String(tokens[1]) }
        if let at = tokens.firstIndex(of: "Version:"), at + 1 < tokens.count {
            result.driverVersion = String(tokens[at + 1])
        }
    }

    private static func chip(
        first: [String], second: [String], line: Int, position: Int, logicalColumnIsDevice: Bool
    ) throws -> DeviceInventory {
        let nameTokens = ParseSupport.tokens(first[0])
        let chipTokens = ParseSupport.tokens(second[0])
        guard nameTokens.first.flatMap({ ParseSupport.count($0) }) != nil,
              chipTokens.first.flatMap({ ParseSupport.count($0) }) != nil
        else {
            throw VendorParseError.malformed(
                tool: .npuSMI, detail: "line \(line - 1)-\(line): expected \"NPU Name\" and \"Chip\" numbers, got \"\(first[0])\" / \"\(second[0])\"")
        }
        // 310 layouts: "Chip Device" (logic id); A3: "Chip Phy-ID" (physical, not what the runtime counts).
        let logicalColumn = chipTokens.count > 1 ? ParseSupport.count(chipTokens[1]) : nil
        let name = nameTokens.dropFirst().joined(separator: " ")
        let model = name.isEmpty ? "Ascend NPU" : (name.lowercased().hasPrefix("ascend") ? name : "Ascend " + name)

        // Third cells: "Power Temp Hugepages" and "AICore Memory [HBM]"; usage pairs are "a / b".
        let readings = ParseSupport.tokens(ParseSupport.joinSlashPairs(first[2]))
        let usage = ParseSupport.tokens(ParseSupport.joinSlashPairs(second[2]))
        let power = readings.count > 0 ? ParseSupport.double(readings[0]) : nil
        let temperature = readings.count > 1 ? ParseSupport.double(readings[1]) : nil
        let aicore = usage.count > 0 ? ParseSupport.double(usage[0]) : nil
        let memory: (used: Int?, total: Int?) = usage.count > 1 ? ParseSupport.usagePair(usage[1]) : (nil, nil)
        let hbm: (used: Int?, total: Int?) = usage.count > 2 ? ParseSupport.usagePair(usage[2]) : (nil, nil)
        // 910-class chips report their HBM separately; "Memory-Usage" there is the control CPU's DDR.
        let useHBM = (hbm.total ?? 0) > 0
        let busID = ParseSupport.pciBusID(second[1])

        let index = logicalColumnIsDevice ? (logicalColumn ?? position) : position
        var d = DeviceInventory(
            id: busID ?? "\(VendorTool.npuSMI.rawValue):\(index)", index: index, vendor: .huawei, model: model)
        d.memoryTotalMiB = useHBM ? hbm.total : memory.total
        d.memoryUsedMiB = useHBM ? hbm.used : memory.used
        d.pciBusID = busID
        d.powerDrawW = power
        d.temperatureC = temperature
        d.utilizationPercent = aicore
        d.signals = HealthSignals(temperatureC: temperature, vendorHealthText: ParseSupport.clean(first[1]))
        d.health = ParseSupport.notEvaluated
        return d
    }

    /// `npu-smi info -m`: "NPU ID  Chip ID  Chip Logic ID  Chip Name".
    static func isMappingHeader(_ line: Substring) -> Bool {
        line.containsLiteral("Chip Logic ID") && line.containsLiteral("NPU ID")
    }

    /// The mapping lists every chip with its logic id (what ASCEND_RT_VISIBLE_DEVICES takes);
    /// management MCUs have logic id "-" and are not devices. No readings or health here.
    private static func parseMapping(_ lines: [Substring], headerLine: Int) throws -> VendorParseResult {
        var result = VendorParseResult(tool: .npuSMI)
        for (offset, line) in lines.enumerated().dropFirst(headerLine + 1) {
            let tokens = ParseSupport.tokens(line)
            guard tokens.count >= 4, ParseSupport.count(tokens[0]) != nil,
                  ParseSupport.count(tokens[1]) != nil
            else {
                if !tokens.isEmpty, !line.containsLiteral("://") {
                    result.warnings.append("line \(offset + 1): not a mapping row; skipped")
                }
                continue
            }
            guard let logic = ParseSupport.count(tokens[2]) else { continue }
            var d = DeviceInventory(
                id: "\(VendorTool.npuSMI.rawValue):\(logic)", index: logic, vendor: .huawei,
                model: tokens[3...].joined(separator: " "))
            d.health = ParseSupport.notEvaluated
            result.devices.append(d)
        }
        guard !result.devices.isEmpty else {
            throw VendorParseError.malformed(tool: .npuSMI, detail: "npu-smi info -m mapping lists no chips with a logic id")
        }
        result.sortDevicesByIndex()
        return result
    }
}

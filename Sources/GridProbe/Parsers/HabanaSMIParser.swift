import Foundation
import GridCore

/// Habana / Intel Gaudi `hl-smi` default table.
///
/// `index` is the `AIP` column (the accel index). The table prints no UUID, so ids are PCI bus
/// ids. `Volatile Uncor-Events` is the volatile uncorrectable-error count.
public enum HabanaSMITableParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        let lines = ParseSupport.lines(text)
        var result = VendorParseResult(tool: .hlSMI)
        for line in lines.prefix(40) {
            guard let pair = SMITable.keyValue(NpuSMIParser.tableCells(line).joined(separator: " ")) else { continue }
            switch pair.key {
            case "HL-SMI Version": result.toolVersion = ParseSupport.clean(pair.value)
            case "Driver Version": result.driverVersion = ParseSupport.clean(pair.value)
            default: break
            }
        }
        let blocks = SMITable.deviceBlocks(lines)
        guard lines.contains(where: { $0.containsLiteral("AIP") }), !blocks.isEmpty || lines.contains(where: { SMITable.isRule($0, fill: "=") }) else {
            throw VendorParseError.malformed(tool: .hlSMI, detail: "no AIP table header found")
        }
        let firmware = HabanaSMIListParser.firmware(fromToolVersion: result.toolVersion)
        for block in blocks {
            guard block.rows.count >= 2, block.rows[0].count >= 3, block.rows[1].count >= 3 else {
                result.warnings.append("line \(block.line): device block has \(block.rows.count) row(s), expected 2 rows of 3 cells; skipped")
                continue
            }
            let first = block.rows[0]
            let second = block.rows[1]
            let nameTokens = ParseSupport.tokens(first[0])
            guard let index = nameTokens.first.flatMap({ ParseSupport.count($0) }) else {
                throw VendorParseError.malformed(
                    tool: .hlSMI, detail: "line \(block.line): expected an AIP number, got \"\(first[0])\"")
            }
            // "HL-225   N/A": name, then the Persistence-M column.
            var nameParts = nameTokens.dropFirst().map(String.init)
            if nameParts.count > 1 { nameParts.removeLast() }
            let busID = ParseSupport.pciBusID(ParseSupport.tokens(first[1]).first.map(String.init))
            let readings = ParseSupport.tokens(ParseSupport.joinSlashPairs(second[0]))
            let power = SMITable.pair(readings.last(where: { $0.containsLiteral("/") }))
            let memory = ParseSupport.usagePair(ParseSupport.joinSlashPairs(second[1]))
            let temperature = readings.count > 1 ? ParseSupport.double(readings[1]) : nil

            var d = DeviceInventory(
                id: busID ?? "\(VendorTool.hlSMI.rawValue):\(index)", index: index, vendor: .habana,
                model: nameParts.isEmpty ? "Gaudi" : nameParts.joined(separator: " "))
            d.pciBusID = busID
            d.memoryUsedMiB = memory.used
            d.memoryTotalMiB = memory.total
            d.temperatureC = temperature
            d.powerDrawW = power.0
            d.powerLimitW = power.1
            d.utilizationPercent = ParseSupport.tokens(second[2]).first.flatMap { ParseSupport.double($0) }
            d.driverVersion = result.driverVersion
            d.firmwareVersion = firmware
            d.signals = HealthSignals(
                eccUncorrectableVolatile: ParseSupport.tokens(first[2]).first.flatMap { ParseSupport.count($0) },
                temperatureC: temperature)
            d.health = ParseSupport.notEvaluated
            result.devices.append(d)
        }
        // "Compute Processes:  AIP  PID  Type  Process name  Usage": one line per process,
        // "N/A" in PID when an AIP runs none.
        if let start = lines.firstIndex(where: { $0.containsLiteral("Compute Processes") }) {
            var byIndex: [Int: [DeviceProcess]] = [:]
            for line in lines[(start + 1)...] {
                let tokens = ParseSupport.tokens(NpuSMIParser.tableCells(line).joined(separator: " "))
                guard tokens.count >= 2, let aip = ParseSupport.count(tokens[0]) else { continue }
                byIndex[aip, default: []] += ParseSupport.count(tokens[1]).map {
                    [DeviceProcess(pid: $0, name: tokens.count > 3 ? tokens[3...].dropLast().joined(separator: " ") : "?")]
                } ?? []
            }
            for i in result.devices.indices { result.devices[i].processes = byIndex[result.devices[i].index] ?? [] }
        }
        result.sortDevicesByIndex()
        return result
    }
}

/// `hl-smi -L` / `hl-smi -q` detailed log ("HL-SMI LOG", one `[N] AIP (accelN) <bus>` block per
/// device, nested "Key : value" sections by indentation).
///
/// `index` is `Module ID` when printed (HABANA_VISIBLE_MODULES takes module ids), else N.
public enum HabanaSMIListParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        var result = VendorParseResult(tool: .hlSMIList)
        var blocks: [(header: Substring, line: Int, entries: [Entry])] = []
        var stack: [(name: String, indent: Int)] = []
        for (offset, raw) in ParseSupport.lines(text).enumerated() {
            let line = raw.trimmingSpaces()
            if line.isEmpty { continue }
            if line.hasPrefix("["), line.containsLiteral("AIP") {
                blocks.append((raw, offset + 1, []))
                stack = []
                continue
            }
            let indent = indentation(raw)
            if blocks.isEmpty {
                if let pair = SMITable.keyValue(line) {
                    switch pair.key {
                    case "Driver Version": result.driverVersion = ParseSupport.clean(pair.value)
                    case "HL-SMI Version": result.toolVersion = ParseSupport.clean(pair.value)
                    default: break
                    }
                }
                continue
            }
            if line.hasPrefix(":") {
                // Value printed under its own header line ("Thermal Slowdown\n  : Not Active").
                let value = line.dropFirst().trimmingSpaces()
                blocks[blocks.count - 1].entries.append(Entry(path: stack.map(\.name), value: value))
                continue
            }
            while let last = stack.last, last.indent >= indent { stack.removeLast() }
            if let pair = SMITable.keyValue(line), !pair.value.isEmpty || line.hasSuffix(":") {
                blocks[blocks.count - 1].entries.append(Entry(path: stack.map(\.name) + [pair.key], value: pair.value))
            } else {
                stack.append((line, indent))
            }
        }
        guard !blocks.isEmpty else {
            throw VendorParseError.malformed(tool: .hlSMIList, detail: "no \"[N] AIP (accelN) <bus id>\" device block found")
        }
        let firmware = firmware(fromToolVersion: result.toolVersion)
        for (position, block) in blocks.enumerated() {
            result.devices.append(device(block.header, block.entries, position: position, firmware: firmware,
                                         driver: result.driverVersion))
        }
        result.sortDevicesByIndex()
        return result
    }

    struct Entry: Sendable {
        var path: [String]
        var value: String
        var key: String { path.last ?? "" }
    }

    /// "hl-1.21.1-fw-59.2.3.0" → "59.2.3.0"; the `-fw-` part is the firmware bundle version.
    static func firmware(fromToolVersion version: String?) -> String? {
        guard let version, let range = version.range(of: "-fw-") else { return nil }
        let tail = version[range.upperBound...].prefix(while: { !$0.isWhitespace })
        return tail.isEmpty ? nil : String(tail)
    }

    private static func indentation(_ line: Substring) -> Int {
        var width = 0
        for character in line {
            if character == " " { width += 1 } else if character == "\t" { width += 8 - width % 8 } else { break }
        }
        return width
    }

    private static func device(
        _ header: Substring, _ entries: [Entry], position: Int, firmware: String?, driver: String?
    ) -> DeviceInventory {
        func value(_ section: String?, _ key: String) -> String? {
            entries.first(where: { $0.key == key && (section == nil || $0.path.dropLast().last == section) })
                .flatMap { ParseSupport.clean($0.value) }
        }
        // "[0] AIP (accel0) 0000:43:00.0"
        let headerTokens = ParseSupport.tokens(header)
        let bracketIndex = headerTokens.first.map { $0.filter(\.isNumber) }.flatMap { Int($0) }
        let busID = ParseSupport.pciBusID(value("PCI", "Bus Id"))
            ?? headerTokens.last.flatMap { ParseSupport.pciBusID(String($0)) }
        let index = ParseSupport.count(value(nil, "Module ID")) ?? bracketIndex ?? position
        let uuid = ParseSupport.uuid(value(nil, "AIP UUID"))

        var d = DeviceInventory(
            id: uuid ?? busID ?? "\(VendorTool.hlSMIList.rawValue):\(index)", index: index, vendor: .habana,
            model: value(nil, "Product Name") ?? "Gaudi")
        d.pciBusID = busID
        d.pciDeviceID = ParseSupport.pciDeviceID(value("PCI", "Device Id"), packing: .deviceLow)
        d.serial = ParseSupport.serial(value(nil, "Serial Number"))
        d.memoryTotalMiB = ParseSupport.mebibytes(value("Memory Usage", "Total"))
        d.memoryUsedMiB = ParseSupport.mebibytes(value("Memory Usage", "Used"))
        d.driverVersion = driver
        d.firmwareVersion = firmware
        // The first power section is the main (54V) rail; the 12V auxiliary rail follows.
        let powerSection = entries.first(where: { $0.path.first?.hasPrefix("Power Readings") == true })?.path.first
        d.powerDrawW = ParseSupport.double(value(powerSection, "Power Draw"))
        d.powerLimitW = ParseSupport.double(value(powerSection, "Power Limit"))
        // Die temperature: hottest "On Chip N" sensor (not TD, HBM or board sensors).
        let chipTemperatures = entries.filter {
            $0.path.first == "Temperature" && $0.key.containsLiteral("On Chip") && !$0.key.containsLiteral("TD")
        }.compactMap { ParseSupport.double($0.value) }
        let temperature = chipTemperatures.max()

        var s = HealthSignals()
        s.temperatureC = temperature
        s.thermalThrottleActive = ParseSupport.active(
            entries.first(where: { $0.path.last == "Thermal Slowdown" })?.value)
        s.powerThrottleActive = ParseSupport.active(
            entries.first(where: { $0.path.last == "Power Slowdown" })?.value)
        s.remappedRowsPending = ParseSupport.yesNo(value("Replaced Rows", "Pending"))
        s.vendorHealthText = value(nil, "Module status")
        d.temperatureC = temperature
        d.signals = s
        d.health = ParseSupport.notEvaluated
        return d
    }
}

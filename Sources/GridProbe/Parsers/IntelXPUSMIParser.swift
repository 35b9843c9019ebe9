import Foundation
import GridCore

/// Intel `xpu-smi discovery` in its three shapes: the summary table, the `-d` detail table and
/// `-j` JSON. `index` is xpu-smi's Device ID, the Level Zero device ordinal that
/// ZE_AFFINITY_MASK uses. Multi-tile GPUs (Max 1550: 2 tiles) become partitions
/// "<id>/tile<N>", addressable as "<index>.<N>" in ZE_AFFINITY_MASK.
public enum XPUSMIDiscoveryParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        let trimmed = text.trimmingSpacesAndNewlines()
        if trimmed.hasPrefix("{") { return try parseJSON(trimmed) }
        return try parseTable(text)
    }

    private static func parseTable(_ text: String) throws -> VendorParseResult {
        var records: [(index: Int, line: Int, fields: [String: String])] = []
        var sawHeader = false
        for (offset, raw) in ParseSupport.lines(text).enumerated() {
            let line = raw.trimmingSpaces()
            guard line.hasPrefix("|") else { continue }
            let cells = NpuSMIParser.tableCells(line)
            guard cells.count >= 2 else { continue }
            if cells[0] == "Device ID" { sawHeader = true; continue }
            guard sawHeader else { continue }
            if !cells[0].isEmpty {
                guard let index = ParseSupport.count(cells[0]) else {
                    throw VendorParseError.malformed(
                        tool: .xpuSMIDiscovery, detail: "line \(offset + 1): Device ID \"\(cells[0])\" is not a number")
                }
                records.append((index, offset + 1, [:]))
            }
            guard !records.isEmpty, let pair = SMITable.keyValue(cells[1]) else { continue }
            if records[records.count - 1].fields[pair.key] == nil {
                records[records.count - 1].fields[pair.key] = pair.value
            }
        }
        guard sawHeader else {
            throw VendorParseError.malformed(tool: .xpuSMIDiscovery, detail: "no \"| Device ID | Device Information |\" header")
        }
        var result = VendorParseResult(tool: .xpuSMIDiscovery)
        for record in records {
            let f = record.fields
            result.devices.append(device(
                index: record.index, name: f["Device Name"], uuid: f["UUID"] ?? f["SOC UUID"],
                bus: f["PCI BDF Address"], deviceID: f["PCI Device ID"],
                memory: ParseSupport.mebibytes(f["Memory Physical Size"]), serial: f["Serial Number"],
                driver: f["Driver Version"], firmware: f["Firmware Version"],
                tiles: ParseSupport.count(f["Number of Tiles"])))
        }
        result.driverVersion = result.devices.lazy.compactMap(\.driverVersion).first
        result.sortDevicesByIndex()
        return result
    }

    private static func parseJSON(_ text: String) throws -> VendorParseResult {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [])
        } catch {
            throw VendorParseError.malformed(tool: .xpuSMIDiscovery, detail: "invalid JSON: \(JSONErrorText.describe(error))")
        }
        guard let top = object as? [String: Any], let list = top["device_list"] as? [Any] else {
            throw VendorParseError.malformed(tool: .xpuSMIDiscovery, detail: "no \"device_list\" array")
        }
        var result = VendorParseResult(tool: .xpuSMIDiscovery)
        for (position, entry) in list.enumerated() {
            let f = RocmSMIJSONParser.Fields(entry)
            guard let index = ParseSupport.count(f.value("device_id")) else {
                result.warnings.append("device_list[\(position)] has no numeric device_id; skipped")
                continue
            }
            let memory = f.value("memory_physical_size_byte").flatMap(ParseSupport.mebibytes(fromBytes:))
                ?? ParseSupport.mebibytes(f.value("memory_physical_size"))
            result.devices.append(device(
                index: index, name: f.value("device_name"), uuid: f.value("uuid"), bus: f.value("pci_bdf_address"),
                deviceID: f.value("pci_device_id"), memory: memory, serial: f.value("serial_number"),
                driver: f.value("driver_version"), firmware: f.value("gfx_firmware_version"),
                tiles: ParseSupport.count(f.value("number_of_tiles"))))
        }
        result.driverVersion = result.devices.lazy.compactMap(\.driverVersion).first
        result.sortDevicesByIndex()
        return result
    }

    private static func device(
        index: Int, name: String?, uuid: String?, bus: String?, deviceID: String?, memory: Int?,
        serial: String?, driver: String?, firmware: String?, tiles: Int?
    ) -> DeviceInventory {
        let busID = ParseSupport.pciBusID(bus)
        let id = ParseSupport.uuid(uuid) ?? busID ?? "\(VendorTool.xpuSMIDiscovery.rawValue):\(index)"
        var d = DeviceInventory(id: id, index: index, vendor: .intel, model: ParseSupport.clean(name) ?? "Intel GPU")
        d.pciBusID = busID
        d.pciDeviceID = ParseSupport.pciDeviceID(deviceID)
        d.memoryTotalMiB = memory
        d.serial = ParseSupport.serial(serial)
        d.driverVersion = ParseSupport.clean(driver)
        d.firmwareVersion = ParseSupport.clean(firmware)
        if let tiles, tiles > 1, tiles <= 64 {
            d.partitions = (0..<tiles).map { tile in
                DevicePartition(
                    id: "\(id)/tile\(tile)", profile: "tile",
                    memoryTotalMiB: memory.map { $0 / tiles }, computeFraction: 1.0 / Double(tiles))
            }
        }
        d.health = ParseSupport.notEvaluated
        return d
    }
}

/// `xpu-smi dump -d ... -m ...`: comma-separated samples, one row per device per interval.
/// Yields devices with readings only (no name or memory size); the newest non-N/A value per
/// metric wins. Lines that are not samples (a trailing `^C`) are skipped with a warning.
public enum XPUSMIDumpParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        let lines = ParseSupport.lines(text)
        guard let headerOffset = lines.firstIndex(where: { !$0.allSatisfy(\.isWhitespace) }) else {
            throw VendorParseError.malformed(tool: .xpuSMIDump, detail: "empty output")
        }
        let header = NvidiaSMICSVParser.splitRow(lines[headerOffset]).map { $0.lowercased() }
        guard let idColumn = header.firstIndex(of: "deviceid") else {
            throw VendorParseError.malformed(tool: .xpuSMIDump, detail: "header has no DeviceId column")
        }
        func column(_ prefix: String) -> Int? { header.firstIndex(where: { $0.hasPrefix(prefix) }) }
        let utilization = column("gpu utilization")
        let power = column("gpu power")
        let temperature = column("gpu core temperature") ?? column("gpu temperature")
        let memoryUsed = column("gpu memory used")

        var result = VendorParseResult(tool: .xpuSMIDump)
        var devices: [Int: DeviceInventory] = [:]
        for offset in (headerOffset + 1)..<lines.count {
            let line = lines[offset]
            if line.allSatisfy(\.isWhitespace) { continue }
            let fields = NvidiaSMICSVParser.splitRow(line)
            guard fields.count == header.count, let index = ParseSupport.count(fields[idColumn]) else {
                result.warnings.append("line \(offset + 1): not a sample row (\(line.prefix(40))); skipped")
                continue
            }
            var d = devices[index] ?? DeviceInventory(
                id: "\(VendorTool.xpuSMIDump.rawValue):\(index)", index: index, vendor: .intel, model: "Intel GPU",
                health: ParseSupport.notEvaluated)
            func reading(_ column: Int?) -> Double? { column.flatMap { ParseSupport.double(fields[$0]) } }
            if let value = reading(utilization) { d.utilizationPercent = value }
            if let value = reading(power) { d.powerDrawW = value }
            if let value = reading(temperature) {
                d.temperatureC = value
                d.signals.temperatureC = value
            }
            if let value = memoryUsed.flatMap({ ParseSupport.mebibytes(fields[$0]) }) { d.memoryUsedMiB = value }
            devices[index] = d
        }
        result.devices = devices.values.sorted { $0.index < $1.index }
        return result
    }
}

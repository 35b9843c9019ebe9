import Foundation
import GridCore

/// The vendor queries the probe runs. Kept beside the parsers so the column order a
/// `noheader` parse assumes is the order the agent asked for.
public enum ProbeQuery {
    /// `nvidia-smi --query-gpu=<these> --format=csv,noheader,nounits`. Only fields that
    /// `--help-query-gpu` has listed since the 4xx drivers (an unknown field fails the whole
    /// query), with the `clocks_throttle_reasons.*` spelling that newer drivers still accept.
    public static let nvidiaCSVFields: [String] = [
        "index", "uuid", "name", "serial", "pci.bus_id", "pci.device_id", "driver_version",
        "vbios_version", "memory.total", "memory.used", "temperature.gpu", "power.draw",
        "power.limit", "utilization.gpu", "ecc.errors.uncorrected.volatile.total",
        "ecc.errors.uncorrected.aggregate.total", "ecc.errors.corrected.volatile.total",
        "retired_pages.single_bit_ecc.count", "retired_pages.double_bit.count",
        "retired_pages.pending", "clocks_throttle_reasons.hw_thermal_slowdown",
        "clocks_throttle_reasons.sw_thermal_slowdown", "clocks_throttle_reasons.sw_power_cap",
        "clocks_throttle_reasons.hw_power_brake_slowdown",
    ]

    /// The argument list for the query above.
    public static var nvidiaCSVArguments: [String] {
        ["--query-gpu=" + nvidiaCSVFields.joined(separator: ","), "--format=csv,noheader,nounits"]
    }
}

/// `nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`.
///
/// With a header the columns name themselves (units in `[...]` are stripped from the name).
/// Without one the caller must say what was queried (`columns`); the default is
/// `ProbeQuery.nvidiaCSVFields`, and a row whose width does not match is refused rather than
/// guessed. Periodic logs (`-l`) repeat devices; the last row per device wins.
public enum NvidiaSMICSVParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        try parse(text, columns: nil)
    }

    public static func parse(_ text: String, columns: [String]?) throws -> VendorParseResult {
        var rows: [(line: Int, fields: [String])] = []
        for (number, line) in ParseSupport.lines(text).enumerated()
        where !line.allSatisfy({ $0.isWhitespace }) {
            rows.append((number + 1, splitRow(line)))
        }
        guard let first = rows.first else {
            throw VendorParseError.malformed(tool: .nvidiaSMICSV, detail: "no rows")
        }

        let names: [String]
        var warnings: [String] = []
        if isHeader(first.fields) {
            names = first.fields.map(columnName)
            rows.removeFirst()
        } else if let columns {
            names = columns.map(columnName)
        } else {
            names = ProbeQuery.nvidiaCSVFields.map(columnName)
            guard first.fields.count == names.count else {
                throw VendorParseError.malformed(
                    tool: .nvidiaSMICSV,
                    detail: "no header and \(first.fields.count) columns in line \(first.line); the default query (ProbeQuery.nvidiaCSVFields) has \(names.count); pass the --query-gpu column list")
            }
        }

        var records: [[String: String]] = []
        for row in rows {
            guard row.fields.count == names.count else {
                throw VendorParseError.malformed(
                    tool: .nvidiaSMICSV,
                    detail: "line \(row.line) has \(row.fields.count) values, header/columns name \(names.count)")
            }
            var record: [String: String] = [:]
            for (name, value) in zip(names, row.fields) where record[name] == nil {
                record[name] = value
            }
            records.append(record)
        }

        var devices = records.map(device)
        devices = deduplicated(devices, byIndex: names.contains("index"))
        if !names.contains("index") {
            // nvidia-smi enumerates in PCI bus order; without an index column that order is
            // the best available stand-in for CUDA_VISIBLE_DEVICES numbering.
            devices.sort { ($0.pciBusID ?? "~", $0.id) < ($1.pciBusID ?? "~", $1.id) }
            for position in devices.indices {
                devices[position].index = position
                if devices[position].id.hasPrefix("\(VendorTool.nvidiaSMICSV.rawValue):") {
                    devices[position].id = "\(VendorTool.nvidiaSMICSV.rawValue):\(position)"
                }
            }
            if !devices.isEmpty {
                warnings.append("no index column; indexes assigned in PCI bus order")
            }
        }
        var result = VendorParseResult(
            tool: .nvidiaSMICSV, devices: devices,
            driverVersion: records.lazy.compactMap({ ParseSupport.clean($0["driver_version"]) }).first,
            warnings: warnings)
        result.sortDevicesByIndex()
        return result
    }

    /// nvidia-smi writes ", " between values and never quotes; names and values hold no commas.
    static func splitRow<S: StringProtocol>(_ line: S) -> [String] {
        // Split at the comma's byte: walking grapheme clusters cost most of a CSV's parse.
        var fields: [String] = []
        let utf8 = line.utf8
        var start = utf8.startIndex
        var i = start
        while i != utf8.endIndex {
            if utf8[i] == UInt8(ascii: ",") {
                fields.append(line[start..<i].trimmingSpaces())
                start = utf8.index(after: i)
            }
            utf8.formIndex(after: &i)
        }
        fields.append(line[start..<utf8.endIndex].trimmingSpaces())
        return fields
    }

    /// "memory.total [MiB]" → "memory.total"; aliases folded to one spelling.
    static func columnName(_ raw: String) -> String {
        var name = raw.trimmingSpaces().lowercased()
        if let bracket = name.utf8.firstIndex(of: UInt8(ascii: "[")) {
            name = String(name[..<bracket]).trimmingSpaces()
        }
        if name.hasPrefix("clocks_throttle_reasons.") {
            name = "clocks_event_reasons." + name.dropFirst("clocks_throttle_reasons.".count)
        }
        switch name {
        case "gpu_name": return "name"
        case "gpu_serial": return "serial"
        case "gpu_uuid": return "uuid"
        case "gpu_bus_id": return "pci.bus_id"
        case "retired_pages.sbe": return "retired_pages.single_bit_ecc.count"
        case "retired_pages.dbe": return "retired_pages.double_bit.count"
        default: return name
        }
    }

    /// A header row is made of field names: lowercase dotted identifiers, optionally with a
    /// unit in brackets. Values such as `[N/A]`, `2004` or `NVIDIA A100` never all fit.
    static func isHeader(_ fields: [String]) -> Bool {
        guard !fields.isEmpty else { return false }
        return fields.allSatisfy { field in
            let name = field[..<(field.utf8.firstIndex(of: UInt8(ascii: "[")) ?? field.endIndex)].trimmingSpaces()
            guard let head = name.utf8.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(head) else { return false }
            return name.utf8.allSatisfy {
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_")
            }
        }
    }

    private static func device(_ r: [String: String]) -> DeviceInventory {
        let index = ParseSupport.count(r["index"])
        let busID = ParseSupport.pciBusID(r["pci.bus_id"])
        let uuid = ParseSupport.uuid(r["uuid"])
        let fallbackIndex = index ?? 0
        var d = DeviceInventory(
            id: uuid ?? busID ?? "\(VendorTool.nvidiaSMICSV.rawValue):\(fallbackIndex)",
            index: fallbackIndex, vendor: .nvidia,
            model: ParseSupport.clean(r["name"]) ?? "NVIDIA GPU")
        d.memoryTotalMiB = ParseSupport.mebibytes(r["memory.total"])
        d.memoryUsedMiB = ParseSupport.mebibytes(r["memory.used"])
        d.pciBusID = busID
        d.pciDeviceID = ParseSupport.pciDeviceID(r["pci.device_id"], packing: .deviceHigh)
        d.computeCapability = ParseSupport.clean(r["compute_cap"])
        d.serial = ParseSupport.serial(r["serial"])
        d.driverVersion = ParseSupport.clean(r["driver_version"])
        d.firmwareVersion = ParseSupport.clean(r["vbios_version"])
        d.powerDrawW = first(r, ["power.draw", "power.draw.instant", "power.draw.average"], ParseSupport.double)
        d.powerLimitW = first(r, ["power.limit", "enforced.power.limit"], ParseSupport.double)
        d.temperatureC = ParseSupport.double(r["temperature.gpu"])
        d.utilizationPercent = ParseSupport.double(r["utilization.gpu"])
        d.signals = signals(r)
        d.health = ParseSupport.notEvaluated
        return d
    }

    private static func signals(_ r: [String: String]) -> HealthSignals {
        var s = HealthSignals()
        s.eccUncorrectableVolatile = ecc(r, "ecc.errors.uncorrected.volatile")
        s.eccUncorrectableAggregate = ecc(r, "ecc.errors.uncorrected.aggregate")
        s.eccCorrectableVolatile = ecc(r, "ecc.errors.corrected.volatile")
        s.retiredPagesPending = ParseSupport.yesNo(r["retired_pages.pending"])
        s.retiredPagesCount = ParseSupport.sum([
            ParseSupport.count(r["retired_pages.single_bit_ecc.count"]),
            ParseSupport.count(r["retired_pages.double_bit.count"]),
        ])
        s.remappedRowsPending = ParseSupport.yesNo(r["remapped_rows.pending"])
        s.remappingFailed = ParseSupport.yesNo(r["remapped_rows.failure"])
        let reasons = "clocks_event_reasons."
        s.thermalThrottleActive = ParseSupport.any([
            ParseSupport.active(r[reasons + "hw_thermal_slowdown"]),
            ParseSupport.active(r[reasons + "sw_thermal_slowdown"]),
        ])
        // Not `sw_power_cap` (a GPU at its own power limit under load): see the XML parser.
        s.powerThrottleActive = ParseSupport.any([
            ParseSupport.active(r[reasons + "hw_power_brake_slowdown"]),
            ParseSupport.active(r[reasons + "hw_slowdown"]),
        ])
        // Only the bitmask was queried: decode NVML's clocks-event bits (0x20 SW thermal, 0x40 HW
        // thermal, 0x08 HW slowdown, 0x80 HW power brake; 0x04, the SW power cap, is not a fault).
        if let mask = hexMask(r[reasons + "active"]) {
            if s.thermalThrottleActive == nil { s.thermalThrottleActive = mask & (0x20 | 0x40) != 0 }
            if s.powerThrottleActive == nil { s.powerThrottleActive = mask & (0x08 | 0x80) != 0 }
        }
        s.temperatureC = ParseSupport.double(r["temperature.gpu"])
        return s
    }

    /// `<scope>.total`, else DRAM (or the older `device_memory`) plus SRAM.
    private static func ecc(_ r: [String: String], _ scope: String) -> Int? {
        if let total = ParseSupport.count(r[scope + ".total"]) { return total }
        return ParseSupport.sum([
            ParseSupport.count(r[scope + ".dram"]) ?? ParseSupport.count(r[scope + ".device_memory"]),
            ParseSupport.count(r[scope + ".sram"]),
        ])
    }

    private static func hexMask(_ raw: String?) -> UInt64? {
        guard var text = ParseSupport.clean(raw)?.lowercased(), text.hasPrefix("0x") else { return nil }
        text.removeFirst(2)
        return UInt64(text, radix: 16)
    }

    private static func first<T>(_ r: [String: String], _ keys: [String], _ read: (String?) -> T?) -> T? {
        for key in keys {
            if let value = read(r[key]) { return value }
        }
        return nil
    }

    /// One device per UUID / bus id / index; later rows (newer samples of a `-l` log) win.
    private static func deduplicated(_ devices: [DeviceInventory], byIndex: Bool) -> [DeviceInventory] {
        var order: [String] = []
        var latest: [String: DeviceInventory] = [:]
        for (position, device) in devices.enumerated() {
            let key: String
            if let bus = device.pciBusID {
                key = "bus:" + bus
            } else if !device.id.hasPrefix("\(VendorTool.nvidiaSMICSV.rawValue):") {
                key = "id:" + device.id
            } else if byIndex {
                key = "index:\(device.index)"
            } else {
                key = "row:\(position)"
            }
            if latest[key] == nil { order.append(key) }
            latest[key] = device
        }
        return order.compactMap { latest[$0] }
    }
}

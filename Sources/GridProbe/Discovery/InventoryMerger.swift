import Foundation
import GridCore

/// A vendor tool run that did not describe (some of) its devices: timed out, crashed, printed
/// something unparseable, or said a device fell off the bus.
public struct ToolFailure: Sendable, Hashable {
    /// The tool's name as configured ("nvidia-smi").
    public var tool: String
    /// Vendors whose devices this tool describes (rocm-smi: AMD and Hygon).
    public var vendors: Set<AcceleratorVendor>
    /// Devices the failure names (normalised PCI bus ids). nil: every device of `vendors` that
    /// no tool output described.
    public var busIDs: [String]?
    public var reason: HealthReason
    /// What the affected devices become. Defaults by reason kind: fallen off the bus and driver
    /// mismatch → unhealthy; timeouts, failures and unparseable output → unknown.
    public var state: HealthState

    public init(tool: String, vendors: Set<AcceleratorVendor>, busIDs: [String]? = nil, reason: HealthReason, state: HealthState? = nil) {
        self.tool = tool
        self.vendors = vendors
        self.busIDs = busIDs?.compactMap(InventoryMerger.normalizePCIBusID)
        self.reason = reason
        self.state = state ?? Self.defaultState(for: reason.kind)
    }

    public static func defaultState(for kind: HealthReasonKind) -> HealthState {
        switch kind {
        case .fallenOffBus, .driverMismatch, .eccUncorrectable, .remappingFailed, .xid: return .unhealthy
        default: return .unknown
        }
    }

    public var health: DeviceHealth { DeviceHealth(state: state, reasons: [reason]) }
}

/// Joins the kernel's view (sysfs) and the vendor tools' views into one inventory per device.
public enum InventoryMerger {
    /// Canonical PCI address: lowercase, domain at least 4 hex digits. Accepts nvidia-smi's
    /// 8-digit domain (`00000000:3B:00.0`), rocm-smi's upper case, and a missing domain
    /// (`3b:00.0` → `0000:3b:00.0`). nil when `raw` is not a PCI address.
    public static func normalizePCIBusID(_ raw: String) -> String? {
        let s = raw.trimmingSpacesAndNewlines().lowercased()
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        let domainPart: Substring
        let busPart: Substring
        let devfn: Substring
        switch parts.count {
        case 3: (domainPart, busPart, devfn) = (parts[0], parts[1], parts[2])
        case 2: (domainPart, busPart, devfn) = ("0", parts[0], parts[1])
        default: return nil
        }
        let df = devfn.split(separator: ".", omittingEmptySubsequences: false)
        guard df.count == 2,
            isHex(domainPart, max: 8), isHex(busPart, max: 2), isHex(df[0], max: 2), df[1].count == 1,
            let domain = UInt32(domainPart, radix: 16), let bus = UInt8(busPart, radix: 16),
            let dev = UInt8(df[0], radix: 16), dev < 32, let fn = UInt8(df[1], radix: 8)
        else { return nil }
        return "\(pad(String(domain, radix: 16), 4)):\(pad(String(bus, radix: 16), 2)):\(pad(String(dev, radix: 16), 2)).\(fn)"
    }

    private static func isHex(_ s: Substring, max: Int) -> Bool {
        !s.isEmpty && s.count <= max && s.allSatisfy(\.isHexDigit)
    }

    private static func pad(_ s: String, _ n: Int) -> String {
        String(repeating: "0", count: max(0, n - s.count)) + s
    }

    /// PCI addresses mentioned in free text (tool error lines), normalised, in order, unique.
    public static func busIDs(in text: String) -> [String] {
        guard let re = try? NSRegularExpression(pattern: "(?<![0-9A-Fa-f:])([0-9A-Fa-f]{4,8}:)?[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\\.[0-7](?![0-9A-Za-z])") else { return [] }
        var out: [String] = []
        let ns = text as NSString
        for m in re.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
            if let id = normalizePCIBusID(ns.substring(with: m.range)), !out.contains(id) { out.append(id) }
        }
        return out
    }

    /// One inventory entry per device.
    ///
    /// - Vendor devices are matched to sysfs by normalised PCI bus id; sysfs supplies the NUMA
    ///   node (authoritative), the PCIe link (added to `interconnects` as "PCIe Gen4 x16") and
    ///   any memory, temperature, power, utilisation, device id or driver the tool left out.
    /// - A vendor device's health is `HealthEvaluator.evaluate(signals:policy:)` combined with
    ///   failures that name its bus id (and NVIDIA's "GPU Excluded").
    /// - Sysfs devices no tool output described become kernel-only entries: health from the
    ///   failures that cover them (their bus id named, or their vendor's tool failed), else
    ///   `unknown` / notReported "no vendor tool output". Never healthy.
    /// - Devices only in vendor output (no sysfs, e.g. in a container) are kept. Duplicate
    ///   reports of one device (same bus id or id) keep the first.
    /// - Sorted by vendor (declaration order), then index, then id.
    public static func merge(
        sysfs: [SysfsDevice], vendor results: [VendorParseResult], failures: [ToolFailure],
        policy: HealthPolicy = HealthPolicy()
    ) -> [DeviceInventory] {
        var sysfsByBus: [String: SysfsDevice] = [:]
        for dev in sysfs {
            let bus = normalizePCIBusID(dev.busID) ?? dev.busID
            if sysfsByBus[bus] == nil { sysfsByBus[bus] = dev }
        }
        var out: [DeviceInventory] = []
        var usedBus = Set<String>()
        var usedIDs = Set<String>()

        for result in results {
            for var d in result.devices {
                let bus = d.pciBusID.flatMap(normalizePCIBusID)
                if let bus { d.pciBusID = bus }
                if let bus, usedBus.contains(bus) { continue }
                if usedIDs.contains(d.id) { continue }
                if d.driverVersion == nil { d.driverVersion = result.driverVersion }
                var parts: [DeviceHealth] = []
                if let bus, let s = sysfsByBus[bus] {
                    fill(&d, from: s)
                }
                parts.append(HealthEvaluator.evaluate(signals: d.signals, policy: policy))
                if let bus, let s = sysfsByBus[bus] {
                    if s.nvidia?.excluded == true {
                        parts.append(DeviceHealth(state: .unhealthy, reasons: [HealthReason(.other, "the NVIDIA driver excludes this GPU (GPU Excluded: Yes)")]))
                    }
                }
                if let bus {
                    for f in failures where f.busIDs?.contains(bus) == true { parts.append(f.health) }
                }
                d.health = HealthEvaluator.combine(parts)
                if let bus { usedBus.insert(bus) }
                usedIDs.insert(d.id)
                out.append(d)
            }
        }

        var nextIndex: [AcceleratorVendor: Int] = [:]
        for d in out { nextIndex[d.vendor] = max(nextIndex[d.vendor] ?? 0, d.index + 1) }
        for (bus, s) in sysfsByBus.sorted(by: { $0.key < $1.key }) where !usedBus.contains(bus) {
            let index = nextIndex[s.vendor, default: 0]
            nextIndex[s.vendor] = index + 1
            var d = s.inventory(index: index)
            d.pciBusID = bus
            if usedIDs.contains(d.id) { d.id = bus }
            let covering = failures.filter { f in
                if let ids = f.busIDs { return ids.contains(bus) }
                return f.vendors.contains(s.vendor)
            }
            if !covering.isEmpty {
                var parts = covering.map(\.health)
                if d.health.state == .unhealthy {  // excluded by the driver; keep that
                    parts.append(DeviceHealth(state: .unhealthy, reasons: d.health.reasons.filter { $0.kind != .notReported }))
                }
                d.health = HealthEvaluator.combine(parts)
            }
            usedIDs.insert(d.id)
            out.append(d)
        }

        // Topology tools add links to the devices of their vendor, by index.
        for result in results where !result.links.isEmpty {
            let vendor = result.tool.vendor
            for i in out.indices where out[i].vendor == vendor {
                guard let links = result.links[out[i].index] else { continue }
                out[i].nvlinkPeers = links.nvlinkPeers
                if out[i].numaNode == nil { out[i].numaNode = links.numaNode }
                if !links.nvlinkPeers.isEmpty && !out[i].interconnects.contains("NVLink") { out[i].interconnects.append("NVLink") }
            }
        }

        let order = Dictionary(uniqueKeysWithValues: AcceleratorVendor.allCases.enumerated().map { ($1, $0) })
        return stableIdentities(out.sorted { a, b in
            let va = order[a.vendor] ?? 0, vb = order[b.vendor] ?? 0
            if va != vb { return va < vb }
            if a.index != b.index { return a.index < b.index }
            return a.id < b.id
        })
    }

    /// Device ids are the last segment of a resource name (`cg://region/node/<device>`), so they
    /// must be identifiers and should survive reboots, driver updates and a card moving slot:
    /// the vendor's UUID, else the board serial (`sn:<serial>`), else the PCI bus id, else
    /// `<tool>:<index>`. Parsers give UUID or bus id; this prefers a serial over a bus id or
    /// an index, and replaces anything that is not an identifier. Partition ids follow their
    /// device's.
    static func stableIdentities(_ devices: [DeviceInventory]) -> [DeviceInventory] {
        var out = devices
        var taken = Set(devices.map(\.id))
        let serialCounts = Dictionary(devices.compactMap(\.serial).map { ($0, 1) }, uniquingKeysWith: +)
        func usable(_ id: String) -> Bool { IdentifierRules.problem(with: id) == nil && !taken.contains(id) }
        for i in out.indices {
            let d = out[i]
            let weak = d.id == d.pciBusID || VendorTool.allCases.contains { d.id.hasPrefix($0.rawValue + ":") }
                || IdentifierRules.problem(with: d.id) != nil
            guard weak else { continue }
            var candidates: [String] = []
            if let serial = d.serial, serialCounts[serial] == 1 { candidates.append("sn:" + serial) }
            if IdentifierRules.problem(with: d.id) != nil {
                if let bus = d.pciBusID { candidates.append(bus) }
                candidates.append("\(d.vendor.rawValue):\(d.index)")
                candidates.append("\(d.vendor.rawValue):\(d.index):\(i)")
            }
            guard let id = candidates.first(where: usable) else { continue }
            taken.remove(d.id)
            taken.insert(id)
            out[i].id = id
            for j in out[i].partitions.indices {
                let p = out[i].partitions[j].id
                if p.hasPrefix(d.id + "/") { out[i].partitions[j].id = id + "/" + ResourceName.partitionSegment(p, of: d.id) }
            }
        }
        for i in out.indices {
            for j in out[i].partitions.indices {
                let p = out[i].partitions[j].id
                let device = out[i].id
                let local = ResourceName.partitionSegment(p, of: device)
                if IdentifierRules.problem(with: local) != nil { out[i].partitions[j].id = device + "/part\(j)" }
            }
        }
        return out
    }

    /// Fills what the vendor tool left out from the kernel's view.
    static func fill(_ d: inout DeviceInventory, from s: SysfsDevice) {
        if let numa = s.numaNode { d.numaNode = numa }
        if d.pciDeviceID == nil, let id = s.deviceID { d.pciDeviceID = "0x" + String(format4: id) }
        if d.memoryTotalMiB == nil, let v = s.vramTotalBytes { d.memoryTotalMiB = Int(v / (1024 * 1024)) }
        if d.memoryUsedMiB == nil, let v = s.vramUsedBytes { d.memoryUsedMiB = Int(v / (1024 * 1024)) }
        if d.temperatureC == nil { d.temperatureC = s.temperatureC }
        if d.signals.temperatureC == nil { d.signals.temperatureC = d.temperatureC }
        if d.powerDrawW == nil { d.powerDrawW = s.powerDrawW }
        if d.powerLimitW == nil { d.powerLimitW = s.powerCapW }
        if d.utilizationPercent == nil { d.utilizationPercent = s.busyPercent }
        if d.driverVersion == nil { d.driverVersion = s.driverVersion }
        if d.firmwareVersion == nil { d.firmwareVersion = s.nvidia?.gpuFirmware }
        if d.model.trimmingSpaces().isEmpty { d.model = s.fallbackModel }
        if let link = s.maxLink.interconnectName, !d.interconnects.contains(where: { $0.hasPrefix("PCIe") }) {
            d.interconnects.append(link)
        }
    }
}

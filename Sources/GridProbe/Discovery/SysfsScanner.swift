import Foundation
import GridCore

/// A PCIe link as sysfs reports it (`max_link_*` or `current_link_*`).
public struct SysfsPCIeLink: Codable, Sendable, Hashable {
    /// Transfer rate per lane, e.g. 16.0 for "16.0 GT/s PCIe" (new kernels) or "16 GT/s" (old).
    public var speedGTs: Double?
    /// PCIe generation derived from the rate (2.5 → 1 … 64 → 6), nil when the rate is unknown.
    public var generation: Int?
    /// Lane count, e.g. 16.
    public var width: Int?

    public init(speedGTs: Double? = nil, generation: Int? = nil, width: Int? = nil) {
        self.speedGTs = speedGTs
        self.generation = generation
        self.width = width
    }

    /// Whether sysfs told us anything at all about this link.
    public var isEmpty: Bool { speedGTs == nil && width == nil }
}

/// What `/proc/driver/nvidia/gpus/<bus>/information` says about one GPU. This file works even
/// when NVML is broken, so it is the fallback identity for NVIDIA devices.
public struct SysfsNvidiaProcInfo: Codable, Sendable, Hashable {
    public var model: String?
    public var uuid: String?
    public var irq: Int?
    /// nil when the driver prints the "??.??.??.??.??" placeholder.
    public var videoBIOS: String?
    public var busType: String?
    public var busLocation: String?
    /// Minor number of `/dev/nvidia<N>`.
    public var deviceMinor: Int?
    /// GSP firmware version (newer drivers only).
    public var gpuFirmware: String?
    /// "GPU Excluded" (or "Blacklisted" on older drivers): the driver refuses to use the GPU.
    public var excluded: Bool?

    public init(
        model: String? = nil, uuid: String? = nil, irq: Int? = nil, videoBIOS: String? = nil,
        busType: String? = nil, busLocation: String? = nil, deviceMinor: Int? = nil,
        gpuFirmware: String? = nil, excluded: Bool? = nil
    ) {
        self.model = model
        self.uuid = uuid
        self.irq = irq
        self.videoBIOS = videoBIOS
        self.busType = busType
        self.busLocation = busLocation
        self.deviceMinor = deviceMinor
        self.gpuFirmware = gpuFirmware
        self.excluded = excluded
    }
}

/// One accelerator found on the PCI bus, with everything the kernel exposes about it without a
/// vendor tool. Fields are nil when the kernel did not say (or said something unreadable; the
/// scan's warnings then name the file).
public struct SysfsDevice: Codable, Sendable, Hashable {
    /// Normalised PCI address, lowercase with a 4-hex-digit domain: `0000:3b:00.0`.
    public var busID: String
    public var vendorID: UInt16
    public var deviceID: UInt16?
    public var subsystemVendorID: UInt16?
    public var subsystemDeviceID: UInt16?
    /// 24-bit PCI class code, e.g. 0x030200 (3D controller) or 0x120000 (processing accelerator).
    public var classCode: UInt32
    public var vendor: AcceleratorVendor
    /// nil for NUMA_NO_NODE (-1) or kernels without CONFIG_NUMA.
    public var numaNode: Int?
    public var maxLink: SysfsPCIeLink
    public var currentLink: SysfsPCIeLink
    /// Bound kernel driver (basename of the `driver` symlink), nil when none is bound.
    public var driver: String?
    /// DRM primary node name, e.g. "card1".
    public var drmCard: String?
    /// Compute-accelerator node name, e.g. "accel0" (or "hl0" on pre-accel habanalabs kernels).
    public var accelNode: String?
    /// habanalabs `device_type`, e.g. "GAUDI2".
    public var accelDeviceType: String?
    /// amdgpu `mem_info_vram_total` / `mem_info_vram_used`, bytes.
    public var vramTotalBytes: UInt64?
    public var vramUsedBytes: UInt64?
    /// amdgpu `gpu_busy_percent`.
    public var busyPercent: Double?
    /// hwmon temperatures in °C keyed by label ("edge", "junction", "mem") or "tempN".
    public var temperaturesC: [String: Double]
    /// The temperature to show: "edge" when labelled, else the lowest-numbered sensor.
    public var temperatureC: Double?
    /// hwmon `power1_average` (or `power1_input`), watts.
    public var powerDrawW: Double?
    /// hwmon `power1_cap` (or habanalabs `max_power`), watts.
    public var powerCapW: Double?
    public var nvidia: SysfsNvidiaProcInfo?
    /// NVIDIA kernel module version from `/proc/driver/nvidia/version`.
    public var driverVersion: String?

    public init(
        busID: String, vendorID: UInt16, deviceID: UInt16? = nil, subsystemVendorID: UInt16? = nil,
        subsystemDeviceID: UInt16? = nil, classCode: UInt32, vendor: AcceleratorVendor,
        numaNode: Int? = nil, maxLink: SysfsPCIeLink = SysfsPCIeLink(),
        currentLink: SysfsPCIeLink = SysfsPCIeLink(), driver: String? = nil, drmCard: String? = nil,
        accelNode: String? = nil, accelDeviceType: String? = nil, vramTotalBytes: UInt64? = nil,
        vramUsedBytes: UInt64? = nil, busyPercent: Double? = nil, temperaturesC: [String: Double] = [:],
        temperatureC: Double? = nil, powerDrawW: Double? = nil, powerCapW: Double? = nil,
        nvidia: SysfsNvidiaProcInfo? = nil, driverVersion: String? = nil
    ) {
        self.busID = busID
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemDeviceID = subsystemDeviceID
        self.classCode = classCode
        self.vendor = vendor
        self.numaNode = numaNode
        self.maxLink = maxLink
        self.currentLink = currentLink
        self.driver = driver
        self.drmCard = drmCard
        self.accelNode = accelNode
        self.accelDeviceType = accelDeviceType
        self.vramTotalBytes = vramTotalBytes
        self.vramUsedBytes = vramUsedBytes
        self.busyPercent = busyPercent
        self.temperaturesC = temperaturesC
        self.temperatureC = temperatureC
        self.powerDrawW = powerDrawW
        self.powerCapW = powerCapW
        self.nvidia = nvidia
        self.driverVersion = driverVersion
    }
}

/// The accelerators found and everything that went wrong while looking.
public struct SysfsScanResult: Codable, Sendable, Hashable {
    /// Sorted by bus id.
    public var devices: [SysfsDevice]
    /// One line per problem, each naming the file (e.g. "…/numa_node: expected an integer…").
    public var warnings: [String]
    /// False when `<sys>/bus/pci/devices` could not be listed (no sysfs: a container without
    /// /sys, a wrong root). Then "no devices" means "cannot tell", not "none".
    public var pciBusListed: Bool

    public init(devices: [SysfsDevice], warnings: [String], pciBusListed: Bool = true) {
        self.devices = devices
        self.warnings = warnings
        self.pciBusListed = pciBusListed
    }

    /// Same as `warnings`: unreadable or malformed files, each naming its path. Never fatal.
    public var problems: [String] { warnings }
}

/// Finds accelerators from the kernel's view (sysfs + NVIDIA procfs), with no vendor tool.
///
/// This is the inventory of last resort: it still works when nvidia-smi hangs, NVML is broken
/// or the vendor CLI is not installed, and it supplies what vendor tools often omit (NUMA node,
/// PCIe link). Roots are injected so tests (and containers with host /sys mounted elsewhere)
/// can point it at any tree. Reads never throw: problems become `warnings`.
public struct SysfsScanner: Sendable {
    public var sysRoot: URL
    public var procRoot: URL

    /// PCI vendor ids we can name. NVIDIA, AMD, Intel and Habana ids are confirmed in
    /// Tests/Fixtures/sysfs-notes.md; Huawei (0x19e5), Hygon (0x1d94) and Iluvatar (0x1e3e)
    /// are from the PCI id database, not from the notes.
    public static let vendorIDs: [UInt16: AcceleratorVendor] = [
        0x10de: .nvidia, 0x1002: .amd, 0x8086: .intel, 0x1da3: .habana,
        0x19e5: .huawei, 0x1d94: .hygon, 0x1e3e: .iluvatar,
    ]

    /// Vendors whose *display controllers* (class 0x03xxxx) are accelerators. Other display
    /// controllers (BMC VGA such as ASPEED 0x1a03, Matrox) are not.
    public static let displayAcceleratorVendors: Set<AcceleratorVendor> = [.nvidia, .amd, .intel, .hygon, .iluvatar]

    public init(sysRoot: URL = URL(fileURLWithPath: "/sys"), procRoot: URL = URL(fileURLWithPath: "/proc")) {
        self.sysRoot = sysRoot
        self.procRoot = procRoot
    }

    /// Scans the tree under `root` as if it were `/`: `<root>/sys` and `<root>/proc`. Tests build
    /// fake trees in a temporary directory and pass it here.
    public init(root: URL) {
        self.init(
            sysRoot: root.appendingPathComponent("sys", isDirectory: true),
            procRoot: root.appendingPathComponent("proc", isDirectory: true))
    }

    /// Whether a PCI function is an accelerator we schedule, and which vendor it is.
    ///
    /// Keeps display controllers (class 0x03) of GPU vendors and processing accelerators
    /// (class 0x12) of any vendor. NVSwitch (0x0680xx bridges) and everything else is skipped.
    /// Intel display controllers at 0000:00:02.x are integrated graphics and are skipped too.
    public static func classify(vendorID: UInt16, classCode: UInt32, busID: String) -> AcceleratorVendor? {
        let vendor = vendorIDs[vendorID] ?? .unknown
        let base = classCode >> 16
        if classCode >> 8 == 0x0680 { return nil }  // NVSwitch and other "other bridge" devices
        if base == 0x12 { return vendor }
        if base == 0x03 {
            guard displayAcceleratorVendors.contains(vendor) else { return nil }
            if vendor == .intel, isIntegratedGraphicsSlot(busID) { return nil }
            return vendor
        }
        return nil
    }

    /// Intel iGPUs always sit at bus 0, device 2 of the root complex.
    static func isIntegratedGraphicsSlot(_ busID: String) -> Bool {
        let parts = busID.split(separator: ":")
        guard parts.count == 3 else { return false }
        return parts[1] == "00" && parts[2].hasPrefix("02.")
    }

    /// Maps a sysfs link-speed string to (GT/s, generation). Accepts old ("8 GT/s") and new
    /// ("8.0 GT/s PCIe") spellings. Returns nil for "Unknown"/"Unknown speed" (link down);
    /// throws away (returns `.garbage`) anything else that has no leading number.
    static func parseLinkSpeed(_ raw: String) -> LinkSpeedParse {
        let trimmed = raw.trimmingSpaces()
        if trimmed.lowercased().hasPrefix("unknown") { return .unknown }
        let numberPart = trimmed.prefix { $0.isNumber || $0 == "." }
        guard let rate = Double(numberPart), rate > 0, trimmed.contains("GT/s") else { return .garbage }
        let table: [(Double, Int)] = [(2.5, 1), (5, 2), (8, 3), (16, 4), (32, 5), (64, 6), (128, 7)]
        let gen = table.first { abs($0.0 - rate) < 0.01 }?.1
        return .rate(rate, gen)
    }

    enum LinkSpeedParse: Equatable {
        case rate(Double, Int?)
        case unknown
        case garbage
    }

    /// Walks the PCI bus and returns every accelerator with the facts the kernel exposes.
    public func scan() -> SysfsScanResult {
        var reader = SysfsAttributeReader()
        let sys = sysRoot.discoveryFileSystemPath
        let proc = procRoot.discoveryFileSystemPath
        let pciRoot = sys + "/bus/pci/devices"
        guard let entries = reader.list(pciRoot) else {
            reader.warn("\(pciRoot): no PCI bus directory; no accelerators can be found from sysfs")
            return SysfsScanResult(devices: [], warnings: reader.warnings, pciBusListed: false)
        }

        var candidates: [(busID: String, dir: String, vendorID: UInt16, classCode: UInt32, vendor: AcceleratorVendor)] = []
        for entry in entries {
            let dir = pciRoot + "/" + entry
            guard let busID = InventoryMerger.normalizePCIBusID(entry) else {
                reader.warn("\(dir): not a PCI address; skipped")
                continue
            }
            // Vendor and class decide whether we care; without them we cannot classify.
            guard let vendorRaw = reader.hex(dir + "/vendor"), let classCode = reader.hex(dir + "/class") else {
                if reader.warnings.last?.hasPrefix(dir) != true {
                    reader.warn("\(dir): vendor or class attribute missing; device skipped")
                }
                continue
            }
            guard vendorRaw <= 0xffff else {
                reader.warn("\(dir)/vendor: 0x\(String(vendorRaw, radix: 16)) is not a 16-bit vendor id")
                continue
            }
            let vendorID = UInt16(vendorRaw)
            guard let vendor = Self.classify(vendorID: vendorID, classCode: classCode, busID: busID) else { continue }
            candidates.append((busID, dir, vendorID, classCode, vendor))
        }
        if candidates.isEmpty {
            return SysfsScanResult(devices: [], warnings: reader.warnings)
        }

        let drmCards = classDeviceMap(&reader, classDir: sys + "/class/drm") {
            $0.hasPrefix("card") && !$0.contains("-")
        }
        var accelNodes = classDeviceMap(&reader, classDir: sys + "/class/accel") { $0.hasPrefix("accel") }
        let legacyHabana = classDeviceMap(&reader, classDir: sys + "/class/habanalabs") { $0.hasPrefix("hl") }
        accelNodes.merge(legacyHabana) { current, _ in current }

        let needsNvidia = candidates.contains { $0.vendor == .nvidia }
        let nvidiaInfo = needsNvidia ? nvidiaProcInfo(&reader, procRoot: proc) : [:]
        let nvidiaVersion = needsNvidia ? nvidiaDriverVersion(&reader, procRoot: proc) : nil

        var devices: [SysfsDevice] = []
        for c in candidates {
            var d = SysfsDevice(busID: c.busID, vendorID: c.vendorID, classCode: c.classCode, vendor: c.vendor)
            d.deviceID = reader.hex(c.dir + "/device").flatMap { UInt16(exactly: $0) }
            d.subsystemVendorID = reader.hex(c.dir + "/subsystem_vendor").flatMap { UInt16(exactly: $0) }
            d.subsystemDeviceID = reader.hex(c.dir + "/subsystem_device").flatMap { UInt16(exactly: $0) }
            if let numa = reader.integer(c.dir + "/numa_node") {
                if numa >= 0, numa < 1 << 16 { d.numaNode = Int(numa) } else if numa != -1 {
                    reader.warn("\(c.dir)/numa_node: \(numa) is not a NUMA node")
                }
            }
            d.maxLink = link(&reader, dir: c.dir, prefix: "max")
            d.currentLink = link(&reader, dir: c.dir, prefix: "current")
            d.driver = reader.linkBasename(c.dir + "/driver")
            d.drmCard = drmCards[c.busID]?.name
            if let accel = accelNodes[c.busID] {
                d.accelNode = accel.name
                if let type = reader.string(accel.classPath + "/device_type") ?? reader.string(c.dir + "/device_type"),
                    !type.isEmpty
                {
                    d.accelDeviceType = type
                }
            }
            d.vramTotalBytes = unsigned(&reader, c.dir + "/mem_info_vram_total")
            d.vramUsedBytes = unsigned(&reader, c.dir + "/mem_info_vram_used")
            if let busy = reader.integer(c.dir + "/gpu_busy_percent") {
                if (0...100).contains(busy) { d.busyPercent = Double(busy) } else {
                    reader.warn("\(c.dir)/gpu_busy_percent: \(busy) is outside 0...100")
                }
            }
            readHwmon(&reader, into: &d, dir: c.dir)
            if d.powerCapW == nil, c.vendor == .habana, let mw = unsigned(&reader, c.dir + "/max_power") {
                d.powerCapW = Double(mw) / 1000
            }
            if c.vendor == .nvidia {
                d.nvidia = nvidiaInfo[c.busID]
                d.driverVersion = nvidiaVersion
            }
            devices.append(d)
        }
        return SysfsScanResult(devices: devices, warnings: reader.warnings)
    }

    /// Scans and converts to inventory, dropping warnings. Use `scan()` to see what went wrong.
    public func inventory() -> [DeviceInventory] {
        scan().inventory()
    }

    // MARK: - Pieces

    private func unsigned(_ reader: inout SysfsAttributeReader, _ path: String) -> UInt64? {
        guard let v = reader.integer(path) else { return nil }
        guard v >= 0 else {
            reader.warn("\(path): negative value \(v)")
            return nil
        }
        return UInt64(v)
    }

    private func link(_ reader: inout SysfsAttributeReader, dir: String, prefix: String) -> SysfsPCIeLink {
        var link = SysfsPCIeLink()
        let speedPath = "\(dir)/\(prefix)_link_speed"
        if let raw = reader.string(speedPath) {
            switch Self.parseLinkSpeed(raw) {
            case .rate(let rate, let gen):
                link.speedGTs = rate
                link.generation = gen
            case .unknown: break
            case .garbage: reader.warn("\(speedPath): expected e.g. '16.0 GT/s PCIe', got '\(SysfsAttributeReader.clip(raw))'")
            }
        }
        let widthPath = "\(dir)/\(prefix)_link_width"
        if let raw = reader.string(widthPath) {
            let digits = raw.hasPrefix("x") ? String(raw.dropFirst()) : raw.hasSuffix("x") ? String(raw.dropLast()) : raw
            if let w = Int(digits), (0...64).contains(w) { link.width = w } else {
                reader.warn("\(widthPath): expected a lane count, got '\(SysfsAttributeReader.clip(raw))'")
            }
        }
        return link
    }

    private func readHwmon(_ reader: inout SysfsAttributeReader, into d: inout SysfsDevice, dir: String) {
        guard let hwmons = reader.list(dir + "/hwmon") else { return }
        for hwmon in hwmons where hwmon.hasPrefix("hwmon") {
            let h = dir + "/hwmon/" + hwmon
            guard let files = reader.list(h) else { continue }
            var lowestIndex = Int.max
            for file in files where file.hasPrefix("temp") && file.hasSuffix("_input") {
                guard let index = Int(file.dropFirst(4).dropLast(6)) else { continue }
                guard let milli = reader.integer(h + "/" + file) else { continue }
                let celsius = Double(milli) / 1000
                guard (-100...300).contains(celsius) else {
                    reader.warn("\(h)/\(file): \(milli) m°C is not a plausible temperature")
                    continue
                }
                let label = reader.string(h + "/temp\(index)_label").flatMap { $0.isEmpty ? nil : $0 } ?? "temp\(index)"
                d.temperaturesC[label] = celsius
                if label == "edge" {
                    d.temperatureC = celsius
                    lowestIndex = -1
                } else if index < lowestIndex {
                    d.temperatureC = celsius
                    lowestIndex = index
                }
            }
            if d.powerDrawW == nil {
                let avg = h + "/power1_average"
                if let uw = unsigned(&reader, avg) ?? unsigned(&reader, h + "/power1_input") {
                    d.powerDrawW = Double(uw) / 1_000_000
                }
            }
            if d.powerCapW == nil, let uw = unsigned(&reader, h + "/power1_cap") {
                d.powerCapW = Double(uw) / 1_000_000
            }
        }
    }

    struct ClassNode {
        var name: String
        var classPath: String
    }

    /// Maps PCI bus id → class-device node (e.g. `card1`) by resolving `<node>/device`.
    private func classDeviceMap(
        _ reader: inout SysfsAttributeReader, classDir: String, keep: (String) -> Bool
    ) -> [String: ClassNode] {
        guard let names = reader.list(classDir) else { return [:] }
        var map: [String: ClassNode] = [:]
        for name in names where keep(name) {
            let nodePath = classDir + "/" + name
            guard let target = reader.resolve(nodePath + "/device") else { continue }
            let last = target.split(separator: "/").last.map(String.init) ?? ""
            // Platform or virtual devices (simpledrm, vkms) have no PCI address: not ours.
            guard let busID = InventoryMerger.normalizePCIBusID(last) else { continue }
            if map[busID] == nil { map[busID] = ClassNode(name: name, classPath: nodePath) }
        }
        return map
    }

    private func nvidiaProcInfo(_ reader: inout SysfsAttributeReader, procRoot: String) -> [String: SysfsNvidiaProcInfo] {
        let gpusDir = procRoot + "/driver/nvidia/gpus"
        guard let dirs = reader.list(gpusDir) else { return [:] }
        var out: [String: SysfsNvidiaProcInfo] = [:]
        for dir in dirs {
            guard let busID = InventoryMerger.normalizePCIBusID(dir) else {
                reader.warn("\(gpusDir)/\(dir): not a PCI address; skipped")
                continue
            }
            let path = "\(gpusDir)/\(dir)/information"
            guard let text = reader.string(path) else { continue }
            switch Self.parseNvidiaInformation(text) {
            case .some(let info):
                if info.model == nil { reader.warn("\(path): no 'Model:' line") }
                out[busID] = info
            case .none:
                reader.warn("\(path): no 'key: value' lines; contents '\(SysfsAttributeReader.clip(text))'")
            }
        }
        return out
    }

    /// Parses the `information` file: `key:<tabs/spaces>value` lines, split on the first colon.
    /// Returns nil when no line has that shape.
    static func parseNvidiaInformation(_ text: String) -> SysfsNvidiaProcInfo? {
        var info = SysfsNvidiaProcInfo()
        var sawPair = false
        for line in text.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingSpaces().lowercased()
            let value = line[line.index(after: colon)...].trimmingSpaces()
            guard !key.isEmpty else { continue }
            sawPair = true
            let nonEmpty = value.isEmpty ? nil : value
            switch key {
            case "model": info.model = nonEmpty
            case "irq": info.irq = Int(value)
            case "gpu uuid": info.uuid = nonEmpty
            case "video bios": info.videoBIOS = value.contains("??") ? nil : nonEmpty
            case "bus type": info.busType = nonEmpty
            case "bus location": info.busLocation = nonEmpty
            case "device minor": info.deviceMinor = Int(value)
            case "gpu firmware": info.gpuFirmware = nonEmpty
            case "gpu excluded", "blacklisted":
                switch value.lowercased() {
                case "yes": info.excluded = true
                case "no": info.excluded = false
                default: break
                }
            default: break
            }
        }
        return sawPair ? info : nil
    }

    /// The version token of "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  595.84  Release Build".
    private func nvidiaDriverVersion(_ reader: inout SysfsAttributeReader, procRoot: String) -> String? {
        let path = procRoot + "/driver/nvidia/version"
        guard let text = reader.string(path) else { return nil }
        guard let line = text.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("NVRM version:") }) else {
            reader.warn("\(path): no 'NVRM version:' line")
            return nil
        }
        let token = line.split(separator: " ").first { word in
            let parts = word.split(separator: ".", omittingEmptySubsequences: false)
            return parts.count >= 2 && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isNumber) }
        }
        guard let token else {
            reader.warn("\(path): no version number in '\(SysfsAttributeReader.clip(String(line), 80))'")
            return nil
        }
        return String(token)
    }
}

import Foundation

/// Accelerator vendors the network knows. `unknown` keeps devices we cannot name schedulable
/// only by explicit request.
public enum AcceleratorVendor: String, Codable, Sendable, CaseIterable {
    case nvidia, amd, hygon, huawei, intel, habana, iluvatar, unknown

    /// The environment variable a vendor runtime reads to restrict a process to some devices.
    public var visibleDevicesVariables: [String] {
        switch self {
        case .nvidia: return ["CUDA_VISIBLE_DEVICES"]
        case .iluvatar: return ["CUDA_VISIBLE_DEVICES"]
        case .amd: return ["ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"]
        case .hygon: return ["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"]
        case .huawei: return ["ASCEND_RT_VISIBLE_DEVICES"]
        case .habana: return ["HABANA_VISIBLE_MODULES"]
        case .intel: return ["ZE_AFFINITY_MASK"]
        case .unknown: return []
        }
    }

    /// Parses loose spellings from configs, job files and vendor tools.
    public init?(loose: String) {
        switch loose.lowercased().trimmingCharacters(in: .whitespaces) {
        case "nvidia", "nv", "cuda": self = .nvidia
        case "amd", "rocm", "ati": self = .amd
        case "hygon", "dcu": self = .hygon
        case "huawei", "ascend", "npu": self = .huawei
        case "intel", "xpu": self = .intel
        case "habana", "gaudi", "hpu": self = .habana
        case "iluvatar", "corex": self = .iluvatar
        case "unknown": self = .unknown
        default: return nil
        }
    }
}

/// Vendor-neutral health state. Ordered from best to worst so the worst of several can be
/// taken with `max`.
public enum HealthState: String, Codable, Sendable, CaseIterable, Comparable, CodingKeyRepresentable {
    case healthy, degraded, unknown, unhealthy

    private var rank: Int {
        switch self {
        case .healthy: return 0
        case .degraded: return 1
        case .unknown: return 2
        case .unhealthy: return 3
        }
    }
    public static func < (a: HealthState, b: HealthState) -> Bool { a.rank < b.rank }
}

/// Why a device is not (or not known to be) healthy. Open set on the wire: unknown kinds
/// arriving from newer agents decode as `.other`.
public enum HealthReasonKind: String, Codable, Sendable, CaseIterable {
    case eccUncorrectable = "ecc_uncorrectable"
    case retiredPagesPending = "retired_pages_pending"
    case remappedRowsPending = "remapped_rows_pending"
    case remappingFailed = "remapping_failed"
    case xid = "xid"
    case thermalThrottle = "thermal_throttle"
    case powerThrottle = "power_throttle"
    case temperatureOverLimit = "temperature_over_limit"
    case fallenOffBus = "fallen_off_bus"
    case driverMismatch = "driver_mismatch"
    case toolTimeout = "tool_timeout"
    case toolFailed = "tool_failed"
    case unparseable = "unparseable"
    case notReported = "not_reported"
    case other = "other"
}

public struct HealthReason: Codable, Sendable, Hashable {
    public var kind: HealthReasonKind
    /// What was seen, in words an operator can act on (values and thresholds included).
    public var detail: String
    public init(_ kind: HealthReasonKind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }
}

public struct DeviceHealth: Codable, Sendable, Hashable {
    public var state: HealthState
    public var reasons: [HealthReason]
    public init(state: HealthState, reasons: [HealthReason] = []) {
        self.state = state
        self.reasons = reasons
    }
    public static let healthy = DeviceHealth(state: .healthy)
    public static func unknown(_ reason: HealthReason) -> DeviceHealth {
        DeviceHealth(state: .unknown, reasons: [reason])
    }
}

/// Raw health evidence as a vendor tool reports it, before thresholds are applied.
/// Nil means "the tool did not say", which is not the same as zero.
public struct HealthSignals: Codable, Sendable, Hashable {
    public var eccUncorrectableVolatile: Int?
    public var eccUncorrectableAggregate: Int?
    public var eccCorrectableVolatile: Int?
    public var retiredPagesPending: Bool?
    public var retiredPagesCount: Int?
    public var remappedRowsPending: Bool?
    public var remappingFailed: Bool?
    public var thermalThrottleActive: Bool?
    public var powerThrottleActive: Bool?
    public var temperatureC: Double?
    /// The temperature at which the device slows itself down (vendor "slowdown" threshold).
    public var temperatureSlowdownC: Double?
    public var temperatureShutdownC: Double?
    /// Vendor fault codes seen (e.g. NVIDIA Xid numbers), most recent last.
    public var faultCodes: [Int]
    /// Free-text state the tool printed ("OK", "Warning", "Alarm", "Fallen off the bus").
    public var vendorHealthText: String?

    public init(
        eccUncorrectableVolatile: Int? = nil, eccUncorrectableAggregate: Int? = nil,
        eccCorrectableVolatile: Int? = nil, retiredPagesPending: Bool? = nil,
        retiredPagesCount: Int? = nil, remappedRowsPending: Bool? = nil, remappingFailed: Bool? = nil,
        thermalThrottleActive: Bool? = nil, powerThrottleActive: Bool? = nil,
        temperatureC: Double? = nil, temperatureSlowdownC: Double? = nil,
        temperatureShutdownC: Double? = nil, faultCodes: [Int] = [], vendorHealthText: String? = nil
    ) {
        self.eccUncorrectableVolatile = eccUncorrectableVolatile
        self.eccUncorrectableAggregate = eccUncorrectableAggregate
        self.eccCorrectableVolatile = eccCorrectableVolatile
        self.retiredPagesPending = retiredPagesPending
        self.retiredPagesCount = retiredPagesCount
        self.remappedRowsPending = remappedRowsPending
        self.remappingFailed = remappingFailed
        self.thermalThrottleActive = thermalThrottleActive
        self.powerThrottleActive = powerThrottleActive
        self.temperatureC = temperatureC
        self.temperatureSlowdownC = temperatureSlowdownC
        self.temperatureShutdownC = temperatureShutdownC
        self.faultCodes = faultCodes
        self.vendorHealthText = vendorHealthText
    }
}

/// A schedulable slice of a device (NVIDIA MIG instance, a die of a dual-die package...).
public struct DevicePartition: Codable, Sendable, Hashable {
    /// Stable id (MIG UUID when known, else "<parent>/gi<g>ci<c>").
    public var id: String
    /// Profile name, e.g. "3g.40gb".
    public var profile: String?
    public var memoryTotalMiB: Int?
    /// Fraction of the parent's compute this slice holds (0...1), when known.
    public var computeFraction: Double?
    /// The profile to schedule by: the reported one, else the memory ("20gb").
    public var schedulingProfile: String { profile ?? "\(((memoryTotalMiB ?? 0) + 1023) / 1024)gb" }

    /// What pins a process to this slice in CUDA_VISIBLE_DEVICES: a MIG UUID as reported, or
    /// MIG-<GPU UUID>/<GI>/<CI> from an id "<GPU UUID>/gi<GI>ci<CI>".
    public var visibleID: String {
        if id.hasPrefix("MIG-") { return id }
        let parts = id.split(separator: "/")
        if parts.count == 2, parts[1].hasPrefix("gi"), let ci = parts[1].range(of: "ci") {
            let gi = parts[1][parts[1].index(parts[1].startIndex, offsetBy: 2)..<ci.lowerBound]
            return "MIG-\(parts[0])/\(gi)/\(parts[1][ci.upperBound...])"
        }
        return id
    }

    public init(id: String, profile: String? = nil, memoryTotalMiB: Int? = nil, computeFraction: Double? = nil) {
        self.id = id
        self.profile = profile
        self.memoryTotalMiB = memoryTotalMiB
        self.computeFraction = computeFraction
    }
}

/// Device grade for circular utilization: the most demanding work a device still serves.
public enum DeviceGrade: String, Codable, Sendable, CaseIterable, Comparable {
    /// Frontier training.
    case a = "A"
    /// Training and fine-tuning.
    case b = "B"
    /// Inference.
    case c = "C"
    /// Edge / quantized inference.
    case d = "D"
    /// Retire: unrecoverable faults or no useful capability left.
    case r = "R"

    private var rank: Int { ["A": 0, "B": 1, "C": 2, "D": 3, "R": 4][rawValue]! }
    /// A < B means A is the more capable grade.
    public static func < (a: DeviceGrade, b: DeviceGrade) -> Bool { a.rank < b.rank }
}

/// A process the vendor tool lists on a device.
public struct DeviceProcess: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable {
        /// Computes on the device (CUDA "C", Ascend, Gaudi): it holds the device.
        case compute
        /// Graphics only (a display server, "G"): does not stop work from running.
        case graphics
    }
    public var pid: Int
    public var name: String
    public var kind: Kind
    public init(pid: Int, name: String, kind: Kind = .compute) {
        self.pid = pid
        self.name = name
        self.kind = kind
    }
}

/// One accelerator as the network sees it: identity, capability, live readings and health.
public struct DeviceInventory: Codable, Sendable, Hashable {
    /// Stable id: UUID when the tool gives one, else PCI bus id, else "<tool>:<index>".
    public var id: String
    /// The index the vendor runtime uses for this device (what goes in CUDA_VISIBLE_DEVICES etc.).
    public var index: Int
    public var vendor: AcceleratorVendor
    public var model: String
    public var memoryTotalMiB: Int?
    public var memoryUsedMiB: Int?
    public var pciBusID: String?
    public var pciDeviceID: String?
    public var architecture: String?
    public var computeCapability: String?
    public var serial: String?
    public var driverVersion: String?
    public var firmwareVersion: String?
    public var numaNode: Int?
    /// Links the tool reports (e.g. "NVLink", "xGMI", "HCCS").
    public var interconnects: [String]
    /// The indexes (`index`) of the node's devices this one has a direct fabric link to:
    /// NVLink from `nvidia-smi topo -m`, xGMI from `rocm-smi`'s link types; nil when unknown.
    /// `interconnect: nvlink` (`xgmi`) jobs get NVIDIA (AMD) devices that are all peers of
    /// each other.
    public var nvlinkPeers: [Int]?
    public var powerLimitW: Double?
    public var powerDrawW: Double?
    public var temperatureC: Double?
    public var utilizationPercent: Double?
    public var partitions: [DevicePartition]
    public var signals: HealthSignals
    public var health: DeviceHealth
    public var grade: DeviceGrade?
    public var gradeReason: String?
    /// Vendor-neutral compute units (see ARCHITECTURE.md), nil until graded.
    public var computeUnits: Double?
    /// Processes the vendor tool lists on the device (pid, name, compute or graphics); nil when
    /// the tool does not list them. Stays on the host: only `foreignProcesses` is reported.
    public var processes: [DeviceProcess]?
    /// Compute processes on the device that are not the agent's jobs (set by the agent). A
    /// device with any is held by someone else: reported busy and not placed on.
    public var foreignProcesses: Int?

    public init(
        id: String, index: Int, vendor: AcceleratorVendor, model: String,
        memoryTotalMiB: Int? = nil, memoryUsedMiB: Int? = nil, pciBusID: String? = nil,
        pciDeviceID: String? = nil, architecture: String? = nil, computeCapability: String? = nil,
        serial: String? = nil, driverVersion: String? = nil, firmwareVersion: String? = nil,
        numaNode: Int? = nil, interconnects: [String] = [], powerLimitW: Double? = nil,
        powerDrawW: Double? = nil, temperatureC: Double? = nil, utilizationPercent: Double? = nil,
        partitions: [DevicePartition] = [], signals: HealthSignals = HealthSignals(),
        health: DeviceHealth = .healthy, grade: DeviceGrade? = nil, gradeReason: String? = nil,
        computeUnits: Double? = nil
    ) {
        self.id = id
        self.index = index
        self.vendor = vendor
        self.model = model
        self.memoryTotalMiB = memoryTotalMiB
        self.memoryUsedMiB = memoryUsedMiB
        self.pciBusID = pciBusID
        self.pciDeviceID = pciDeviceID
        self.architecture = architecture
        self.computeCapability = computeCapability
        self.serial = serial
        self.driverVersion = driverVersion
        self.firmwareVersion = firmwareVersion
        self.numaNode = numaNode
        self.interconnects = interconnects
        self.powerLimitW = powerLimitW
        self.powerDrawW = powerDrawW
        self.temperatureC = temperatureC
        self.utilizationPercent = utilizationPercent
        self.partitions = partitions
        self.signals = signals
        self.health = health
        self.grade = grade
        self.gradeReason = gradeReason
        self.computeUnits = computeUnits
    }
}

/// What a device is and can do: changes only with hardware, firmware, partitioning or grading.
/// A region writes a node's record when this (or health) changes, never for telemetry.
public struct DeviceCapability: Sendable, Hashable {
    public var id: String
    public var index: Int
    public var vendor: AcceleratorVendor
    public var model: String
    public var memoryTotalMiB: Int?
    public var pciBusID: String?
    public var architecture: String?
    public var driverVersion: String?
    public var partitions: [DevicePartition]
    public var grade: DeviceGrade?
    public var computeUnits: Double?
}

/// Live readings: change on every probe, kept in memory only.
public struct DeviceTelemetry: Sendable, Hashable {
    public var memoryUsedMiB: Int?
    public var powerDrawW: Double?
    public var temperatureC: Double?
    public var utilizationPercent: Double?
}

extension DeviceInventory {
    public var capability: DeviceCapability {
        DeviceCapability(id: id, index: index, vendor: vendor, model: model, memoryTotalMiB: memoryTotalMiB,
                         pciBusID: pciBusID, architecture: architecture, driverVersion: driverVersion,
                         partitions: partitions, grade: grade, computeUnits: computeUnits)
    }

    public var telemetry: DeviceTelemetry {
        DeviceTelemetry(memoryUsedMiB: memoryUsedMiB, powerDrawW: powerDrawW, temperatureC: temperatureC,
                        utilizationPercent: utilizationPercent)
    }
}

extension DeviceInventory {
    /// A partitioned device's slices as inventories of their own: a copy of the device with the
    /// slice's id and memory and the slice as its only partition.
    public var slices: [DeviceInventory] {
        partitions.map { p in
            var slice = self
            slice.id = p.id
            slice.memoryTotalMiB = p.memoryTotalMiB ?? memoryTotalMiB
            slice.partitions = [p]
            return slice
        }
    }

    /// The slice this inventory is (one of `slices`), or nil for a whole device.
    public var slice: DevicePartition? {
        partitions.count == 1 && partitions[0].id == id ? partitions[0] : nil
    }

    /// The model as shown for a unit: "<model> [<profile>]" for a slice.
    public var unitName: String { slice.map { "\(model) [\($0.schedulingProfile)]" } ?? model }

    /// What placement offers: every whole device, or for a partitioned one its slices (never
    /// the partitioned device itself).
    public static func schedulableUnits(_ devices: [DeviceInventory]) -> [DeviceInventory] {
        devices.flatMap { $0.partitions.isEmpty ? [$0] : $0.slices }
    }

    /// The same units, each with the id of the device a slice belongs to (nil for a whole device).
    public static func schedulableUnitsWithParents(_ devices: [DeviceInventory]) -> [(unit: DeviceInventory, parent: String?)] {
        devices.flatMap { d -> [(unit: DeviceInventory, parent: String?)] in
            d.partitions.isEmpty ? [(d, nil)] : d.slices.map { ($0, d.id) }
        }
    }
}

import GridCore

/// The vendor command-line outputs the probe understands. The raw value names the format in
/// configs, logs and `--simulate` diagnostics.
public enum VendorTool: String, Sendable, Codable, CaseIterable {
    /// `nvidia-smi -q -x` (every DTD version, MIG, Windows captures).
    case nvidiaSMIXML = "nvidia-smi-xml"
    /// `nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`.
    case nvidiaSMICSV = "nvidia-smi-csv"
    /// `rocm-smi --json` style outputs (ROCm 4 to 6, Hygon DCU).
    case rocmSMIJSON = "rocm-smi-json"
    /// `npu-smi info` tables (Ascend 310, 310P/B, 910A, 910B, A3 dual-die).
    case npuSMI = "npu-smi"
    /// `hl-smi` default table.
    case hlSMI = "hl-smi"
    /// `hl-smi -L` per-device listing.
    case hlSMIList = "hl-smi-list"
    /// `xpu-smi discovery` (table, `-d`, `-j`).
    case xpuSMIDiscovery = "xpu-smi-discovery"
    /// `xpu-smi dump` CSV.
    case xpuSMIDump = "xpu-smi-dump"
    /// Iluvatar `ixsmi` (nvidia-smi-like table).
    case ixSMI = "ixsmi"
    /// `nvidia-smi topo -m`: NVLink peers and NUMA affinity by GPU index (no devices of its own).
    case nvidiaSMITopo = "nvidia-smi-topo"

    public var vendor: AcceleratorVendor {
        switch self {
        case .nvidiaSMIXML, .nvidiaSMICSV, .nvidiaSMITopo: return .nvidia
        case .rocmSMIJSON: return .amd
        case .npuSMI: return .huawei
        case .hlSMI, .hlSMIList: return .habana
        case .xpuSMIDiscovery, .xpuSMIDump: return .intel
        case .ixSMI: return .iluvatar
        }
    }
}

/// What a vendor parser saw: devices with identity, capability, readings and raw health
/// signals. Health state is left `unknown/notReported` for the health evaluator to decide.
public struct VendorParseResult: Sendable, Hashable {
    public var tool: VendorTool
    public var devices: [DeviceInventory]
    public var driverVersion: String?
    public var toolVersion: String?
    /// Things the parser skipped or could not read, for logs; never fatal.
    public var warnings: [String]
    /// Topology tools: links by the vendor's device index (the devices come from other tools).
    public var links: [Int: DeviceLinks] = [:]

    public init(
        tool: VendorTool, devices: [DeviceInventory] = [], driverVersion: String? = nil,
        toolVersion: String? = nil, warnings: [String] = []
    ) {
        self.tool = tool
        self.devices = devices
        self.driverVersion = driverVersion
        self.toolVersion = toolVersion
        self.warnings = warnings
    }
}

/// How one device is connected to the others of its node (a topology tool's view).
public struct DeviceLinks: Sendable, Hashable {
    /// Indexes of the devices it has a direct NVLink (xGMI, HCCS) to.
    public var nvlinkPeers: [Int] = []
    public var numaNode: Int?
    public init(nvlinkPeers: [Int] = [], numaNode: Int? = nil) {
        self.nvlinkPeers = nvlinkPeers
        self.numaNode = numaNode
    }
}

/// Why vendor output could not be turned into devices. Cases may be added.
public enum VendorParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No parser recognises the text; `hint` quotes its first line.
    case unrecognizedFormat(hint: String)
    /// The text looks like `tool` output but is broken at `detail`.
    case malformed(tool: VendorTool, detail: String)

    public var description: String {
        switch self {
        case .unrecognizedFormat(let hint):
            return "vendor output not recognised (first line: \"\(hint)\"); expected nvidia-smi -q -x, nvidia-smi --query-gpu csv, rocm-smi --json, npu-smi info, hl-smi, xpu-smi or ixsmi output"
        case .malformed(let tool, let detail):
            return "\(tool.rawValue) output is malformed: \(detail)"
        }
    }
}

import GridCore

/// One vendor command-line tool the probe may run.
public struct ToolSettings: Codable, Sendable, Hashable {
    /// Whether to run it at all. Default true.
    public var enabled: Bool
    /// A bare name (searched in $PATH and the vendor install directories) or an absolute path.
    public var executable: String
    public var arguments: [String]
    /// The output format, handed to the parser as a hint; nil lets the parser detect it.
    public var format: VendorTool?
    /// Vendors whose devices this tool describes: decides when it runs (see
    /// `ProbeSettings.onlyToolsForDetectedVendors`) and which devices its failure affects.
    public var vendors: [AcceleratorVendor]
    /// Overrides `ProbeSettings.toolTimeoutSeconds` for this tool.
    public var timeoutSeconds: Double?

    public init(
        enabled: Bool = true, executable: String, arguments: [String] = [], format: VendorTool? = nil,
        vendors: [AcceleratorVendor], timeoutSeconds: Double? = nil
    ) {
        self.enabled = enabled
        self.executable = executable
        self.arguments = arguments
        self.format = format
        self.vendors = vendors
        self.timeoutSeconds = timeoutSeconds
    }

    enum CodingKeys: String, CodingKey {
        case enabled, executable, arguments, format, vendors
        case timeoutSeconds = "timeout_seconds"
    }
}

/// Probe configuration, embedded in the agent config (YAML key `probe:`). Every key is
/// optional and falls back to its documented default.
public struct ProbeSettings: Codable, Sendable, Hashable {
    /// Where sysfs is mounted. Default "/sys" (a containerised agent may use "/host/sys").
    public var sysfsRoot: String
    /// Where procfs is mounted (NVIDIA `driver/nvidia/gpus/*/information`). Default "/proc".
    public var procRoot: String
    /// Deadline for each vendor tool run, seconds. Default 10.
    public var toolTimeoutSeconds: Double
    /// Stdout bytes kept per tool run; more kills the tool. Default 8 MiB.
    public var maxOutputBytes: Int
    /// Deadline for the sysfs scan (a read of a dying device can block). Default 5.
    public var sysfsTimeoutSeconds: Double
    /// When sysfs could be read, run only the tools whose vendors it saw (no point starting
    /// nvidia-smi on an AMD host). When sysfs is unreadable every enabled tool runs. Default true.
    public var onlyToolsForDetectedVendors: Bool
    /// Tools by name. Defaults: nvidia-smi, rocm-smi, npu-smi, hl-smi, xpu-smi, ixsmi (see
    /// `ProbeSettings.defaultTools`). A configured entry overrides only the keys it sets; a new
    /// name adds a tool (then `executable` and `vendors` are required).
    public var tools: [String: ToolSettings]
    /// Health thresholds and flap damping.
    public var health: HealthPolicy
    /// Where NVIDIA Xid lines are read from: `/dev/kmsg` (needs CAP_SYSLOG or
    /// kernel.dmesg_restrict=0), a file of `dmesg` output, or "" for none. Xids seen since boot
    /// count as the device's fault codes, judged by `health.fatal_fault_codes`.
    public var kernelLog: String = "/dev/kmsg"
    /// An Xid counts this long after it happened (a GPU reset leaves the old line in the log).
    /// Default 3600 s.
    public var kernelLogWindowSeconds: Double = 3600

    public static let defaultTools: [String: ToolSettings] = [
        "nvidia-smi": ToolSettings(executable: "nvidia-smi", arguments: ["-q", "-x"], format: .nvidiaSMIXML, vendors: [.nvidia]),
        // NVLink peers and NUMA affinity; adds to nvidia-smi's devices, never judges their health.
        "nvidia-smi-topo": ToolSettings(executable: "nvidia-smi", arguments: ["topo", "-m"], format: .nvidiaSMITopo, vendors: [.nvidia]),
        "rocm-smi": ToolSettings(
            executable: "rocm-smi",
            arguments: [
                "--showid", "--showproductname", "--showbus", "--showmeminfo", "vram", "--showuse", "--showtemp",
                "--showpower", "--showserial", "--showuniqueid", "--showdriverversion", "--json",
            ],
            format: .rocmSMIJSON, vendors: [.amd, .hygon]),
        "npu-smi": ToolSettings(executable: "npu-smi", arguments: ["info"], format: .npuSMI, vendors: [.huawei]),
        "hl-smi": ToolSettings(executable: "hl-smi", arguments: [], format: .hlSMI, vendors: [.habana]),
        "xpu-smi": ToolSettings(executable: "xpu-smi", arguments: ["discovery", "-j"], format: .xpuSMIDiscovery, vendors: [.intel]),
        "ixsmi": ToolSettings(executable: "ixsmi", arguments: [], format: .ixSMI, vendors: [.iluvatar]),
    ]

    public init(
        sysfsRoot: String = "/sys", procRoot: String = "/proc", toolTimeoutSeconds: Double = 10,
        maxOutputBytes: Int = 8 << 20, sysfsTimeoutSeconds: Double = 5, onlyToolsForDetectedVendors: Bool = true,
        tools: [String: ToolSettings] = ProbeSettings.defaultTools, health: HealthPolicy = HealthPolicy()
    ) {
        self.sysfsRoot = sysfsRoot
        self.procRoot = procRoot
        self.toolTimeoutSeconds = toolTimeoutSeconds
        self.maxOutputBytes = maxOutputBytes
        self.sysfsTimeoutSeconds = sysfsTimeoutSeconds
        self.onlyToolsForDetectedVendors = onlyToolsForDetectedVendors
        self.tools = tools
        self.health = health
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case sysfsRoot = "sysfs_root"
        case procRoot = "proc_root"
        case toolTimeoutSeconds = "tool_timeout_seconds"
        case maxOutputBytes = "max_output_bytes"
        case sysfsTimeoutSeconds = "sysfs_timeout_seconds"
        case onlyToolsForDetectedVendors = "only_tools_for_detected_vendors"
        case tools = "tools"
        case health = "health"
        case kernelLog = "kernel_log"
        case kernelLogWindowSeconds = "kernel_log_window_s"
    }

    /// A tool entry as written in config: every key optional.
    struct ToolOverride: Decodable {
        var enabled: Bool?
        var executable: String?
        var arguments: [String]?
        var format: VendorTool?
        var vendors: [AcceleratorVendor]?
        var timeoutSeconds: Double?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case enabled, executable, arguments, format, vendors
            case timeoutSeconds = "timeout_seconds"
        }

        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            enabled = try c.tolerant(Bool.self, forKey: .enabled)
            executable = try c.tolerant(String.self, forKey: .executable)
            arguments = try c.tolerant([String].self, forKey: .arguments)
            format = try c.tolerant(VendorTool.self, forKey: .format)
            vendors = try c.tolerant([AcceleratorVendor].self, forKey: .vendors)
            timeoutSeconds = try c.tolerant(Double.self, forKey: .timeoutSeconds)
        }
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ProbeSettings()
        sysfsRoot = try c.tolerant(String.self, forKey: .sysfsRoot) ?? d.sysfsRoot
        procRoot = try c.tolerant(String.self, forKey: .procRoot) ?? d.procRoot
        toolTimeoutSeconds = try c.tolerant(Double.self, forKey: .toolTimeoutSeconds) ?? d.toolTimeoutSeconds
        maxOutputBytes = try c.tolerant(Int.self, forKey: .maxOutputBytes) ?? d.maxOutputBytes
        sysfsTimeoutSeconds = try c.tolerant(Double.self, forKey: .sysfsTimeoutSeconds) ?? d.sysfsTimeoutSeconds
        onlyToolsForDetectedVendors = try c.tolerant(Bool.self, forKey: .onlyToolsForDetectedVendors) ?? d.onlyToolsForDetectedVendors
        health = try c.tolerant(HealthPolicy.self, forKey: .health) ?? d.health
        kernelLog = try c.tolerant(String.self, forKey: .kernelLog) ?? d.kernelLog
        kernelLogWindowSeconds = try c.tolerant(Double.self, forKey: .kernelLogWindowSeconds) ?? d.kernelLogWindowSeconds
        var tools = d.tools
        if let overrides = try c.tolerant([String: ToolOverride].self, forKey: .tools) {
            for (name, o) in overrides {
                if var t = tools[name] {
                    if let v = o.enabled { t.enabled = v }
                    if let v = o.executable { t.executable = v }
                    if let v = o.arguments { t.arguments = v }
                    if let v = o.format { t.format = v }
                    if let v = o.vendors { t.vendors = v }
                    if let v = o.timeoutSeconds { t.timeoutSeconds = v }
                    tools[name] = t
                } else {
                    let vendors = o.vendors ?? o.format.map { [$0.vendor] }
                    guard let vendors else {
                        throw DecodingError.dataCorrupted(.init(
                            codingPath: c.codingPath + [CodingKeys.tools],
                            debugDescription: "tool '\(name)' is not a built-in tool; give it 'vendors' (or 'format')"))
                    }
                    tools[name] = ToolSettings(
                        enabled: o.enabled ?? true, executable: o.executable ?? name, arguments: o.arguments ?? [],
                        format: o.format, vendors: vendors, timeoutSeconds: o.timeoutSeconds)
                }
            }
        }
        self.tools = tools
    }
}

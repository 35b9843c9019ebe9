import Foundation
import GridTransport
import GridCatalog
import GridCore
import GridProbe
import Yams

/// Settings of one node agent. Every key is optional in the YAML file; the defaults below
/// apply. Precedence: defaults < file < environment (`GRID_AGENT_*`) < command-line flags.
/// agent-config/README.md documents each key.
public struct AgentConfig: Codable, Sendable {
    /// This node's id in the network. Default: the host name.
    public var nodeID: String = ""
    /// Region controller endpoint. Default `tcp://127.0.0.1:7710`.
    public var region: String = "tcp://127.0.0.1:7710"
    /// Where job output files go; relative paths resolve against the config file's directory.
    /// Default `/var/lib/computegrid/agent`.
    public var dataDir: String = ""
    /// Heartbeat period until the region says otherwise in its RegisterAck. Default 1000 ms.
    public var heartbeatIntervalMs: Int = 1000
    /// Seconds between full probes of the devices. Default 30.
    public var probeIntervalSeconds: Double = 30
    /// Captured vendor-tool outputs to use instead of probing this host (simulation, demos,
    /// tests); relative paths resolve against the config file's directory. Default: none.
    public var simulate: [String] = []
    /// Bytes of a job's combined stdout/stderr reported back when it ends. Default 4096.
    public var outputTailBytes: Int = 4096
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or times out. Default 5.
    public var killGraceSeconds: Double = 5
    /// When the lease lapses (no word from the region for lease − margin), jobs get SIGTERM
    /// this long before the deadline and SIGKILL at it. Default 2000 ms.
    public var fenceGraceMs: Int = 2000
    /// The `grid-job-shim` executable every job runs under. Default: next to `grid-agent`.
    public var jobShim: String = ""
    /// Job cgroups: `off` (default; process groups), `auto` (a delegated cgroup v2 subtree,
    /// systemd's `Delegate=yes`: the agent's own cgroup), or a directory to create them in.
    public var cgroup: String = "off"
    /// Largest message accepted from the region. Default 4 MiB.
    public var maxMessageBytes: Int = 4 << 20
    /// Extra environment variables every job gets (job env wins). Default: none.
    public var jobEnvironment: [String: String] = [:]
    /// trace, debug, info, notice, warning, error, critical. Default `info`.
    public var logLevel: String = "info"
    /// Discovery, vendor tools, deadlines and health thresholds (see agent-config/README.md).
    public var probe = ProbeSettings()
    /// Grade thresholds for circular utilization (see agent-config/README.md).
    public var grading = GradingPolicy()
    /// The agent's HTTP listener (Prometheus `/metrics`, `/healthz`, `/readyz`): `host:port`,
    /// port 0 = any free port, `off` = none. Default `127.0.0.1:9740`.
    public var http: String = "127.0.0.1:9740"
    /// TLS for that listener: a PEM certificate chain and its PEM private key (both or neither;
    /// relative to the config file; read at start). Set, it speaks HTTPS only.
    public var httpTLSCert: String = ""
    public var httpTLSKey: String = ""
    /// Mutual TLS: PEM certificates of the CAs whose client certificates the listener accepts
    /// (Prometheus' `tls_config` sends one); a client without one fails the handshake, `/healthz`
    /// included. Needs `http_tls_cert`.
    public var httpTLSClientCA: String = ""
    /// Bearer tokens that may read `/metrics` and `/api/v1/probe` (`<name> <token>` per line;
    /// relative to the config file; re-read on SIGHUP). "" = those routes are open to whoever
    /// reaches the listener. `/healthz` and `/readyz` are always open.
    public var httpTokenFile: String = ""
    /// Log lines as `text` or `json`. Default `text`.
    public var logFormat: LogFormat = .text
    /// Ports handed to runs that serve (service replicas: GRID_PORT), `LOW-HIGH`. Agents
    /// sharing a host need ranges that do not overlap. Default `20000-20999`.
    public var servicePorts: String = "20000-20999"
    /// The address service replicas serve on (GRID_HOST) and that their endpoints name: one
    /// the region's gateway can reach. Default `127.0.0.1` (gateway on the same host).
    public var advertiseHost: String = "127.0.0.1"
    /// This agent's CURVE key pair (`gridctl keys generate`; its `.pub` goes into the region's
    /// authorized_keys for this node id). With `region_key`, the link to the region is CURVE.
    public var keyFile: String = ""
    /// The region's public key (40 Z85 characters or its `.pub` file): the agent talks only to
    /// the controller that holds the matching secret.
    public var regionKey: String = ""
    /// Which Unix user runs each account's jobs: account → user name or `UID:GID`, `*` for
    /// every other account. Empty (default): jobs run as the agent. Set, each run gets its own
    /// work directory (`<data_dir>/work/<assignment>`, mode 0700, owned by that user, removed
    /// when the run ends) and an account with no entry is refused on this node. Needs the
    /// agent to run as root; no entry may be root.
    public var runAs: [String: String] = [:]
    /// A run's combined stdout/stderr file is cut back to its last 64 KiB (with a line saying
    /// so) when it grows past this many bytes. Default 1 GiB; 0 = no bound.
    public var maxOutputBytes: Int = 1 << 30
    /// Seconds after start at which the agent hands the code pages only its start touched back
    /// to the kernel (`MADV_PAGEOUT` of its read-only file mappings; what the steady loop needs
    /// faults back in). Default 10; 0 = never.
    public var releaseStartupPagesSeconds: Double = 10

    public init() {}

    /// `service_ports` as a range; nil when it does not parse (`problems()` says so).
    public var servicePortRange: ClosedRange<Int>? {
        let parts = servicePorts.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let lo = parts[0], let hi = parts[1], 1024 <= lo, lo <= hi, hi <= 65535 else { return nil }
        return lo...hi
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case nodeID = "node_id"
        case region
        case dataDir = "data_dir"
        case heartbeatIntervalMs = "heartbeat_interval_ms"
        case probeIntervalSeconds = "probe_interval_s"
        case simulate
        case outputTailBytes = "output_tail_bytes"
        case killGraceSeconds = "kill_grace_s"
        case fenceGraceMs = "fence_grace_ms"
        case jobShim = "job_shim"
        case cgroup
        case maxMessageBytes = "max_message_bytes"
        case jobEnvironment = "job_environment"
        case logLevel = "log_level"
        case probe, grading, http
        case httpTLSCert = "http_tls_cert"
        case httpTLSKey = "http_tls_key"
        case httpTLSClientCA = "http_tls_client_ca"
        case httpTokenFile = "http_token_file"
        case logFormat = "log_format"
        case servicePorts = "service_ports"
        case advertiseHost = "advertise_host"
        case keyFile = "key_file"
        case regionKey = "region_key"
        case runAs = "run_as"
        case maxOutputBytes = "max_output_bytes"
        case releaseStartupPagesSeconds = "release_startup_pages_s"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = AgentConfig()
        nodeID = try c.value(.nodeID, default: d.nodeID)
        region = try c.value(.region, default: d.region)
        dataDir = try c.value(.dataDir, default: d.dataDir)
        heartbeatIntervalMs = try c.value(.heartbeatIntervalMs, default: d.heartbeatIntervalMs)
        probeIntervalSeconds = try c.value(.probeIntervalSeconds, default: d.probeIntervalSeconds)
        simulate = try c.value(.simulate, default: d.simulate)
        outputTailBytes = try c.value(.outputTailBytes, default: d.outputTailBytes)
        killGraceSeconds = try c.value(.killGraceSeconds, default: d.killGraceSeconds)
        fenceGraceMs = try c.value(.fenceGraceMs, default: d.fenceGraceMs)
        jobShim = try c.value(.jobShim, default: d.jobShim)
        cgroup = try c.value(.cgroup, default: d.cgroup)
        maxMessageBytes = try c.value(.maxMessageBytes, default: d.maxMessageBytes)
        jobEnvironment = try c.value(.jobEnvironment, default: d.jobEnvironment)
        logLevel = try c.value(.logLevel, default: d.logLevel)
        probe = try c.value(.probe, default: d.probe)
        grading = try c.value(.grading, default: d.grading)
        http = try c.value(.http, default: d.http)
        httpTLSCert = try c.value(.httpTLSCert, default: d.httpTLSCert)
        httpTLSKey = try c.value(.httpTLSKey, default: d.httpTLSKey)
        httpTLSClientCA = try c.value(.httpTLSClientCA, default: d.httpTLSClientCA)
        httpTokenFile = try c.value(.httpTokenFile, default: d.httpTokenFile)
        logFormat = try c.value(.logFormat, default: d.logFormat)
        servicePorts = try c.value(.servicePorts, default: d.servicePorts)
        advertiseHost = try c.value(.advertiseHost, default: d.advertiseHost)
        keyFile = try c.value(.keyFile, default: d.keyFile)
        regionKey = try c.value(.regionKey, default: d.regionKey)
        runAs = try c.value(.runAs, default: d.runAs)
        maxOutputBytes = try c.value(.maxOutputBytes, default: d.maxOutputBytes)
        releaseStartupPagesSeconds = try c.value(.releaseStartupPagesSeconds, default: d.releaseStartupPagesSeconds)
    }

    /// The HTTPS listener's files (`http_tls_*`).
    public var httpTLS: HTTPTLSFiles { HTTPTLSFiles(cert: httpTLSCert, key: httpTLSKey, clientCA: httpTLSClientCA) }

    /// The shim to run jobs under: `job_shim`, else `grid-job-shim` next to this executable.
    public func resolvedJobShim() throws -> String {
        var candidates: [String] = []
        if !jobShim.isEmpty {
            candidates = [jobShim]
        } else {
            let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            candidates.append(URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("grid-job-shim").path)
            for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin").split(separator: ":") {
                candidates.append("\(dir)/grid-job-shim")
            }
        }
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return found }
        throw ConfigError(source: "job_shim", problems: [
            "grid-job-shim not found (looked at \(candidates.prefix(2).joined(separator: ", "))...): install it next to grid-agent or set job_shim",
        ])
    }

    public func problems() -> [String] {
        var out: [String] = []
        if let p = IdentifierRules.problem(with: nodeID) { out.append("node_id: '\(nodeID)' \(p)") }
        if !region.contains("://") { out.append("region: '\(region)' is not a ZeroMQ endpoint (e.g. tcp://10.0.0.5:7710)") }
        if heartbeatIntervalMs <= 0 { out.append("heartbeat_interval_ms: must be > 0, got \(heartbeatIntervalMs)") }
        if probeIntervalSeconds <= 0 { out.append("probe_interval_s: must be > 0, got \(probeIntervalSeconds)") }
        if !(0...86_400).contains(releaseStartupPagesSeconds) {
            out.append("release_startup_pages_s: 0 (never) ... 86400, got \(releaseStartupPagesSeconds)")
        }
        if outputTailBytes < 0 || outputTailBytes > 1 << 20 { out.append("output_tail_bytes: 0...1048576, got \(outputTailBytes)") }
        if killGraceSeconds < 0 { out.append("kill_grace_s: must be >= 0") }
        if !(cgroup == "off" || cgroup == "auto" || cgroup.hasPrefix("/")) {
            out.append("cgroup: '\(cgroup)' is not off, auto or an absolute directory")
        }
        if !(0...600_000).contains(fenceGraceMs) { out.append("fence_grace_ms: 0...600000, got \(fenceGraceMs)") }
        if case .failure(let e) = HTTPListen.parse(http) { out.append("http: \(e)") }
        out += httpTLS.problems()
        if !httpTokenFile.isEmpty, !FileManager.default.isReadableFile(atPath: httpTokenFile) {
            out.append("http_token_file: cannot read '\(httpTokenFile)'")
        }
        if servicePortRange == nil { out.append("service_ports: 'LOW-HIGH' with 1024 ≤ LOW ≤ HIGH ≤ 65535, got '\(servicePorts)'") }
        if advertiseHost.isEmpty || advertiseHost.contains(where: { $0.isWhitespace || $0 == "/" }) {
            out.append("advertise_host: a host name or address the gateway can reach, got '\(advertiseHost)'")
        }
        if keyFile.isEmpty != regionKey.isEmpty {
            out.append(keyFile.isEmpty ? "key_file: required with region_key (the agent's own CURVE key)"
                                       : "region_key: required with key_file (the region's public key, to connect with CURVE)")
        }
        if !runAs.isEmpty {
            out += RunAsTable.resolve(runAs).problems
            for account in runAs.keys.sorted() where account != "*" {
                if let p = IdentifierRules.problem(with: account) { out.append("run_as: account '\(account)' \(p)") }
            }
            if geteuid() != 0 { out.append("run_as: the agent must run as root to start jobs as other users (it runs as uid \(geteuid()))") }
        }
        if maxOutputBytes < 0 { out.append("max_output_bytes: must be >= 0 (0 = no bound), got \(maxOutputBytes)") }
        for path in simulate where !FileManager.default.isReadableFile(atPath: path) {
            out.append("simulate: cannot read '\(path)'")
        }
        return out
    }

    /// Loads a YAML file (nil = defaults), applies environment overrides, resolves relative
    /// paths against the file's directory, and validates.
    public static func load(path: String?, environment: [String: String], validate: Bool = true) throws -> AgentConfig {
        guard let path else {
            return try parse(nil, source: "(defaults)", baseDir: FileManager.default.currentDirectoryPath, environment: environment, validate: validate)
        }
        let url = URL(fileURLWithPath: path)
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw ConfigError(source: path, problems: ["cannot read file: \(error.localizedDescription)"])
        }
        return try parse(text, source: path, baseDir: url.deletingLastPathComponent().path, environment: environment, validate: validate)
    }

    /// `load` without the file: decodes `text` (nil or blank = defaults) as if read from
    /// `source` in `baseDir`, applies the environment and validates. The config fuzz target
    /// drives this.
    public static func parse(_ text: String?, source: String, baseDir: String, environment: [String: String], validate: Bool = true) throws -> AgentConfig {
        var config = AgentConfig()
        var node: Node? = nil
        var decodeProblems: [String] = []
        if let text, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            let decoded = try ConfigFile.decode(AgentConfig.self, from: text, source: source)
            config = decoded.value
            node = decoded.node
            decodeProblems = decoded.problems
        }
        if let v = environment["GRID_AGENT_NODE_ID"], !v.isEmpty { config.nodeID = v }
        if let v = environment["GRID_AGENT_REGION"], !v.isEmpty { config.region = v }
        if let v = environment["GRID_AGENT_DATA_DIR"], !v.isEmpty { config.dataDir = v }
        if let v = environment["GRID_LOG_LEVEL"], !v.isEmpty { config.logLevel = v }
        if let v = environment["GRID_AGENT_HTTP"], !v.isEmpty { config.http = v }
        if let v = environment["GRID_AGENT_HTTP_TLS_CERT"], !v.isEmpty { config.httpTLSCert = v }
        if let v = environment["GRID_AGENT_HTTP_TLS_KEY"], !v.isEmpty { config.httpTLSKey = v }
        if let v = environment["GRID_AGENT_HTTP_TLS_CLIENT_CA"], !v.isEmpty { config.httpTLSClientCA = v }
        if let v = environment["GRID_AGENT_HTTP_TOKEN_FILE"], !v.isEmpty { config.httpTokenFile = v }
        if let v = environment["GRID_AGENT_SERVICE_PORTS"], !v.isEmpty { config.servicePorts = v }
        if let v = environment["GRID_AGENT_ADVERTISE_HOST"], !v.isEmpty { config.advertiseHost = v }
        if let v = environment["GRID_AGENT_KEY_FILE"], !v.isEmpty { config.keyFile = v }
        if let v = environment["GRID_AGENT_REGION_KEY"], !v.isEmpty { config.regionKey = v }
        if config.nodeID.isEmpty {
            config.nodeID = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "node"
        }
        func resolve(_ p: String) -> String {
            p.hasPrefix("/") ? p : URL(fileURLWithPath: baseDir).appendingPathComponent(p).standardizedFileURL.path
        }
        config.dataDir = config.dataDir.isEmpty ? "/var/lib/computegrid/agent" : resolve(config.dataDir)
        config.simulate = config.simulate.map(resolve)
        if !config.jobShim.isEmpty { config.jobShim = resolve(config.jobShim) }
        if !config.keyFile.isEmpty { config.keyFile = resolve(config.keyFile) }
        if !config.httpTLSCert.isEmpty { config.httpTLSCert = resolve(config.httpTLSCert) }
        if !config.httpTLSKey.isEmpty { config.httpTLSKey = resolve(config.httpTLSKey) }
        if !config.httpTLSClientCA.isEmpty { config.httpTLSClientCA = resolve(config.httpTLSClientCA) }
        if !config.httpTokenFile.isEmpty { config.httpTokenFile = resolve(config.httpTokenFile) }
        // A key itself (Z85 may hold '/') stays as it is; anything else is a .pub path.
        if !config.regionKey.isEmpty, !Z85.isCurveKey(config.regionKey) { config.regionKey = resolve(config.regionKey) }
        // Problems of the file itself stop a load even when values are not checked (`probe`, `drain`).
        if !validate && !decodeProblems.isEmpty { throw ConfigError(source: source, problems: decodeProblems) }
        if validate {
            let problems = ConfigFile.inFileOrder(decodeProblems + ConfigFile.locate(config.problems(), in: node))
            if !problems.isEmpty { throw ConfigError(source: source, problems: problems) }
        }
        return config
    }
}

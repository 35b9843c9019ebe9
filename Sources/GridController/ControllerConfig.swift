import Foundation
import GridTransport
import GridCore
import GridScheduler
import Yams

/// Which level of the hierarchy a controller process serves.
public enum ControllerRole: String, Codable, Sendable, CaseIterable {
    case region, national
}

/// Settings of one controller process. Every key is optional in the YAML file; the defaults
/// below apply. Precedence: defaults < file < environment (`GRID_*`) < command-line flags.
/// See controller-config/README.md for the documented sample.
public struct ControllerConfig: Codable, Sendable, Equatable {
    /// `region` or `national`. Default `region`.
    public var role: ControllerRole = .region
    /// Region id (role region) or scheduler name (role national). Default `region-1` / `national`.
    public var id: String = "region-1"
    /// ROUTER endpoint this controller binds for children and `gridctl`.
    /// Default `tcp://127.0.0.1:7710` (region), `tcp://127.0.0.1:7700` (national).
    public var bind: String = "tcp://127.0.0.1:7710"
    /// Region only: the national scheduler's endpoint. Default `tcp://127.0.0.1:7700`.
    public var national: String = "tcp://127.0.0.1:7700"
    /// Directory of the SQLite file; relative paths are resolved against the config file's
    /// directory. Default `/var/lib/computegrid/<id>`.
    public var dataDir: String = ""
    /// Heartbeat period the region asks agents for. Default 1000 ms.
    public var heartbeatIntervalMs: Int = 1000
    /// A node silent this long is declared lost and its work re-queued. Default 10000 ms.
    public var nodeLostAfterMs: Int = 10_000
    /// Region: the lease each acknowledged heartbeat renews. 0 = `node_lost_after_ms`.
    public var leaseMs: Int = 0
    /// Region: margin on each side of the lease. Agents stop their jobs after lease − margin
    /// without a word from the region; the region runs a silent node's jobs elsewhere only after
    /// lease + margin. Default: a fifth of the lease, at most 2000 ms.
    public var leaseMarginMs: Int?
    /// How often a region reports to the national scheduler. Default 1000 ms.
    public var summaryIntervalMs: Int = 1000
    /// How long an unacknowledged assignment/forward/status waits before it is resent. Default 1000 ms.
    public var retryIntervalMs: Int = 1000
    /// Region: queued jobs examined per loop turn, so a burst never keeps heartbeats waiting.
    /// Default 2048.
    public var placementBudget: Int = 2048
    /// How long finished jobs, finished assignments and applied update ids are kept in the
    /// database (and in memory) before they are pruned. Default 24 hours.
    public var historyRetentionHours: Double = 24
    /// Largest message accepted on any socket. Default 4 MiB.
    public var maxMessageBytes: Int = 4 << 20
    /// Region: start a job only once the national scheduler has recorded its placement (one
    /// round trip), so the national scheduler may run this region's queued jobs elsewhere if
    /// the region falls silent, and never twice. Off: jobs start without it, and a silent
    /// region's queued jobs wait for it. Default true.
    public var confirmStarts: Bool = true
    /// Region: refuse new jobs (maintenance); the national scheduler sends them elsewhere.
    /// Jobs already in the region run to the end. Default false.
    public var drain: Bool = false
    /// Region: a higher-priority job with no free devices stops lower-priority runs (TERM, then
    /// KILL after the agent's grace), which are queued again. Default true.
    public var preemption: Bool = true
    /// Region: a waiting multi-device job or gang gets nodes reserved (those its running work
    /// frees soonest, by time limits; up to `reservationDepth` jobs at once); other work
    /// backfills them only when its time limit ends it before then. Default true.
    public var reservations: Bool = true
    /// Region: how many waiting jobs may hold reservations at once, on distinct nodes (highest
    /// priority first). Default 4; 1 reserves for one job at a time.
    public var reservationDepth: Int = 4
    /// Region placement policy.
    public var placement: PlacementPolicy = PlacementPolicy()
    /// Region: accounts — quotas (devices, devices per grade, GCU), cohorts that lend unused
    /// quota, and fair-share ordering of each priority's queue. Default: no limits, fair share on.
    public var accounts: AccountPolicy = AccountPolicy()
    /// National routing policy.
    public var routing: RoutingPolicy = RoutingPolicy()
    /// National: the regions' profiles (jurisdiction, PUE, hourly price and carbon, embodied
    /// carbon, RTTs) for price-, carbon- and sovereignty-aware routing. Default: none.
    public var regions: [RegionProfile] = []
    /// National: what energy, carbon, transfer and waiting cost in money.
    public var prices = DecisionPrices()
    /// trace, debug, info, notice, warning, error, critical. Default `info`.
    public var logLevel: String = "info"
    /// The HTTP listener (JSON API, Prometheus `/metrics`, the dashboard, `/healthz`, `/readyz`):
    /// `host:port`, port 0 = any free port, `off` = none. Loopback unless you say otherwise.
    /// Default `127.0.0.1:7780` (national), `127.0.0.1:7790` (region).
    public var http: String = "127.0.0.1:7790"
    /// Bearer tokens of the HTTP API: a file of `name token [read|submit|operate|admin]
    /// [tenant=<account>]` lines (`#` comments; no right = `operate`), read at start and on
    /// SIGHUP. Relative to the config file. "" = the HTTP API only reads (when reads are open).
    public var httpTokenFile: String = ""
    /// Whether reads of the HTTP API (everything but `/healthz`, `/readyz`, the dashboard's page
    /// and `/openapi.yaml`) need a bearer token too: `open`, `token`, or `auto` (the default:
    /// `token` when `http` is not a loopback address).
    public var httpRead: HTTPReadAccess = .auto
    /// TLS for the HTTP listener: a PEM certificate chain and its PEM private key (both or
    /// neither; relative to the config file). Set, the listener speaks HTTPS only.
    public var httpTLSCert: String = ""
    public var httpTLSKey: String = ""
    /// Mutual TLS: PEM certificates of the CAs whose client certificates the HTTPS listener
    /// accepts; set, a client without such a certificate fails the handshake (before tokens are
    /// looked at). Needs `http_tls_cert`. Relative to the config file; read at start.
    public var httpTLSClientCA: String = ""
    /// The HTTPS listener's files (`http_tls_*`).
    public var httpTLS: HTTPTLSFiles { HTTPTLSFiles(cert: httpTLSCert, key: httpTLSKey, clientCA: httpTLSClientCA) }
    /// Log lines as `text` or `json` (one JSON object per line). Default `text`.
    public var logFormat: LogFormat = .text
    /// Region: the service gateway's listener (SERVICES.md, "Gateway"): `host:port`, port 0 =
    /// any free port, `off` = none. Default `127.0.0.1:7810`.
    public var gateway: String = "127.0.0.1:7810"
    /// Region: the gateway's URL as clients reach it (the national scheduler hands it out);
    /// "" = `http://` and the address it listens on.
    public var gatewayURL: String = ""

    public init() {}

    /// This controller's CURVE key pair (a `.key` file from `gridctl keys generate`). Set, the
    /// bound socket speaks CURVE only and lets in the keys of `authorized_keys` alone, and a
    /// region connects to its national scheduler with it. Empty: plaintext (loopback demo).
    public var keyFile: String = ""
    /// Who may connect, with what role (docs/security.md); required with `key_file`. Re-read
    /// on SIGHUP: a key taken out is refused from its next message on.
    public var authorizedKeys: String = ""
    /// Region: the national scheduler's public key (40 Z85 characters or a `.pub` file); with
    /// `key_file`, the link to it is CURVE and the national scheduler is authenticated by it.
    public var nationalKey: String = ""

    enum CodingKeys: String, CodingKey, CaseIterable {
        case role, id, bind, national
        case keyFile = "key_file"
        case authorizedKeys = "authorized_keys"
        case nationalKey = "national_key"
        case dataDir = "data_dir"
        case heartbeatIntervalMs = "heartbeat_interval_ms"
        case nodeLostAfterMs = "node_lost_after_ms"
        case leaseMs = "lease_ms"
        case leaseMarginMs = "lease_margin_ms"
        case summaryIntervalMs = "summary_interval_ms"
        case retryIntervalMs = "retry_interval_ms"
        case maxMessageBytes = "max_message_bytes"
        case placementBudget = "placement_budget"
        case confirmStarts = "confirm_starts"
        case drain, preemption, reservations
        case reservationDepth = "reservation_depth"
        case historyRetentionHours = "history_retention_hours"
        case placement, routing, regions, prices, accounts
        case logLevel = "log_level"
        case http
        case httpTokenFile = "http_token_file"
        case httpRead = "http_read"
        case httpTLSCert = "http_tls_cert"
        case httpTLSKey = "http_tls_key"
        case httpTLSClientCA = "http_tls_client_ca"
        case logFormat = "log_format"
        case gateway
        case gatewayURL = "gateway_url"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ControllerConfig()
        role = try c.value(.role, default: d.role)
        let defaultsForRole = ControllerConfig.defaults(for: role)
        id = try c.value(.id, default: defaultsForRole.id)
        bind = try c.value(.bind, default: defaultsForRole.bind)
        national = try c.value(.national, default: d.national)
        dataDir = try c.value(.dataDir, default: d.dataDir)
        heartbeatIntervalMs = try c.value(.heartbeatIntervalMs, default: d.heartbeatIntervalMs)
        nodeLostAfterMs = try c.value(.nodeLostAfterMs, default: d.nodeLostAfterMs)
        leaseMs = try c.value(.leaseMs, default: d.leaseMs)
        leaseMarginMs = try c.tolerant(Int.self, forKey: .leaseMarginMs)
        summaryIntervalMs = try c.value(.summaryIntervalMs, default: d.summaryIntervalMs)
        retryIntervalMs = try c.value(.retryIntervalMs, default: d.retryIntervalMs)
        maxMessageBytes = try c.value(.maxMessageBytes, default: d.maxMessageBytes)
        placementBudget = try c.value(.placementBudget, default: d.placementBudget)
        historyRetentionHours = try c.value(.historyRetentionHours, default: d.historyRetentionHours)
        placement = try c.value(.placement, default: d.placement)
        accounts = try c.value(.accounts, default: d.accounts)
        confirmStarts = try c.value(.confirmStarts, default: d.confirmStarts)
        drain = try c.value(.drain, default: d.drain)
        preemption = try c.value(.preemption, default: d.preemption)
        reservations = try c.value(.reservations, default: d.reservations)
        reservationDepth = try c.value(.reservationDepth, default: d.reservationDepth)
        routing = try c.value(.routing, default: d.routing)
        regions = try c.value(.regions, default: d.regions)
        prices = try c.value(.prices, default: d.prices)
        logLevel = try c.value(.logLevel, default: d.logLevel)
        http = try c.value(.http, default: defaultsForRole.http)
        httpTokenFile = try c.value(.httpTokenFile, default: d.httpTokenFile)
        httpRead = try c.value(.httpRead, default: d.httpRead)
        httpTLSCert = try c.value(.httpTLSCert, default: d.httpTLSCert)
        httpTLSKey = try c.value(.httpTLSKey, default: d.httpTLSKey)
        httpTLSClientCA = try c.value(.httpTLSClientCA, default: d.httpTLSClientCA)
        logFormat = try c.value(.logFormat, default: d.logFormat)
        gateway = try c.value(.gateway, default: d.gateway)
        gatewayURL = try c.value(.gatewayURL, default: d.gatewayURL)
        keyFile = try c.value(.keyFile, default: d.keyFile)
        authorizedKeys = try c.value(.authorizedKeys, default: d.authorizedKeys)
        nationalKey = try c.value(.nationalKey, default: d.nationalKey)
    }

    /// Role-specific defaults for id and bind.
    public static func defaults(for role: ControllerRole) -> ControllerConfig {
        var c = ControllerConfig()
        c.role = role
        if role == .national {
            c.id = "national"
            c.bind = "tcp://127.0.0.1:7700"
            c.http = "127.0.0.1:7780"
        }
        return c
    }

    /// The lease in force: `lease_ms`, or `node_lost_after_ms` when that is 0.
    public var effectiveLeaseMs: Int { leaseMs > 0 ? leaseMs : nodeLostAfterMs }
    /// The margin in force: `lease_margin_ms`, else a fifth of the lease, at most 2000 ms.
    public var effectiveLeaseMarginMs: Int { leaseMarginMs ?? min(2000, effectiveLeaseMs / 5) }

    /// Every problem with the values, each naming its key.
    public func problems() -> [String] {
        var out: [String] = []
        if let p = IdentifierRules.problem(with: id) { out.append("id: '\(id)' \(p)") }
        if !bind.contains("://") { out.append("bind: '\(bind)' is not a ZeroMQ endpoint (e.g. tcp://0.0.0.0:7710)") }
        if let problem = Self.tcpPortProblem(bind) { out.append("bind: \(problem)") }
        if role == .region, let problem = Self.tcpPortProblem(national) { out.append("national: \(problem)") }
        if role == .region && !national.contains("://") { out.append("national: '\(national)' is not a ZeroMQ endpoint") }
        for (k, v) in [("heartbeat_interval_ms", heartbeatIntervalMs), ("node_lost_after_ms", nodeLostAfterMs),
                       ("summary_interval_ms", summaryIntervalMs), ("retry_interval_ms", retryIntervalMs)] where v <= 0 {
            out.append("\(k): must be > 0, got \(v)")
        }
        if nodeLostAfterMs < 3 * heartbeatIntervalMs {
            out.append("node_lost_after_ms: \(nodeLostAfterMs) is less than 3 heartbeats (\(3 * heartbeatIntervalMs)); nodes would flap")
        }
        let lease = effectiveLeaseMs
        if leaseMs < 0 { out.append("lease_ms: must be >= 0 (0 = node_lost_after_ms), got \(leaseMs)") }
        let margin = effectiveLeaseMarginMs
        if margin < 0 || 2 * margin >= lease {
            out.append("lease_margin_ms: must be 0...\(max(0, (lease - 1) / 2)) (less than half the lease of \(lease) ms), got \(margin)")
        } else if lease - margin < 2 * heartbeatIntervalMs {
            out.append("lease_ms: lease − margin (\(lease - margin) ms) must cover 2 heartbeats (\(2 * heartbeatIntervalMs) ms), or agents stop jobs between heartbeats")
        }
        if role == .region && !regions.isEmpty { out.append("regions: only the national scheduler takes region profiles") }
        out += RegionProfile.problems(regions)
        out += routing.problems()
        out += accounts.problems()
        if role == .national && accounts != AccountPolicy() { out.append("accounts: only a region takes accounts (quotas are per region)") }
        out += prices.problems()
        if reservationDepth < 1 || reservationDepth > 1024 { out.append("reservation_depth: must be 1...1024, got \(reservationDepth)") }
        if placementBudget < 1 || placementBudget > 1_000_000 { out.append("placement_budget: must be 1...1000000, got \(placementBudget)") }
        if !(historyRetentionHours > 0 && historyRetentionHours <= 24 * 365) {
            out.append("history_retention_hours: must be > 0 and at most 8760, got \(historyRetentionHours)")
        }
        if routing.forecastDays > 0 && Double(routing.forecastDays + 1) * 24 > historyRetentionHours {
            out.append("routing.forecast_days: \(routing.forecastDays) day(s) of history need history_retention_hours ≥ \((routing.forecastDays + 1) * 24), got \(historyRetentionHours)")
        }
        if case .failure(let e) = HTTPListen.parse(http) { out.append("http: \(e)") }
        out += httpTLS.problems()
        if httpRead == .token, httpTokenFile.isEmpty {
            out.append("http_read: token needs http_token_file (the tokens that may read)")
        }
        if case .failure(let e) = HTTPListen.parse(gateway) { out.append("gateway: \(e)") }
        if !gatewayURL.isEmpty, !(gatewayURL.hasPrefix("http://") || gatewayURL.hasPrefix("https://")) {
            out.append("gateway_url: '\(gatewayURL)' is not an http:// or https:// URL")
        }
        if maxMessageBytes < 64 << 10 { out.append("max_message_bytes: at least 65536, got \(maxMessageBytes)") }
        if !keyFile.isEmpty, authorizedKeys.isEmpty {
            out.append("authorized_keys: required with key_file (who may connect; docs/security.md)")
        }
        if keyFile.isEmpty, !authorizedKeys.isEmpty { out.append("key_file: required with authorized_keys (the controller's own CURVE key)") }
        if !nationalKey.isEmpty, role != .region { out.append("national_key: only a region connects to a national scheduler") }
        if !nationalKey.isEmpty, keyFile.isEmpty { out.append("key_file: required with national_key (the region's own key to connect with)") }
        return out
    }

    /// Loads a YAML file (nil = defaults), applies environment overrides, resolves relative
    /// paths against the file's directory, and validates.
    public static func load(path: String?, role: ControllerRole?, environment: [String: String]) throws -> ControllerConfig {
        guard let path else {
            return try parse(nil, source: "(defaults)", baseDir: FileManager.default.currentDirectoryPath, role: role, environment: environment)
        }
        let url = URL(fileURLWithPath: path)
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw ConfigError(source: path, problems: ["cannot read file: \(error.localizedDescription)"])
        }
        return try parse(text, source: path, baseDir: url.deletingLastPathComponent().path, role: role, environment: environment)
    }

    /// `load` without the file: decodes `text` (nil or blank = the role's defaults) as if read
    /// from `source` in `baseDir`, applies the environment and validates. The config fuzz target
    /// drives this.
    public static func parse(_ text: String?, source: String, baseDir: String, role: ControllerRole?, environment: [String: String]) throws -> ControllerConfig {
        var config: ControllerConfig
        var node: Node? = nil
        var decodeProblems: [String] = []
        if let text, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            // Every syntax, key and type problem at once, each with its line and column.
            let decoded = try ConfigFile.decode(ControllerConfig.self, from: text, source: source)
            config = decoded.value
            node = decoded.node
            decodeProblems = decoded.problems
        } else {
            config = ControllerConfig.defaults(for: role ?? .region)
        }
        if let role, role != config.role {
            let wasDefaultBind = config.bind == ControllerConfig.defaults(for: config.role).bind
            let wasDefaultID = config.id == ControllerConfig.defaults(for: config.role).id
            let wasDefaultHTTP = config.http == ControllerConfig.defaults(for: config.role).http
            config.role = role
            if wasDefaultBind { config.bind = ControllerConfig.defaults(for: role).bind }
            if wasDefaultID { config.id = ControllerConfig.defaults(for: role).id }
            if wasDefaultHTTP { config.http = ControllerConfig.defaults(for: role).http }
        }
        var problems: [String] = []
        let env: [(String, (inout ControllerConfig, String) -> Void)] = [
            ("GRID_CONTROLLER_ID", { $0.id = $1 }),
            ("GRID_CONTROLLER_BIND", { $0.bind = $1 }),
            ("GRID_CONTROLLER_NATIONAL", { $0.national = $1 }),
            ("GRID_CONTROLLER_DATA_DIR", { $0.dataDir = $1 }),
            ("GRID_LOG_LEVEL", { $0.logLevel = $1 }),
            ("GRID_CONTROLLER_HTTP", { $0.http = $1 }),
            ("GRID_CONTROLLER_GATEWAY", { $0.gateway = $1 }),
            ("GRID_CONTROLLER_GATEWAY_URL", { $0.gatewayURL = $1 }),
            ("GRID_HTTP_TOKEN_FILE", { $0.httpTokenFile = $1 }),
            ("GRID_HTTP_TLS_CERT", { $0.httpTLSCert = $1 }),
            ("GRID_HTTP_TLS_KEY", { $0.httpTLSKey = $1 }),
            ("GRID_HTTP_TLS_CLIENT_CA", { $0.httpTLSClientCA = $1 }),
            ("GRID_CONTROLLER_KEY_FILE", { $0.keyFile = $1 }),
            ("GRID_CONTROLLER_AUTHORIZED_KEYS", { $0.authorizedKeys = $1 }),
            ("GRID_CONTROLLER_NATIONAL_KEY", { $0.nationalKey = $1 }),
        ]
        for (name, apply) in env {
            if let v = environment[name], !v.isEmpty { apply(&config, v) }
        }
        if let v = environment["GRID_HTTP_READ"], !v.isEmpty {
            if let r = HTTPReadAccess(rawValue: v) { config.httpRead = r } else {
                problems.append("GRID_HTTP_READ: '\(v)' is not one of \(HTTPReadAccess.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        if config.dataDir.isEmpty {
            config.dataDir = "/var/lib/computegrid/\(config.id)"
        } else if !config.dataDir.hasPrefix("/") {
            config.dataDir = URL(fileURLWithPath: baseDir).appendingPathComponent(config.dataDir).standardizedFileURL.path
        }
        func absolute(_ path: inout String) {
            if !path.isEmpty && !path.hasPrefix("/") { path = URL(fileURLWithPath: baseDir).appendingPathComponent(path).standardizedFileURL.path }
        }
        absolute(&config.httpTokenFile)
        absolute(&config.httpTLSCert)
        absolute(&config.httpTLSKey)
        absolute(&config.httpTLSClientCA)
        absolute(&config.keyFile)
        absolute(&config.authorizedKeys)
        // A key itself (Z85 may hold '/') stays as it is; anything else is a .pub path.
        if !Z85.isCurveKey(config.nationalKey) { absolute(&config.nationalKey) }
        problems += decodeProblems + ConfigFile.locate(config.problems(), in: node)
        if !problems.isEmpty { throw ConfigError(source: source, problems: ConfigFile.inFileOrder(problems)) }
        return config
    }

    /// For a tcp:// endpoint, a port outside 1…65535 (or `*`); nil when fine or not tcp.
    static func tcpPortProblem(_ endpoint: String) -> String? {
        guard endpoint.hasPrefix("tcp://"), let colon = endpoint.lastIndex(of: ":") else { return nil }
        let port = endpoint[endpoint.index(after: colon)...]
        if port == "*" { return nil }
        guard let n = Int(port), (1...65_535).contains(n) else {
            return "'\(endpoint)': port must be 1…65535 or * (any free port), got '\(port)'"
        }
        return nil
    }

    /// The controller's SQLite file.
    public var databasePath: String { URL(fileURLWithPath: dataDir).appendingPathComponent("\(id).sqlite").path }
}

import ArgumentParser
import Foundation
import GridController
import GridCore
import GridDaemon
import GridHTTP
import GridHTTPServer
import Logging
import ServiceLifecycle
import Synchronization

@main
struct GridControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grid-controller",
        abstract: "Regional controller or national scheduler of a ComputeGrid network.",
        discussion: """
            Settings come from --config (YAML, see controller-config/README.md), then GRID_* environment variables, then these flags. \
            SIGTERM or SIGINT stops it cleanly; SIGHUP re-reads the configuration file and applies log_level, http_token_file, \
            authorized_keys and a certificate renewed at the same http_tls_cert/http_tls_key paths, each on its own (one that \
            fails is refused with its reason and stays as it was; the others still apply), and says which other keys changed \
            and need a restart.
            """,
        version: BuildInfo.line)

    @Option(help: "region or national (default: the config file's role, else region).")
    var role: ControllerRole?
    @Option(help: "YAML configuration file.")
    var config: String?
    @Option(help: "Region id or scheduler name (overrides 'id').")
    var id: String?
    @Option(help: "ROUTER endpoint to bind, e.g. tcp://0.0.0.0:7710; tcp://127.0.0.1:* picks a free port (overrides 'bind').")
    var bind: String?
    @Option(help: "Region only: national scheduler endpoint (overrides 'national').")
    var national: String?
    @Option(help: "Directory for the SQLite file (overrides 'data_dir').")
    var dataDir: String?
    @Option(help: "trace|debug|info|notice|warning|error|critical (overrides 'log_level').")
    var logLevel: String?
    @Option(help: "HTTP listener for the API, /metrics and the dashboard: host:port (0 = any free port) or off (overrides 'http').")
    var http: String?

    /// The flags that override the file, as one value (applied at start and on SIGHUP alike).
    struct Flags: Sendable {
        var id, bind, national, dataDir, logLevel, http: String?
        func applied(to c: ControllerConfig) -> ControllerConfig {
            var cfg = c
            if let id { cfg.id = id }
            if let bind { cfg.bind = bind }
            if let national { cfg.national = national }
            if let dataDir { cfg.dataDir = URL(fileURLWithPath: dataDir).standardizedFileURL.path }
            if let logLevel { cfg.logLevel = logLevel }
            if let http { cfg.http = http }
            return cfg
        }
    }
    var flags: Flags { Flags(id: id, bind: bind, national: national, dataDir: dataDir, logLevel: logLevel, http: http) }

    func run() async throws {
        ReloadOnHangup.ignoreUntilTrapped()
        var cfg: ControllerConfig
        do {
            cfg = try flags.applied(to: ControllerConfig.load(path: config, role: role, environment: ProcessInfo.processInfo.environment))
            let problems = cfg.problems()
            if !problems.isEmpty { throw ConfigError(source: "command line", problems: problems) }
        } catch let error as ConfigError {
            FileHandle.standardError.write(Data("grid-controller: \(error)\n".utf8))
            throw ExitCode(2)
        }
        guard let level = Logger.Level(rawValue: cfg.logLevel) else {
            FileHandle.standardError.write(Data("grid-controller: log_level '\(cfg.logLevel)' is not one of trace, debug, info, notice, warning, error, critical\n".utf8))
            throw ExitCode(2)
        }
        let name = "\(cfg.role.rawValue):\(cfg.id)"
        let sharedLevel = SharedLogLevel(level)
        DaemonLogHandler.bootstrap(format: cfg.logFormat, level: sharedLevel)
        let logger = Logger(label: name)
        let service: ControllerService
        let exporter = MetricsExporter.controller()
        let tokens: TokenStore
        let tls: HTTPSConfiguration?
        do {
            tokens = try TokenStore(path: cfg.httpTokenFile)
            tls = try HTTPSConfiguration.from(cfg.httpTLS)
            service = try ControllerService(config: cfg, logger: logger, metrics: ControllerMetrics(factory: exporter.factory))
        } catch {
            FileHandle.standardError.write(Data("grid-controller: cannot start \(name): \(error)\n".utf8))
            throw ExitCode(1)
        }
        // Scripts and tests read the bound endpoint from this line.
        FileHandle.standardOutput.write(Data("grid-controller \(name) listening on \(service.endpoint)\n".utf8))
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: service)]
        if case .success(let listen) = HTTPListen.parse(cfg.http), case .on(let host, let port) = listen {
            let stopping = ShutdownFlag()
            let reads = cfg.httpRead.resolved(for: listen)
            if reads == .token, !tokens.configured {
                logger.warning("the HTTP listener on \(cfg.http) is not loopback and there is no http_token_file: it answers /healthz and /readyz only (set http_token_file, or http_read: open)")
            }
            if tls == nil, !listen.isLoopback {
                logger.warning("the HTTP listener on \(cfg.http) is not loopback and speaks plain HTTP: tokens cross the network in clear (set http_tls_cert and http_tls_key, or put TLS in front)")
            }
            let api = ControllerAPI(controller: service, metrics: exporter, tokens: tokens, reads: reads, logger: logger, stopping: stopping)
            let scheme = tls == nil ? "http" : "https"
            services.append(.init(service: HTTPServer(router: api.router(), host: host, port: port, logger: logger, stopping: stopping, tls: tls) { address in
                FileHandle.standardOutput.write(Data("grid-controller \(name) http on \(scheme)://\(address)/ (dashboard, /api/v1, /metrics; reads \(reads.rawValue))\n".utf8))
            }, successTerminationBehavior: .ignore))
        }
        if cfg.role == .region, case .success(.on(let host, let port)) = HTTPListen.parse(cfg.gateway) {
            let table = service.gateway
            let advertised = cfg.gatewayURL
            let gateway = ServiceGateway(table: table, logger: logger)
            services.append(.init(service: GatewayServer(gateway: gateway, host: host, port: port, logger: logger) { address in
                table.url = advertised.isEmpty ? "http://\(address)" : advertised
                FileHandle.standardOutput.write(Data("grid-controller \(name) gateway on http://\(address)/ (/<service>/...)\n".utf8))
            }, successTerminationBehavior: .ignore))
        }
        // SIGHUP: what can change without a restart does; the rest is named. `running` follows
        // what was applied, so a later SIGHUP compares with what is in force.
        let running = Mutex(cfg)
        let (file, role, flagLevel, flags) = (config, self.role, self.logLevel, self.flags)
        let endpoint = service.endpoint
        services.append(.init(service: ReloadOnHangup(logger: logger, onReady: {
            SystemdNotify.send("READY=1\nSTATUS=serving \(endpoint)")
        }) {
            do {
                let now = running.withLock { $0 }
                let fresh = try flags.applied(to: ControllerConfig.load(path: file, role: role ?? now.role,
                                                                        environment: ProcessInfo.processInfo.environment))
                var applied: [String] = []
                var next = now
                if flagLevel == nil, fresh.logLevel != now.logLevel, let l = Logger.Level(rawValue: fresh.logLevel) {
                    sharedLevel.value = l
                    next.logLevel = fresh.logLevel
                    applied.append("log_level \(fresh.logLevel)")
                }
                // Each part applies or is refused on its own; the report says which.
                var refused: [String] = []
                if fresh.httpTokenFile == now.httpTokenFile {
                    ReloadOnHangup.part("http_token_file", applied: &applied, refused: &refused) {
                        try tokens.reload()
                        return tokens.configured ? "http_token_file (\(tokens.count) token(s))" : nil
                    }
                }
                // A renewed certificate at the same paths: new handshakes present it.
                if let tls, fresh.httpTLSCert == now.httpTLSCert, fresh.httpTLSKey == now.httpTLSKey {
                    ReloadOnHangup.part("http_tls_cert", applied: &applied, refused: &refused) { try tls.renew() }
                }
                if fresh.authorizedKeys == now.authorizedKeys, let access = service.access {
                    ReloadOnHangup.part("authorized_keys", applied: &applied, refused: &refused) {
                        try service.reloadAuthorizedKeys()
                        return "authorized_keys (\(access.current.keys.count) key(s))"
                    }
                }
                running.withLock { $0 = next }
                ReloadOnHangup.report(logger, applied: applied, refused: refused, changed: changedKeys(next, fresh), reloadable: [])
            } catch {
                logger.error("SIGHUP: the configuration was not reloaded, the running one stays: \(error)")
            }
        }, successTerminationBehavior: .ignore))
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}

extension ControllerRole: ExpressibleByArgument {}

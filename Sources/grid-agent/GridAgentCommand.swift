import ArgumentParser
import Foundation
import GridAgent
import GridCatalog
import GridCore
import GridDaemon
import GridHTTPServer
import GridProbe
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

@main
struct GridAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grid-agent",
        abstract: "ComputeGrid node agent: discovers accelerators, reports them to its region, runs assigned jobs.",
        discussion: """
            Start it with `grid-agent run`. SIGTERM drains it (tells the region, stops and reports every job, then exits); \
            SIGHUP re-reads the configuration file and applies log_level, a certificate renewed at the same \
            http_tls_cert/http_tls_key paths and the tokens in http_token_file.
            """,
        version: BuildInfo.line,
        subcommands: [Run.self, Probe.self, Drain.self])
}

struct AgentOptions: ParsableArguments {
    @Option(help: "YAML configuration file (see agent-config/README.md).")
    var config: String?
    @Option(parsing: .upToNextOption, help: "Captured vendor-tool outputs to use instead of probing this host (overrides 'simulate').")
    var simulate: [String] = []
    @Option(help: "trace|debug|info|notice|warning|error|critical (overrides 'log_level').")
    var logLevel: String?

    func load(validate: Bool = true) throws -> AgentConfig {
        do {
            var cfg = try AgentConfig.load(path: config, environment: ProcessInfo.processInfo.environment, validate: false)
            if !simulate.isEmpty { cfg.simulate = simulate.map { URL(fileURLWithPath: $0).standardizedFileURL.path } }
            if let logLevel { cfg.logLevel = logLevel }
            return cfg
        }
    }
}

func exitWith(_ message: String, code: Int32 = 2) -> ExitCode {
    FileHandle.standardError.write(Data("grid-agent: \(message)\n".utf8))
    return ExitCode(code)
}

func makeSource(_ cfg: AgentConfig) throws -> ProbeInventorySource {
    let captures = cfg.simulate.isEmpty ? nil : try ProbeInventorySource.readCaptures(cfg.simulate)
    return ProbeInventorySource(prober: Prober(settings: cfg.probe), captures: captures, grading: cfg.grading)
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the agent (default).")
    @OptionGroup var options: AgentOptions
    @Option(help: "Node id (overrides 'node_id').") var nodeID: String?
    @Option(help: "Region controller endpoint (overrides 'region').") var region: String?
    @Option(help: "Directory for job output (overrides 'data_dir').") var dataDir: String?
    @Option(help: "HTTP listener for /metrics, /healthz, /readyz: host:port (0 = any free port) or off (overrides 'http').") var http: String?

    /// The flags that override the file, applied at start and on SIGHUP alike.
    struct Flags: Sendable {
        var nodeID, region, dataDir, http, logLevel: String?
        var simulate: [String]
        func applied(to c: AgentConfig) -> AgentConfig {
            var cfg = c
            if !simulate.isEmpty { cfg.simulate = simulate.map { URL(fileURLWithPath: $0).standardizedFileURL.path } }
            if let logLevel { cfg.logLevel = logLevel }
            if let nodeID { cfg.nodeID = nodeID }
            if let region { cfg.region = region }
            if let dataDir { cfg.dataDir = URL(fileURLWithPath: dataDir).standardizedFileURL.path }
            if let http { cfg.http = http }
            return cfg
        }
    }
    var flags: Flags {
        Flags(nodeID: nodeID, region: region, dataDir: dataDir, http: http, logLevel: options.logLevel, simulate: options.simulate)
    }

    func run() async throws {
        ReloadOnHangup.ignoreUntilTrapped()
        // The agent's HTTP (a scrape every few seconds, replica probes) needs one event-loop
        // thread and one blocking thread; NIO's defaults, one of each per core, would start
        // 2 × cores threads with their stacks and malloc arenas: 250+ on a large GPU host.
        // NIO_SINGLETON_GROUP_LOOP_COUNT / NIO_SINGLETON_BLOCKING_POOL_THREAD_COUNT still win.
        let environment = ProcessInfo.processInfo.environment
        if environment["NIO_SINGLETON_GROUP_LOOP_COUNT"] == nil { NIOSingletons.groupLoopCountSuggestion = 1 }
        if environment["NIO_SINGLETON_BLOCKING_POOL_THREAD_COUNT"] == nil { NIOSingletons.blockingPoolThreadCountSuggestion = 1 }
        var cfg: AgentConfig
        do {
            cfg = flags.applied(to: try options.load())
            let problems = cfg.problems()
            if !problems.isEmpty { throw ConfigError(source: options.config ?? "command line", problems: problems) }
        } catch {
            throw exitWith("\(error)")
        }
        guard let level = Logger.Level(rawValue: cfg.logLevel) else {
            throw exitWith("log_level '\(cfg.logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        let sharedLevel = SharedLogLevel(level)
        DaemonLogHandler.bootstrap(format: cfg.logFormat, level: sharedLevel)
        let logger = Logger(label: "agent:\(cfg.nodeID)")
        let source: ProbeInventorySource
        do { source = try makeSource(cfg) } catch { throw exitWith("\(error)") }
        let initial = await source.collect()
        for p in initial.problems { logger.warning("probe: \(p)") }
        logger.info("inventory", metadata: [
            "devices": "\(initial.devices.count)",
            "models": "\(Set(initial.devices.map(\.model)).sorted().joined(separator: ", "))",
            "source": "\(cfg.simulate.isEmpty ? "probe" : "simulate: " + cfg.simulate.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", "))",
        ])
        let service: AgentService
        let exporter = MetricsExporter.agent()
        do {
            service = try AgentService(config: cfg, source: source, initial: initial, logger: logger, metrics: exporter.factory)
        } catch {
            throw exitWith("cannot start: \(error)", code: 1)
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: service)]
        var listenerTLS: HTTPSConfiguration? = nil
        let readTokens: ReadTokens
        do {
            readTokens = try ReadTokens(path: cfg.httpTokenFile)
        } catch {
            throw exitWith("http_token_file: \(error)", code: 1)
        }
        if case .success(let listen) = HTTPListen.parse(cfg.http), case .on(let host, let port) = listen {
            let name = cfg.nodeID
            let tls: HTTPSConfiguration?
            do {
                tls = try HTTPSConfiguration.from(cfg.httpTLS)
            } catch {
                throw exitWith("http_tls_cert/http_tls_key: \(error)", code: 1)
            }
            if tls == nil, !listen.isLoopback {
                logger.warning("the HTTP listener on \(cfg.http) is not loopback and speaks plain HTTP to anyone who reaches it (set http_tls_cert and http_tls_key, and http_tls_client_ca for the scraper's certificate)")
            }
            listenerTLS = tls
            let scheme = tls == nil ? "http" : "https"
            services.append(.init(service: HTTPServer(router: AgentAPI(agent: service, metrics: exporter, tokens: readTokens).router(), host: host, port: port,
                                                      logger: logger, tls: tls) { address in
                FileHandle.standardOutput.write(Data("grid-agent \(name) http on \(scheme)://\(address)/ (/metrics, /healthz, /readyz, /api/v1/probe)\n".utf8))
            }, successTerminationBehavior: .ignore))
        }
        // SIGHUP: log_level applies at once, and a certificate renewed at the same paths; other
        // changed keys are named (they need a restart).
        let running = Mutex(cfg)
        let renewable = listenerTLS
        let (file, flags) = (options.config, self.flags)
        let status = "node \(cfg.nodeID), \(initial.devices.count) device(s)"
        services.append(.init(service: ReloadOnHangup(logger: logger, onReady: { SystemdNotify.send("READY=1\nSTATUS=\(status)") }) {
            do {
                let now = running.withLock { $0 }
                let fresh = flags.applied(to: try AgentConfig.load(path: file, environment: ProcessInfo.processInfo.environment))
                var applied: [String] = []
                var next = now
                if flags.logLevel == nil, fresh.logLevel != now.logLevel, let l = Logger.Level(rawValue: fresh.logLevel) {
                    sharedLevel.value = l
                    next.logLevel = fresh.logLevel
                    applied.append("log_level \(fresh.logLevel)")
                }
                var refused: [String] = []
                if let tls = renewable, fresh.httpTLSCert == now.httpTLSCert, fresh.httpTLSKey == now.httpTLSKey {
                    ReloadOnHangup.part("http_tls_cert", applied: &applied, refused: &refused) { try tls.renew() }
                }
                if readTokens.configured, fresh.httpTokenFile == now.httpTokenFile {
                    ReloadOnHangup.part("http_token_file", applied: &applied, refused: &refused) {
                        try readTokens.reload()
                        return "http_token_file (\(readTokens.count) token(s))"
                    }
                }
                running.withLock { $0 = next }
                ReloadOnHangup.report(logger, applied: applied, refused: refused, changed: changedKeys(next, fresh), reloadable: [])
            } catch {
                logger.error("SIGHUP: the configuration was not reloaded, the running one stays: \(error)")
            }
        }, successTerminationBehavior: .ignore))
        let group = ServiceGroup(configuration: .init(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print this host's accelerators with health and grade, then exit.",
        discussion: "With --simulate FILE..., runs the same pipeline on captured vendor outputs.")
    @OptionGroup var options: AgentOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let cfg: AgentConfig
        let source: ProbeInventorySource
        do {
            cfg = try options.load()
            source = try makeSource(cfg)
        } catch {
            throw exitWith("\(error)")
        }
        let report = await source.collect()
        if json {
            struct Output: Encodable {
                var devices: [DeviceInventory]
                var problems: [String]
                var sources: [ProbeSource]
                var durationSeconds: Double
            }
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            e.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try e.encode(Output(devices: report.devices, problems: report.problems, sources: report.sources,
                                                       durationSeconds: report.durationSeconds)), as: UTF8.self))
            return
        }
        if report.devices.isEmpty {
            print("no accelerators found (probe took \(String(format: "%.2f", report.durationSeconds)) s); what each source said:")
        } else {
            print(InventoryTable.render(report.devices))
            print()
        }
        print(InventoryTable.renderSources(report.sources))
        for p in report.problems { print("problem: \(p)") }
    }
}

struct Drain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop the agent running on this host with this data directory: its jobs are stopped and reported, then it exits.",
        discussion: """
            Sends SIGTERM to the agent whose pid is in DATA_DIR/agent.pid (as `systemctl stop` does) and waits \
            for it to exit. Every job gets SIGTERM, then SIGKILL after kill_grace_s; each is reported to the region \
            as stopped by the agent, so the region runs it again per its retry policy. Exit status 0 once the \
            agent is gone, 1 if it is still running after --timeout seconds.
            """)
    @OptionGroup var options: AgentOptions
    @Option(help: "Directory the agent keeps its journal in (overrides 'data_dir').") var dataDir: String?
    @Option(help: "Seconds to wait for the agent to exit (default: kill_grace_s + 15).") var timeout: Double?

    func run() async throws {
        var cfg: AgentConfig
        do { cfg = try options.load(validate: false) } catch { throw exitWith("\(error)") }
        if let dataDir { cfg.dataDir = URL(fileURLWithPath: dataDir).standardizedFileURL.path }
        let pidFile = URL(fileURLWithPath: cfg.dataDir).appendingPathComponent("agent.pid").path
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else {
            throw exitWith("no agent pid in \(pidFile): is an agent running with data_dir \(cfg.dataDir)?")
        }
        // The pid must still be a grid-agent (not a process that reused the number).
        let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
        guard kill(pid, 0) == 0, cmdline.contains("grid-agent") else {
            throw exitWith("the agent recorded in \(pidFile) (pid \(pid)) is not running")
        }
        guard kill(pid, SIGTERM) == 0 else { throw exitWith("cannot signal pid \(pid): \(String(cString: strerror(errno)))") }
        print("draining agent pid \(pid): stopping its jobs and reporting them")
        let deadline = Date().addingTimeInterval(timeout ?? (cfg.killGraceSeconds + 15))
        while Date() < deadline {
            if ProcessIdentity.startTicks(pid) == nil {  // gone, or a zombie
                print("agent stopped")
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw exitWith("agent pid \(pid) still running after the timeout", code: 1)
    }
}

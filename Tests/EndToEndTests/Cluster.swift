import Foundation
import GridCLI
import GridCore
import GridTransport
import Testing

/// Starts the real executables (national, regions, agents) on loopback with ephemeral ports,
/// in a scratch directory, and stops them all at the end.
final class Cluster {
    struct Daemon {
        let name: String
        let process: Process
        let stdout: URL
        let stderr: URL
    }

    let dir: URL
    var daemons: [Daemon] = []
    var nationalEndpoint = ""
    var regionEndpoints: [String: String] = [:]
    /// Variables every daemon started from now on gets.
    var environment: [String: String] = [:]

    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = repoRoot.appendingPathComponent("Tests/Fixtures/vendor")

    /// The directory holding the built executables (next to the test bundle).
    static let binDir: URL = {
        var url = Bundle.main.bundleURL
        for _ in 0..<4 {
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("grid-controller").path) { return url }
            url = url.deletingLastPathComponent()
        }
        return repoRoot.appendingPathComponent(".build/debug")
    }()

    init(_ name: String = #function) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("grid-e2e-\(name.filter { $0.isLetter })-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        EndToEndWatchdog.shared.watch(self, dir: dir)
    }

    deinit {
        stopAll()
        EndToEndWatchdog.shared.forget(self)
    }

    @discardableResult
    func start(_ name: String, _ executable: String, _ args: [String]) throws -> Daemon {
        let p = Process()
        p.executableURL = Self.binDir.appendingPathComponent(executable)
        p.arguments = args
        let out = dir.appendingPathComponent("\(name).out")
        let err = dir.appendingPathComponent("\(name).err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        p.standardInput = FileHandle.nullDevice
        // Many daemons share this host: HTTP listeners take any free port (each prints it).
        var env = ProcessInfo.processInfo.environment
        env["GRID_CONTROLLER_HTTP"] = env["GRID_CONTROLLER_HTTP"] ?? "127.0.0.1:0"
        env["GRID_AGENT_HTTP"] = env["GRID_AGENT_HTTP"] ?? "off"
        env["GRID_CONTROLLER_GATEWAY"] = env["GRID_CONTROLLER_GATEWAY"] ?? "127.0.0.1:0"
        env.merge(environment) { $1 }
        p.environment = env
        try p.run()
        EndToEndWatchdog.shared.started(self, name: name, pid: p.processIdentifier)
        let d = Daemon(name: name, process: p, stdout: out, stderr: err)
        daemons.append(d)
        return d
    }

    /// Waits for the "listening on ENDPOINT" line a controller prints once bound.
    func endpoint(of d: Daemon, within seconds: Double = 20) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let text = try? String(contentsOf: d.stdout, encoding: .utf8), let line = text.split(separator: "\n").first(where: { $0.contains("listening on") }) {
                return String(line.split(separator: " ").last ?? "")
            }
            if !d.process.isRunning { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw ClientError("\(d.name) did not report its endpoint; stderr:\n\(log(d.name))")
    }

    /// Waits for the "http on http://HOST:PORT/" line a daemon prints once its HTTP listener is up.
    func httpBase(of name: String, within seconds: Double = 20) throws -> String {
        try printedURL(name, marker: " http on ", within: seconds)
    }

    /// Starts the national scheduler with flat profiles for `regions` (the Guizhou and Ningxia
    /// figures of controller-config, first and second), so decisions carry cost terms and the
    /// regions a price and a carbon intensity.
    func startNational(profiles regions: [String]) throws {
        let rows = [("CN-GZ", 1.2, 0.45, 499.0), ("CN-NX", 1.1, 0.36, 642.0)]
        let config = dir.appendingPathComponent("national.yaml")
        try (["role: national", "regions:"] + regions.enumerated().map { i, id in
            let (j, pue, price, carbon) = rows[i % rows.count]
            return "  - {id: \(id), jurisdictions: [\(j)], pue: \(pue), price_per_kwh: \(price), carbon_g_per_kwh: \(carbon), embodied_g_per_gpu_hour: 3.74}"
        }).joined(separator: "\n").write(to: config, atomically: true, encoding: .utf8)
        try startNational(extra: ["--config", config.path])
    }

    func startNational(extra: [String] = []) throws {
        let d = try start("national", "grid-controller", ["--role", "national", "--bind", "tcp://127.0.0.1:*", "--data-dir", dir.appendingPathComponent("national").path] + extra)
        nationalEndpoint = try endpoint(of: d)
    }

    func startRegion(_ id: String, extra: [String] = []) throws {
        let d = try start(id, "grid-controller", ["--role", "region", "--id", id, "--bind", "tcp://127.0.0.1:*", "--national", nationalEndpoint,
                                                  "--data-dir", dir.appendingPathComponent(id).path] + extra)
        regionEndpoints[id] = try endpoint(of: d)
    }

    func startAgent(_ node: String, region: String, simulate: [String]) throws {
        try start(node, "grid-agent", ["run", "--node-id", node, "--region", try #require(regionEndpoints[region]),
                                       "--data-dir", dir.appendingPathComponent(node).path,
                                       "--simulate"] + simulate.map { Self.fixtures.appendingPathComponent($0).path })
    }

    func client() throws -> GridClient { try GridClient(endpoint: nationalEndpoint) }

    /// Runs `gridctl ARGS --controller <national>`: its exit status and what it printed
    /// (standard output and error together).
    func gridctl(_ args: [String]) throws -> (status: Int32, output: String) {
        try Self.run(Self.binDir.appendingPathComponent("gridctl").path, args + ["--controller", nationalEndpoint])
    }

    /// Runs a program to its end: its exit status and what it printed (standard output and
    /// error together). `environment` adds to (or, with nil values, takes from) this process's.
    static func run(_ executable: String, _ args: [String], environment: [String: String?] = [:], in dir: URL? = nil,
                    within seconds: Double = 120) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        if let dir { p.currentDirectoryURL = dir }
        if !environment.isEmpty {
            var env = ProcessInfo.processInfo.environment
            for (k, v) in environment { env[k] = v }
            p.environment = env
        }
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let drain = PipeDrain(pipe)
        try p.finish(within: seconds)
        let out = try drain.text()
        return (p.terminationStatus, out)
    }

    /// The URL a daemon printed after `marker` (e.g. " gateway on http://HOST:PORT/").
    func printedURL(_ name: String, marker: String, within seconds: Double = 20) throws -> String {
        let d = try #require(daemon(name))
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let text = try? String(contentsOf: d.stdout, encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.contains(marker) }),
               let url = line.split(separator: " ").first(where: { $0.hasPrefix("http://") || $0.hasPrefix("https://") }) {
                return String(url.dropLast(url.hasSuffix("/") ? 1 : 0))
            }
            if !d.process.isRunning { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw ClientError("\(name) printed no '\(marker)' line; stderr:\n\(log(name))")
    }

    /// Polls an async probe until it says true or `seconds` pass; then records and throws.
    static func eventually(_ what: String, seconds: Double = 30, _ probe: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await probe()) == true { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("timed out waiting for \(what)")
        throw ClientError("timed out waiting for \(what)")
    }

    /// Polls until `condition` holds or `seconds` pass.
    func eventually<T>(_ seconds: Double = 30, _ what: String, _ probe: () throws -> T?) throws -> T {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let v = try? probe() { return v }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw ClientError("timed out waiting for \(what)\n" + daemons.map { "--- \($0.name) ---\n\(log($0.name).suffix(3000))" }.joined(separator: "\n"))
    }

    /// `gridctl keys generate` for each name into `<dir>/keys`: the public keys by name.
    func generateKeys(_ names: [String]) throws -> [String: String] {
        var pub: [String: String] = [:]
        for name in names {
            let made = try Self.run(Self.binDir.appendingPathComponent("gridctl").path, ["keys", "generate", name, "--dir", keysDir.path])
            guard made.status == 0 else { throw ClientError("gridctl keys generate \(name): \(made.output)") }
            pub[name] = try CurveKeyFile.readPublic(pubFile(name))
        }
        return pub
    }
    var keysDir: URL { dir.appendingPathComponent("keys") }
    /// The secret key file of a key `generateKeys` made.
    func keyFile(_ name: String) -> String { keysDir.appendingPathComponent("\(name).key").path }
    /// The public key file of a key `generateKeys` made.
    func pubFile(_ name: String) -> String { keysDir.appendingPathComponent("\(name).pub").path }
    /// Writes `lines` to `<dir>/<name>`; its path.
    func writeFile(_ name: String, _ lines: [String]) throws -> String {
        let url = dir.appendingPathComponent(name)
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    func log(_ name: String) -> String {
        (try? String(contentsOf: dir.appendingPathComponent("\(name).err"), encoding: .utf8)) ?? ""
    }

    func daemon(_ name: String) -> Daemon? { daemons.first { $0.name == name } }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    @discardableResult
    func stop(_ name: String, signal: Int32 = SIGTERM, within seconds: Double = 10) -> Int32? {
        guard let d = daemon(name) else { return nil }
        if d.process.isRunning { kill(d.process.processIdentifier, signal) }
        if !d.process.waitForExit(within: seconds) {
            kill(d.process.processIdentifier, SIGKILL)
            _ = d.process.waitForExit(within: 10)
            return nil
        }
        daemons.removeAll { $0.name == name }
        return d.process.terminationStatus
    }

    func stopAll() {
        for d in daemons.reversed() where d.process.isRunning { kill(d.process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(10)
        for d in daemons where !d.process.waitForExit(within: max(0, deadline.timeIntervalSinceNow)) {
            kill(d.process.processIdentifier, SIGKILL)
            _ = d.process.waitForExit(within: 10)
        }
        daemons.removeAll()
    }
}

import Foundation
import GridCore
import Testing

extension EndToEnd {
/// What an operator expects of a daemon: --version, help on a bare command, SIGHUP that reloads
/// instead of killing, JSON logs on request, systemd units that pass `systemd-analyze security`.
@Suite(.serialized) struct DaemonMannersTests {
    func run(_ executable: String, _ args: [String]) throws -> (status: Int32, output: String) {
        try Cluster.run(Cluster.binDir.appendingPathComponent(executable).path, args)
    }

    @Test(arguments: ["grid-controller", "grid-agent", "gridctl", "grid-bench"])
    func everyExecutableSaysItsVersionAndCommit(_ executable: String) throws {
        let r = try run(executable, ["--version"])
        #expect(r.status == 0)
        #expect(r.output.range(of: #"^\d+\.\d+\.\d+ \(commit ([0-9a-f]{7,}(-dirty)?|unknown)\)\n$"#, options: .regularExpression) != nil, "\(r.output)")
    }

    @Test func aBareAgentPrintsHelpInsteadOfStarting() throws {
        let r = try run("grid-agent", [])
        #expect(r.output.contains("USAGE") || r.output.contains("Usage"), "\(r.output)")
        #expect(r.output.contains("run") && r.output.contains("probe"))
    }

    @Test func completionScriptsForEachShell() throws {
        for shell in ["bash", "zsh", "fish"] {
            let r = try run("gridctl", ["completion", shell])
            #expect(r.status == 0 && r.output.contains("gridctl") && r.output.contains("submit"), "\(shell)")
        }
        let bad = try run("gridctl", ["completion", "tcsh"])
        #expect(bad.status != 0 && bad.output.contains("bash, zsh or fish"))
    }

    /// SIGHUP re-reads the file: the new log level and tokens apply at once, the log says which
    /// other keys need a restart, and the process keeps serving.
    @Test func sighupReloadsLogLevelAndTokensAndTheControllerGoesOn() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let tokens = c.dir.appendingPathComponent("tokens")
        try "old 0123456789abcdef-old\n".write(to: tokens, atomically: true, encoding: .utf8)
        let config = c.dir.appendingPathComponent("national.yaml")
        func write(level: String, retry: Int) throws {
            try """
                role: national
                log_level: \(level)
                log_format: json
                retry_interval_ms: \(retry)
                http_token_file: \(tokens.path)
                """.write(to: config, atomically: true, encoding: .utf8)
        }
        try write(level: "info", retry: 1000)
        try c.startNational(extra: ["--config", config.path])
        let base = try c.httpBase(of: "national")
        let pid = try #require(c.daemon("national")).process.processIdentifier
        let refused = try await HTTPCall.send("POST", "\(base)/api/v1/jobs/x/hold", token: "fedcba9876543210-new")
        #expect(refused.status == 401)

        try write(level: "debug", retry: 2000)
        try "new fedcba9876543210-new\n".write(to: tokens, atomically: true, encoding: .utf8)
        // Resent until answered: the handler is installed a moment after the "listening" line.
        let line = try c.eventually(10, "the reload line") { () -> [String: Any]? in
            kill(pid, SIGHUP)
            Thread.sleep(forTimeInterval: 0.3)
            return c.log("national").split(separator: "\n").lazy
                .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                .first { $0["message"] as? String == "configuration reloaded" }
        }
        #expect((line["applied"] as? String)?.contains("log_level debug") == true, "\(line)")
        #expect((line["applied"] as? String)?.contains("http_token_file (1 token(s))") == true, "\(line)")
        #expect(line["needs_restart"] as? String == "retry_interval_ms", "\(line)")
        #expect(try #require(c.daemon("national")).process.isRunning)
        // The new token works (the job is unknown: 404, not 401); the old one no longer does.
        let accepted = try await HTTPCall.send("POST", "\(base)/api/v1/jobs/x/hold", token: "fedcba9876543210-new")
        #expect(accepted.status == 404, "\(accepted.body)")
        let old = try await HTTPCall.send("POST", "\(base)/api/v1/jobs/x/hold", token: "0123456789abcdef-old")
        #expect(old.status == 401)
        // Every line is JSON; debug lines appear now.
        #expect(c.stop("national") == 0)
        let lines = c.log("national").split(separator: "\n")
        #expect(!lines.isEmpty && lines.allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) is [String: Any] })
        #expect(lines.contains { $0.contains(#""level":"debug""#) })
    }

    /// The agent on SIGHUP: a new log level applies (and a second SIGHUP compares with it);
    /// the flags it was started with are not mistaken for changes.
    @Test func sighupReloadsTheAgentsLogLevel() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        let config = c.dir.appendingPathComponent("agent.yaml")
        try "log_level: info\n".write(to: config, atomically: true, encoding: .utf8)
        try c.start("a1", "grid-agent", ["run", "--config", config.path, "--node-id", "a1", "--region", try #require(c.regionEndpoints["r1"]),
                                         "--data-dir", c.dir.appendingPathComponent("a1").path,
                                         "--simulate", Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_a10g_v11.xml").path])
        _ = try c.eventually(20, "the agent registered") { try c.client().query(.regions).regions.first?.nodesReady == 1 ? true : nil }
        try "log_level: debug\n".write(to: config, atomically: true, encoding: .utf8)
        let pid = try #require(c.daemon("a1")).process.processIdentifier
        _ = try c.eventually(10, "the agent's reload line") { () -> Bool? in
            kill(pid, SIGHUP)
            Thread.sleep(forTimeInterval: 0.3)
            return c.log("a1").contains("configuration reloaded") ? true : nil
        }
        let log = c.log("a1")
        #expect(log.contains("applied=log_level debug") && log.contains("needs_restart=none"), "\(log.suffix(2000))")
        #expect(try #require(c.daemon("a1")).process.isRunning)
        #expect(c.stop("a1") == 0)
    }

    /// A bad file on SIGHUP changes nothing and says why.
    @Test func aBrokenConfigOnSighupKeepsTheRunningOne() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let config = c.dir.appendingPathComponent("region.yaml")
        try "role: region\nid: r1\nlog_level: info\n".write(to: config, atomically: true, encoding: .utf8)
        try c.startNational()
        try c.startRegion("r1", extra: ["--config", config.path])
        try "role: region\nid: r1\nheartbeat_interval_ms: -5\n".write(to: config, atomically: true, encoding: .utf8)
        let pid = try #require(c.daemon("r1")).process.processIdentifier
        _ = try c.eventually(10, "the refusal") { () -> Bool? in
            kill(pid, SIGHUP)
            Thread.sleep(forTimeInterval: 0.3)
            return c.log("r1").contains("was not reloaded") && c.log("r1").contains("heartbeat_interval_ms") ? true : nil
        }
        #expect(try #require(c.daemon("r1")).process.isRunning)
        #expect(c.stop("r1") == 0)
    }

    /// The controllers' units score OK (≤ 2.5) in `systemd-analyze security`; the agent's stays
    /// at most MEDIUM, and every setting it leaves open is explained in the unit.
    @Test(arguments: [("grid-national.service", 2.5), ("grid-region@.service", 2.5), ("grid-agent.service", 6.0)])
    func systemdUnitsAreHardened(_ unit: String, _ limit: Double) throws {
        let path = Cluster.repoRoot.appendingPathComponent("deploy/\(unit)").path
        let out = try Cluster.run("/usr/bin/systemd-analyze", ["security", "--offline=true", "--no-pager", path]).output
        let level = try #require(out.range(of: #"exposure level for [^:]+: ([0-9.]+)"#, options: .regularExpression).map { String(out[$0]) },
                                 "no exposure line in:\n\(out)")
        let score = try #require(Double(level.split(separator: " ").last ?? ""))
        #expect(score <= limit, "\(unit): exposure \(score) > \(limit)\n\(out)")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("Type=notify") && text.contains("ExecReload=") && text.contains("Documentation="))
        if unit == "grid-agent.service" {
            for open in ["Delegate=yes", "ProtectSystem=full", "PrivateDevices", "NoNewPrivileges", "MemoryDenyWriteExecute"] {
                #expect(text.split(separator: "\n").contains { $0.hasPrefix("# Exception") && $0.contains(open) }, "\(open) is not explained")
            }
        }
    }
}
}

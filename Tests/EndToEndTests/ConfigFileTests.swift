import Foundation
import GridAgent
import GridCLI
import GridController
import GridCore
import GridProtocol
import Testing

/// The sample files the demo and the systemd units use must load, and bad files must fail with
/// errors that name the key.
@Suite struct ConfigFileTests {
    static let root = Cluster.repoRoot

    static func files(_ dir: String, ext: String = "yaml") -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(dir).path)) ?? [])
            .filter { $0.hasSuffix(".\(ext)") }.sorted()
    }

    @Test(arguments: files("controller-config"))
    func controllerSamplesLoad(_ name: String) throws {
        let cfg = try ControllerConfig.load(path: Self.root.appendingPathComponent("controller-config/\(name)").path, role: nil, environment: [:])
        #expect(cfg.problems().isEmpty)
        #expect(cfg.dataDir.hasPrefix(Self.root.appendingPathComponent("run").path), "demo state stays under run/")
    }

    @Test func controllerSamplesCoverBothRoles() throws {
        let roles = try Self.files("controller-config").map {
            try ControllerConfig.load(path: Self.root.appendingPathComponent("controller-config/\($0)").path, role: nil, environment: [:]).role
        }
        #expect(Set(roles) == [.national, .region])
    }

    @Test(arguments: files("agent-config"))
    func agentSamplesLoad(_ name: String) throws {
        let cfg = try AgentConfig.load(path: Self.root.appendingPathComponent("agent-config/\(name)").path, environment: [:], validate: false)
        #expect(IdentifierRules.problem(with: cfg.nodeID) == nil)
        for file in cfg.simulate { #expect(FileManager.default.isReadableFile(atPath: file), "\(name): \(file)") }
    }

    @Test func environmentOverridesFileAndFlagsAreValidated() throws {
        let path = Self.root.appendingPathComponent("controller-config/region-guian.yaml").path
        let cfg = try ControllerConfig.load(path: path, role: nil, environment: ["GRID_CONTROLLER_BIND": "tcp://127.0.0.1:9999"])
        #expect(cfg.bind == "tcp://127.0.0.1:9999")
        #expect(cfg.id == "cn-gz-guian")
    }

    func write(_ text: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString.prefix(8)).yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    @Test func typoInControllerConfigNamesTheKey() throws {
        let path = try write("role: region\nhearbeat_interval_ms: 500\n")
        do {
            _ = try ControllerConfig.load(path: path, role: nil, environment: [:])
            Issue.record("typo accepted")
        } catch let e as ConfigError {
            #expect(e.description.contains("hearbeat_interval_ms"))
            #expect(e.description.contains(path))
        }
    }

    /// Client CAs need HTTPS, and the file must be readable; both named with the key.
    @Test func aClientCAWithoutHTTPSOrWithoutItsFileIsRefused() throws {
        do {
            _ = try ControllerConfig.load(path: try write("http_tls_client_ca: /nonexistent/ca.pem\n"), role: nil, environment: [:])
            Issue.record("a client CA without a certificate was accepted")
        } catch let e as ConfigError {
            #expect(e.problems.contains { $0.unlocated.hasPrefix("http_tls_client_ca: needs http_tls_cert") }, "\(e.problems)")
            #expect(e.problems.contains { $0.unlocated == "http_tls_client_ca: cannot read '/nonexistent/ca.pem'" }, "\(e.problems)")
        }
        let tls = Self.root.appendingPathComponent("Tests/Fixtures/tls")
        let cfg = try ControllerConfig.load(path: try write("role: national\n"), role: nil, environment: [
            "GRID_HTTP_TLS_CERT": tls.appendingPathComponent("localhost.crt").path,
            "GRID_HTTP_TLS_KEY": tls.appendingPathComponent("localhost.key").path,
            "GRID_HTTP_TLS_CLIENT_CA": tls.appendingPathComponent("client-ca.crt").path])
        #expect(cfg.httpTLSClientCA.hasSuffix("Tests/Fixtures/tls/client-ca.crt"))
    }

    /// The agent's listener takes the same TLS keys, with the same checks; relative paths
    /// resolve against the config file.
    @Test func anAgentsTLSFilesAreCheckedAndResolved() throws {
        do {
            _ = try AgentConfig.load(path: try write("http_tls_key: missing.key\nhttp_tls_client_ca: /nonexistent/ca.pem\nhttp_token_file: no-tokens\n"), environment: [:])
            Issue.record("a key without its certificate was accepted")
        } catch let e as ConfigError {
            #expect(e.problems.contains { $0.unlocated.hasPrefix("http_tls_cert: required with http_tls_key") }, "\(e.problems)")
            #expect(e.problems.contains { $0.unlocated.hasPrefix("http_tls_client_ca: needs http_tls_cert") }, "\(e.problems)")
            #expect(e.problems.contains { $0.unlocated.hasPrefix("http_tls_key: cannot read '/") && $0.unlocated.hasSuffix("/missing.key'") },
                    "resolved against the file's directory: \(e.problems)")
            #expect(e.problems.contains { $0.unlocated.hasPrefix("http_token_file: cannot read '/") && $0.unlocated.hasSuffix("/no-tokens'") },
                    "\(e.problems)")
        }
        let tls = Self.root.appendingPathComponent("Tests/Fixtures/tls")
        let cfg = try AgentConfig.load(path: try write("region: tcp://127.0.0.1:7710\n"), environment: [
            "GRID_AGENT_HTTP_TLS_CERT": tls.appendingPathComponent("localhost.crt").path,
            "GRID_AGENT_HTTP_TLS_KEY": tls.appendingPathComponent("localhost.key").path,
            "GRID_AGENT_HTTP_TLS_CLIENT_CA": tls.appendingPathComponent("client-ca.crt").path])
        #expect(cfg.httpTLS.enabled && cfg.httpTLSClientCA.hasSuffix("Tests/Fixtures/tls/client-ca.crt"))
    }

    @Test func wrongTypeAndBadValuesAreReported() throws {
        #expect(throws: ConfigError.self) { try ControllerConfig.load(path: try write("heartbeat_interval_ms: often\n"), role: nil, environment: [:]) }
        do {
            _ = try ControllerConfig.load(path: try write("id: 'bad id'\nnode_lost_after_ms: 100\n"), role: nil, environment: [:])
            Issue.record("bad values accepted")
        } catch let e as ConfigError {
            #expect(e.problems.contains { $0.unlocated.hasPrefix("id:") })
            #expect(e.problems.contains { $0.unlocated.hasPrefix("node_lost_after_ms:") })
        }
        #expect(throws: ConfigError.self) { try AgentConfig.load(path: try write("probe:\n  tool_timeout: 3\n"), environment: [:]) }
        #expect(throws: ConfigError.self) { try AgentConfig.load(path: "/nonexistent/agent.yaml", environment: [:]) }
    }

    /// The forecast needs its days kept: each key named, with what would do.
    @Test func forecastDaysNeedTheHistoryKeptAndBadValuesAreNamed() throws {
        do {
            _ = try ControllerConfig.load(path: try write("role: national\nrouting:\n  forecast_days: 7\n  forecast_weight: -1\n  replan_order: fastest\n"),
                                          role: nil, environment: [:])
            Issue.record("bad values accepted")
        } catch let e as ConfigError {
            let p = e.problems.map(\.unlocated)
            #expect(p.contains("routing.forecast_days: 7 day(s) of history need history_retention_hours ≥ 192, got 24.0"), "\(p)")
            #expect(p.contains("routing.forecast_weight: 0…10, got -1.0"), "\(p)")
            #expect(p.contains("routing.replan_order: 'fastest' is not one of size, slack, bound, best"), "\(p)")
        }
        let ok = try ControllerConfig.load(path: try write("role: national\nhistory_retention_hours: 192\nrouting:\n  forecast_days: 7\n  replan_order: slack\n"),
                                           role: nil, environment: [:])
        #expect(ok.routing.forecastDays == 7 && ok.routing.replanOrder == "slack" && ok.routing.forecastWeight == 0.5)
    }

    @Test(arguments: files("examples/jobs"))
    func sampleJobsParse(_ name: String) throws {
        let path = Self.root.appendingPathComponent("examples/jobs/\(name)").path
        let spec = try JobFile.parse(try String(contentsOfFile: path, encoding: .utf8), source: path)
        #expect(spec.problems().isEmpty)
        #expect(spec.accelerators.count >= 1)
    }

    @Test func jobFileErrorsNameEveryProblem() {
        do {
            _ = try JobFile.parse("args: [x]\naccelerators: {vendor: acme, min_memory: lots, count: -1}\n", source: "bad.yaml")
            Issue.record("bad job accepted")
        } catch let e as ConfigError {
            #expect(e.problems.contains { $0.unlocated.hasPrefix("command:") })
            #expect(e.problems.contains { $0.unlocated.hasPrefix("accelerators.vendor:") })
            #expect(e.problems.contains { $0.unlocated.hasPrefix("accelerators.min_memory:") })
            #expect(e.problems.contains { $0.unlocated.hasPrefix("accelerators.count:") })
        } catch { Issue.record("unexpected \(error)") }
        #expect(throws: ConfigError.self) { try JobFile.parse("command: x\nacelerators: {count: 1}\n", source: "typo.yaml") }
    }

    @Test(arguments: ["tcp://127.0.0.1:99999", "tcp://127.0.0.1:0", "tcp://127.0.0.1:port"])
    func aBindPortOutOfRangeIsRefused(bind: String) {
        var c = ControllerConfig.defaults(for: .national)
        c.bind = bind
        #expect(c.problems().contains { $0.hasPrefix("bind:") && $0.contains("1…65535") })
        c.bind = "tcp://127.0.0.1:*"
        #expect(!c.problems().contains { $0.hasPrefix("bind:") })
    }

    @Test func jobFileGradeBounds() throws {
        let spec = try JobFile.parse("command: x\naccelerators: {count: 1, min_grade: c, max_grade: B}\n", source: "g.yaml")
        #expect(spec.accelerators.minGrade == .c && spec.accelerators.maxGrade == .b)
        #expect(try JobFile.parse("command: x\npriority: high\n", source: "p.yaml").priority == 100)
        #expect(try JobFile.parse("command: x\npriority: -5\n", source: "p.yaml").priority == -5)
        #expect(throws: ConfigError.self) { try JobFile.parse("command: x\npriority: urgent\n", source: "p.yaml") }
        #expect(throws: ConfigError.self) { try JobFile.parse("command: x\npriority: 5000\n", source: "p.yaml") }
        do {
            _ = try JobFile.parse("command: x\naccelerators: {min_grade: R, max_grade: Z}\n", source: "bad.yaml")
            Issue.record("accepted bad grades")
        } catch let e as ConfigError {
            #expect("\(e)".contains("accelerators.min_grade: 'R'") && "\(e)".contains("accelerators.max_grade: 'Z'"))
        }
    }

    @Test func jobFileModelBlock() throws {
        let spec = try JobFile.parse("""
            command: serve
            accelerators: {count: 2, min_gcu: 50, min_total_gcu: 300}
            model:
              parameters: 70B
              precisions: [bf16, INT4]
              context: 8192
              batch: 4
              kv_heads: 8
              heads: 64
              tokens_per_second: 500
            """, source: "m.yaml")
        let m = try #require(spec.model)
        #expect(m.parameters == 70e9 && m.precisions == [.bf16, .int4] && m.contextTokens == 8192 && m.batchSize == 4)
        #expect(m.kvHeads == 8 && m.attentionHeads == 64 && m.tokensPerSecond == 500 && m.workload == .inference)
        #expect(spec.accelerators.minGCU == 50 && spec.accelerators.minTotalGCU == 300 && spec.accelerators.perDeviceGCU == 150)
        #expect(try JobFile.parse("command: x\nmodel: {parameters: 7e9}\n", source: "m.yaml").model?.parameters == 7e9)
        #expect(try JobFile.parse("command: x\nmodel: {parameters: 350M, precisions: int8}\n", source: "m.yaml").model?.precisions == [.int8])
        // The wire carries it all back.
        let back = try Wire.JobSpec(spec).spec()
        #expect(back == spec)
        do {
            _ = try JobFile.parse("""
                command: x
                model: {parameters: lots, precisions: [fp8], workload: serving, context: 0, layers: 0, colour: red}
                """, source: "bad.yaml")
            Issue.record("accepted a bad model block")
        } catch let e as ConfigError {
            #expect("\(e)".contains("colour"), "unknown keys are named: \(e)")
        }
        do {
            _ = try JobFile.parse("command: x\nmodel: {parameters: lots, precisions: [fp8], workload: serving, context: 0}\n", source: "bad.yaml")
            Issue.record("accepted a bad model block")
        } catch let e as ConfigError {
            for key in ["model.parameters: 'lots'", "model.precisions: 'fp8'", "model.workload: 'serving'", "model.context:"] {
                #expect(e.problems.contains { $0.unlocated.hasPrefix(key) }, "\(key) in \(e.problems)")
            }
        }
        #expect(throws: ConfigError.self) { try JobFile.parse("command: x\nmodel: {parameters: 7B, workload: training, precisions: [int8]}\n", source: "t.yaml") }
        let numa = try JobFile.parse("command: x\naccelerators: {count: 4, interconnect: same_numa}\n", source: "n.yaml")
        #expect(numa.accelerators.interconnect == .sameNUMA)
        #expect(try Wire.JobSpec(numa).spec() == numa)
        let nvlink = try JobFile.parse("command: x\naccelerators: {count: 4, interconnect: nvlink}\n", source: "n.yaml")
        #expect(nvlink.accelerators.interconnect == .nvlink)
        #expect(try Wire.JobSpec(nvlink).spec() == nvlink)
        #expect(throws: ConfigError.self) { try JobFile.parse("command: x\naccelerators: {interconnect: pcie}\n", source: "n.yaml") }
        #expect(throws: ConfigError.self) { try JobFile.parse("command: x\nmodel: {precisions: [int8]}\n", source: "t.yaml") }
    }

    @Test func jobFileRoutingKeys() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let spec = try JobFile.parse("""
            command: train
            origin: yrd
            data_gb: 120
            jurisdictions: [CN-SH]
            latency_slo_ms: 20
            objective: {energy: 1, carbon: 10, transfer: 1, wait: 0}
            deadline: +12h
            run_time: 90m
            kw_per_device: 0.7
            """, source: "train.yaml", now: now)
        let r = spec.routing
        #expect(r.origin == "yrd" && r.dataGB == 120 && r.jurisdictions == ["CN-SH"] && r.latencySLOMs == 20)
        #expect(r.objective == .weights(energy: 1, carbon: 10, transfer: 1, wait: 0))
        #expect(r.deadline == now.addingTimeInterval(12 * 3600) && r.runSeconds == 5400 && r.kwPerDevice == 0.7)
        #expect(try JobFile.parse("command: x\ndeadline: 2026-12-03T06:00:00Z\nobjective: carbon\n", source: "a.yaml").routing.deadline
                == ISO8601DateFormatter().date(from: "2026-12-03T06:00:00Z"))
        do {
            _ = try JobFile.parse("command: x\ndeadline: tomorrow\nrun_time: long\nobjective: cheapest\ndata_gb: -3\nlatency_slo_ms: 5\n", source: "bad.yaml")
            Issue.record("accepted a bad routing block")
        } catch let e as ConfigError {
            let text = "\(e)"
            for key in ["deadline:", "run_time:", "objective:", "data_gb:", "latency_slo_ms: needs origin"] {
                #expect(text.contains(key), "\(key) missing from \(text)")
            }
        }
    }

    @Test(arguments: [("40GiB", 40960), ("16000", 16000), ("1.5 GiB", 1536), ("80GB", 76294), ("512MiB", 512)])
    func memorySizes(_ text: String, _ mib: Int) {
        #expect(JobFile.parseMemoryMiB(text) == mib)
    }

    @Test func visibleDevicesFollowTheVendorRuntime() {
        let devs = [DeviceInventory(id: "a", index: 2, vendor: .amd, model: "m"), DeviceInventory(id: "b", index: 0, vendor: .amd, model: "m")]
        #expect(AgentInstance.visibleDevices(devs) == ["ROCR_VISIBLE_DEVICES": "2,0", "HIP_VISIBLE_DEVICES": "2,0"])
        #expect(AgentInstance.visibleDevices([DeviceInventory(id: "h", index: 5, vendor: .habana, model: "g")]) == ["HABANA_VISIBLE_MODULES": "5"])
        #expect(AgentInstance.visibleDevices([DeviceInventory(id: "n", index: 1, vendor: .huawei, model: "n")]) == ["ASCEND_RT_VISIBLE_DEVICES": "1"])
        #expect(AgentInstance.visibleDevices([DeviceInventory(id: "i", index: 3, vendor: .intel, model: "x")]) == ["ZE_AFFINITY_MASK": "3"])
    }
}

/// Issue 10's region profiles in the national config: the shipped files load, the curves come
/// out hourly, and a bad profile names the region and the key.
@Suite struct RegionProfileConfigTests {
    static func load(_ yaml: String) throws -> ControllerConfig {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("profiles-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("national.yaml")
        try yaml.write(to: file, atomically: true, encoding: .utf8)
        return try ControllerConfig.load(path: file.path, role: nil, environment: [:])
    }

    @Test func theTenHubClustersAndTheDemoPairLoad() throws {
        let hubs = try ControllerConfig.load(path: Cluster.repoRoot.appendingPathComponent("controller-config/national-cn-hubs.yaml").path,
                                             role: nil, environment: [:])
        #expect(hubs.regions.count == 10)
        #expect(hubs.regions.first { $0.id == "cn-yrd-demozone" }?.jurisdictions == ["CN-SH", "CN-JS", "CN-ZJ"])
        #expect(hubs.regions.allSatisfy { $0.rttMs.count == 9 && $0.pricePerKWh.hourly.count == 24 })
        let demo = try ControllerConfig.load(path: Cluster.repoRoot.appendingPathComponent("controller-config/national.yaml").path,
                                             role: nil, environment: [:])
        let guian = try #require(demo.regions.first { $0.id == "cn-gz-guian" })
        #expect(guian.pricePerKWh.kind == "tou")
        #expect(abs(guian.pricePerKWh.hourly[10] - 0.45 * 1.6) < 1e-9 && abs(guian.pricePerKWh.hourly[3] - 0.45 * 0.4) < 1e-9)
        #expect(abs(guian.pricePerKWh.hourly[13] - 0.45) < 1e-9)
        #expect(guian.carbonGPerKWh.hourly == Array(repeating: 498.9, count: 24))
        #expect(demo.prices.decision == .init(carbonPerTonne: 80, transferPerGB: 0.14, waitPerGPUHour: 2))
    }

    @Test func aBadProfileNamesTheRegionAndTheKey() throws {
        let yaml = """
            role: national
            regions:
              - id: west
                jurisdictions: [CN-NX]
                pue: 0.8
                price_per_kwh: [0.3, 0.3]
                carbon_g_per_kwh: 600
                rtt_ms: {nowhere: 12}
            """
        #expect {
            _ = try Self.load(yaml)
        } throws: { error in
            let text = "\(error)"
            return text.contains("regions[0] (west).pue: 1.0…3.0, got 0.8")
                && text.contains("regions[0] (west).price_per_kwh: 24 hourly values, got 2")
                && text.contains("regions[0] (west).rtt_ms.nowhere: not a region in this file")
        }
        #expect(throws: (any Error).self) {
            _ = try Self.load("""
                role: national
                regions:
                  - {id: west, jurisdictions: [CN-NX], pue: 1.2, carbon_g_per_kwh: 600,
                     price_per_kwh: {flat: 0.3, peak_ratio: 1.5, peak_hours: "17-25"}}
                """)
        }
    }
}

extension String {
    /// A problem without its "line L, column C: " prefix.
    var unlocated: String {
        guard hasPrefix("line "), let r = range(of: #"^line \d+, column \d+: "#, options: .regularExpression) else { return self }
        return String(self[r.upperBound...])
    }
}

/// Every problem of a file at once, in file order, each with its line and column.
@Suite struct ConfigProblemLocationTests {
    @Test func aJobFileListsEveryProblemWithLineAndColumn() throws {
        let text = """
            command: true
            accelerators:
              count: -3
              min_grade: Z
              vendr: nvidia
            priority: 99999
            max_attempts: many
            """
        do {
            _ = try JobFile.parse(text, source: "job.yaml")
            Issue.record("a bad job file was accepted")
        } catch let e as ConfigError {
            #expect(e.problems.count == 5, "\(e.problems)")
            let lines = e.problems.compactMap { p -> Int? in p.hasPrefix("line ") ? Int(p.dropFirst(5).prefix { $0.isNumber }) : nil }
            #expect(lines == [3, 4, 5, 6, 7], "\(e.problems)")
            #expect(e.problems.contains { $0.hasPrefix("line 5, column 3: accelerators.vendr: unknown key") })
            #expect(e.problems.contains { $0.hasPrefix("line 7, column 1: max_attempts: expected a whole number") })
        }
    }

    @Test func aYAMLSyntaxErrorSaysWhere() throws {
        do {
            _ = try JobFile.parse("command: true\naccelerators: [\n", source: "job.yaml")
            Issue.record("bad YAML was accepted")
        } catch let e as ConfigError {
            #expect(e.problems.count == 1 && e.problems[0].hasPrefix("line 3, column 1: YAML syntax:"), "\(e.problems)")
        }
    }

    @Test func aControllerConfigListsNestedUnknownKeysAndBadValuesTogether() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString.prefix(6)).yaml")
        try """
            role: region
            heartbeat_interval_ms: -1
            placement:
              frontier: reserve
              allow_degradd: true
            http: localhost
            """.write(to: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: path) }
        do {
            _ = try ControllerConfig.load(path: path.path, role: nil, environment: [:])
            Issue.record("a bad config was accepted")
        } catch let e as ConfigError {
            #expect(e.problems.contains { $0.hasPrefix("line 2, column 1: heartbeat_interval_ms: must be > 0") }, "\(e.problems)")
            #expect(e.problems.contains { $0.hasPrefix("line 5, column 3: placement.allow_degradd: unknown key") }, "\(e.problems)")
            #expect(e.problems.contains { $0.hasPrefix("line 6, column 1: http:") && $0.contains("host:port") }, "\(e.problems)")
        }
    }
}

import Foundation
import GridCLI
import GridCore
import GridProtocol
import Synchronization
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Services with the real executables (SERVICES.md): the tiny model of examples/model deployed
/// with `gridctl deploy`, answered through the region's gateway while a client keeps asking;
/// a replica killed, a replica failing its health probe, a rolling update v1 → v2 and a broken
/// v3 rolled back, then undeploy. What a user cares about is asserted: every request answered,
/// the right version serving, replicas replaced, no process left behind.
extension EndToEnd {
@Suite(.serialized) struct ServiceEndToEndTests {
    static let model = Cluster.repoRoot.appendingPathComponent("examples/model")

    /// Requests answered (by version) and failed (with what) while a loop ran.
    final class Tally: Sendable {
        struct State {
            var ok = 0
            var byVersion: [String: Int] = [:]
            var failures: [String] = []
            var lastVersions: [String] = []
        }
        let state = Mutex(State())
        func record(ok version: String) {
            state.withLock {
                $0.ok += 1
                $0.byVersion[version, default: 0] += 1
                $0.lastVersions.append(version)
                if $0.lastVersions.count > 20 { $0.lastVersions.removeFirst() }
            }
        }
        func record(failure: String) { state.withLock { $0.failures.append(failure) } }
        var snapshot: State { state.withLock { $0 } }
        let stopped = Mutex(false)
        var stop: Bool {
            get { stopped.withLock { $0 } }
            set { stopped.withLock { $0 = newValue } }
        }
    }

    /// POSTs a prediction through the gateway until `stop` is raised.
    static func requestLoop(_ url: String, tally: Tally) async {
        let body = Data(#"{"inputs": [[5.1, 3.5, 1.4, 0.2, 0.0, 0.0, 0.0, 0.0]]}"#.utf8)
        while !tally.stop {
            var r = URLRequest(url: URL(string: url + "/v1/predict")!)
            r.httpMethod = "POST"
            r.httpBody = body
            r.timeoutInterval = 10
            r.setValue("application/json", forHTTPHeaderField: "Content-Type")
            do {
                let (data, response) = try await URLSession.shared.data(for: r)
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
                if status == 200, let version = json?["version"] as? String, (json?["outputs"] as? [Any])?.count == 1 {
                    tally.record(ok: version)
                } else {
                    tally.record(failure: "HTTP \(status): \(String(decoding: data, as: UTF8.self).prefix(300))")
                }
            } catch {
                tally.record(failure: "\(error)")
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    func status(_ c: Cluster) throws -> Wire.ServiceStatus? { try c.client().services("tiny-mlp").first }

    /// The service once it is ready with `replicas` ready replicas of `version` and nothing else.
    func settled(_ c: Cluster, version: String, replicas: Int, within seconds: Double = 60) throws -> Wire.ServiceStatus {
        try c.eventually(seconds, "tiny-mlp ready with \(replicas) replicas of \(version)") { () -> Wire.ServiceStatus? in
            guard let s = try status(c), s.state == "ready", s.servingVersion == version,
                  s.replicas.count == replicas, s.replicas.allSatisfy({ $0.ready && $0.version == version }) else { return nil }
            return s
        }
    }

    static func info(_ endpoint: String) async throws -> [String: Any] {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://\(endpoint)/v1/info")!)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test func deployServeReplaceRollOutRollBackAndUndeploy() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        c.environment["GRID_AGENT_SERVICE_PORTS"] = "23100-23199"
        try c.startAgent("n1", region: "r1", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        c.environment["GRID_AGENT_SERVICE_PORTS"] = "23200-23299"
        try c.startAgent("n2", region: "r1", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        c.environment = [:]
        _ = try c.eventually(30, "two ready nodes") { () -> Bool? in
            try c.client().query(.regions).regions.first?.nodesReady == 2 ? true : nil
        }

        let file = c.dir.appendingPathComponent("tiny-mlp.yaml")
        try """
            name: tiny-mlp
            command: python3
            args: [\(Self.model.path)/serve.py]
            accelerators: {count: 1}
            model:
              name: tiny-mlp
              version: v1
              artifact: \(Self.model.path)/tiny-mlp-{version}.json
              format: computegrid-mlp-json
            replicas: {min: 2, max: 4}
            health: {path: /healthz, interval: 300ms, timeout: 250ms, failure_threshold: 2}
            readiness: {path: /readyz, interval: 200ms, timeout: 150ms, failure_threshold: 1}
            update: {max_surge: 1, max_unavailable: 0}
            """.write(to: file, atomically: true, encoding: .utf8)
        let deployed = try c.gridctl(["deploy", file.path, "--wait", "--within", "60"])
        #expect(deployed.status == 0, "\(deployed.output)\n\(c.log("national").suffix(3000))")
        var s = try settled(c, version: "v1", replicas: 2)
        let gateway = try #require(s.endpoints.first, "no endpoint for the service")
        #expect(gateway.hasSuffix("/tiny-mlp"))
        // Replicas hold a device each, on the nodes the region chose, with their own port.
        #expect(Set(s.replicas.map(\.endpoint)).count == 2)
        #expect(s.replicas.allSatisfy { $0.deviceModels.count == 1 && !$0.nodeID.isEmpty })
        let api = try c.httpBase(of: "national")
        let listed = try await HTTPCall.get(api + "/api/v1/services")
        #expect(listed.status == 200 && (listed.json["services"] as? [[String: Any]])?.first?["state"] as? String == "ready", "\(listed.body)")
        let one = try await HTTPCall.get(api + "/api/v1/services/tiny-mlp")
        #expect(one.status == 200 && (one.json["replicas"] as? [Any])?.count == 2, "\(one.body)")
        #expect(try await HTTPCall.get(api + "/api/v1/services/nope").status == 404)
        let shown = try c.gridctl(["service", "tiny-mlp"])
        #expect(shown.status == 0 && shown.output.contains("ready") && shown.output.contains(gateway), "\(shown.output)")

        let tally = Tally()
        async let loop: Void = Self.requestLoop(gateway, tally: tally)
        defer { tally.stop = true }
        _ = try c.eventually(10, "answers through the gateway") { tally.snapshot.ok >= 20 ? true : nil }

        // kill -9 one replica's process: it is replaced, and requests keep being answered.
        let victim = try #require(s.replicas.first)
        let victimInfo = try await Self.info(victim.endpoint)
        let pid = try #require(victimInfo["pid"] as? Int)
        // The same path a GPU host takes: the replica was given its device's visible-devices variable.
        #expect((victimInfo["visible_devices"] as? [String: String])?["CUDA_VISIBLE_DEVICES"] != nil, "\(victimInfo)")
        #expect(kill(pid_t(pid), SIGKILL) == 0)
        s = try c.eventually(60, "the killed replica replaced") { () -> Wire.ServiceStatus? in
            guard let s = try status(c), s.state == "ready", s.restarts >= 1, !s.replicas.contains(where: { $0.jobID == victim.jobID }),
                  s.replicas.filter(\.ready).count == 2 else { return nil }
            return s
        }
        let afterKill = tally.snapshot.ok
        _ = try c.eventually(10, "answers after the replacement") { tally.snapshot.ok >= afterKill + 20 ? true : nil }

        // A replica whose health probe fails is stopped and replaced.
        let sick = try #require(s.replicas.first)
        var failReq = URLRequest(url: URL(string: "http://\(sick.endpoint)/admin/fail")!)
        failReq.httpMethod = "POST"
        _ = try await URLSession.shared.data(for: failReq)
        s = try c.eventually(60, "the unhealthy replica replaced") { () -> Wire.ServiceStatus? in
            guard let s = try status(c), s.state == "ready", !s.replicas.contains(where: { $0.jobID == sick.jobID }),
                  s.replicas.filter(\.ready).count == 2 else { return nil }
            return s
        }
        let sickJob = try #require(try c.client().jobs().first { $0.id.rawValue == sick.jobID })
        #expect(sickJob.state == .failed && sickJob.message.contains("health probe"), "\(sickJob.state) \(sickJob.message)")

        // A rolling update under load: no request fails, and only v2 serves at the end.
        let rolled = try c.gridctl(["rollout", "tiny-mlp", "--version", "v2", "--wait", "--within", "90"])
        #expect(rolled.status == 0, "\(rolled.output)")
        s = try settled(c, version: "v2", replicas: 2)
        let afterRollout = tally.snapshot.ok
        _ = try c.eventually(10, "answers from v2") { () -> Bool? in
            let t = tally.snapshot
            return t.ok >= afterRollout + 20 && t.lastVersions.allSatisfy { $0 == "v2" } ? true : nil
        }

        // A broken version never becomes ready: the rollout is rolled back, v2 keeps serving.
        let broken = try c.gridctl(["rollout", "tiny-mlp", "--version", "v3-broken", "--wait", "--within", "60"])
        #expect(broken.status == 2, "a rolled-back rollout exits 2: \(broken.output)")
        s = try settled(c, version: "v2", replicas: 2)
        #expect(s.spec.model.version == "v2")
        #expect(s.message.contains("rolled back"), "\(s.message)")
        let afterRollback = tally.snapshot.ok
        _ = try c.eventually(10, "answers after the rollback") { () -> Bool? in
            let t = tally.snapshot
            return t.ok >= afterRollback + 20 && t.lastVersions.allSatisfy { $0 == "v2" } ? true : nil
        }

        tally.stop = true
        await loop
        let t = tally.snapshot
        #expect(t.failures.isEmpty, "\(t.failures.count) of \(t.ok + t.failures.count) requests failed: \(t.failures.prefix(5))")
        #expect((t.byVersion["v1"] ?? 0) > 0 && (t.byVersion["v2"] ?? 0) > 0, "\(t.byVersion)")

        // Undeploy: every replica stops, the service is forgotten, no serve.py is left running.
        let pids = try await s.replicas.asyncMap { try await Self.info($0.endpoint)["pid"] as? Int }
        let gone = try c.gridctl(["undeploy", "tiny-mlp"])
        #expect(gone.status == 0, "\(gone.output)")
        _ = try c.eventually(30, "the service forgotten") { () -> Bool? in
            (try? c.client().services("tiny-mlp")) == nil ? true : nil
        }
        for case let pid? in pids { #expect(kill(pid_t(pid), 0) != 0, "replica process \(pid) still running after undeploy") }
    }

    /// A replica on a node that goes silent (its agent frozen with SIGSTOP) is placed again on
    /// another node once the old run's lease is over; the old process has been stopped by its
    /// shim by then, so the model never serves twice from one replica. And a service scaled to
    /// zero starts a replica for the first request, which waits at the gateway and is answered.
    @Test func aFrozenNodesReplicaMovesAndAServiceAtZeroWakesForItsFirstRequest() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        let regionConfig = c.dir.appendingPathComponent("region.yaml")
        try NoJobRunsTwiceTests.regionConfig(leaseMs: 2000).write(to: regionConfig, atomically: true, encoding: .utf8)
        try c.startRegion("r1", extra: ["--config", regionConfig.path])
        let agentConfig = c.dir.appendingPathComponent("agent.yaml")
        try NoJobRunsTwiceTests.agentConfig.write(to: agentConfig, atomically: true, encoding: .utf8)
        for (node, ports) in [("n1", "23300-23349"), ("n2", "23350-23399")] {
            c.environment["GRID_AGENT_SERVICE_PORTS"] = ports
            try c.start(node, "grid-agent", ["run", "--config", agentConfig.path, "--node-id", node, "--region", try #require(c.regionEndpoints["r1"]),
                                             "--data-dir", c.dir.appendingPathComponent(node).path,
                                             "--simulate", Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_tesla-t4_v11.xml").path])
        }
        c.environment = [:]
        _ = try c.eventually(30, "two ready nodes") { () -> Bool? in
            try c.client().query(.regions).regions.first?.nodesReady == 2 ? true : nil
        }
        let client = try c.client()
        func spec(_ name: String, min: Int, max: Int, autoscale: Autoscale? = nil) -> ServiceSpec {
            ServiceSpec(name: name, template: JobSpec(name: name, command: "python3", args: [Self.model.path + "/serve.py"],
                                                      accelerators: AcceleratorRequest(count: 1)),
                        model: ServedModel(name: "tiny-mlp", version: "v1", artifact: Self.model.path + "/tiny-mlp-{version}.json"),
                        replicas: ReplicaRange(min: min, max: max),
                        readiness: ProbeSpec(path: "/readyz", intervalSeconds: 0.2, timeoutSeconds: 0.2, failureThreshold: 1),
                        autoscale: autoscale)
        }
        _ = try client.deploy(spec("solo", min: 1, max: 1))
        let first = try c.eventually(30, "solo ready") { () -> Wire.Replica? in
            try client.services("solo").first?.replicas.first { $0.ready }
        }
        let oldPid = try #require(try await Self.info(first.endpoint)["pid"] as? Int)
        let frozen = try #require(c.daemon(first.nodeID)?.process.processIdentifier)
        kill(frozen, SIGSTOP)
        defer { kill(frozen, SIGCONT) }
        let moved = try c.eventually(40, "the replica placed again on the other node and ready") { () -> Wire.Replica? in
            guard let r = try client.services("solo").first?.replicas.first, r.ready, r.nodeID != first.nodeID else { return nil }
            return r
        }
        #expect(moved.jobID == first.jobID && moved.attempt == 2, "the same replica job, a second run: \(moved)")
        #expect(kill(pid_t(oldPid), 0) != 0, "the frozen node's replica process \(oldPid) still runs beside its replacement")
        let gateway = try #require(try client.services("solo").first?.endpoints.first)
        let answer = try await HTTPCall.send("POST", gateway + "/v1/predict", body: #"{"inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#)
        #expect(answer.status == 200 && answer.headers["x-grid-replica"] == first.jobID, "\(answer.status) \(answer.body)")
        kill(frozen, SIGCONT)

        // Scaled to zero: no replica until a request comes; it waits at the gateway and is answered.
        _ = try client.deploy(spec("lazy", min: 0, max: 1, autoscale: Autoscale(targetInFlight: 1, scaleUpCooldownSeconds: 0,
                                                                                  scaleDownCooldownSeconds: 600, scaleToZero: true)))
        let lazy = try #require(try client.services("lazy").first)
        #expect(lazy.replicas.isEmpty && lazy.state == "ready", "\(lazy.state) \(lazy.replicas.count)")
        let base = try c.printedURL("r1", marker: " gateway on ")
        let started = Date()
        let woke = try await HTTPCall.send("POST", base + "/lazy/v1/predict", body: #"{"inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#)
        #expect(woke.status == 200 && woke.body.contains("outputs"), "\(woke.status) \(woke.body)")
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(try client.services("lazy").first?.desired == 1)
    }
}
}

extension Sequence {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await f(e)) }
        return out
    }
}

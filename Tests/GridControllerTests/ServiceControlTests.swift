import Foundation
import GridController
import GridCore
import GridProtocol
import PropertyBased
import Testing

/// The national service controller as a pure instance: what it starts, stops and stores as a
/// region reports its replicas (SERVICES.md, "How a service is kept").
struct ServiceHarness {
    var h = NationalHarness()
    var updates = 0
    static let east = NationalHarness.regionOrigin("east")

    init(free: Int = 16) {
        _ = h.summary("east", free: free, total: free)
    }

    static func spec(replicas: Int = 2, surge: Int = 1, unavailable: Int = 0, version: String = "v1") -> ServiceSpec {
        ServiceSpec(name: "tiny", template: JobSpec(name: "tiny", command: "python3", args: ["serve.py"], accelerators: AcceleratorRequest(count: 1)),
                    model: ServedModel(name: "tiny-mlp", version: version, artifact: "/srv/tiny-{version}.json"),
                    replicas: ReplicaRange(min: replicas, max: replicas + 2),
                    update: UpdateStrategy(maxSurge: surge, maxUnavailable: unavailable))
    }

    mutating func deploy(_ spec: ServiceSpec) -> [ControllerDirective] {
        var d = Wire.Deploy()
        d.spec = Wire.ServiceSpec(spec)
        return h.send(.deploy(d), from: h.client)
    }

    mutating func control(_ action: Wire.ServiceControl.Action, replicas: Int = 0, version: String = "") -> [ControllerDirective] {
        var c = Wire.ServiceControl()
        c.name = "tiny"
        c.action = action
        c.replicas = UInt32(replicas)
        c.version = version
        return h.send(.serviceControl(c), from: h.client)
    }

    /// The region reports a replica's run: `state`, ready or not.
    @discardableResult
    mutating func report(_ id: JobID, _ state: JobState, ready: Bool = false, message: String = "") -> [ControllerDirective] {
        updates += 1
        var u = Wire.StatusUpdate()
        u.jobID = id.rawValue
        u.assignmentID = "\(id).1"
        u.epoch = 1
        u.nodeID = "n1"
        u.regionID = "east"
        u.state = state.rawValue
        u.ready = ready
        u.endpoint = "127.0.0.1:\(20000 + updates)"
        u.message = message
        u.updateID = "east:\(id):1:\(state.rawValue):\(updates)"
        return h.send(.statusUpdate(u), from: Self.east)
    }

    var summaries: UInt64 = 1

    /// A region summary from `east` whose gateway measured this load for the service.
    mutating func load(rps: Double, inFlight: Double = 0) {
        summaries += 1
        var w = Wire.RegionSummary(RegionSummary(
            region: "east", nodesReady: 1, nodesLost: 0, queuedJobs: 0, runningJobs: 0,
            capacity: [CapacityEntry(vendor: .nvidia, model: "A100", memoryTotalMiB: 81920, total: 16, free: 16, healthy: 16, grade: .a)],
            nodes: [], nodesTruncated: false, generatedAt: h.now.wall))
        w.sequence = summaries
        w.full = true
        w.gatewayURL = "http://10.0.0.1:7791"
        var l = Wire.ServiceLoad()
        l.service = "tiny"
        l.requestsPerSecond = rps
        l.inFlight = inFlight
        w.serviceLoads = [l]
        _ = h.send(.regionSummary(w), from: Self.east)
    }

    var service: ServiceRecord? { h.instance.service("tiny") }
    var replicas: [JobRecord] { (service?.replicas ?? []).compactMap { h.instance.job($0) } }
    func version(_ j: JobRecord) -> String { j.spec.replica?.version ?? "?" }
    func live(_ version: String) -> [JobRecord] { replicas.filter { self.version($0) == version && !$0.state.isTerminal } }

    /// Cancels the controller sent (from the outbox) since the last call, by job.
    static func cancels(_ out: [ControllerDirective]) -> [String] {
        out.compactMap { d -> String? in
            guard case .persist(.outbox(let item)) = d, item.type == "cancel" else { return nil }
            return String(item.key.dropFirst("cancel:".count))
        }
    }
}

@Suite struct ServiceControlTests {
    @Test func deployStartsReplicaJobsCarryingTheModelPortAndProbes() throws {
        var s = ServiceHarness()
        let out = s.deploy(ServiceHarness.spec())
        guard case .queryReply(let reply) = out.bodies.last, let status = reply.services.first else {
            Issue.record("no reply with the service: \(out.bodies)"); return
        }
        #expect(status.state == "deploying" && status.desired == 2)
        #expect(out.mutations.contains { if case .service = $0 { return true } else { return false } })
        #expect(s.replicas.count == 2)
        for j in s.replicas {
            #expect(j.spec.ports == 1)
            #expect(j.spec.replica == ReplicaOf(service: "tiny", version: "v1", health: .health, readiness: .readiness, drainMs: 2000))
            #expect(j.spec.env["GRID_MODEL_PATH"] == "/srv/tiny-v1.json")
            #expect(j.spec.env["GRID_MODEL_VERSION"] == "v1" && j.spec.env["GRID_SERVICE"] == "tiny")
            #expect(j.state == .forwarded && j.region == "east")
        }
        // Deploying the same spec again changes nothing.
        let again = s.deploy(ServiceHarness.spec())
        #expect(again.mutations.isEmpty && s.replicas.count == 2)
    }

    @Test func readyReplicasMakeItReadyAndAFailedOneIsReplacedWithBackoff() throws {
        var s = ServiceHarness()
        _ = s.deploy(ServiceHarness.spec())
        let ids = s.replicas.map(\.id)
        s.report(ids[0], .running, ready: false)
        #expect(s.service?.phase == .deploying, "running but not ready is not ready")
        for id in ids { s.report(id, .running, ready: true) }
        #expect(s.service?.phase == .ready && s.service?.servingVersion == "v1")

        // A replica that had been ready fails: replaced at once (it is no start failure).
        let out = s.report(ids[0], .failed, message: "exited with status 1")
        #expect(s.service?.restarts == 1 && s.service?.phase == .degraded)
        #expect(s.replicas.count == 2 && !s.replicas.contains { $0.id == ids[0] })
        #expect(out.mutations.contains { if case .job(let j) = $0 { return j.spec.replica != nil && j.state == .forwarded } else { return false } })

        // One that fails before it is ever ready backs off: the next start waits.
        let fresh = try #require(s.replicas.first { $0.id != ids[1] })
        s.report(fresh.id, .failed, message: "exited with status 2")
        #expect(s.replicas.count == 1, "no new start inside the backoff")
        #expect(s.service?.message.contains("waiting") == true, "\(s.service?.message ?? "")")
        _ = s.h.tick(advanceMs: 1100)
        #expect(s.replicas.count == 2, "started again after the backoff")
    }

    @Test func aRollingUpdateSurgesThenStopsAnOldReplicaOnlyWhenANewOneIsReady() throws {
        var s = ServiceHarness()
        _ = s.deploy(ServiceHarness.spec())
        for j in s.replicas { s.report(j.id, .running, ready: true) }
        let out = s.control(.rollout, version: "v2")
        #expect(s.service?.phase == .rollingOut)
        #expect(s.live("v2").count == 1 && s.live("v1").count == 2, "one surge replica, no old one stopped yet")
        #expect(ServiceHarness.cancels(out).isEmpty)
        let first = s.live("v2")[0]
        s.report(first.id, .running, ready: false)
        #expect(ServiceHarness.cancels(s.h.tick(advanceMs: 1000)).isEmpty, "a new replica not ready stops nothing")
        let stop1 = ServiceHarness.cancels(s.report(first.id, .running, ready: true))
        #expect(stop1.count == 1 && s.live("v1").map(\.id.rawValue).contains(stop1[0]))
        s.report(JobID(stop1[0]), .cancelled)
        let second = try #require(s.live("v2").first { $0.id != first.id }, "the next new replica starts once the old one is gone")
        let stop2 = ServiceHarness.cancels(s.report(second.id, .running, ready: true))
        #expect(stop2.count == 1)
        s.report(JobID(stop2[0]), .cancelled)
        #expect(s.service?.phase == .ready && s.service?.servingVersion == "v2" && s.service?.stableSpec == nil)
        #expect(s.replicas.count == 2 && s.replicas.allSatisfy { s.version($0) == "v2" })
    }

    @Test func aVersionWhoseReplicasFailBeforeReadyIsRolledBack() throws {
        var s = ServiceHarness()
        _ = s.deploy(ServiceHarness.spec())
        for j in s.replicas { s.report(j.id, .running, ready: true) }
        _ = s.control(.rollout, version: "v3")
        let bad = try #require(s.live("v3").first)
        s.report(bad.id, .failed, message: "exited with status 2")
        _ = s.h.tick(advanceMs: 1100)
        let bad2 = try #require(s.live("v3").first)
        s.report(bad2.id, .failed, message: "exited with status 2")
        let svc = try #require(s.service)
        #expect(svc.spec.model.version == "v1" && svc.phase == .ready, "\(svc.phase) \(svc.message)")
        #expect(svc.message.contains("rollout of v3 failed") && svc.message.contains("rolled back to v1"), "\(svc.message)")
        #expect(s.live("v1").count == 2 && s.live("v3").isEmpty, "the old replicas served throughout")
    }

    @Test func scaleAndUndeploy() throws {
        var s = ServiceHarness()
        _ = s.deploy(ServiceHarness.spec())
        for j in s.replicas { s.report(j.id, .running, ready: true) }
        _ = s.control(.scale, replicas: 4)
        #expect(s.live("v1").count == 4)
        guard case .errorReply(let e) = s.control(.scale, replicas: 9).bodies.last else { Issue.record("out of range accepted"); return }
        #expect(e.code == "bad_request" && e.message.contains("2…4"))
        let down = s.control(.scale, replicas: 2)
        let stopped = ServiceHarness.cancels(down)
        #expect(stopped.count == 2, "the two not ready are stopped first: \(stopped)")
        for id in stopped { s.report(JobID(id), .cancelled) }
        let gone = ServiceHarness.cancels(s.control(.undeploy))
        #expect(gone.count == 2 && s.service?.phase == .undeploying)
        var last: [ControllerDirective] = []
        for id in gone { last = s.report(JobID(id), .cancelled) }
        #expect(s.service == nil)
        #expect(last.mutations.contains { if case .serviceRemoved("tiny") = $0 { return true } else { return false } })
    }

    @Test func autoscalingFollowsTheGatewaysLoadWithinBoundsAndCooldowns() throws {
        var s = ServiceHarness()
        var spec = ServiceHarness.spec(replicas: 1)
        spec.replicas = ReplicaRange(min: 1, max: 4)
        spec.autoscale = Autoscale(targetRequestsPerSecond: 10, scaleUpCooldownSeconds: 30, scaleDownCooldownSeconds: 60)
        _ = s.deploy(spec)
        for j in s.replicas { s.report(j.id, .running, ready: true) }
        s.load(rps: 35)
        _ = s.h.tick(advanceMs: 1000)
        #expect(s.service?.desired == 4 && s.live("v1").count == 4, "35 req/s at 10 per replica: 4 (the max)")
        #expect(s.service?.message.contains("autoscaled 1 → 4") == true, "\(s.service?.message ?? "")")
        for j in s.replicas { s.report(j.id, .running, ready: true) }
        s.load(rps: 5)
        _ = s.h.tick(advanceMs: 1000)
        #expect(s.service?.desired == 4, "no scale-down inside its cooldown")
        _ = s.h.tick(advanceMs: 60_000)
        s.load(rps: 5)
        _ = s.h.tick(advanceMs: 1000)
        #expect(s.service?.desired == 1, "down to what the load needs after the cooldown")
        s.load(rps: 25)
        _ = s.h.tick(advanceMs: 1000)
        #expect(s.service?.desired == 1, "no scale-up within 30 s of the last change")
        _ = s.h.tick(advanceMs: 30_000)
        s.load(rps: 25)
        _ = s.h.tick(advanceMs: 1000)
        #expect(s.service?.desired == 3)
    }

    @Test func aServiceScaledToZeroStartsAReplicaForAWaitingRequest() throws {
        var s = ServiceHarness()
        var spec = ServiceHarness.spec(replicas: 0)
        spec.replicas = ReplicaRange(min: 0, max: 2)
        spec.autoscale = Autoscale(targetInFlight: 4, scaleToZero: true)
        _ = s.deploy(spec)
        #expect(s.replicas.isEmpty && s.service?.phase == .ready)
        s.load(rps: 0, inFlight: 1)
        _ = s.h.tick(advanceMs: 1000)
        #expect(s.live("v1").count == 1, "a request waiting at a gateway starts one replica")
    }

    @Test func endpointsAreTheGatewaysOfRegionsWithAReadyReplicaNearestTheAskerFirst() throws {
        var settings = NationalInstance.Settings()
        settings.rtt = ["east": ["east": 1, "west": 30], "west": ["west": 1, "east": 30]]
        var h = NationalHarness()
        h.instance = NationalInstance(settings: settings, recovered: NationalRecovery(), now: h.now)
        for (region, gateway) in [("east", "http://e:7810"), ("west", "http://w:7810")] {
            var w = Wire.RegionSummary(RegionSummary(
                region: RegionID(region), nodesReady: 1, nodesLost: 0, queuedJobs: 0, runningJobs: 0,
                capacity: [CapacityEntry(vendor: .nvidia, model: "T4", memoryTotalMiB: 16384, total: 1, free: 1, healthy: 1, grade: .d)],
                nodes: [], nodesTruncated: false, generatedAt: h.now.wall))
            w.sequence = 1
            w.full = true
            w.gatewayURL = gateway
            _ = h.send(.regionSummary(w), from: NationalHarness.regionOrigin(region))
        }
        var d = Wire.Deploy()
        d.spec = Wire.ServiceSpec(ServiceHarness.spec())
        _ = h.send(.deploy(d), from: h.client)
        let svc = try #require(h.instance.service("tiny"))
        #expect(Set(svc.replicas.compactMap { h.instance.job($0)?.region?.rawValue }) == ["east", "west"], "one replica per region (one free device each)")
        for (n, id) in svc.replicas.enumerated() {
            let job = try #require(h.instance.job(id))
            var u = Wire.StatusUpdate()
            u.jobID = id.rawValue
            u.assignmentID = "\(id).1"
            u.epoch = 1
            u.regionID = job.region?.rawValue ?? ""
            u.state = "running"
            u.ready = true
            u.updateID = "u\(n)"
            _ = h.send(.statusUpdate(u), from: NationalHarness.regionOrigin(u.regionID))
        }
        func endpoints(from origin: String) -> [String] {
            var q = Wire.Query()
            q.kind = .services
            q.regionID = origin
            guard case .queryReply(let r) = h.send(.query(q), from: h.client).bodies.last else { return [] }
            return r.services.first?.endpoints ?? []
        }
        #expect(endpoints(from: "west") == ["http://w:7810/tiny", "http://e:7810/tiny"])
        #expect(endpoints(from: "east") == ["http://e:7810/tiny", "http://w:7810/tiny"])
    }

    @Test func aBadSpecIsRefusedNamingEveryProblem() {
        var s = ServiceHarness()
        var spec = ServiceHarness.spec()
        spec.replicas = ReplicaRange(min: 3, max: 1)
        spec.update = UpdateStrategy(maxSurge: 0, maxUnavailable: 0)
        guard case .errorReply(let e) = s.deploy(spec).bodies.last else { Issue.record("accepted"); return }
        #expect(e.code == "bad_request")
        #expect(e.message.contains("replicas.max") && e.message.contains("update.max_surge"), "\(e.message)")
        #expect(s.service == nil)
    }

    /// Whatever the region reports during a rollout, the controller never runs more than
    /// desired + max_surge replicas that it is not stopping, and never stops a ready replica
    /// when that leaves fewer than desired − max_unavailable ready.
    @Test func rolloutKeepsWithinSurgeAndUnavailability() async {
        await propertyCheck(count: 60, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SplitMix64(seed: UInt64(seed))
            let surge = Int.random(in: 1...3, using: &rng)
            let unavailable = Int.random(in: 0...1, using: &rng)
            let events = (0..<40).map { _ in Int.random(in: 0...1, using: &rng) }
            var s = ServiceHarness()
            _ = s.deploy(ServiceHarness.spec(replicas: 3, surge: surge, unavailable: unavailable))
            for j in s.replicas { s.report(j.id, .running, ready: true) }
            _ = s.control(.rollout, version: "v2")
            let desired = 3
            for (i, e) in events.enumerated() {
                let live = s.replicas.filter { !$0.state.isTerminal }
                guard !live.isEmpty else { break }
                let j = live[i % live.count]
                var out: [ControllerDirective]
                if !s.h.instance.isCancelling(j.id) && !(j.state == .running && j.ready) {
                    out = s.report(j.id, .running, ready: e == 1 || s.version(j) == "v2")
                } else if s.h.instance.isCancelling(j.id) {
                    out = s.report(j.id, .cancelled)
                } else {
                    out = s.h.tick(advanceMs: 200)
                }
                let stopping = Set(s.replicas.filter { s.h.instance.isCancelling($0.id) }.map(\.id))
                let active = s.replicas.filter { !$0.state.isTerminal && !stopping.contains($0.id) }
                #expect(active.count <= desired + surge, "\(active.count) active > \(desired) + \(surge)")
                let readyNow = active.filter { $0.state == .running && $0.ready }.count
                if !ServiceHarness.cancels(out).isEmpty {
                    #expect(readyNow >= desired - unavailable, "a stop left \(readyNow) ready < \(desired) − \(unavailable)")
                }
            }
        }
    }
}

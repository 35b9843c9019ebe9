import Foundation
import GridCore
import GridProtocol
import SwiftProtobuf
import Testing

@Suite struct EnvelopeTests {
    let codec = EnvelopeCodec(maxFrameBytes: 64 * 1024)

    static func sampleBodies() -> [Body] {
        var reg = Wire.Register()
        reg.nodeID = "node-1"
        reg.hostname = "h1"
        reg.devices = [Wire.Device(DeviceInventory(id: "GPU-1", index: 0, vendor: .nvidia, model: "NVIDIA A100", memoryTotalMiB: 81920))]
        var hb = Wire.Heartbeat()
        hb.nodeID = "node-1"
        hb.runningAssignments = ["j-1.1"]
        var a = Wire.Assignment()
        a.assignmentID = "j-1.1"
        a.epoch = 1
        a.jobID = "j-1"
        a.nodeID = "node-1"
        a.command = "/bin/true"
        a.env = ["A": "b"]
        a.deviceIds = ["GPU-1"]
        var ack = Wire.AssignmentAck()
        ack.assignmentID = "j-1.1"
        ack.nodeID = "node-1"
        ack.accepted = true
        var st = Wire.StatusUpdate()
        st.jobID = "j-1"
        st.updateID = "j-1.1:running"
        st.state = "running"
        var fwd = Wire.JobForward()
        fwd.jobID = "j-1"
        fwd.spec = Wire.JobSpec(JobSpec(name: "n", command: "c"))
        var sum = Wire.RegionSummary()
        sum.regionID = "r1"
        var cancel = Wire.Cancel()
        cancel.jobID = "j-1"
        return [.register(reg), .heartbeat(hb), .assignment(a), .assignmentAck(ack), .statusUpdate(st),
                .jobForward(fwd), .regionSummary(sum), .cancel(cancel)]
    }

    @Test(arguments: sampleBodies())
    func roundTrip(_ body: Body) throws {
        let frame = codec.encode(Message(sender: "s", sequence: 42, replyTo: 7, body: body))
        let decoded = try codec.decode(frame)
        #expect(decoded.sender == "s")
        #expect(decoded.sequence == 42)
        #expect(decoded.replyTo == 7)
        #expect(decoded.body.type == body.type)
        #expect(try decoded.body.message.serializedData() == body.message.serializedData())
    }

    @Test func deviceInventorySurvivesTheWire() {
        var d = DeviceInventory(id: "GPU-x", index: 3, vendor: .huawei, model: "Ascend910B4", memoryTotalMiB: 32768, memoryUsedMiB: 100,
                                numaNode: 1, temperatureC: 41, partitions: [DevicePartition(id: "p0", profile: "vnpu", memoryTotalMiB: 8192, computeFraction: 0.25)],
                                health: DeviceHealth(state: .degraded, reasons: [HealthReason(.thermalThrottle, "throttled")]), grade: .b, gradeReason: "B: ok", computeUnits: 280)
        d.utilizationPercent = 0
        let back = Wire.Device(d).inventory
        #expect(back.id == d.id && back.index == 3 && back.vendor == .huawei)
        #expect(back.memoryTotalMiB == 32768 && back.numaNode == 1 && back.temperatureC == 41)
        #expect(back.partitions == d.partitions)
        #expect(back.health == d.health)
        #expect(back.grade == .b && back.computeUnits == 280)
        #expect(back.utilizationPercent == 0, "zero utilisation is a reading, not 'unknown'")
    }

    @Test func emptyFrameIsRejected() {
        #expect(throws: ProtocolError.emptyFrame) { try codec.decode([]) }
    }

    @Test func oversizedFrameIsRejectedBeforeParsing() {
        let big = [UInt8](repeating: 0x41, count: 64 * 1024 + 1)
        #expect(throws: ProtocolError.oversized(bytes: big.count, limit: 64 * 1024)) { try codec.decode(big) }
    }

    @Test(arguments: [
        [UInt8]([0xff, 0xff, 0xff, 0xff]),
        Array("hello, this is not protobuf".utf8),
        [UInt8]([0x0a, 0xff]),
        [UInt8](repeating: 0x08, count: 100),
    ])
    func garbageIsRejectedWithAReason(_ frame: [UInt8]) {
        do {
            _ = try codec.decode(frame)
            Issue.record("garbage decoded")
        } catch {
            #expect(["malformed_envelope", "unsupported_version", "unknown_type", "malformed_payload"].contains(error.counterLabel))
            #expect(!error.description.isEmpty)
        }
    }

    @Test func unknownVersionIsRejected() throws {
        var env = Wire.Envelope()
        env.version = 99
        env.type = .heartbeat
        let frame = Array(try env.serializedData())
        #expect(throws: ProtocolError.unsupportedVersion(99)) { try codec.decode(frame) }
    }

    @Test func missingVersionIsRejected() throws {
        var env = Wire.Envelope()
        env.type = .heartbeat
        #expect(throws: ProtocolError.malformedEnvelope("version field missing")) { try codec.decode(Array(try env.serializedData())) }
    }

    @Test func unknownMessageTypeIsRejected() throws {
        var env = Wire.Envelope()
        env.version = Wire.version
        env.type = .UNRECOGNIZED(777)
        #expect(throws: ProtocolError.unknownType(777)) { try codec.decode(Array(try env.serializedData())) }
    }

    @Test func payloadThatDoesNotDecodeIsRejected() throws {
        var env = Wire.Envelope()
        env.version = Wire.version
        env.type = .register
        env.payload = Data([0x0a, 0x05, 0x41])  // length-delimited field claiming 5 bytes, 1 present
        let frame = Array(try env.serializedData())
        do {
            _ = try codec.decode(frame)
            Issue.record("truncated payload decoded")
        } catch {
            #expect(error.counterLabel == "malformed_payload")
        }
    }

    @Test(arguments: ["", "has space", "semi;colon", String(repeating: "x", count: 200)])
    func invalidNodeIDsAreRejected(_ id: String) throws {
        var hb = Wire.Heartbeat()
        hb.nodeID = id
        let frame = codec.encode(Message(sender: "s", sequence: 1, body: .heartbeat(hb)))
        do {
            _ = try codec.decode(frame)
            Issue.record("node id '\(id)' accepted")
        } catch {
            guard case .invalidField(_, let field, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(field == "node_id")
        }
    }

    /// Device and partition ids are resource-name segments: a register or heartbeat carrying one
    /// that is not an identifier, or one twice, is refused naming the field.
    @Test(arguments: [
        (["GPU-1", "bad id"], [[String]](), "devices[1].id"),
        (["GPU-1", "GPU-1"], [], "devices[1].id"),
        (["GPU-1"], [["GPU-1/gi 1"]], "devices[0].partitions[0].id"),
        (["GPU-1"], [["GPU-1/a", "GPU-1/a"]], "devices[0].partitions[1].id"),
        (["GPU-1"], [["x/y/z"]], "devices[0].partitions[0].id"),
    ])
    func deviceIdsThatCannotBeNamedAreRejected(_ ids: [String], _ partitions: [[String]], _ field: String) {
        var reg = Wire.Register()
        reg.nodeID = "n1"
        reg.devices = ids.enumerated().map { i, id in
            var d = Wire.Device()
            d.id = id
            d.partitions = (i < partitions.count ? partitions[i] : []).map { p in
                var w = Wire.Partition()
                w.id = p
                return w
            }
            return d
        }
        for body in [Body.register(reg), .heartbeat({ var h = Wire.Heartbeat(); h.nodeID = "n1"; h.devices = reg.devices; return h }())] {
            do {
                _ = try codec.decode(codec.encode(Message(sender: "s", sequence: 1, body: body)))
                Issue.record("\(ids) \(partitions) accepted")
            } catch {
                guard case .invalidField(_, let f, let reason) = error else { Issue.record("wrong error \(error)"); return }
                #expect(f == field, "\(reason)")
            }
        }
        // The same devices with good ids pass.
        var good = reg
        good.devices = (0..<ids.count).map { i in var d = Wire.Device(); d.id = "GPU-\(i)"; return d }
        #expect(throws: Never.self) { try codec.decode(codec.encode(Message(sender: "s", sequence: 1, body: .register(good)))) }
    }

    @Test func aQueryResourceMustParse() {
        var q = Wire.Query()
        q.kind = .nodes
        q.resource = "cg://east/a b"
        #expect(throws: ProtocolError.invalidField(type: "Query", field: "resource",
                                                   reason: "resource name 'cg://east/a b' node 'a b' contains ' '; use letters, digits, '-', '_', '.', ':'")) {
            try codec.decode(codec.encode(Message(sender: "s", sequence: 1, body: .query(q))))
        }
        q.resource = "cg://east/n1/GPU-1/gi1ci0"
        #expect(throws: Never.self) { try codec.decode(codec.encode(Message(sender: "s", sequence: 1, body: .query(q)))) }
    }

    @Test func statusUpdateWithUnknownStateIsRejected() {
        var st = Wire.StatusUpdate()
        st.jobID = "j-1"
        st.updateID = "u1"
        st.state = "exploded"
        let frame = codec.encode(Message(sender: "s", sequence: 1, body: .statusUpdate(st)))
        #expect(throws: ProtocolError.invalidField(type: "StatusUpdate", field: "state", reason: "unknown state 'exploded'")) {
            try codec.decode(frame)
        }
    }

    /// A STATUS_BATCH round-trips, and one bad update in it is refused naming its place.
    @Test func aStatusBatchRoundTripsAndABadUpdateInItIsNamed() throws {
        func update(_ i: Int, state: String = "running") -> Wire.StatusUpdate {
            var u = Wire.StatusUpdate()
            u.jobID = "j-\(i)"
            u.updateID = "r1:j-\(i):1:\(state)"
            u.state = state
            return u
        }
        var b = Wire.StatusBatch()
        b.updates = [update(0), update(1, state: "succeeded")]
        let back = try codec.decode(codec.encode(Message(sender: "r1", sequence: 7, body: .statusBatch(b))))
        #expect(back.body == .statusBatch(b))
        #expect(back.body.type == .statusBatch)
        b.updates.append(update(2, state: "exploded"))
        #expect(throws: ProtocolError.invalidField(type: "StatusBatch", field: "updates[2].state", reason: "unknown state 'exploded'")) {
            try codec.decode(codec.encode(Message(sender: "r1", sequence: 8, body: .statusBatch(b))))
        }
        var acks = Wire.StatusBatchAck()
        acks.acks = [Wire.StatusAck.with { $0.updateID = "r1:j-0:1:running"; $0.applied = true }]
        #expect(try codec.decode(codec.encode(Message(sender: "national", sequence: 9, body: .statusBatchAck(acks)))).body == .statusBatchAck(acks))
    }

    @Test func jobSpecConversionRejectsUnknownVendor() {
        var spec = Wire.JobSpec()
        spec.name = "x"
        spec.command = "true"
        spec.accelerators.count = 1
        spec.accelerators.vendor = "acme"
        #expect(throws: ProtocolError.self) { try spec.spec() }
    }

    @Test func jobRecordRoundTrips() throws {
        let now = Date(unixMilliseconds: 1_700_000_000_000)
        let r = JobRecord(id: "j-1", spec: JobSpec(name: "n", command: "c", args: ["a"], env: ["K": "V"],
                                                     accelerators: AcceleratorRequest(count: 2, vendor: .amd, model: "MI", minMemoryMiB: 1024),
                                                     timeoutSeconds: 60, allowedRegions: ["r1"]),
                          state: .succeeded, region: "r1", node: "n1", deviceIDs: ["d1", "d2"], deviceModels: ["m", "m"],
                          assignment: "j-1.2", epoch: 2, exitCode: 0, message: "ok", outputTail: "out",
                          visibleDevices: ["ROCR_VISIBLE_DEVICES": "0,1"], submittedAt: now, updatedAt: now)
        #expect(try Wire.Job(r).record() == r)
    }

    @Test(arguments: [RoutingObjective.cost, .carbon, .latency, .balanced, .weights(energy: 1, carbon: 10, transfer: 0.5, wait: 0)])
    func routingFieldsAndTheDecisionRoundTrip(objective: RoutingObjective) throws {
        let now = Date(unixMilliseconds: 1_700_000_000_000)
        let routing = RoutingRequest(origin: "yrd", dataGB: 120.5, jurisdictions: ["CN-SH", "CN-NX"], latencySLOMs: 20,
                                     objective: objective, deadline: now.addingTimeInterval(7200), runSeconds: 3600, kwPerDevice: 0.7)
        var c = RouteExplanation.Candidate(region: "nx")
        c.start = now.addingTimeInterval(3600)
        c.energy = 1.5
        c.total = 2.5
        c.rttMs = 26
        let route = RouteExplanation(decidedAt: now, objective: objective.description, currency: "CNY", region: "nx", start: c.start,
                                     note: "held", refusedBy: ["gz"], candidates: [c, .init(region: "sh", reason: "jurisdiction")])
        let r = JobRecord(id: "j-1", spec: JobSpec(name: "n", command: "c", accelerators: AcceleratorRequest(count: 8, minGrade: .c, maxGrade: .b),
                                                     routing: routing, priority: -7),
                          state: .pending, submittedAt: now, updatedAt: now, route: route)
        #expect(try Wire.Job(r).record() == r)
        let json = try JSONEncoder().encode(r)
        #expect(try JSONDecoder().decode(JobRecord.self, from: json) == r, "stored form")
    }

    @Test func anOversizedSenderIsRejectedBeforeAnythingReadsIt() {
        var q = Wire.Query()
        q.kind = .regions
        let frame = EnvelopeCodec().encode(Message(sender: String(repeating: "x", count: Wire.maxSenderBytes + 1), sequence: 1, body: .query(q)))
        #expect(throws: ProtocolError.self) { try EnvelopeCodec().decode(frame) }
        let ok = EnvelopeCodec().encode(Message(sender: String(repeating: "x", count: Wire.maxSenderBytes), sequence: 1, body: .query(q)))
        #expect((try? EnvelopeCodec().decode(ok)) != nil)
    }

    @Test func routingFieldsOutOfRangeAreRejectedByName() {
        var spec = Wire.JobSpec(JobSpec(name: "x", command: "true"))
        spec.dataGb = -1
        spec.latencySloMs = .infinity
        spec.objective = "cheapest"
        #expect(throws: ProtocolError.self) { try spec.spec() }
        func named(_ s: Wire.JobSpec) -> String {
            do { _ = try s.spec(); return "accepted" } catch { return "\(error)" }
        }
        #expect(named(spec).contains("objective"))
        spec.objective = "cost"
        #expect(named(spec).contains("data_gb"))
        var ok = Wire.JobSpec(JobSpec(name: "x", command: "true"))
        ok.runSeconds = UInt32.max
        #expect(named(ok).contains("run_seconds"))
    }

    /// Fuzz-style robustness: random bytes and random mutations of valid frames never crash.
    @Test func randomBytesNeverCrash() {
        var rng = SplitMix64(seed: 0xC0FFEE)
        let valid = codec.encode(Message(sender: "s", sequence: 1, body: Self.sampleBodies()[0]))
        var rejected = 0
        for i in 0..<5_000 {
            var frame: [UInt8]
            if i % 2 == 0 {
                frame = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                frame = valid
                for _ in 0..<(1 + Int(rng.next() % 4)) where !frame.isEmpty {
                    frame[Int(rng.next() % UInt64(frame.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
            }
            if (try? codec.decode(frame)) == nil { rejected += 1 }
        }
        #expect(rejected > 2_000)
    }
}



/// Issue 11, item 1: every string, bytes, repeated and map field of every message is bounded at
/// decode time, and the refusal names the field by its path.
@Suite struct FieldBoundsTests {
    let codec = EnvelopeCodec()

    func refusal(_ body: Body) -> ProtocolError? {
        do { _ = try codec.decode(codec.encode(Message(sender: "t", sequence: 1, body: body))); return nil } catch { return error }
    }

    @Test func aHugeStringAnywhereIsRefusedNamingItsPath() {
        var r = Wire.Register()
        r.nodeID = "n1"
        r.hostname = String(repeating: "h", count: FieldBounds.maxFieldBytes + 1)
        #expect(refusal(.register(r)) == .invalidField(type: "Register", field: "hostname", reason: "65537 bytes, at most 65536"))
        r.hostname = "h"
        var d = Wire.Device()
        d.id = "gpu0"
        d.model = String(repeating: "m", count: 70_000)
        r.devices = [Wire.Device(), d]
        r.devices[0].id = "gpu1"
        #expect(refusal(.register(r)) == .invalidField(type: "Register", field: "devices[1].model", reason: "70000 bytes, at most 65536"))
    }

    @Test func tooManyElementsOrEntriesAreRefused() {
        var s = Wire.Submit()
        s.spec.name = "x"
        s.spec.command = "true"
        s.spec.args = Array(repeating: "a", count: FieldBounds.maxRepeated + 1)
        #expect(refusal(.submit(s)) == .invalidField(type: "Submit", field: "spec.args", reason: "100001 elements, at most 100000"))
        s.spec.args = []
        for i in 0...FieldBounds.maxMapEntries { s.spec.env["K\(i)"] = "v" }
        #expect(refusal(.submit(s)) == .invalidField(type: "Submit", field: "spec.env", reason: "10001 entries, at most 10000"))
        s.spec.env = ["BIG": String(repeating: "v", count: 65_537)]
        #expect(refusal(.submit(s)) == .invalidField(type: "Submit", field: "spec.env[\"BIG\"]", reason: "65537 bytes, at most 65536"))
    }

    @Test func messagesWithinTheBoundsPass() {
        var s = Wire.Submit()
        s.spec.name = "x"
        s.spec.command = "true"
        s.spec.args = Array(repeating: String(repeating: "a", count: 1000), count: 100)
        s.spec.env = ["A": String(repeating: "v", count: FieldBounds.maxFieldBytes)]
        #expect(refusal(.submit(s)) == nil)
    }
}

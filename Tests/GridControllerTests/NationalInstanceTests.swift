import Foundation
import GridController
import GridCore
import GridProtocol
import GridStore
import GridTransport
import Testing

struct NationalHarness {
    var instance: NationalInstance
    var now = Moment(monotonicMs: 5_000_000, wall: Date(timeIntervalSince1970: 1_750_000_000))
    let client = Origin(peer: .downstream(identity: Array("gridctl".utf8)), sequence: 41, delimited: true)
    var seq: UInt64 = 0

    init(recovered: NationalRecovery = NationalRecovery()) {
        instance = NationalInstance(settings: NationalInstance.Settings(), recovered: recovered, now: now)
    }

    static func regionOrigin(_ r: String) -> Origin { Origin(peer: .downstream(identity: Array(r.utf8))) }

    mutating func send(_ body: Body, from origin: Origin) -> [ControllerDirective] {
        seq += 1
        return instance.receive(Message(sender: "t", sequence: seq, body: body), origin: origin, now: now)
    }

    mutating func tick(advanceMs: Int64 = 0) -> [ControllerDirective] {
        now = now.adding(ms: advanceMs)
        return instance.onTick(now: now, backlog: false)
    }

    mutating func summary(_ region: String, free: Int, total: Int, sequence: UInt64 = 1, full: Bool = true, base: UInt64 = 0,
                          model: String = "A100") -> [ControllerDirective] {
        var s = Wire.RegionSummary(RegionSummary(
            region: RegionID(region), nodesReady: 1, nodesLost: 0, queuedJobs: 0, runningJobs: 0,
            capacity: [CapacityEntry(vendor: .nvidia, model: model, memoryTotalMiB: 81920, total: total, free: free, healthy: total, grade: .a)],
            nodes: [], nodesTruncated: false, generatedAt: now.wall))
        s.sequence = sequence
        s.full = full
        s.baseSequence = base
        return send(.regionSummary(s), from: Self.regionOrigin(region))
    }
}

@Suite struct NationalInstanceTests {
    @Test func submitIsStoredRoutedAndForwardedUntilAcknowledged() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1)))
        let out = h.send(.submit(s), from: h.client)
        guard case .submitReply(let reply) = out.bodies.last else { Issue.record("no reply"); return }
        #expect(reply.accepted && reply.regionID == "east")
        #expect(out.mutations.count == 3, "job, its forward in the outbox and (first generated id) the id epoch, in the same batch as the reply")
        let forwards = h.tick().bodies.compactMap { if case .jobForward(let f) = $0 { return f } else { return nil } }
        #expect(forwards.map(\.jobID) == [reply.jobID])
        #expect(h.tick(advanceMs: 500).bodies.isEmpty)
        #expect(h.tick(advanceMs: 600).bodies.count == 1, "resent after the retry interval")
        var ack = Wire.JobForwardAck()
        ack.jobID = reply.jobID
        ack.accepted = true
        #expect(h.send(.jobForwardAck(ack), from: NationalHarness.regionOrigin("east")).mutations.count == 2)
        #expect(h.instance.job(JobID(reply.jobID))?.state == .queued)
        #expect(h.tick(advanceMs: 60_000).bodies.filter { if case .jobForward = $0 { return true } else { return false } }.isEmpty)
    }

    /// A region answers forwards in the order they were sent. While its answers keep coming,
    /// a forward sent after the last one it answered is not resent (it has not been reached;
    /// under a flood most forwards used to go out three times); one sent before it was lost and
    /// is; a region that stops answering gets resends as before.
    @Test func forwardsAreNotResentWhileTheRegionWorksThroughThem() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 8, total: 8)
        var item = Wire.SubmitItem()
        item.spec = Wire.JobSpec(JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1)))
        item.jobID = "a"
        item.count = 4
        var s = Wire.Submit()
        s.items = [item]
        _ = h.send(.submit(s), from: h.client)
        func forwarded(_ out: [ControllerDirective]) -> [String] {
            out.bodies.compactMap { if case .jobForward(let f) = $0 { return f.jobID } else { return nil } }.sorted()
        }
        func answer(_ id: String) {
            var ack = Wire.JobForwardAck()
            ack.jobID = id
            ack.accepted = true
            _ = h.send(.jobForwardAck(ack), from: NationalHarness.regionOrigin("east"))
        }
        let sent = h.tick().bodies.compactMap { if case .jobForward(let f) = $0 { return f.jobID } else { return nil } }
        #expect(sent.sorted() == ["a-0", "a-1", "a-2", "a-3"])
        // The region answers the second one sent: the first was lost on the way; the last two
        // have not been read yet.
        _ = h.tick(advanceMs: 900)
        answer(sent[1])
        #expect(forwarded(h.tick(advanceMs: 200)) == [sent[0]], "only the one it skipped is resent")
        answer(sent[0])
        // It goes on answering: nothing more is resent.
        _ = h.tick(advanceMs: 700)
        answer(sent[2])
        #expect(forwarded(h.tick(advanceMs: 500)).isEmpty)
        // Then it falls silent: what is left goes again once its answers are a retry interval old.
        #expect(forwarded(h.tick(advanceMs: 1100)) == [sent[3]])
        answer(sent[3])
        #expect(forwarded(h.tick(advanceMs: 60_000)).isEmpty)
    }

    @Test func aJobWhoseAllowedRegionsDoNotExistIsRefusedAtSubmit() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true", allowedRegions: ["eats"]))
        guard case .submitReply(let r) = h.send(.submit(s), from: h.client).bodies.last else { Issue.record("no reply"); return }
        #expect(!r.accepted && r.reason.contains("eats: no such region (known: east)"))
        s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true", allowedRegions: ["eats", "east"]))
        guard case .submitReply(let ok) = h.send(.submit(s), from: h.client).bodies.last else { Issue.record("no reply"); return }
        #expect(ok.accepted && ok.regionID == "east")
    }

    @Test func aBatchWithAnArrayIsAcceptedInOneCommit() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        var item = Wire.SubmitItem()
        item.spec = Wire.JobSpec(JobSpec(name: "sweep", command: "true"))
        item.jobID = "sweep"
        item.count = 100
        var bad = Wire.SubmitItem()
        bad.spec = Wire.JobSpec(JobSpec(name: "", command: "true"))
        var s = Wire.Submit()
        s.items = [item, bad]
        let out = h.send(.submit(s), from: h.client)
        guard case .submitReply(let reply) = out.bodies.last else { Issue.record("no reply"); return }
        #expect(reply.results.count == 101)
        #expect(reply.results.prefix(100).allSatisfy { $0.accepted })
        #expect(reply.results[0].jobID == "sweep-0" && reply.results[99].jobID == "sweep-99")
        #expect(reply.results[100].accepted == false && reply.results[100].reason.contains("name"))
        #expect(!reply.accepted)
        #expect(h.instance.jobCount == 100)
        // Resubmitting the same ids creates nothing new.
        let again = h.send(.submit(s), from: h.client)
        #expect(again.mutations.isEmpty)
        #expect(h.instance.jobCount == 100)
    }

    @Test func anArrayWhoseIdsWouldBeTooLongIsRefused() {
        var h = NationalHarness()
        var item = Wire.SubmitItem()
        item.spec = Wire.JobSpec(JobSpec(name: "long", command: "true"))
        item.jobID = String(repeating: "x", count: 125)
        item.count = 1000
        var s = Wire.Submit()
        s.items = [item]
        guard case .submitReply(let reply) = h.send(.submit(s), from: h.client).bodies.last else { Issue.record("no reply"); return }
        #expect(reply.results.count == 1 && !reply.results[0].accepted && reply.results[0].reason.contains("longer than"))
        #expect(h.instance.jobCount == 0)
    }

    @Test func deltasApplyOnTheirBaseAndAMissedBaseAsksForAFullSummary() {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4, sequence: 1)
        _ = h.summary("east", free: 1, total: 4, sequence: 2, full: false, base: 1)
        var q = Wire.Query()
        q.kind = .regions
        guard case .queryReply(let r) = h.send(.query(q), from: h.client).bodies.first else { Issue.record("no reply"); return }
        #expect(r.regions.first?.capacity.first?.free == 1)
        let missed = h.summary("east", free: 0, total: 4, sequence: 9, full: false, base: 8)
        guard case .regionSummaryAck(let ack) = missed.bodies.first else { Issue.record("no ack"); return }
        #expect(ack.wantFull)
    }

    @Test func nodeQueriesAreRelayedToTheRegionAndBack() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        _ = h.summary("west", free: 4, total: 4)
        var q = Wire.Query()
        q.kind = .nodes
        let ambiguous = h.send(.query(q), from: h.client)
        guard case .errorReply(let e) = ambiguous.bodies.first else { Issue.record("expected an error"); return }
        #expect(e.message.contains("east") && e.message.contains("west"))
        q.regionID = "west"
        let relayed = h.send(.query(q), from: h.client)
        guard case .send(.query(let asked), let peer, _, _) = relayed.first else { Issue.record("not relayed"); return }
        #expect(peer == NationalHarness.regionOrigin("west").peer && asked.correlation != 0)
        var answer = Wire.QueryReply()
        answer.correlation = asked.correlation
        answer.total = 3
        let back = h.send(.queryReply(answer), from: NationalHarness.regionOrigin("west"))
        guard case .send(.queryReply(let r), let to, let replyTo, let delimited) = back.first else { Issue.record("no answer relayed"); return }
        #expect(to == h.client.peer && replyTo == h.client.sequence && delimited && r.total == 3)
        // A region that never answers: the client hears so instead of waiting forever.
        _ = h.send(.query(q), from: h.client)
        let timedOut = h.tick(advanceMs: 6000)
        #expect(timedOut.bodies.contains { if case .errorReply(let e) = $0 { return e.code == "unavailable" } else { return false } })
    }

    @Test func newerEpochWinsAndTerminalStatesStay() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true"))
        s.jobID = "j-1"
        _ = h.send(.submit(s), from: h.client)
        func update(_ state: JobState, epoch: UInt64, node: String) -> Wire.StatusUpdate {
            var u = Wire.StatusUpdate()
            u.jobID = "j-1"
            u.epoch = epoch
            u.state = state.rawValue
            u.nodeID = node
            u.regionID = "east"
            u.updateID = "east:j-1:\(epoch):\(state.rawValue)"
            return u
        }
        let east = NationalHarness.regionOrigin("east")
        _ = h.send(.statusUpdate(update(.running, epoch: 1, node: "n1")), from: east)
        _ = h.send(.statusUpdate(update(.queued, epoch: 2, node: "")), from: east)
        #expect(h.instance.job("j-1")?.state == .queued && h.instance.job("j-1")?.node == nil,
                "a requeue at a newer epoch is followed: the national view shows it queued, not running on the old node")
        _ = h.send(.statusUpdate(update(.succeeded, epoch: 2, node: "n2")), from: east)
        _ = h.send(.statusUpdate(update(.running, epoch: 1, node: "n1")), from: east)
        #expect(h.instance.job("j-1")?.state == .succeeded && h.instance.job("j-1")?.node == "n2")
    }

    /// A region's STATUS_BATCH is handled update by update, as if each came alone, and answered
    /// with one STATUS_BATCH_ACK holding each update's acknowledgement in order; its summary
    /// acknowledgement tells the region the national scheduler reads batches.
    @Test func aStatusBatchIsAppliedUpdateByUpdateAndAnsweredOnce() throws {
        var h = NationalHarness()
        let ackOfSummary = h.summary("east", free: 4, total: 4).bodies.compactMap { if case .regionSummaryAck(let a) = $0 { return a } else { return nil } }
        #expect(ackOfSummary.first?.acceptsStatusBatch == true)
        for id in ["j-1", "j-2"] {
            var s = Wire.Submit()
            s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true"))
            s.jobID = id
            _ = h.send(.submit(s), from: h.client)
        }
        func update(_ job: String, _ state: JobState, epoch: UInt64 = 1) -> Wire.StatusUpdate {
            var u = Wire.StatusUpdate()
            u.jobID = job
            u.epoch = epoch
            u.state = state.rawValue
            u.nodeID = "n1"
            u.regionID = "east"
            u.updateID = "east:\(job):\(epoch):\(state.rawValue)"
            return u
        }
        var batch = Wire.StatusBatch()
        batch.updates = [update("j-1", .running), update("nope", .running), update("j-2", .succeeded), update("j-1", .running)]
        let out = h.send(.statusBatch(batch), from: NationalHarness.regionOrigin("east"))
        let acks = out.bodies.compactMap { if case .statusBatchAck(let a) = $0 { return a.acks } else { return nil } }
        #expect(acks.count == 1, "one answer for the whole batch")
        #expect(acks.first?.map(\.updateID) == batch.updates.map(\.updateID), "one acknowledgement per update, in order")
        #expect(acks.first?.map(\.applied) == [true, false, true, true], "the unknown job's is refused; the repeat is a duplicate")
        #expect(!out.bodies.contains { if case .statusAck = $0 { return true } else { return false } }, "no single acknowledgements besides")
        #expect(h.instance.job("j-1")?.state == .running && h.instance.job("j-2")?.state == .succeeded)
        #expect(out.mutations.filter { if case .applied = $0 { return true } else { return false } }.count == 2,
                "each applied update is recorded once")
    }
}

@Suite struct ControllerShellTests {
    func tempStore() throws -> GridStore {
        try GridStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("shell-\(UUID().uuidString)/r.sqlite").path)
    }

    @Test func aBatchOfMessagesIsOneCommitAndAcksFollowIt() throws {
        let store = try tempStore()
        let clock = MomentClock { Moment(monotonicMs: 1000, wall: Date(timeIntervalSince1970: 1_750_000_000)) }
        let shell = try RegionShell(settings: .init(region: "r1"), store: store, maxFrameBytes: 1 << 20,
                                    logger: .init(label: "t"), clock: clock)
        let codec = EnvelopeCodec()
        let national = Peer.upstream
        var inputs: [LoopInput<ControllerCall>] = []
        for i in 0..<50 {
            var f = Wire.JobForward()
            f.jobID = "j-\(i)"
            f.spec = Wire.JobSpec(JobSpec(name: "t", command: "true"))
            inputs.append(.frame(from: national, payload: codec.encode(Message(sender: "n", sequence: UInt64(i + 1), body: .jobForward(f))), delimited: false))
        }
        let out = shell.handle(inputs, backlog: false)
        #expect(shell.commits == 1, "fifty forwards, one transaction")
        let acks = out.compactMap { try? codec.decode($0.payload) }.filter { if case .jobForwardAck = $0.body { return true } else { return false } }
        #expect(acks.count == 50)
        #expect(try store.read("t") { try $0.liveJobs() }.count == 50, "every acknowledged job is on disk")
    }

    /// PROTOCOL.md, "Errors": a frame whose envelope can be read but whose version, payload or
    /// fields are bad is answered with ERROR_REPLY (reply_to = its sequence), not dropped.
    @Test func aBadMessageGetsAnErrorReplyNamingWhatIsWrong() throws {
        let store = try tempStore()
        let clock = MomentClock { Moment(monotonicMs: 1000, wall: Date(timeIntervalSince1970: 1_750_000_000)) }
        let shell = try NationalShell(settings: .init(), store: store, maxFrameBytes: 1 << 20, logger: .init(label: "t"), clock: clock)
        let codec = EnvelopeCodec()
        let client = Peer.downstream(identity: Array("c".utf8))
        var submit = Wire.Submit()
        submit.jobID = "bad id"
        submit.spec = Wire.JobSpec(JobSpec(name: "t", command: "true"))
        var future = Wire.Envelope()
        future.version = 2
        future.type = .query
        future.sequence = 8
        var update = Wire.StatusUpdate()
        update.jobID = "j"
        update.updateID = "u"
        update.state = "exploded"
        var error = Wire.Envelope()
        error.version = 1
        error.type = .errorReply
        error.payload = Data([0xFF, 0xFF])
        let out = shell.handle([
            .frame(from: client, payload: codec.encode(Message(sender: "c", sequence: 7, body: .submit(submit))), delimited: true),
            .frame(from: client, payload: Array(try future.serializedData()), delimited: true),
            .frame(from: client, payload: codec.encode(Message(sender: "c", sequence: 9, body: .statusUpdate(update))), delimited: true),
            .frame(from: client, payload: Array(try error.serializedData()), delimited: true),
            .frame(from: client, payload: [1, 2, 3], delimited: true),
        ], backlog: false)
        let replies = out.compactMap { try? codec.decode($0.payload) }.compactMap { m -> (UInt64, Wire.ErrorReply)? in
            if case .errorReply(let e) = m.body { return (m.replyTo, e) } else { return nil }
        }
        #expect(replies.map(\.0) == [7, 8, 9], "one answer per readable envelope; none to a bad error reply or garbage")
        #expect(replies[0].1.code == "bad_request" && replies[0].1.message.contains("Submit.job_id"))
        #expect(replies[1].1.code == "unsupported" && replies[1].1.message.contains("speaks 1"))
        #expect(replies[2].1.code == "bad_request" && replies[2].1.message.contains("state"))
    }

    @Test func aFailedCommitSendsNothingAndReloadsFromTheLog() throws {
        let store = try tempStore()
        let clock = MomentClock { Moment(monotonicMs: 1000, wall: Date(timeIntervalSince1970: 1_750_000_000)) }
        let shell = try RegionShell(settings: .init(region: "r1"), store: store, maxFrameBytes: 1 << 20,
                                    logger: .init(label: "t"), clock: clock)
        let orphan = AssignmentRecord(id: "x.1", job: "x", node: "n", epoch: 1, deviceIDs: [], state: .pending, createdAt: Date())
        var ack = Wire.JobForwardAck()
        ack.jobID = "x"
        let out = shell.perform([.persist(.assignment(orphan, at: Date())), .send(.jobForwardAck(ack), to: .upstream)])
        #expect(out.isEmpty, "an acknowledgement of a change that was not stored must not leave")
        #expect(shell.failedCommits == 1)
    }
}

@Suite struct TimerHeapTests {
    @Test func popsInDueOrderFirstInFirstOutAndNeverEarly() {
        var heap = TimerHeap<Int>()
        var rng = SystemRandomNumberGenerator()
        var expected: [(Int64, Int)] = []
        for i in 0..<2000 {
            let due = Int64.random(in: 0..<500, using: &rng)
            heap.schedule(i, at: due)
            expected.append((due, i))
        }
        #expect(heap.popDue(-1) == nil, "nothing is due before its time")
        expected.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        var got: [Int] = []
        while let t = heap.popDue(250) { got.append(t) }
        #expect(got == expected.filter { $0.0 <= 250 }.map(\.1))
        // Slots are reused after pops; order still holds for what is scheduled later.
        heap.schedule(-1, at: 300)
        var rest: [Int] = []
        while let t = heap.popDue(1000) { rest.append(t) }
        let later = expected.filter { $0.0 > 250 }
        let merged = (later + [(300, -1)]).sorted { $0.0 != $1.0 ? $0.0 < $1.0 : ($0.1 == -1 ? false : ($1.1 == -1 ? true : $0.1 < $1.1)) }
        #expect(rest == merged.map(\.1))
        #expect(heap.count == 0 && heap.nextDue == nil)
    }
}

/// Issue 11, item 5: generated job ids are unique across restarts and clock steps.
@Suite struct JobIDEpochTests {
    static func submit(_ h: inout NationalHarness) -> (id: String, stored: UInt64?) {
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(JobSpec(name: "x", command: "true"))
        let out = h.send(.submit(s), from: h.client)
        var id = "", stored: UInt64?
        for d in out {
            if case .persist(.meta(let key, let value)) = d, key == NationalRecovery.idEpochKey { stored = UInt64(value) }
            if case .send(.submitReply(let r), _, _, _) = d { id = r.jobID }
        }
        return (id, stored)
    }

    @Test func aRestartWithTheClockSteppedBackNeverHandsOutAnEarlierRunsIDs() throws {
        var first = NationalHarness()
        let a = Self.submit(&first)
        let epoch = try #require(a.stored, "the first generated id stores its epoch")
        #expect(Self.submit(&first).stored == nil, "once per run, not per job")
        // Restarted an hour earlier by the clock: the new run's epoch is still later than the stored one.
        var recovered = NationalRecovery()
        recovered.idEpochMs = epoch
        var second = NationalHarness(recovered: recovered)
        second.now = Moment(monotonicMs: 10, wall: first.now.wall.addingTimeInterval(-3600))
        second.instance = NationalInstance(settings: NationalInstance.Settings(), recovered: recovered, now: second.now)
        let b = Self.submit(&second)
        #expect(b.stored == epoch + 1)
        #expect(a.id != b.id && a.id.hasPrefix("j-\(String(epoch, radix: 36))-") && b.id.hasPrefix("j-\(String(epoch + 1, radix: 36))-"), "\(a.id) \(b.id)")
    }
}

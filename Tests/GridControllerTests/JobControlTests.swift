import Foundation
import GridController
import GridCore
import GridProtocol
import Testing

/// Issue 9, item 8: hold, release and requeue, in the region and at the national scheduler.
@Suite struct JobControlTests {
    static func control(_ job: String, _ action: Wire.JobControl.Action, reason: String = "", correlation: UInt64 = 7) -> Body {
        var c = Wire.JobControl()
        c.jobID = job
        c.action = action
        c.reason = reason
        c.correlation = correlation
        return .jobControl(c)
    }

    static func replyJob(_ out: [ControllerDirective]) -> Wire.Job? {
        for b in out.bodies { if case .queryReply(let r) = b { return r.jobs.first } }
        return nil
    }

    static func error(_ out: [ControllerDirective]) -> Wire.ErrorReply? {
        for b in out.bodies { if case .errorReply(let e) = b { return e } }
        return nil
    }

    @Test func aHeldQueuedJobIsPlacedNowhereUntilReleasedAndTheHoldSurvivesARestart() throws {
        var h = RegionHarness()
        _ = h.forward("j", JobSpec(name: "j", command: "true"))
        let held = h.send(Self.control("j", .hold, reason: "wrong dataset"), from: h.national)
        #expect(Self.replyJob(held)?.holdReason == "wrong dataset")
        #expect(held.persistedJobs.last?.hold?.reason == "wrong dataset", "the hold is written")
        let up = try #require(h.tick(advanceMs: 10).statusUpdates.first { $0.jobID == "j" && !$0.holdReason.isEmpty })
        #expect(up.state == "queued" && up.holdReason == "wrong dataset")
        _ = h.register("n1", devices: [device("g0", 0)])
        #expect(h.tick(advanceMs: 100).assignments.isEmpty, "a held job is not placed")
        // A restart keeps the hold.
        var recovered = RegionRecovery()
        recovered.jobs = [try #require(h.instance.job("j"))]
        var h2 = RegionHarness(recovered: recovered)
        _ = h2.register("n1", devices: [device("g0", 0)])
        #expect(h2.tick(advanceMs: 100).assignments.isEmpty, "still held after a restart")
        let released = h2.send(Self.control("j", .release), from: h2.national)
        #expect(Self.replyJob(released)?.holdReason == "")
        let pass = released + h2.tick() + h2.tick(advanceMs: 10)
        #expect(pass.assignments.map(\.jobID) == ["j"])
        #expect(pass.statusUpdates.contains { $0.jobID == "j" && $0.holdReason.isEmpty && $0.updateID.contains("release") })
    }

    @Test func aHeldRunningJobRunsOnAndWaitsWhenItComesBack() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j", JobSpec(name: "j", command: "true", retry: RetryPolicy(backoffSeconds: 0)))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        _ = h.status(a, .running)
        let out = h.send(Self.control("j", .hold, reason: "later"), from: h.national)
        #expect(out.cancels.isEmpty, "holding does not stop the run")
        #expect(h.instance.job("j")?.state == .running)
        // The agent is stopped: the run comes back to the queue, where the hold keeps it.
        _ = h.status(a, .cancelled, reason: .agentStopped)
        #expect(h.instance.job("j")?.state == .queued)
        #expect(h.tick(advanceMs: 100).assignments.isEmpty)
        _ = h.send(Self.control("j", .release), from: h.national)
        #expect(h.tick().assignments.map(\.jobID) == ["j"])
    }

    @Test func requeueStopsTheRunAndQueuesItAgainWithoutUsingAnAttempt() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j", JobSpec(name: "j", command: "true", retry: RetryPolicy(maxAttempts: 1)))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        _ = h.status(a, .running)
        let out = h.send(Self.control("j", .requeue, reason: "node maintenance"), from: h.national)
        #expect(out.cancels.map(\.assignmentID) == [a.assignmentID], "the run is stopped through its agent")
        #expect(Self.replyJob(out)?.state == "running")
        // A heartbeat that still lists the run gets the cancel again.
        #expect(h.heartbeat("n1", running: [a.assignmentID], digestOf: [a.assignmentID]).cancels.map(\.assignmentID) == [a.assignmentID])
        _ = h.status(a, .cancelled, reason: .cancelled)
        let job = try #require(h.instance.job("j"))
        #expect(job.state == .queued, "max_attempts 1 is not used up by a requeue: \(job.message)")
        #expect(job.attempts.last?.endReason == .requeued && job.message.contains("node maintenance"))
        let again = try #require(h.tick().assignments.first)
        #expect(again.jobID == "j" && again.epoch > a.epoch && again.attempt == 2)
    }

    @Test func refusalsNameTheJobAndCarryTheCorrelation() throws {
        var h = RegionHarness()
        let unknown = try #require(Self.error(h.send(Self.control("nope", .hold, correlation: 99), from: h.national)))
        #expect(unknown.code == "not_found" && unknown.correlation == 99 && unknown.message.contains("nope"))
        _ = h.forward("q", JobSpec(name: "q", command: "true"))
        let notRunning = try #require(Self.error(h.send(Self.control("q", .requeue, correlation: 5), from: h.national)))
        #expect(notRunning.code == "bad_request" && notRunning.message.contains("not running") && notRunning.correlation == 5)
    }

    // MARK: national

    @Test func nationalHoldsAPendingJobAndReleasesItToBeRouted() throws {
        var h = NationalHarness()
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1)))
        // No region yet: the job waits at the national level.
        guard case .submitReply(let reply) = h.send(.submit(s), from: h.client).bodies.last else { Issue.record("no reply"); return }
        let notRunning = try #require(Self.error(h.send(Self.control(reply.jobID, .requeue), from: h.client)))
        #expect(notRunning.code == "bad_request" && notRunning.message.contains("nothing to requeue"))
        let held = h.send(Self.control(reply.jobID, .hold, reason: "budget"), from: h.client)
        #expect(Self.replyJob(held)?.holdReason == "budget")
        _ = h.summary("east", free: 4, total: 4)
        let forwards = h.tick(advanceMs: 2000).bodies.filter { if case .jobForward = $0 { return true } else { return false } }
        #expect(forwards.isEmpty, "a held job is routed nowhere")
        #expect(h.instance.job(JobID(reply.jobID))?.message == "held: budget")
        // A restart keeps it held.
        var recovered = NationalRecovery()
        recovered.jobs = [try #require(h.instance.job(JobID(reply.jobID)))]
        var h2 = NationalHarness(recovered: recovered)
        _ = h2.summary("east", free: 4, total: 4)
        #expect(h2.tick(advanceMs: 2000).bodies.filter { if case .jobForward = $0 { return true } else { return false } }.isEmpty)
        _ = h2.send(Self.control(reply.jobID, .release), from: h2.client)
        let sent = (h2.tick(advanceMs: 1100) + h2.tick()).bodies.compactMap { if case .jobForward(let f) = $0 { return f } else { return nil } }
        #expect(sent.map(\.jobID) == [reply.jobID], "\(String(describing: h2.instance.job(JobID(reply.jobID))))")
    }

    @Test func nationalRelaysControlOfAForwardedJobAndTheRegionsRefusal() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1)))
        guard case .submitReply(let reply) = h.send(.submit(s), from: h.client).bodies.last else { Issue.record("no reply"); return }
        let out = h.send(Self.control(reply.jobID, .requeue), from: h.client)
        let relayed = try #require(out.bodies.compactMap { if case .jobControl(let c) = $0 { return c } else { return nil } }.first)
        #expect(relayed.jobID == reply.jobID && relayed.correlation != 0)
        // The region refuses: the asker gets the refusal, not a timeout.
        var e = Wire.ErrorReply()
        e.code = "bad_request"
        e.message = "job is queued, not running"
        e.correlation = relayed.correlation
        let back = h.send(.errorReply(e), from: NationalHarness.regionOrigin("east"))
        guard case .send(.errorReply(let got), let to, let replyTo, _) = try #require(back.first) else { Issue.record("not relayed: \(back)"); return }
        #expect(got.message == e.message && got.correlation == 0 && to == h.client.peer && replyTo == h.client.sequence)
    }
}

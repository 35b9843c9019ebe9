import Foundation
import GridController
import GridCore
import GridProtocol
import Testing

/// Issue 9, item 2 (single node): a multi-device job is not starved by a stream of small jobs;
/// small work with a time limit that ends in time backfills the reserved node.
@Suite struct ReservationTests {
    static func small(_ timeout: Int? = nil) -> JobSpec {
        JobSpec(name: "small", command: "true", accelerators: AcceleratorRequest(count: 1), timeoutSeconds: timeout)
    }

    /// A 2-device node with one run (limit 100 s) on it, and a 2-device job waiting.
    static func oneRunAndAWideJobWaiting(_ h: inout RegionHarness) throws -> Wire.Assignment {
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.forward("a", small(100))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        _ = h.status(a, .running)
        _ = h.forward("wide", JobSpec(name: "wide", command: "true", accelerators: AcceleratorRequest(count: 2)))
        return a
    }

    @Test func aWideJobGetsTheNodeAndShortWorkBackfillsIt() throws {
        var h = RegionHarness()
        _ = try Self.oneRunAndAWideJobWaiting(&h)
        _ = h.forward("endless", Self.small())
        _ = h.forward("short", Self.small(10))
        let pass = h.tick(advanceMs: 10).assignments.map(\.jobID)
        #expect(pass == ["short"], "only work that ends before the wide job's start backfills: \(pass)")
        let endless = try #require(h.instance.job("endless"))
        #expect(endless.state == .queued && endless.message.contains("reserved for wide"), "\(endless.message)")
        #expect(h.instance.job("wide")?.message.contains("reserved: n1") == true)
    }

    @Test func withoutReservationsTheStreamStarvesTheWideJob() throws {
        var h = RegionHarness { $0.reservations = false }
        _ = try Self.oneRunAndAWideJobWaiting(&h)
        _ = h.forward("endless", Self.small())
        #expect(h.tick(advanceMs: 10).assignments.map(\.jobID) == ["endless"])
    }

    /// `reservation_depth`: with 1, only the first waiting job holds a reservation and a gang
    /// behind it holds none; with 2 the gang reserves nodes of its own (distinct from the
    /// first's), endless one-device jobs cannot take them, and it starts once the runs on them
    /// end.
    @Test(arguments: [1, 2]) func severalJobsHoldReservationsUpToTheDepth(depth: Int) throws {
        var h = RegionHarness { $0.reservationDepth = depth }
        for n in 1...4 { _ = h.register("n\(n)", devices: [device("n\(n)-g0", 0), device("n\(n)-g1", 1)]) }
        // Every device runs endless one-device work.
        for n in 1...8 { _ = h.forward("run\(n)", Self.small()) }
        let runs = h.tick().assignments
        #expect(runs.count == 8 && Set(runs.map(\.nodeID)).count == 4)
        for a in runs {
            _ = h.ack(a)
            _ = h.status(a, .running)
        }
        _ = h.forward("wide", JobSpec(name: "wide", command: "true", accelerators: AcceleratorRequest(count: 2)))
        var gang = JobSpec(name: "gang", command: "true", accelerators: AcceleratorRequest(count: 2))
        gang.nodes = 2
        _ = h.forward("gang", gang)
        #expect(h.tick(advanceMs: 10).assignments.isEmpty)
        func reserved(_ job: String) -> Set<String> {
            guard let m = h.instance.job(JobID(job))?.message, let r = m.range(of: "reserved: ") else { return [] }
            return Set(m[r.upperBound...].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        }
        let wide = reserved("wide"), g = reserved("gang")
        #expect(wide.count == 1, "\(h.instance.job("wide")?.message ?? "")")
        if depth == 1 {
            #expect(g.isEmpty, "\(h.instance.job("gang")?.message ?? "")")
            return
        }
        #expect(g.count == 2 && g.isDisjoint(with: wide), "gang \(g), wide \(wide)")
        // The runs on the gang's nodes end; endless one-device work waits; the gang starts there.
        for n in 1...2 { _ = h.forward("endless\(n)", Self.small()) }
        for a in runs where g.contains(a.nodeID) { _ = h.status(a, .succeeded, exit: 0) }
        let started = h.tick(advanceMs: 10).assignments
        #expect(Set(started.filter { $0.jobID == "gang" }.map(\.nodeID)) == g, "\(started.map { "\($0.jobID)@\($0.nodeID)" })")
        #expect(!started.contains { $0.jobID.hasPrefix("endless") && g.contains($0.nodeID) })
    }

    @Test func theReservedJobStartsWhenTheRunsEnd() throws {
        var h = RegionHarness()
        let a = try Self.oneRunAndAWideJobWaiting(&h)
        _ = h.forward("endless", Self.small())
        #expect(h.tick(advanceMs: 10).assignments.isEmpty)
        _ = h.status(a, .succeeded, exit: 0)
        #expect(h.tick(advanceMs: 10).assignments.map(\.jobID) == ["wide"])
        #expect(h.instance.job("endless")?.state == .queued)
    }
}

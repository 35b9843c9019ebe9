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

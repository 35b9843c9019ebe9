import Foundation
import GridCLI
import GridCore
import Testing

extension EndToEnd {
/// A region that dies shows as stale, and an operator can make the national scheduler forget
/// it — but not while it is live, and not while it still holds jobs.
@Suite(.serialized) struct RegionRemovalTests {
    @Test func aStaleEmptyRegionIsForgottenALiveOrBusyOneIsNot() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let config = c.dir.appendingPathComponent("national.yaml")
        try "role: national\nrouting:\n  region_lost_after_seconds: 2\n".write(to: config, atomically: true, encoding: .utf8)
        try c.startNational(extra: ["--config", config.path])
        for r in ["r1", "r2", "r3"] { try c.startRegion(r) }
        try c.startAgent("r2-node", region: "r2", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        let client = try c.client()
        _ = try c.eventually(30, "three regions, r2 with its node") { () -> Bool? in
            let rs = try client.query(.regions).regions
            return rs.count == 3 && rs.first { $0.regionID == "r2" }?.nodesReady == 1 ? true : nil
        }
        // r2 holds two jobs: one running, one queued behind it.
        var spec = JobSpec(name: "long", command: "/bin/sleep", args: ["600"], accelerators: AcceleratorRequest(count: 1))
        spec.allowedRegions = ["r2"]
        _ = try client.submit(spec, id: JobID("in-r2-a"))
        _ = try client.submit(spec, id: JobID("in-r2-b"))
        _ = try c.eventually(30, "both jobs in r2") { () -> Bool? in
            let js = try client.jobs()
            return js.filter { $0.region == "r2" && [.running, .queued].contains($0.state) }.count == 2 ? true : nil
        }

        // A live region is refused.
        let live = try c.gridctl(["regions", "remove", "r1"])
        #expect(live.status != 0 && live.output.contains("is live"), "\(live.output)")

        // r2 and r3 die (kill -9); r2's jobs cannot move (allowed only there).
        for name in ["r2-node", "r2", "r3"] { _ = c.stop(name, signal: SIGKILL, within: 5) }
        let base = try c.httpBase(of: "national")
        try await Cluster.eventually("r2 and r3 stale") {
            let list = try JSONSerialization.jsonObject(with: Data(try await HTTPCall.get("\(base)/api/v1/regions").body.utf8)) as? [[String: Any]] ?? []
            let stale = Set(list.filter { $0["state"] as? String == "stale" }.compactMap { $0["id"] as? String })
            return stale == ["r2", "r3"]
        }
        let listed = try c.gridctl(["regions"])
        #expect(listed.output.split(separator: "\n").filter { $0.contains("(stale)") }.count == 2, "\(listed.output)")
        let busy = try c.gridctl(["regions", "remove", "r2"])
        #expect(busy.status != 0 && busy.output.contains("still holds 2 job(s)") && busy.output.contains("in-r2-a"), "\(busy.output)")

        // r3 holds nothing: forgotten, and stays forgotten after a restart.
        let removed = try c.gridctl(["regions", "remove", "r3"])
        #expect(removed.status == 0 && removed.output.contains("r3 removed"), "\(removed.output)")
        #expect(try client.query(.regions).regions.map(\.regionID).sorted() == ["r1", "r2"])
        let unknown = try c.gridctl(["regions", "remove", "r3"])
        #expect(unknown.status != 0 && unknown.output.contains("not known"))
        #expect(c.stop("national") == 0)
        try c.startNational(extra: ["--config", config.path, "--bind", c.nationalEndpoint])
        let after = try c.client()
        _ = try c.eventually(20, "the national scheduler back") { try after.query(.regions).regions.map(\.regionID).sorted() }
        #expect(try after.query(.regions).regions.map(\.regionID).contains("r3") == false)
    }
}
}

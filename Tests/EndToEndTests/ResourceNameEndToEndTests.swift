import Foundation
import GridCLI
import GridCore
import Testing

extension EndToEnd {
/// Resource names (PROTOCOL.md, "Resource names") through the real executables: gridctl takes
/// and shows them, the HTTP API resolves them, a job sees its own, the region logs them, and a
/// bad one is refused with the segment that is wrong.
@Suite(.serialized) struct ResourceNameEndToEndTests {
    static let gpu = "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a"

    @Test func namesAreCarriedByGridctlTheAPIJobsAndLogs() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        try c.startAgent("mig-node", region: "r1", simulate: ["nvidia-smi-q-x_a100-sxm4-40gb-mig_v11.xml"])
        let client = try c.client()
        _ = try c.eventually(30, "the node") { try client.query(.regions).regions.first?.nodesReady == 1 ? true : nil }

        // A job learns the names of its node and of the slice it holds.
        _ = try client.submit(JobSpec(name: "names", command: "/bin/sh", args: ["-c", "echo \"$GRID_RESOURCE|$GRID_DEVICE_RESOURCES\""],
                                      accelerators: AcceleratorRequest(count: 1, partition: "any")), id: JobID("names-1"))
        let done = try c.eventually(60, "names-1 ended") { () -> JobRecord? in
            let j = try client.jobs().first { $0.id == "names-1" }
            return j?.state.isTerminal == true ? j : nil
        }
        #expect(done.state == .succeeded, "\(done.message)")
        let line = done.outputTail.trimmingCharacters(in: .whitespacesAndNewlines)
        let unit = try #require(done.deviceIDs.first)
        let expectedUnit = ResourceName(region: "r1", node: "mig-node", device: Self.gpu, partition: unit).description
        #expect(line == "cg://r1/mig-node|\(expectedUnit)", "\(line)")

        // gridctl: a slice's name shows that slice alone, with its name in wide output.
        let one = try c.gridctl(["node", expectedUnit, "-o", "wide"])
        #expect(one.status == 0 && one.output.contains("RESOURCE") && one.output.contains(expectedUnit), "\(one.output)")
        let all = try c.gridctl(["node", "cg://r1/mig-node", "-o", "json"])
        let units = try #require(((try JSONSerialization.jsonObject(with: Data(all.output.utf8))) as? [String: Any])?["units"] as? [[String: Any]])
        let justOne = ((try JSONSerialization.jsonObject(with: Data(try c.gridctl(["node", expectedUnit, "-o", "json"]).output.utf8)))
            as? [String: Any])?["units"] as? [Any]
        #expect(units.count > 1 && justOne?.count == 1, "\(all.output)")
        #expect(units.allSatisfy { ($0["resource"] as? String)?.hasPrefix("cg://r1/mig-node/\(Self.gpu)/") == true })
        let bad = try c.gridctl(["node", "cg://r1/mig node"])
        #expect(bad.status != 0 && bad.output.contains("node 'mig node' contains ' '"), "\(bad.output)")
        let elsewhere = try c.gridctl(["node", "cg://r1/ghost"])
        #expect(elsewhere.status != 0 && elsewhere.output.contains("cg://r1/ghost is not known"), "\(elsewhere.output)")
        let deviceCordon = try c.gridctl(["cordon", "cg://r1/mig-node/\(Self.gpu)"])
        #expect(deviceCordon.status != 0 && deviceCordon.output.contains("act on a whole node"), "\(deviceCordon.output)")
        let cordon = try c.gridctl(["cordon", "cg://r1/mig-node", "--reason", "named"])
        #expect(cordon.status == 0 && cordon.output.contains("named"), "\(cordon.output)")
        #expect(try c.gridctl(["uncordon", "cg://r1/mig-node"]).status == 0)

        // The HTTP API resolves every level and says which segment of a bad name is wrong.
        let n = try c.httpBase(of: "national")
        func resolve(_ name: String) async throws -> HTTPCall {
            let q = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? name
            return try await HTTPCall.get("\(n)/api/v1/resources?name=\(q)")
        }
        let network = try await resolve("cg://")
        #expect(network.status == 200 && network.json["level"] as? String == "network" && network.json["overview"] != nil, "\(network.body)")
        let region = try await resolve("cg://r1")
        #expect(region.status == 200 && (region.json["region"] as? [String: Any])?["id"] as? String == "r1", "\(region.body)")
        let slice = try await resolve(expectedUnit)
        let sliceUnits = (slice.json["node"] as? [String: Any])?["units"] as? [[String: Any]]
        #expect(slice.status == 200 && slice.json["level"] as? String == "partition" && sliceUnits?.first?["resource"] as? String == expectedUnit,
                "\(slice.body)")
        let wrong = try await resolve("cg://r1/mig-node/bad;id")
        #expect(wrong.status == 400 && wrong.errorMessage.contains("device 'bad;id' contains ';'"), "\(wrong.body)")
        let missing = try await resolve("cg://r9")
        #expect(missing.status == 404, "\(missing.body)")

        // The region names the node in its log lines.
        #expect(c.log("r1").contains("cg://r1/mig-node"), "\(c.log("r1").suffix(2000))")
    }
}
}

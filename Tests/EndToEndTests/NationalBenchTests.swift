import Foundation
import Testing

extension EndToEnd {
    /// `grid-bench national` replays a scenario through the real decision code: a small hub
    /// scenario must come out with no violated constraint and a decision for every job.
    @Suite(.serialized) struct NationalBenchTests {
        @Test func aSmallHubScenarioHasADecisionPerJobAndNoViolation() throws {
            let scenario = Cluster.repoRoot.appendingPathComponent("bench/scenarios/cn-hubs-40-small.json")
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("decisions-\(UUID().uuidString).json")
            defer { try? FileManager.default.removeItem(at: out) }
            let p = Process()
            p.executableURL = Cluster.binDir.appendingPathComponent("grid-bench")
            p.arguments = ["national", "--scenario", scenario.path, "--decisions-out", out.path]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            let drain = PipeDrain(pipe)
            try p.finish(within: 120)
            let text = try drain.text()
            #expect(p.terminationStatus == 0, "\(text)")
            #expect(text.contains("RESULT national:") && text.contains("violations 0"), "\(text)")
            for line in text.split(separator: "\n") where ["policy", "round-robin", "least-loaded", "cheapest-price-now"].contains(where: { line.hasPrefix($0) }) {
                #expect(!line.contains("violation:"))
            }
            let spec = try JSONSerialization.jsonObject(with: Data(contentsOf: scenario)) as! [String: Any]
            let jobs = (spec["jobs"] as! [[String: Any]]).map { $0["id"] as! String }
            let regions = Set((spec["regions"] as! [[String: Any]]).map { $0["id"] as! String })
            let decisions = try JSONSerialization.jsonObject(with: Data(contentsOf: out)) as! [String: Any]
            #expect(Set(decisions.keys) == Set(jobs), "one decision per job")
            var placed = 0
            for (_, d) in decisions {
                guard let pair = d as? [Any] else { continue }
                #expect(regions.contains(pair[0] as? String ?? ""))
                placed += 1
            }
            #expect(placed > jobs.count / 2, "most of a light scenario is placed (\(placed) of \(jobs.count))")
        }
    }
}

import Foundation
import GridCLI
import GridCore
import Testing
import Yams

extension EndToEnd {
/// gridctl's output on a real network: -o table|wide|json|yaml, --columns, nothing cut in wide
/// (and an ellipsis where the table cuts), colours only on a terminal and never with NO_COLOR,
/// `wait` showing each state change on a terminal.
@Suite(.serialized) struct GridctlOutputTests {
    /// Runs gridctl under a pseudo-terminal (util-linux `script`), as a person at a shell would.
    func onTerminal(_ c: Cluster, _ args: [String], environment: [String: String] = [:]) throws -> String {
        let command = ([Cluster.binDir.appendingPathComponent("gridctl").path] + args + ["--controller", c.nationalEndpoint])
            .map { "'\($0)'" }.joined(separator: " ")
        var env: [String: String?] = ["TERM": "xterm", "NO_COLOR": nil]
        for (k, v) in environment { env[k] = v }
        return try Cluster.run("/usr/bin/script", ["-qec", command, "/dev/null"], environment: env).output
    }

    @Test func everyFormatAndColumnChoiceOnARealNetwork() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        try c.startAgent("a10g-node", region: "r1", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        let client = try c.client()
        _ = try c.eventually(30, "the node") { try client.query(.regions).regions.first?.nodesReady == 1 ? true : nil }
        // A job whose reason is long: the table cuts it with an ellipsis, wide shows all of it.
        let gate = c.dir.appendingPathComponent("go")
        _ = try client.submit(JobSpec(name: "slow", command: "/bin/sh", args: ["-c", "while [ ! -f \(gate.path) ]; do sleep 0.1; done"],
                                      accelerators: AcceleratorRequest(count: 1)), id: JobID("slow-1"))
        _ = try client.submit(JobSpec(name: "waits", command: "/bin/true", accelerators: AcceleratorRequest(count: 1)), id: JobID("waits-1"))
        let running = try c.eventually(30, "slow-1 running") { () -> JobRecord? in
            let j = try client.jobs().first { $0.id == "slow-1" }
            return j?.state == .running ? j : nil
        }
        _ = try c.eventually(30, "waits-1 queued") { try client.jobs().first { $0.id == "waits-1" }?.state == .queued ? true : nil }
        #expect(running.message.count > 70, "\(running.message)")
        let table = try c.gridctl(["jobs"])
        #expect(table.status == 0 && table.output.contains("…"), "\(table.output)")
        #expect(!table.output.contains("\u{1B}["), "colours in a pipe")
        #expect(!table.output.contains("SUBMITTED"))
        let wide = try c.gridctl(["jobs", "-o", "wide"])
        #expect(wide.output.contains("SUBMITTED") && wide.output.contains("ATTEMPTS") && wide.output.contains(running.message), "\(wide.output)")
        let chosen = try c.gridctl(["jobs", "--columns", "job,state"])
        #expect(chosen.output.split(separator: "\n").first?.split(separator: " ", omittingEmptySubsequences: true) == ["JOB", "STATE"])
        let bad = try c.gridctl(["jobs", "--columns", "job,colour"])
        #expect(bad.status != 0 && bad.output.contains("'colour' is not a column") && bad.output.contains("state"), "\(bad.output)")
        let yaml = try c.gridctl(["jobs", "-o", "yaml"])
        let list = try #require(try Yams.load(yaml: yaml.output) as? [[String: Any]], "\(yaml.output)")
        #expect(Set(list.compactMap { $0["id"] as? String }) == ["slow-1", "waits-1"])
        let json = try c.gridctl(["nodes", "-o", "json"])
        #expect((try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [[String: Any]])?.count == 1)
        let node = try c.gridctl(["node", "a10g-node"])
        #expect(node.status == 0 && node.output.contains("DEVICE") && node.output.contains("slow-1") && node.output.contains("NVIDIA A10G"), "\(node.output)")
        let nodeJSON = try c.gridctl(["node", "a10g-node", "-o", "json"])
        #expect(((try JSONSerialization.jsonObject(with: Data(nodeJSON.output.utf8)) as? [String: Any])?["units"] as? [Any])?.count == 1, "\(nodeJSON.output)")
        #expect(try c.gridctl(["node", "ghost"]).output.contains("not known"))
        let nodes = try c.gridctl(["nodes"])
        #expect(nodes.output.contains("FREE") && nodes.output.contains("HEALTH") && nodes.output.contains("a10g-node"))

        // On a terminal: colours; with NO_COLOR: none.
        let coloured = try onTerminal(c, ["jobs"])
        #expect(coloured.contains("\u{1B}[32mrunning"), "\(coloured)")
        let plain = try onTerminal(c, ["jobs"], environment: ["NO_COLOR": "1"])
        #expect(plain.contains("running") && !plain.contains("\u{1B}["), "\(plain)")

        // `wait` on a terminal prints each change as it happens.
        // The gate opens while `wait` watches, so it sees slow-1 go from running to succeeded.
        DispatchQueue.global().asyncAfter(deadline: .now() + 1.5) { try? "".write(to: gate, atomically: true, encoding: .utf8) }
        let waited = try onTerminal(c, ["wait", "--within", "60", "slow-1", "waits-1"], environment: ["NO_COLOR": "1"])
        #expect(waited.contains("slow-1  running"), "\(waited)")
        #expect(waited.contains("→ succeeded"), "\(waited)")
        #expect(waited.contains("waits-1  queued") && waited.contains("waits-1  queued → "), "\(waited)")
    }

    /// Every verb once on a small network, each with what a person needs to see.
    @Test func everyVerbAnswersOnANetwork() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        try c.startAgent("v100-node", region: "r1", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        _ = try c.eventually(30, "the node") { try c.client().query(.regions).regions.first?.nodesReady == 1 ? true : nil }
        func ok(_ args: [String], _ expected: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
            let r = try c.gridctl(args)
            #expect(r.status == 0, "gridctl \(args.joined(separator: " ")) exited \(r.status):\n\(r.output)", sourceLocation: sourceLocation)
            for e in expected {
                #expect(r.output.contains(e), "gridctl \(args.joined(separator: " ")) does not say \(e):\n\(r.output)", sourceLocation: sourceLocation)
            }
        }
        let file = c.dir.appendingPathComponent("job.yaml")
        try "name: verbs\ncommand: /bin/sh\nargs: [\"-c\", \"sleep 30\"]\naccelerators: {count: 2, vendor: nvidia}\n".write(to: file, atomically: true, encoding: .utf8)
        try ok(["submit", "--id", "v-1", file.path], ["v-1"])
        try ok(["submit", "--id", "v-2", file.path], ["v-2"])
        _ = try c.eventually(30, "v-1 running") { try c.client().jobs().first { $0.id == "v-1" }?.state == .running ? true : nil }
        try ok(["jobs"], ["v-1", "running", "v100-node"])
        try ok(["job", "v-1"], ["asked: 2 device(s) (nvidia)", "events:", "attempt 1 started on v100-node", "submitted:"])
        try ok(["explain", "v-1"], ["v-1"])
        try ok(["nodes"], ["v100-node", "ready"])
        try ok(["node", "v100-node"], ["DEVICE", "v-1", "V100S"])
        try ok(["accounts"], ["ACCOUNT", "default"])
        try ok(["regions"], ["r1", "CAPACITY"])
        try ok(["regions", "list", "-o", "json"], ["\"region\""])
        try ok(["cordon", "v100-node", "--reason", "fan"], ["cordoned", "fan"])
        try ok(["uncordon", "v100-node"], ["ready"])
        try ok(["hold", "v-2", "--reason", "later"], ["held"])
        try ok(["release", "v-2"], ["v-2"])
        try ok(["requeue", "v-1", "--reason", "move it"], ["v-1"])
        try ok(["cancel", "v-1", "v-2", "--wait", "--within", "30"], ["cancelled"])
        // wait: exit 1 (the jobs ended, not all succeeded) with the table of how.
        let waited = try c.gridctl(["wait", "--within", "30", "v-1", "v-2"])
        #expect(waited.status == 1 && waited.output.contains("cancelled"), "\(waited.output)")
        try ok(["drain", "v100-node", "--reason", "maintenance"], ["drain"])
        let live = try c.gridctl(["regions", "remove", "r1"])
        #expect(live.status != 0 && live.output.contains("is live"))
        // (completion and --version take no controller: DaemonMannersTests runs them.)
        for verb in ["submit", "jobs", "job", "explain", "cancel", "hold", "release", "requeue", "nodes", "node", "accounts",
                     "cordon", "uncordon", "drain", "regions", "wait"] {
            try ok([verb, "--help"], ["USAGE"])
        }
    }
}
}

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
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        let command = ([Cluster.binDir.appendingPathComponent("gridctl").path] + args + ["--controller", c.nationalEndpoint])
            .map { "'\($0)'" }.joined(separator: " ")
        p.arguments = ["-qec", command, "/dev/null"]
        var env = ProcessInfo.processInfo.environment
        env["TERM"] = "xterm"
        env.removeValue(forKey: "NO_COLOR")
        env.merge(environment) { $1 }
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return out
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
        try "".write(to: gate, atomically: true, encoding: .utf8)
        let waited = try onTerminal(c, ["wait", "--within", "60", "slow-1", "waits-1"], environment: ["NO_COLOR": "1"])
        #expect(waited.contains("slow-1  running") || waited.contains("slow-1  running →"), "\(waited)")
        #expect(waited.contains("→ succeeded"), "\(waited)")
        #expect(waited.contains("waits-1  queued") && waited.contains("waits-1  queued → "), "\(waited)")
    }
}
}

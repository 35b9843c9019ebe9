import Foundation
import GridCLI
import GridCore
import GridProtocol
import GridTransport
import Testing

extension EndToEnd {
/// Jobs cannot escape their tenant (issue 11, item 7; docs/security.md, "Tenants"), through the
/// real executables on CURVE: tenant keys at the national scheduler, agents with `run_as`. Needs
/// root (agents switch users); CI runs as root.
@Suite(.serialized) struct TenancyEndToEndTests {
    @Test(.enabled(if: geteuid() == 0, "run_as needs root"))
    func tenantsRunAsTheirOwnUsersOnTheirOwnNodesAndSeeOnlyTheirOwnWork() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        // Every directory above the agents' data is open to all: only the agent's own modes
        // (jobs 0711, output 0600, work 0700) stand between one tenant's run and another's.
        chmod(c.dir.path, 0o755)
        let gridctl = Cluster.binDir.appendingPathComponent("gridctl").path
        let pub = try c.generateKeys(["national", "r1", "node-a", "node-shared", "root-op", "ana", "bo"])
        func file(_ name: String, _ lines: [String]) throws -> String { try c.writeFile(name, lines) }
        func key(_ name: String) -> String { c.keyFile(name) }
        func pubFile(_ name: String) -> String { c.pubFile(name) }
        let nationalKeys = try file("national-keys", ["\(pub["r1"]!) region r1", "\(pub["root-op"]!) operator root-op admin",
                                                      "\(pub["ana"]!) operator ana operate tenant=team-a",
                                                      "\(pub["bo"]!) operator bo operate tenant=team-b"])
        let regionKeys = try file("r1-keys", ["\(pub["node-a"]!) agent node-a", "\(pub["node-shared"]!) agent node-shared",
                                              "\(pub["ana"]!) operator ana operate tenant=team-a"])
        c.environment = ["GRID_CONTROLLER_KEY_FILE": key("national"), "GRID_CONTROLLER_AUTHORIZED_KEYS": nationalKeys]
        try c.startNational()
        c.environment = ["GRID_CONTROLLER_KEY_FILE": key("r1"), "GRID_CONTROLLER_AUTHORIZED_KEYS": regionKeys,
                         "GRID_CONTROLLER_NATIONAL_KEY": pubFile("national")]
        try c.startRegion("r1")
        c.environment = [:]
        // node-a is team-a's alone; node-shared runs team-b as its user and everyone else as a third.
        let runAs = ["node-a": ["run_as:", "  team-a: \"64001:64001\""],
                     "node-shared": ["run_as:", "  team-b: \"64002:64002\"", "  \"*\": \"64003:64003\""]]
        for node in ["node-a", "node-shared"] {
            let config = try file("\(node).yaml", [
                "node_id: \(node)", "region: \(c.regionEndpoints["r1"]!)", "data_dir: \(c.dir.appendingPathComponent(node).path)",
                "simulate: [\(Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_tesla-t4_v11.xml").path)]",
                "key_file: \(key(node))", "region_key: \(pubFile("r1"))", "http: \"off\"",
            ] + runAs[node]!)
            try c.start(node, "grid-agent", ["run", "--config", config])
        }
        let root = try GridClient(endpoint: c.nationalEndpoint, curve: (pub["national"]!, try CurveKeyFile.readPair(key("root-op"))))
        let ana = try GridClient(endpoint: c.nationalEndpoint, curve: (pub["national"]!, try CurveKeyFile.readPair(key("ana"))))
        let bo = try GridClient(endpoint: c.nationalEndpoint, curve: (pub["national"]!, try CurveKeyFile.readPair(key("bo"))))
        do {
            _ = try c.eventually(30, "both nodes ready") { () -> Bool? in
                try root.query(.regions).regions.first?.nodesReady == 2 ? true : nil
            }
        } catch {
            Issue.record("node-a: \(c.log("node-a"))\nnode-shared: \(c.log("node-shared"))\nr1: \(c.log("r1").suffix(2000))")
            throw error
        }

        // team-b's secret run on the shared node, as its user; team-a's job tries to read it.
        let secret = JobSpec(name: "secret", command: "/bin/sh", args: ["-c", "echo SECRET-OF-B; id -u; pwd; sleep 20"],
                             accelerators: AcceleratorRequest(count: 1))
        let b = try bo.submit(secret)
        #expect(b.accepted, "\(b.reason)")
        let bRun = try c.eventually(30, "team-b's job to run") { () -> JobRecord? in
            try root.jobs().first { $0.id.rawValue == b.jobID && $0.state == .running }
        }
        #expect(bRun.node == "node-shared", "team-b's job never goes to team-a's node")
        #expect(bRun.spec.account == "team-b", "charged to the key's tenant")
        let bLog = c.dir.appendingPathComponent("node-shared/jobs/\(bRun.assignment!.rawValue).log").path
        let bWork = c.dir.appendingPathComponent("node-shared/jobs/work/\(bRun.assignment!.rawValue)").path
        let snoop = JobSpec(name: "snoop", command: "/bin/sh", args: ["-c", """
            echo uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME cwd=$(pwd)
            cat \(bLog) 2>&1 | head -2; ls \(c.dir.appendingPathComponent("node-shared/jobs").path) 2>&1 | head -1; ls \(bWork) 2>&1 | head -1
            touch /etc/grid-tenant-was-here 2>&1
            """], accelerators: AcceleratorRequest(count: 1))
        let a = try ana.submit(snoop)
        #expect(a.accepted, "\(a.reason)")
        let aDone = try c.eventually(60, "team-a's job to end") { () -> JobRecord? in
            try ana.jobs().first { $0.id.rawValue == a.jobID && $0.state.isTerminal }
        }
        let out = aDone.outputTail
        #expect(aDone.node == "node-a", "team-a's job runs on team-a's node first")
        #expect(out.contains("uid=64001 gid=64001 groups=64001 "), "run as the account's user, no other group: \(out)")
        #expect(out.contains("home=\(c.dir.appendingPathComponent("node-a/jobs/work").path)/"), "\(out)")
        #expect(!out.contains("SECRET-OF-B"), "another tenant's output stays unread: \(out)")
        #expect(out.components(separatedBy: "Permission denied").count - 1 >= 3, "log, jobs listing and work dir all refused: \(out)")
        #expect(!FileManager.default.fileExists(atPath: "/etc/grid-tenant-was-here"))
        #expect(!FileManager.default.fileExists(atPath: c.dir.appendingPathComponent("node-a/jobs/work/\(aDone.assignment!.rawValue)").path),
                "the work directory goes with the run")

        // Through the scheduler neither sees, cancels nor holds the other's job; root sees both.
        #expect(try ana.jobs().map(\.id.rawValue) == [a.jobID])
        #expect(throws: ClientError.self) { _ = try ana.cancel(b.jobID) }
        let view = try Cluster.run(gridctl, ["job", b.jobID, "--key", key("ana"), "--server-key", pubFile("national"),
                                             "--controller", c.nationalEndpoint])
        #expect(view.status != 0 && view.output.contains("not known"), "\(view.output)")
        let cordon = try Cluster.run(gridctl, ["cordon", "node-shared", "--key", key("ana"), "--server-key", pubFile("national"),
                                               "--controller", c.nationalEndpoint])
        #expect(cordon.status != 0 && cordon.output.contains("may not send nodeCommand"), "\(cordon.output)")
        #expect(try root.jobs().count == 2)
        #expect(try root.jobs().first { $0.id.rawValue == b.jobID }?.state == .running, "team-b's job untouched")

        // A job of a third account (no device: any ready node it may use) runs on the shared
        // node as the `*` user.
        var other = JobSpec(name: "other", command: "/bin/sh", args: ["-c", "id -u"])
        other.account = "team-c"
        let third = try root.submit(other)
        let thirdDone = try c.eventually(60, "team-c's job to end") { () -> JobRecord? in
            try root.jobs().first { $0.id.rawValue == third.jobID && $0.state.isTerminal }
        }
        #expect(thirdDone.node == "node-shared" && thirdDone.outputTail.contains("64003"), "\(thirdDone.node?.rawValue ?? "") \(thirdDone.outputTail)")
        _ = try root.cancel(b.jobID)
    }

    @Test func aRunsOutputIsCutBackToItsTailPastMaxOutputBytes() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        let config = c.dir.appendingPathComponent("n1.yaml")
        try ["node_id: n1", "region: \(c.regionEndpoints["r1"]!)", "data_dir: \(c.dir.appendingPathComponent("n1").path)",
             "simulate: [\(Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_tesla-t4_v11.xml").path)]", "http: \"off\"",
             "max_output_bytes: 200000"].joined(separator: "\n").write(to: config, atomically: true, encoding: .utf8)
        try c.start("n1", "grid-agent", ["run", "--config", config.path])
        let client = try c.client()
        _ = try c.eventually(30, "the node ready") { try client.query(.regions).regions.first?.nodesReady == 1 ? true : nil }
        // 3 MB of output, then the run waits; the agent cuts the file within a check (5 s).
        let flood = JobSpec(name: "flood", command: "/bin/sh", args: ["-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE; sleep 30"])
        let r = try client.submit(flood)
        let run = try c.eventually(30, "the flood to run") { try client.jobs().first { $0.id.rawValue == r.jobID && $0.state == .running } }
        let log = c.dir.appendingPathComponent("n1/jobs/\(run.assignment!.rawValue).log").path
        let text = try c.eventually(20, "the output cut back") { () -> String? in
            guard let size = try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int, size < 200_000,
                  let t = try? String(contentsOfFile: log, encoding: .utf8), t.contains("LAST-LINE") else { return nil }
            return t
        }
        #expect(text.hasPrefix("[grid-agent: output passed max_output_bytes (200000); earlier output dropped]"))
        #expect(c.log("n1").contains("cut back to its tail"))
        _ = try client.cancel(r.jobID)
    }
}
}

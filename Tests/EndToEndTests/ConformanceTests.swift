import Foundation
import Testing

extension EndToEnd {
/// The Python peer of Tests/Conformance (written from PROTOCOL.md and grid.proto alone, pyzmq and
/// protobuf from Debian) against the real national scheduler and region: as a client, as
/// agents (three nodes over one connection), and as a child region. Every check names the
/// PROTOCOL.md section it tests.
@Suite(.serialized) struct ConformanceTests {
    static let script = Cluster.repoRoot.appendingPathComponent("Tests/Conformance/conformance.py").path

    @Test func thePythonPeerInteroperatesWithTheRealControllers() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        // A short node lease, so the suite also checks what a lost node's heartbeat gets.
        let config = c.dir.appendingPathComponent("r1.yaml")
        try "role: region\nid: r1\nnode_lost_after_ms: 3000\n".write(to: config, atomically: true, encoding: .utf8)
        try c.startRegion("r1", extra: ["--config", config.path])
        let r = try Cluster.run("/usr/bin/python3", [Self.script, "--national", c.nationalEndpoint,
                                                    "--region", try #require(c.regionEndpoints["r1"]), "--region-id", "r1",
                                                    "--node-lost-after-ms", "3000"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("ok    [Matching replies and acknowledgements] its heartbeat brings the lost node back to ready"), "\(r.output)")
        #expect(r.output.contains(" 0 failed"), "\(r.output)")
        let passed = r.output.split(separator: "\n").filter { $0.hasPrefix("ok ") }.count
        #expect(passed >= 45, "\(r.output)")
        // Sections it cites exist in PROTOCOL.md.
        let protocolText = try String(contentsOf: Cluster.repoRoot.appendingPathComponent("PROTOCOL.md"), encoding: .utf8)
        let cited = Set(r.output.split(separator: "\n").compactMap { line -> String? in
            guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]") else { return nil }
            return String(line[line.index(after: open)..<close])
        })
        for section in cited { #expect(protocolText.contains("## \(section)") || protocolText.contains("**\(section)"), "PROTOCOL.md has no section \(section)") }
    }

    /// The suite can fail: pointed at the wrong peer (the national scheduler posing as a region),
    /// it says which rules broke and exits 1.
    @Test func theSuiteFailsAgainstAPeerThatBreaksTheRules() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        let r = try Cluster.run("/usr/bin/python3", [Self.script, "--national", c.nationalEndpoint,
                                                    "--region", c.nationalEndpoint, "--region-id", "r1"])
        #expect(r.status == 1, "\(r.output)")
        #expect(r.output.contains("FAIL  [Sockets] three nodes register over one connection"), "\(r.output)")
    }
}
}

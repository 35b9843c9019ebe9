import Foundation
import GridCLI
import GridCore
import GridProtocol
import Testing

/// A vendor tool that never returns must not stop heartbeats: the node stays ready in its
/// region and its device is reported `unknown` (tool timeout), never `healthy`.
extension EndToEnd {
@Suite(.serialized) struct StuckProbeTests {
    @Test func agentKeepsHeartbeatingWhileNvidiaSmiHangs() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        // A fake host: one NVIDIA GPU in sysfs, and an nvidia-smi that sleeps forever.
        let host = c.dir.appendingPathComponent("host")
        let dev = host.appendingPathComponent("sys/bus/pci/devices/0000:01:00.0")
        try FileManager.default.createDirectory(at: dev, withIntermediateDirectories: true)
        for (file, value) in [("vendor", "0x10de"), ("device", "0x2330"), ("class", "0x030200"), ("numa_node", "0")] {
            try "\(value)\n".write(to: dev.appendingPathComponent(file), atomically: true, encoding: .utf8)
        }
        try FileManager.default.createDirectory(at: host.appendingPathComponent("proc"), withIntermediateDirectories: true)
        let tool = host.appendingPathComponent("nvidia-smi")
        try "#!/bin/sh\nexec sleep 1000\n".write(to: tool, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: tool.path)

        try c.startNational()
        try c.startRegion("r1", extra: ["--config", try writeRegionConfig(c)])
        let config = c.dir.appendingPathComponent("agent.yaml")
        try """
        node_id: stuck-node
        region: \(try #require(c.regionEndpoints["r1"]))
        data_dir: \(c.dir.appendingPathComponent("agent").path)
        heartbeat_interval_ms: 300
        probe_interval_s: 1
        probe:
          sysfs_root: \(host.appendingPathComponent("sys").path)
          proc_root: \(host.appendingPathComponent("proc").path)
          tool_timeout_seconds: 2
          tools:
            nvidia-smi: {executable: \(tool.path)}
        """.write(to: config, atomically: true, encoding: .utf8)
        try c.start("stuck-node", "grid-agent", ["run", "--config", config.path])

        let client = try GridClient(endpoint: try #require(c.regionEndpoints["r1"]))
        let first = try c.eventually(30, "the node to register") { () -> NodeBrief? in
            try client.query(.nodes).nodes.map(\.brief).first { $0.node == "stuck-node" && $0.state == .ready }
        }
        #expect(first.deviceCount == 1)
        #expect(first.worstHealth == .unknown, "a GPU whose tool hangs is never healthy")
        // Several probes time out meanwhile; the region (node_lost_after_ms 2000) still sees
        // the node alive the whole time.
        for _ in 0..<16 {
            Thread.sleep(forTimeInterval: 0.5)
            let node = try #require(try client.query(.nodes).nodes.map(\.brief).first { $0.node == "stuck-node" })
            #expect(node.state == .ready)
        }
        #expect(c.log("stuck-node").contains("did not finish within 2 s"))
        #expect(c.stop("stuck-node") == 0, "\(c.log("stuck-node"))")
    }

    func writeRegionConfig(_ c: Cluster) throws -> String {
        let url = c.dir.appendingPathComponent("region.yaml")
        try "role: region\nheartbeat_interval_ms: 300\nnode_lost_after_ms: 2000\n".write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }
}
}

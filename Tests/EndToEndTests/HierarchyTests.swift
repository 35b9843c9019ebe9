import Foundation
import GridCLI
import GridCore
import GridProtocol
import GridStore
import Testing

/// The whole path with the real executables: gridctl-style submit → national → region →
/// agent child process → status back up. Serialized: each test runs several processes.
extension EndToEnd {
@Suite(.serialized) struct HierarchyTests {
    @Test func jobRunsOnTheRequestedKindOfDeviceWithVisibleDevicesSet() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r-east")
        try c.startRegion("r-west")
        try c.startAgent("nv-node", region: "r-east", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        try c.startAgent("amd-node", region: "r-west", simulate: ["rocm-smi-json_mi100_rocm602.json"])
        let client = try c.client()
        _ = try c.eventually(30, "both regions to report ready nodes") { () -> Bool? in
            let regions = try client.query(.regions).regions
            return regions.count == 2 && regions.allSatisfy { $0.nodesReady == 1 } ? true : nil
        }

        let spec = JobSpec(name: "amd-probe", command: "/bin/sh",
                           args: ["-c", "echo ROCR=$ROCR_VISIBLE_DEVICES HIP=$HIP_VISIBLE_DEVICES JOB=$GRID_JOB_ID"],
                           accelerators: AcceleratorRequest(count: 2, vendor: .amd))
        let reply = try client.submit(spec)
        #expect(reply.accepted, "\(reply.reason)")
        #expect(reply.regionID == "r-west")
        let job = try c.eventually(30, "the job to finish") { () -> JobRecord? in
            let j = try client.jobs().first { $0.id.rawValue == reply.jobID }
            return j?.state.isTerminal == true ? j : nil
        }
        #expect(job.state == .succeeded, "\(job.message) \(job.outputTail)")
        #expect(job.exitCode == 0)
        #expect(job.region == "r-west" && job.node == "amd-node")
        #expect(job.deviceModels.count == 2)
        #expect(job.deviceModels.allSatisfy { $0.contains("MI100") })
        let rocr = try #require(job.visibleDevices["ROCR_VISIBLE_DEVICES"])
        #expect(rocr.split(separator: ",").count == 2)
        #expect(job.visibleDevices["HIP_VISIBLE_DEVICES"] == rocr)
        #expect(job.outputTail.contains("ROCR=\(rocr) HIP=\(rocr) JOB=\(reply.jobID)"))

        let nv = try client.submit(JobSpec(name: "nv", command: "/bin/sh", args: ["-c", "echo CUDA=$CUDA_VISIBLE_DEVICES; exit 3"],
                                           accelerators: AcceleratorRequest(count: 1, vendor: .nvidia, minMemoryMiB: 16 * 1024)))
        let failed = try c.eventually(30, "the failing job to finish") { () -> JobRecord? in
            let j = try client.jobs().first { $0.id.rawValue == nv.jobID }
            return j?.state.isTerminal == true ? j : nil
        }
        #expect(failed.state == .failed && failed.exitCode == 3)
        #expect(failed.node == "nv-node" && failed.deviceModels.first?.contains("V100S") == true)
        #expect(failed.outputTail.contains("CUDA=\(failed.visibleDevices["CUDA_VISIBLE_DEVICES"] ?? "?")"))

        // Clean shutdown: every daemon exits 0 on SIGTERM.
        for name in ["nv-node", "amd-node", "r-east", "r-west", "national"] {
            #expect(c.stop(name) == 0, "\(name) did not exit cleanly:\n\(c.log(name).suffix(2000))")
        }
    }

    /// Issue 9, item 7, with the real executables: a 13B model that allows bf16 and int8, on a
    /// region with an H100 (grade A) and an A10G (grade C), runs on the A10G at int8, and the
    /// process sees GRID_PRECISION=int8. The same model without int8 takes the H100 at bf16.
    /// Issue 9, item 6: the agent reads NVLink peers from `nvidia-smi topo -m` (here its
    /// capture beside the device list) and an `interconnect: nvlink` job goes only where its
    /// devices are all peers of each other.
    @Test func anNVLinkJobRunsOnlyWhereItsDevicesArePeers() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        try c.startAgent("pcie", region: "r1", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml", "nvidia-smi-topo-mp_dgx1-8gpu.txt"])
        let client = try c.client()
        _ = try c.eventually(30, "the PCIe node ready") { try client.query(.regions).regions.first?.nodesReady == 1 ? true : nil }
        let spec = JobSpec(name: "allreduce", command: "/bin/sh", args: ["-c", "echo node=$GRID_NODE_ID devices=$GRID_DEVICE_IDS"],
                           accelerators: AcceleratorRequest(count: 4, interconnect: .nvlink))
        let r = try client.submit(spec)
        #expect(r.accepted, "\(r.reason)")
        // The region says why it waits (the national scheduler shows where it went).
        let region = try GridClient(endpoint: try #require(c.regionEndpoints["r1"]))
        let waiting = try c.eventually(30, "the job to wait with its reason") { () -> JobRecord? in
            try region.jobs().first { $0.id.rawValue == r.jobID && $0.message.contains("NVLink peers of each other") }
        }
        #expect(waiting.state == .queued && waiting.node == nil, "\(waiting.state) \(waiting.message)")
        try c.startAgent("nvlink", region: "r1", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml", "nvidia-smi-topo-m_dgx-a100-8gpu.txt"])
        let done = try c.eventually(60, "the job to run on the NVLink node") { () -> JobRecord? in
            try client.jobs().first { $0.id.rawValue == r.jobID && $0.state.isTerminal }
        }
        #expect(done.state == .succeeded && done.node == "nvlink" && done.outputTail.contains("node=nvlink"), "\(done.message) \(done.outputTail)")
        #expect(done.deviceIDs.count == 4)
        var q = Wire.Query()
        q.kind = .nodes
        q.nodeID = "nvlink"
        guard case .queryReply(let node) = try region.request(.query(q)) else { Issue.record("no node"); return }
        #expect(node.nodes.first?.units.map { $0.nvlinkPeers.count } == Array(repeating: 7, count: 8), "gridctl node shows each device's peers")
    }

    /// The same for AMD: rocm-smi's link types (a derived capture: cards 0–2 an xGMI hive,
    /// card 3 on PCIe) give the agent its xGMI peers, and an `interconnect: xgmi` job of three
    /// devices runs on the hive, not on the PCIe-only node beside it.
    @Test func anXGMIJobRunsOnTheHive() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        try c.startAgent("pcie", region: "r1", simulate: ["rocm-smi-json_mi100_rocm602.json"])
        try c.startAgent("hive", region: "r1", simulate: ["rocm-smi-json_mi100-xgmi-derived_rocm602.json"])
        let client = try c.client()
        _ = try c.eventually(30, "both nodes ready") { try client.query(.regions).regions.first?.nodesReady == 2 ? true : nil }
        let spec = JobSpec(name: "rccl", command: "/bin/sh", args: ["-c", "echo node=$GRID_NODE_ID rocr=$ROCR_VISIBLE_DEVICES"],
                           accelerators: AcceleratorRequest(count: 3, interconnect: .xgmi))
        let r = try client.submit(spec)
        #expect(r.accepted, "\(r.reason)")
        let done = try c.eventually(60, "the job to run on the hive") { () -> JobRecord? in
            try client.jobs().first { $0.id.rawValue == r.jobID && $0.state.isTerminal }
        }
        #expect(done.state == .succeeded && done.node == "hive" && done.outputTail.contains("node=hive"), "\(done.message) \(done.outputTail)")
        #expect(done.deviceIDs.count == 3 && done.visibleDevices["ROCR_VISIBLE_DEVICES"] == "0,1,2", "\(done.visibleDevices)")
    }

    /// Issue 9, item 2, with the real executables: a gang of 2 nodes × 2 devices runs one
    /// process per rank, each told its rank, the gang's size and hosts, and succeeds when both
    /// have; a gang of 3 whose rank 1 fails ends `failed` and the other ranks' processes are
    /// stopped (none left running).
    @Test func aGangRunsEveryRankAtOnceAndAFailedRankStopsTheRest() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        for n in ["g1", "g2", "g3"] { try c.startAgent(n, region: "r1", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"]) }
        let client = try c.client()
        _ = try c.eventually(30, "three nodes ready") { try client.query(.regions).regions.first?.nodesReady == 3 ? true : nil }
        var spec = JobSpec(name: "allreduce", command: "/bin/sh",
                           args: ["-c", "echo rank=$GRID_GANG_RANK size=$GRID_GANG_SIZE leader=$GRID_GANG_LEADER hosts=$GRID_GANG_HOSTS node=$GRID_NODE_ID; sleep 1"],
                           accelerators: AcceleratorRequest(count: 2))
        spec.nodes = 2
        let ok = try client.submit(spec)
        #expect(ok.accepted, "\(ok.reason)")
        let done = try c.eventually(60, "the gang to finish") { () -> JobRecord? in
            try client.jobs().first { $0.id.rawValue == ok.jobID && $0.state.isTerminal }
        }
        #expect(done.state == .succeeded, "\(done.message) \(done.outputTail)")
        #expect(done.gang.count == 2 && Set(done.gang.map(\.node)).count == 2 && done.gang.allSatisfy { $0.state == .succeeded && $0.deviceIDs.count == 2 })
        // Rank 0's output is the job's. Hosts are the nodes' host names (one machine here).
        let leader = try #require(done.gang.first?.node.rawValue)
        #expect(done.outputTail.contains("rank=0 size=2 leader="), "\(done.outputTail)")
        #expect(done.outputTail.contains("node=\(leader)"), "\(done.outputTail)")
        // GRID_GANG_HOSTS: one entry per rank, each the host name its agent registered
        // (ProcessInfo's, or the node id when that is empty); the leader is the first.
        let line = try #require(done.outputTail.split(separator: "\n").first { $0.hasPrefix("rank=0") }, "\(done.outputTail)")
        var fields: [String: String] = [:]
        for kv in line.split(separator: " ") {
            let p = kv.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if p.count == 2 { fields[String(p[0])] = String(p[1]) }
        }
        let hosts = (fields["hosts"] ?? "").split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let host = ProcessInfo.processInfo.hostName
        #expect(hosts.count == 2 && hosts.allSatisfy { !$0.isEmpty && (host.isEmpty || $0 == host) }, "\(line)")
        #expect(fields["leader"] == hosts.first, "\(line)")
        let detail = Table.detail(done)
        #expect(detail.contains("on each of 2 nodes (gang)") && detail.contains("ranks:"), "\(detail)")

        let pids = c.dir.appendingPathComponent("pids")
        try FileManager.default.createDirectory(at: pids, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: pids.path)
        spec.name = "one-rank-fails"
        spec.nodes = 3
        spec.accelerators.count = 1
        spec.args = ["-c", "echo $$ > \(pids.path)/rank-$GRID_GANG_RANK; if [ \"$GRID_GANG_RANK\" = 1 ]; then sleep 2; exit 3; fi; exec sleep 120"]
        let bad = try client.submit(spec)
        let failed = try c.eventually(60, "the gang to fail") { () -> JobRecord? in
            try client.jobs().first { $0.id.rawValue == bad.jobID && $0.state.isTerminal }
        }
        #expect(failed.state == .failed && failed.exitCode == 3 && failed.message.contains("rank 1"), "\(failed.message)")
        let others = try [0, 2].map { r in try #require(Int32(String(contentsOf: pids.appendingPathComponent("rank-\(r)"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))) }
        _ = try c.eventually(30, "the other ranks' processes to be gone") { () -> Bool? in
            others.allSatisfy { kill($0, 0) != 0 } ? true : nil
        }
        // Every device is free again.
        _ = try c.eventually(30, "all 24 devices free") { () -> Bool? in
            try client.query(.regions).regions.first?.capacity.reduce(0) { $0 + Int($1.free) } == 24 ? true : nil
        }
    }

    @Test func aModelJobRunsAtInt8OnTheLowerGrade() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        try c.startAgent("h100", region: "r1", simulate: ["nvidia-smi-query-gpu_csv_h100-80gb-hbm3_590.48.01.csv"])
        try c.startAgent("a10g", region: "r1", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        let client = try c.client()
        _ = try c.eventually(30, "both nodes ready") { () -> Bool? in
            try client.query(.regions).regions.first?.nodesReady == 2 ? true : nil
        }
        let path = Cluster.repoRoot.appendingPathComponent("examples/jobs/serve-llama-13b.yaml").path
        var spec = try JobFile.parse(try String(contentsOfFile: path, encoding: .utf8), source: path)
        spec.args = ["-c", "echo precision=$GRID_PRECISION node=$GRID_NODE_ID"]
        let quantized = try client.submit(spec)
        spec.model?.precisions = [.bf16]
        let full = try client.submit(spec)
        #expect(quantized.accepted && full.accepted)
        let done = try c.eventually(60, "both jobs to finish") { () -> [JobRecord]? in
            let jobs = try client.jobs().filter { [quantized.jobID, full.jobID].contains($0.id.rawValue) }
            return jobs.count == 2 && jobs.allSatisfy { $0.state.isTerminal } ? jobs : nil
        }
        let q = try #require(done.first { $0.id.rawValue == quantized.jobID })
        let f = try #require(done.first { $0.id.rawValue == full.jobID })
        #expect(q.state == .succeeded && q.outputTail.contains("precision=int8 node=a10g"), "\(q.message) \(q.outputTail)")
        #expect(q.precision == .int8 && q.deviceModels.allSatisfy { $0.contains("A10G") })
        #expect(f.state == .succeeded && f.outputTail.contains("precision=bf16 node=h100"), "\(f.message) \(f.outputTail)")
        #expect(f.precision == .bf16)
    }

    /// Issue 9, item 8, with the real executables and gridctl: requeue stops a running job's
    /// process and runs it again (the attempt ends `requeued`); a held job waits while a device
    /// is free and runs once released.
    @Test func requeueHoldAndReleaseThroughGridctl() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        try c.startAgent("n1", region: "r1", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        let client = try c.client()
        _ = try c.eventually(30, "a ready node") { () -> Bool? in try client.query(.regions).regions.first?.nodesReady == 1 ? true : nil }
        let pids = c.dir.appendingPathComponent("pids")
        let r = try client.submit(JobSpec(name: "long", command: "/bin/sh", args: ["-c", "echo $$ >> \(pids.path); exec sleep 60"],
                                          accelerators: AcceleratorRequest(count: 1), retry: RetryPolicy(maxAttempts: 1)))
        func started() -> [Int32] {
            ((try? String(contentsOf: pids, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
        }
        let first = try c.eventually(30, "the first run") { started().first }
        let gridctl = c.gridctl
        let (rc, out) = try gridctl(["requeue", r.jobID, "--reason", "rebalance"])
        #expect(rc == 0, "\(out)")
        let second = try c.eventually(30, "the second run") { started().count == 2 ? started()[1] : nil }
        #expect(kill(first, 0) != 0, "the first run's process is gone")
        #expect(second != first)
        let job = try c.eventually(10, "the attempt to show as requeued") { () -> JobRecord? in
            let j = try client.jobs().first { $0.id.rawValue == r.jobID }
            return j?.attempts.first?.endReason == .requeued && j?.state == .running ? j : nil
        }
        #expect(job.attempts.count == 2, "max_attempts 1 is not used up by a requeue")

        // A second job waits for the device; held, it stays queued even once the device is free.
        let w = try client.submit(JobSpec(name: "waiting", command: "/bin/sh", args: ["-c", "echo ran"], accelerators: AcceleratorRequest(count: 1)))
        _ = try c.eventually(20, "the second job to queue in the region") { () -> Bool? in
            try client.jobs().first { $0.id.rawValue == w.jobID }?.state == .queued ? true : nil
        }
        let (hrc, hout) = try gridctl(["hold", w.jobID, "--reason", "data not ready"])
        #expect(hrc == 0 && hout.contains("(held)"), "\(hout)")
        _ = try client.cancel(r.jobID)
        _ = try c.eventually(30, "the long job to end") { () -> Bool? in
            try client.jobs().first { $0.id.rawValue == r.jobID }?.state == .cancelled ? true : nil
        }
        Thread.sleep(forTimeInterval: 1.5)
        let stillHeld = try #require(try client.jobs().first { $0.id.rawValue == w.jobID })
        #expect(stillHeld.state == .queued && stillHeld.hold?.reason == "data not ready", "\(stillHeld.state) \(stillHeld.message)")
        let (_, shown) = try gridctl(["job", w.jobID])
        #expect(shown.contains("held: data not ready"), "\(shown)")
        #expect(try gridctl(["release", w.jobID]).0 == 0)
        let done = try c.eventually(30, "the released job to run") { () -> JobRecord? in
            let j = try client.jobs().first { $0.id.rawValue == w.jobID }
            return j?.state == .succeeded ? j : nil
        }
        #expect(done.hold == nil && done.outputTail.contains("ran"))
        #expect(try gridctl(["requeue", w.jobID]).0 == 1, "a finished job cannot be requeued")
    }

    /// Issue 9, item 4, with the real executables: an account with a quota of 2 devices never
    /// runs more than 2 jobs at once on an 8-GPU node while another account's work runs beside
    /// it, and `gridctl accounts` shows the quota, the usage and the fair-share factor.
    @Test func anAccountQuotaHoldsOnARealRegion() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let config = c.dir.appendingPathComponent("r1.yaml")
        try """
            role: region
            accounts:
              quotas:
                ml: {devices: 2, shares: 2}
            """.write(to: config, atomically: true, encoding: .utf8)
        try c.startNational()
        try c.startRegion("r1", extra: ["--config", config.path])
        try c.startAgent("n1", region: "r1", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        let client = try c.client()
        _ = try c.eventually(30, "a ready node") { () -> Bool? in try client.query(.regions).regions.first?.nodesReady == 1 ? true : nil }
        let log = c.dir.appendingPathComponent("runs")
        var ids: [String] = []
        for (account, n) in [("ml", 5), ("web", 3)] {
            for i in 0..<n {
                let script = "echo \"start \(account) $(date +%s%N)\" >> \(log.path); sleep 0.6; echo \"end \(account) $(date +%s%N)\" >> \(log.path)"
                let r = try client.submit(JobSpec(name: "\(account)-\(i)", command: "/bin/sh", args: ["-c", script],
                                                  accelerators: AcceleratorRequest(count: 1), account: account))
                ids.append(r.jobID)
            }
        }
        let done = try c.eventually(60, "all jobs to finish") { () -> [JobRecord]? in
            let jobs = try client.jobs().filter { ids.contains($0.id.rawValue) }
            return jobs.count == ids.count && jobs.allSatisfy { $0.state.isTerminal } ? jobs : nil
        }
        #expect(done.allSatisfy { $0.state == .succeeded }, "\(done.map { "\($0.id) \($0.state) \($0.message)" })")
        // Replay the start and end marks: ml never had more than 2 running at once.
        let events = try String(contentsOf: log, encoding: .utf8).split(separator: "\n").compactMap { line -> (Int, String, Int)? in
            let f = line.split(separator: " ")
            guard f.count == 3, let t = Int(f[2]) else { return nil }
            return (t, String(f[1]), f[0] == "start" ? 1 : -1)
        }.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.2 < $1.2 }
        var running: [String: Int] = [:], peak: [String: Int] = [:]
        for (_, account, delta) in events {
            running[account, default: 0] += delta
            peak[account] = max(peak[account] ?? 0, running[account]!)
        }
        #expect(events.count == 16)
        #expect(peak["ml"] == 2, "ml ran \(peak["ml"] ?? 0) at once with a quota of 2")
        #expect((peak["web"] ?? 0) >= 2, "web, without a quota, ran beside it")
        let shown = try c.gridctl(["accounts", "--region", "r1"]).output
        let mlRow = try #require(shown.split(separator: "\n").first { $0.hasPrefix("ml ") }, "\(shown)")
        #expect(mlRow.contains("r1") && mlRow.split(separator: " ").contains("2"), "\(shown)")
        #expect(shown.contains("web"), "\(shown)")
    }

    @Test func killNineLeavesEveryDatabaseReadableAndNoAcceptedJobIsLost() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        try c.startAgent("n1", region: "r1", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        let client = try c.client()
        _ = try c.eventually(30, "the region to report a ready node") { () -> Bool? in
            try client.query(.regions).regions.first?.nodesReady == 1 ? true : nil
        }
        var ids: [String] = []
        for i in 0..<5 {
            let r = try client.submit(JobSpec(name: "sleepy-\(i)", command: "/bin/sh", args: ["-c", "sleep 0.3; echo done \(i)"],
                                              accelerators: AcceleratorRequest(count: 1)))
            #expect(r.accepted)
            ids.append(r.jobID)
        }
        // Crash the region and the national scheduler mid-flight, then bring them back.
        Thread.sleep(forTimeInterval: 0.5)
        c.stop("r1", signal: SIGKILL)
        c.stop("national", signal: SIGKILL)
        for db in ["national/national.sqlite", "r1/r1.sqlite"] {
            let store = try GridStore(path: c.dir.appendingPathComponent(db).path)
            #expect(try store.integrityCheck() == "ok")
            #expect(try store.read("list") { try $0.jobs() }.count == 5, "\(db) lost accepted jobs")
        }
        let nationalData = c.dir.appendingPathComponent("national").path
        let n = try c.start("national-2", "grid-controller", ["--role", "national", "--bind", c.nationalEndpoint, "--data-dir", nationalData])
        _ = try c.endpoint(of: n)
        try c.start("r1-2", "grid-controller", ["--role", "region", "--id", "r1", "--bind", try #require(c.regionEndpoints["r1"]),
                                                "--national", c.nationalEndpoint, "--data-dir", c.dir.appendingPathComponent("r1").path])
        let client2 = try c.client()
        let jobs = try c.eventually(60, "all jobs to finish after the restart") { () -> [JobRecord]? in
            let jobs = try client2.jobs().filter { ids.contains($0.id.rawValue) }
            return jobs.count == 5 && jobs.allSatisfy { $0.state.isTerminal } ? jobs : nil
        }
        #expect(jobs.allSatisfy { $0.state == .succeeded }, "\(jobs.map { "\($0.id) \($0.state) \($0.message)" })")
    }
}
}

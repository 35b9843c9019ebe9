import ArgumentParser
import Foundation
import GridCLI
import GridCore
import GridFleet
import GridProtocol
import GridScheduler
import Histogram

/// Options every fleet benchmark shares.
struct FleetFlags: ParsableArguments {
    @Option(help: "Directory of captured vendor outputs (host shapes for simulated nodes).")
    var fixtures = "Tests/Fixtures/vendor"
    @Option(help: "DEALER connections the simulated nodes share.")
    var connections = 16
    @Option(help: "Heartbeat interval of every node, ms.")
    var heartbeatMs: Int64 = 1000
    @Option(help: "Devices per simulated node (host shapes from the captures, filled to this).")
    var devicesPerNode = 8
    @Option(help: "Registrations per second while the fleet comes up (a staged start; the region decodes ~4,000 8-device registers/s).")
    var registerRate = 4000

    func options(endpoint: String, nodes: Int) -> FleetOptions {
        var o = FleetOptions(endpoint: endpoint, nodes: nodes)
        o.connections = connections
        o.heartbeatIntervalMs = heartbeatMs
        o.registerRate = registerRate
        let inventories = FleetInventories.load(directory: fixtures, healthyOnly: true, devicesPerNode: devicesPerNode)
        if !inventories.isEmpty { o.inventories = inventories }
        return o
    }
}

/// A national scheduler, one region and a registered fleet the national scheduler can see.
struct BenchHierarchy {
    let cluster: BenchCluster
    let national: String
    let region: String
    let runner: FleetRunner
    let client: GridClient

    init(name: String, nodes: Int, fleet: FleetFlags, jobDurationMs: Int64 = 0, regionSettings: [String: String]) throws {
        cluster = try BenchCluster(name: name)
        national = try cluster.controller("national", role: "national")
        region = try cluster.controller("r1", role: "region", national: national, settings: regionSettings)
        var options = fleet.options(endpoint: region, nodes: nodes)
        options.jobDurationMs = jobDurationMs
        runner = try FleetRunner(options)
        guard runner.wait(seconds: 300, { $0.registered >= nodes }) else {
            runner.stop()
            throw BenchError("only \(runner.fleet.snapshot.registered) of \(nodes) nodes registered in 300 s")
        }
        client = try GridClient(endpoint: national)
        let client = self.client
        let ready = Date().addingTimeInterval(30)
        while Date() < ready, ((try? client.query(.regions).regions.first?.nodesReady) ?? 0) < Int32(nodes) { Thread.sleep(forTimeInterval: 0.1) }
    }
}

// MARK: 2. pure placement

struct PlacementBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "placement", abstract: "#2: placements/s on a free-capacity index (no I/O).")
    @Option var nodes = 10_000
    @Option var seconds: Double = 10
    @Option var fixtures = "Tests/Fixtures/vendor"
    @Option var devicesPerNode = 8

    func run() throws {
        Machine.header("placement", "\(nodes) nodes x \(devicesPerNode) devices, mixed shapes, \(seconds)s")
        var templates = FleetInventories.load(directory: fixtures, healthyOnly: false, devicesPerNode: devicesPerNode)
        if templates.isEmpty { templates = FleetInventories.synthetic }
        var index = PlacementIndex()
        var totalDevices = 0
        for n in 0..<nodes {
            let id = NodeID(String(format: "n%06d", n))
            let devices = templates[n % templates.count].enumerated().map { k, d -> DeviceInventory in
                var d = d
                d.rename("\(id)-\(k)")
                return d
            }
            totalDevices += devices.count
            index.upsert(node: id, devices: devices, busy: [], schedulable: true)
        }
        // 1/2/4/8 devices; vendor, model and memory constraints in the mix.
        let shapes: [AcceleratorRequest] = [
            .init(count: 1), .init(count: 2), .init(count: 4), .init(count: 8),
            .init(count: 1, vendor: .nvidia), .init(count: 2, vendor: .nvidia, model: "V100"),
            .init(count: 1, model: "A100", minMemoryMiB: 40_000), .init(count: 4, vendor: .habana),
            .init(count: 1, vendor: .amd), .init(count: 2, vendor: .huawei, model: "910B"),
            .init(count: 1, minMemoryMiB: 30_000), .init(count: 8, vendor: .nvidia, model: "V100"),
        ]
        var held: [(NodeID, [String])] = []
        held.reserveCapacity(totalDevices)
        var placed = 0, waited = 0, released = 0, i = 0
        let clock = ContinuousClock()
        let start = clock.now
        let end = start.advanced(by: .seconds(seconds))
        while clock.now < end {
            for _ in 0..<1000 {
                let want = shapes[i % shapes.count]
                i += 1
                switch index.place(want) {
                case .placed(let node, let devices):
                    placed += 1
                    held.append((node, devices))
                case .busy, .impossible:
                    waited += 1
                    // Keep the region about 80 % full: release the oldest half of what is held.
                    if held.count > 16 {
                        let half = held.count / 2
                        for (node, devices) in held[..<half] { index.release(node: node, deviceIDs: devices) }
                        released += half
                        held.removeFirst(half)
                    }
                }
            }
        }
        let elapsed = clock.now - start
        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("devices: \(totalDevices); decisions: \(placed + waited) (\(placed) placed, \(waited) waited); releases: \(released)")
        print(String(format: "RESULT placement: %.0f placements/s, %.0f decisions/s", Double(placed) / secs, Double(placed + waited) / secs))
    }
}

// MARK: 1. heartbeat ingest

struct HeartbeatBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "heartbeat", abstract: "#1: heartbeats/s one region ingests, and its RSS.")
    @Option var nodes = 100_000
    @Option var seconds: Double = 30
    @OptionGroup var fleet: FleetFlags

    func run() throws {
        Machine.header("heartbeat", "\(nodes) nodes over \(fleet.connections) connections, \(fleet.heartbeatMs) ms heartbeats, \(seconds)s")
        let cluster = try BenchCluster(name: "hb")
        let region = try cluster.controller("r1", role: "region", national: "tcp://127.0.0.1:9",
                                            settings: ["heartbeat_interval_ms": "\(fleet.heartbeatMs)", "node_lost_after_ms": "30000"])
        let runner = try FleetRunner(fleet.options(endpoint: region, nodes: nodes))
        defer { runner.stop() }
        let t0 = Date()
        guard runner.wait(seconds: 600, { $0.registered >= nodes }) else {
            throw BenchError("only \(runner.fleet.snapshot.registered) of \(nodes) nodes registered in 600 s")
        }
        print(String(format: "registered %d nodes in %.1f s", nodes, Date().timeIntervalSince(t0)))
        Thread.sleep(forTimeInterval: 2)
        let pid = cluster.pid("r1")
        let a = runner.fleet.snapshot, cpuA = ProcessUsage.cpuSeconds(pid), tA = Date()
        Thread.sleep(forTimeInterval: seconds)
        let b = runner.fleet.snapshot, cpuB = ProcessUsage.cpuSeconds(pid)
        let dt = Date().timeIntervalSince(tA)
        let acked = Double(b.heartbeatAcks - a.heartbeatAcks) / dt
        let sent = Double(b.heartbeatsSent - a.heartbeatsSent) / dt
        print(String(format: "sent %.0f/s, acknowledged %.0f/s, unknown-node acks %d, sends dropped %d",
                     sent, acked, b.unknownAcks, b.sendsDropped))
        print(String(format: "RESULT heartbeat: %.0f heartbeats/s acknowledged; region RSS %.0f MiB; region CPU %.0f%% of a core",
                     acked, ProcessUsage.rssMiB(pid), (cpuB - cpuA) / dt * 100))
    }
}

// MARK: 3. end to end

struct EndToEndBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "e2e", abstract: "#3: jobs/s accepted and completed: national → region → simulated agents.")
    @Option var nodes = 10_000
    @Option var jobs = 100_000
    @Option(help: "Jobs per submit request (a job array).") var batch = 10_000
    @Option(help: "The region's confirm_starts (true: a job starts after the national scheduler recorded its placement).")
    var confirmStarts = true
    @OptionGroup var fleet: FleetFlags

    func run() throws {
        Machine.header("e2e", "\(nodes) nodes, \(jobs) one-device jobs in batches of \(batch), persistence on, confirm_starts \(confirmStarts)")
        let h = try BenchHierarchy(name: "e2e", nodes: nodes, fleet: fleet,
                                   regionSettings: ["summary_interval_ms": "500", "node_lost_after_ms": "30000",
                                                    "confirm_starts": "\(confirmStarts)"])
        defer { h.runner.stop() }
        let (runner, client) = (h.runner, h.client)
        let spec = JobSpec(name: "e2e", command: "true", accelerators: AcceleratorRequest(count: 1))
        let t0 = Date()
        var submitted = 0, k = 0
        while submitted < jobs {
            let n = min(batch, jobs - submitted)
            let reply = try client.submitBatch([(spec, n, JobID("e2e\(k)"))], timeout: 120)
            submitted += reply.results.filter(\.accepted).count
            k += 1
        }
        let accepted = Date().timeIntervalSince(t0)
        print(String(format: "accepted %d jobs in %.2f s (%.0f/s)", submitted, accepted, Double(submitted) / accepted))
        // Progress every 2 s: where the jobs are (the shape shows which hop holds them back).
        // With each process's share of a core over the interval: which one is busy.
        var nextReport = Date().addingTimeInterval(2)
        let pids = [h.cluster.pid("national"), h.cluster.pid("r1"), getpid()]
        var cpu = pids.map(ProcessUsage.cpuSeconds)
        let ok = runner.wait(seconds: 600) { s in
            if Date() >= nextReport {
                nextReport = nextReport.addingTimeInterval(2)
                let now = pids.map(ProcessUsage.cpuSeconds)
                let share = zip(now, cpu).map { Int(($0 - $1) / 2 * 100) }
                cpu = now
                print(String(format: "  %5.1f s: assigned to agents %d, completed %d, status acks %d (resent %d); cpu %% national %d, region %d, fleet %d",
                             Date().timeIntervalSince(t0), s.assignments, s.completions, s.statusAcks, s.statusResends, share[0], share[1], share[2]))
            }
            return s.completions >= jobs
        }
        let elapsed = Date().timeIntervalSince(t0)
        let s = runner.fleet.snapshot
        // The national scheduler's record: every job succeeded (the count comes from its pages).
        var succeeded = 0, pages = 0
        let recordDeadline = Date().addingTimeInterval(60)
        var readStarted = Date()
        repeat {
            succeeded = 0
            pages = 0
            readStarted = Date()
            var offset: UInt64 = 0
            repeat {
                pages += 1
                var q = Wire.Query()
                q.kind = .jobs
                q.offset = offset
                q.limit = 10_000
                guard case .queryReply(let page) = try client.request(.query(q), timeout: 60) else { break }
                succeeded += page.jobs.filter { $0.state == "succeeded" }.count
                offset = page.nextOffset
            } while offset != 0
            if succeeded >= jobs { break }
            Thread.sleep(forTimeInterval: 0.5)
        } while Date() < recordDeadline
        print("completed at the agents: \(s.completions) (repeated assignments \(s.repeatedAssignments)); succeeded in the national record: \(succeeded)")
        let ackMs = s.statusAckLatenciesMs.sorted()
        print("agents' statuses acknowledged: \(ackMs.count), first send to acknowledgement p50 \(percentile(ackMs, 50)) ms, p99 \(percentile(ackMs, 99)) ms")
        // What the run cost in messages and commits (resends show here).
        let counted = ["grid_messages_received_total", "grid_socket_", "grid_region_stall", "grid_store_commits_total", "grid_national_forwards_total"]
        for name in ["national", "r1"] {
            let page = (try? h.cluster.httpBase(name, within: 1)).flatMap { ObserveBench.text($0 + "/metrics") }
            print("\(name): " + ObserveBench.samples(page, counted))
        }
        // Paging the national record while it holds every job: each page is answered on its loop.
        print(String(format: "national record read in %d pages of ≤ 10,000 jobs: %.2f s", pages, Date().timeIntervalSince(readStarted)))
        print(String(format: "RESULT e2e: %@ %.0f jobs/s accepted and completed (%d jobs in %.1f s)",
                     ok ? "" : "INCOMPLETE", Double(s.completions) / elapsed, s.completions, elapsed))
    }
}

// MARK: 4. latency

struct LatencyBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "latency", abstract: "#4: submit accepted → agent ack latency at a steady submit rate.")
    @Option var nodes = 1000
    @Option(help: "Jobs per second in the background.") var rate = 100
    @Option var seconds: Double = 30
    @OptionGroup var fleet: FleetFlags

    func run() throws {
        Machine.header("latency", "\(nodes) nodes, \(rate) jobs/s for \(seconds)s, jobs run 1 s")
        let h = try BenchHierarchy(name: "lat", nodes: nodes, fleet: fleet, jobDurationMs: 1000, regionSettings: ["node_lost_after_ms": "30000"])
        defer { h.runner.stop() }
        let (runner, client) = (h.runner, h.client)
        let interval = 1.0 / Double(rate)
        let start = Date()
        var sent = 0
        while Date().timeIntervalSince(start) < seconds {
            let due = start.addingTimeInterval(Double(sent) * interval)
            let wait = due.timeIntervalSinceNow
            if wait > 0 { Thread.sleep(forTimeInterval: wait) }
            var spec = JobSpec(name: "lat", command: "true", accelerators: AcceleratorRequest(count: 1))
            spec.env["SUBMIT_NS"] = String(DispatchTime.now().uptimeNanoseconds)
            _ = try client.submit(spec)
            sent += 1
        }
        runner.wait(seconds: 10) { $0.latencies.count >= sent }
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        for ns in runner.fleet.snapshot.latencies { histogram.record(UInt64(max(1, ns / 1000))) }
        let us = { (p: Double) in String(format: "%.1f ms", Double(histogram.valueAtPercentile(p)) / 1000) }
        print("jobs: \(sent) submitted, \(histogram.totalCount) reached an agent")
        print("RESULT latency: p50 \(us(50)), p90 \(us(90)), p99 \(us(99)), p99.9 \(us(99.9)), max \(String(format: "%.1f ms", Double(histogram.max) / 1000))")
    }
}

// MARK: 5. failover

struct FailoverBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "failover", abstract: "#5: silent node → lost and its jobs requeued, while jobs are being placed.")
    @Option var nodes = 10_000
    @Option(help: "Nodes that go silent.") var silent = 100
    @Option(help: "Jobs placed before, and again while, the nodes go silent.") var jobs = 1000
    @Option var lostAfterMs = 3000
    @Option(help: "The region's lease (jobs are requeued after lease + margin of silence); default: --lost-after-ms.")
    var leaseMs: Int?
    @Option(help: "The region's lease margin; default: a fifth of the lease, at most 2000.")
    var leaseMarginMs: Int?
    @OptionGroup var fleet: FleetFlags

    func run() throws {
        let lease = leaseMs ?? lostAfterMs
        let margin = leaseMarginMs ?? min(2000, lease / 5)
        Machine.header("failover", "\(nodes) nodes, \(silent) go silent, \(jobs) jobs placed meanwhile, node_lost_after_ms \(lostAfterMs), lease \(lease) ms + margin \(margin) ms")
        let h = try BenchHierarchy(name: "fo", nodes: nodes, fleet: fleet, jobDurationMs: 600_000,
                                   regionSettings: ["node_lost_after_ms": "\(lostAfterMs)", "heartbeat_interval_ms": "\(fleet.heartbeatMs)",
                                                    "lease_ms": "\(lease)", "lease_margin_ms": "\(margin)"])
        defer { h.runner.stop() }
        let (runner, client) = (h.runner, h.client)
        // Fill every node with one long job so the silenced ones hold work. No retry backoff:
        // this measures detection and requeue, not the retry policy's wait.
        let spec = JobSpec(name: "fo", command: "true", accelerators: AcceleratorRequest(count: 1), retry: RetryPolicy(backoffSeconds: 0))
        _ = try client.submitBatch([(spec, nodes, JobID("held"))], timeout: 120)
        guard runner.wait(seconds: 120, { $0.assignments >= nodes }) else { throw BenchError("jobs were not placed") }
        Thread.sleep(forTimeInterval: 2)
        runner.fleet.silenceNodesHoldingWork(silent)
        _ = try client.submitBatch([(spec, jobs, JobID("burst"))], timeout: 120)
        // Each silent node holds several jobs (placement packs nodes): wait for a quiet period.
        var last = -1
        let deadline = Date().addingTimeInterval(Double(lostAfterMs) / 1000 * 4 + 30)
        while Date() < deadline {
            Thread.sleep(forTimeInterval: 2)
            let n = runner.fleet.snapshot.requeueLatencies.count
            if n > 0 && n == last { break }
            last = n
        }
        let s = runner.fleet.snapshot
        let lat = s.requeueLatencies.sorted()
        print("jobs of \(silent) silent nodes seen again elsewhere: \(lat.count); live nodes revoked: \(s.liveNodesRevoked); unknown-node acks: \(s.unknownAcks)")
        print("RESULT failover: silence → requeued p50 \(ms(percentile(lat, 50))), p99 \(ms(percentile(lat, 99))), max \(ms(lat.last ?? 0)); live nodes declared lost: \(s.liveNodesRevoked)")
    }
}

// MARK: 6. recovery

struct RecoveryBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "recovery", abstract: "#6: kill -9 of a loaded region → serving again, all nodes heard, no job lost.")
    @Option var nodes = 10_000
    @Option var jobs = 100_000
    @OptionGroup var fleet: FleetFlags

    func run() throws {
        Machine.header("recovery", "\(nodes) nodes, \(jobs) jobs held by the region, kill -9 and restart")
        let regionSettings = ["node_lost_after_ms": "30000"]
        let h = try BenchHierarchy(name: "rec", nodes: nodes, fleet: fleet, jobDurationMs: 3_600_000, regionSettings: regionSettings)
        defer { h.runner.stop() }
        let (cluster, national, region, runner, client) = (h.cluster, h.national, h.region, h.runner, h.client)
        let spec = JobSpec(name: "rec", command: "true", accelerators: AcceleratorRequest(count: 1))
        var k = 0
        while k * 10_000 < jobs {
            _ = try client.submitBatch([(spec, min(10_000, jobs - k * 10_000), JobID("rec\(k)"))], timeout: 120)
            k += 1
        }
        let regionClient = try GridClient(endpoint: region)
        func regionJobs() -> UInt64 {
            var q = Wire.Query()
            q.kind = .jobs
            q.limit = 1
            guard case .queryReply(let r)? = try? regionClient.request(.query(q), timeout: 30) else { return 0 }
            return r.total
        }
        let held = Date().addingTimeInterval(300)
        while Date() < held, regionJobs() < UInt64(jobs) { Thread.sleep(forTimeInterval: 0.5) }
        let before = regionJobs()
        print("region holds \(before) jobs; \(runner.fleet.snapshot.assignments) assignments at the agents")
        Thread.sleep(forTimeInterval: 2)
        cluster.kill9("r1")
        runner.fleet.markRestart()
        let t0 = DispatchTime.now().uptimeNanoseconds
        _ = try cluster.controller("r1", role: "region", bind: region, national: national, settings: regionSettings)
        let started = DispatchTime.now().uptimeNanoseconds
        runner.wait(seconds: 120) { $0.nodesHeardSinceMark >= nodes }
        let s = runner.fleet.snapshot
        let after = regionJobs()
        let serving = Int64(s.firstAckSinceMarkNs) - Int64(t0)
        let all = Int64(s.allHeardSinceMarkNs) - Int64(t0)
        print("process up (bound) after \(ms(Int64(started - t0))); nodes heard again: \(s.nodesHeardSinceMark) of \(nodes); jobs before \(before), after \(after)")
        print("RESULT recovery: serving again after \(ms(serving)); all \(nodes) nodes heard after \(ms(all)); jobs lost: \(Int(before) - Int(after))")
    }
}

// MARK: 7. agent cost, idle controllers

struct AgentCostBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "agent", abstract: "#7: one agent with 8 devices at 1 s heartbeats (RSS, CPU), and idle controllers.")
    @Option var seconds: Double = 30
    @Option var fixtures = "Tests/Fixtures/vendor"
    @Option(help: "The grid-agent to measure (e.g. the shipped, statically linked build: make release-static); default: the one beside grid-bench.")
    var agentBinary: String?
    @Option(help: "Seconds between GETs of the agent's /metrics, as Prometheus would scrape it; 0 = none.")
    var scrapeSeconds: Double = 15

    func run() throws {
        Machine.header("agent", "\(agentBinary ?? "grid-agent") --simulate 8x V100S, 1 s heartbeats, \(seconds)s; idle national and region")
        let cluster = try BenchCluster(name: "agent")
        let national = try cluster.controller("national", role: "national")
        let region = try cluster.controller("r1", role: "region", national: national)
        let capture = URL(fileURLWithPath: fixtures).appendingPathComponent("nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml").path
        let agent = agentBinary.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? "grid-agent"
        try cluster.start("agent", agent, ["run", "--node-id", "bench-agent", "--region", region,
                                                   "--data-dir", cluster.dir.appendingPathComponent("agent").path,
                                                   "--simulate", capture, "--http", "127.0.0.1:0"])
        let metrics = try cluster.printedURL("agent", marker: " http on ") + "/metrics"
        Thread.sleep(forTimeInterval: 5)
        let names = ["agent", "r1", "national"]
        let cpuA = names.map { ProcessUsage.cpuSeconds(cluster.pid($0)) }
        let t0 = Date()
        var scrapes = 0, failed = 0
        if scrapeSeconds > 0 {
            while Date().timeIntervalSince(t0) < seconds {
                if ObserveBench.fetch(metrics) == nil { failed += 1 } else { scrapes += 1 }
                Thread.sleep(forTimeInterval: min(scrapeSeconds, max(0, seconds - Date().timeIntervalSince(t0))))
            }
        } else {
            Thread.sleep(forTimeInterval: seconds)
        }
        let dt = Date().timeIntervalSince(t0)
        let cpuB = names.map { ProcessUsage.cpuSeconds(cluster.pid($0)) }
        print("agent /metrics: \(scrapes) scrapes, \(failed) failed")
        for (i, n) in names.enumerated() {
            print(String(format: "%@: CPU %.2f%% of a core, RSS %.1f MiB", n, (cpuB[i] - cpuA[i]) / dt * 100, ProcessUsage.rssMiB(cluster.pid(n))))
        }
        print("agent memory: \(ProcessUsage.residentBreakdown(cluster.pid("agent")))")
        print(String(format: "RESULT agent: RSS %.1f MiB, CPU %.2f%% of a core; idle region %.2f%%, idle national %.2f%%",
                     ProcessUsage.rssMiB(cluster.pid("agent")), (cpuB[0] - cpuA[0]) / dt * 100,
                     (cpuB[1] - cpuA[1]) / dt * 100, (cpuB[2] - cpuA[2]) / dt * 100))
    }
}

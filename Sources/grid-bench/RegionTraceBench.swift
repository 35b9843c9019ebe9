import ArgumentParser
import Foundation
import GridController
import GridStore
import GridCore
import GridFleet
import GridProtocol
import GridScheduler
import GridTransport

// MARK: issue 9: the region's scheduler on a mixed trace, against FIFO first-fit

/// One job of a trace: when it arrives, what it asks for, how long it runs once started.
struct TraceJob {
    var id: String
    var arrivalS: Double
    var runS: Double
    var spec: JobSpec
    /// The kind, for the report ("frontier-train", "train", "finetune", "serve", "batch").
    var kind: String
}

/// A seeded mixed trace over `hours`, sized to keep a region of `devices` devices about
/// `load` busy: frontier training (needs grade A), training (B or better), fine-tuning (24 GiB),
/// model serving (13B/7B at bf16 or int8), and small batch work, in five priority classes.
/// `gangShare` > 0 adds distributed training: gangs of 2–4 nodes × 8 devices of grade B or
/// better (that share of the offered device-time, taken from single-node training).
enum MixedTrace {
    static func make(hours: Double, devices: Int, load: Double, seed: UInt64, gangShare: Double = 0) -> [TraceJob] {
        var rng = SplitMix64(seed: seed)
        // (kind, share of device-seconds, devices, mean run s, priority, account, spec maker)
        typealias Maker = (inout SplitMix64) -> JobSpec
        var kinds: [(String, Double, Int, Double, Int, String, Maker)] = [
            ("frontier-train", 0.15, 8, 4 * 3600, 100, "ml", { _ in
                JobSpec(name: "frontier", command: "x", accelerators: AcceleratorRequest(count: 8, minGrade: .a), priority: 100, account: "ml") }),
            ("train", 0.30, 4, 2 * 3600, 0, "vision", { _ in
                JobSpec(name: "train", command: "x", accelerators: AcceleratorRequest(count: 4, minGrade: .b), account: "vision") }),
            ("finetune", 0.15, 2, 3600, 0, "ml", { _ in
                JobSpec(name: "finetune", command: "x", accelerators: AcceleratorRequest(count: 2, minMemoryMiB: 24_000), account: "ml") }),
            ("serve", 0.25, 1, 1800, 100, "web", { r in
                let big = r.next() % 2 == 0
                return JobSpec(name: "serve", command: "x", accelerators: AcceleratorRequest(count: 1), priority: 100,
                               model: ModelRequirement(parameters: big ? 13e9 : 7e9, precisions: [.bf16, .int8],
                                                       layers: big ? 40 : 32, hiddenSize: big ? 5120 : 4096, attentionHeads: big ? 40 : 32),
                               account: "web") }),
            ("batch", 0.15, 1, 900, -100, "batch", { _ in
                JobSpec(name: "batch", command: "x", accelerators: AcceleratorRequest(count: 1), priority: -100, account: "batch") }),
        ]
        if gangShare > 0 {
            kinds[1].1 = max(0, kinds[1].1 - gangShare)
            // 3 nodes × 8 devices on average: the rate below counts devices per job as 24.
            kinds.append(("gang-train", gangShare, 24, 3 * 3600, 0, "vision", { r in
                var s = JobSpec(name: "gang", command: "x", accelerators: AcceleratorRequest(count: 8, minGrade: .b), account: "vision")
                s.nodes = 2 + Int(r.next() % 3)
                return s
            }))
        }
        let horizon = hours * 3600
        var out: [TraceJob] = []
        for (kind, share, count, meanRun, _, _, make) in kinds {
            // Arrivals per second so that this kind's device-seconds are its share of the load.
            let rate = load * share * Double(devices) / (Double(count) * meanRun)
            var t = 0.0
            var n = 0
            while true {
                t += -log(max(1e-12, rng.unit())) / rate
                if t >= horizon { break }
                // Run times: exponential around the mean, at least a minute, at most 4× the mean.
                let run = min(4 * meanRun, max(60, -log(max(1e-12, rng.unit())) * meanRun))
                out.append(TraceJob(id: "\(kind)-\(n)", arrivalS: t, runS: run, spec: make(&rng), kind: kind))
                n += 1
            }
        }
        return out.sorted { $0.arrivalS != $1.arrivalS ? $0.arrivalS < $1.arrivalS : $0.id < $1.id }
    }
}


/// What one policy did with a trace.
struct TraceOutcome {
    var name: String
    /// Per job: seconds from arrival to its first start (nil: never started in the window).
    var waits: [String: Double] = [:]
    /// Device-seconds busy, and of those on grade-A devices, and of those on grade A by work a
    /// lower grade in the region could have run.
    var busyDeviceSeconds = 0.0
    var frontierDeviceSeconds = 0.0
    var frontierAvoidable = 0.0
    var preemptions = 0
    var completed = 0
}

/// A region of `nodes` hosts, one SKU each, from the captures: grade A (H100, Gaudi2), B (V100S,
/// Ascend 910B, MI100), C (A10G, T4).
enum TraceFleet {
    static let captures = [
        "nvidia-smi-query-gpu_csv_h100-80gb-hbm3_590.48.01.csv", "hl-smi_gaudi2-hl225-8aip_1.21.1.txt",
        "nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml", "npu-smi-info_910b2c-2npu_23.0.2.1.txt",
        "rocm-smi-json_mi100_rocm602.json", "nvidia-smi-q-x_a10g_v11.xml", "nvidia-smi-q-x_tesla-t4_v11.xml",
    ]

    static func nodes(_ count: Int, fixtures: String, devicesPerNode: Int) -> [(NodeID, [DeviceInventory])] {
        let shapes = FleetInventories.load(directory: fixtures, healthyOnly: true, devicesPerNode: devicesPerNode, captures: captures)
        precondition(!shapes.isEmpty, "no captures found under \(fixtures)")
        return (0..<count).map { n in
            let id = NodeID(String(format: "n%05d", n))
            let devices = shapes[n % shapes.count].enumerated().map { k, d -> DeviceInventory in
                var d = d
                d.rename("\(id)-\(k)")
                d.index = k
                return d
            }
            return (id, devices)
        }
    }
}

/// Whether a device class of the region below grade A could run the job (at one of its
/// precisions, on one 8-device host, ignoring what is busy): then grade-A time spent on it was
/// avoidable.
func lowerGradeCouldRun(_ spec: JobSpec, classes: [DeviceInventory]) -> Bool {
    ModelFit.requests(for: spec).contains { want in
        var lower = want
        if lower.maxGrade == nil || lower.maxGrade == .a { lower.maxGrade = .b }
        return want.count <= 8 && classes.contains { d in
            d.grade != nil && d.grade != .a && RegionPlacement.eligibleDevice(d, for: lower, policy: PlacementPolicy())
        }
    }
}

/// Runs the trace through a real `RegionInstance` (the region's whole decision path: priority
/// queue, fair share, quotas and borrowing, preemption, model fit, grade preference) with a
/// simulated clock: each assignment is acknowledged at once, runs for its time and reports
/// success; each cancel (preemption) ends its run at once.
struct RegionSimulation {
    var instance: RegionInstance
    var now: Moment
    let base: Date
    let agent = Origin(peer: .downstream(identity: Array("sim".utf8)))
    let national = Origin(peer: .upstream)
    var seq: UInt64 = 0

    init(nodes: [(NodeID, [DeviceInventory])], accounts: AccountPolicy, preemption: Bool, frontier: FrontierPolicy = .reserve,
         reservationDepth: Int = RegionInstance.Settings(region: "trace").reservationDepth) {
        var s = RegionInstance.Settings(region: "trace")
        s.frontier = frontier
        s.reservationDepth = reservationDepth
        s.nodeLostAfterMs = 1_000_000_000_000
        s.confirmStarts = false
        s.preemption = preemption
        s.accounts = accounts
        s.placementBudget = 4096
        base = Date(timeIntervalSince1970: 1_800_000_000)
        now = Moment(monotonicMs: 1_000, wall: base)
        instance = RegionInstance(settings: s, recovered: RegionRecovery(), now: now)
        for (id, devices) in nodes {
            var r = Wire.Register()
            r.nodeID = id.rawValue
            r.hostname = id.rawValue
            r.devices = devices.map(Wire.Device.init)
            _ = send(.register(r), from: agent)
        }
    }

    mutating func send(_ body: Body, from origin: Origin) -> [ControllerDirective] {
        seq += 1
        return instance.receive(Message(sender: "sim", sequence: seq, body: body), origin: origin, now: now)
    }

    mutating func at(_ seconds: Double) {
        now = Moment(monotonicMs: 1_000 + Int64(seconds * 1000), wall: base.addingTimeInterval(seconds))
    }

    static func run(trace: [TraceJob], nodes: [(NodeID, [DeviceInventory])], accounts: AccountPolicy, preemption: Bool,
                    frontier: FrontierPolicy, reservationDepth: Int, horizonS: Double) -> TraceOutcome {
        var sim = RegionSimulation(nodes: nodes, accounts: accounts, preemption: preemption, frontier: frontier, reservationDepth: reservationDepth)
        var out = TraceOutcome(name: "region/\(frontier.rawValue)")
        let classes = Array(Set(nodes.flatMap { $0.1 }.map { d -> DeviceInventory in
            var c = d
            c.id = ""
            c.index = 0
            return c
        }.map { HashableDevice($0) })).map(\.device)
        let byID = Dictionary(uniqueKeysWithValues: trace.map { ($0.id, $0) })
        let gradeOf = Dictionary(nodes.flatMap { $0.1 }.map { ($0.id, $0.grade) }, uniquingKeysWith: { a, _ in a })
        var running: [String: (assignment: Wire.Assignment, startS: Double, endS: Double)] = [:]  // by assignment id
        var ends: [(Double, String)] = []  // (time, assignment id), kept sorted descending for popLast
        var next = 0
        var clock = 0.0
        func account(_ a: Wire.Assignment, from: Double, to: Double, into out: inout TraceOutcome) {
            let secs = max(0, to - from)
            out.busyDeviceSeconds += secs * Double(a.deviceIds.count)
            let onA = a.deviceIds.filter { gradeOf[$0] == .a }.count
            out.frontierDeviceSeconds += secs * Double(onA)
            if onA > 0, let job = byID[a.jobID], lowerGradeCouldRun(job.spec, classes: classes) {
                out.frontierAvoidable += secs * Double(onA)
            }
        }
        while clock < horizonS {
            let nextArrival = next < trace.count ? trace[next].arrivalS : .infinity
            let nextEnd = ends.last?.0 ?? .infinity
            let t = min(nextArrival, nextEnd, horizonS)
            if t == .infinity { break }
            clock = t
            sim.at(t)
            var directives: [ControllerDirective] = []
            while next < trace.count, trace[next].arrivalS <= t {
                var f = Wire.JobForward()
                f.jobID = trace[next].id
                f.spec = Wire.JobSpec(trace[next].spec)
                directives += sim.send(.jobForward(f), from: sim.national)
                next += 1
            }
            while let e = ends.last, e.0 <= t {
                ends.removeLast()
                guard let r = running.removeValue(forKey: e.1) else { continue }
                account(r.assignment, from: r.startS, to: t, into: &out)
                out.completed += 1
                directives += sim.status(r.assignment, .succeeded)
            }
            // Turns until nothing more is decided at this instant (each turn is budgeted).
            var quiet = 0
            while quiet < 1 {
                directives += sim.instance.onTick(now: sim.now)
                var progressed = false
                for d in directives {
                    guard case .send(let body, _, _, _) = d else { continue }
                    switch body {
                    case .assignment(let a):
                        guard running[a.assignmentID] == nil else { continue }
                        progressed = true
                        if out.waits[a.jobID] == nil, let job = byID[a.jobID] { out.waits[a.jobID] = t - job.arrivalS }
                        var k = Wire.AssignmentAck()
                        k.assignmentID = a.assignmentID
                        k.epoch = a.epoch
                        k.nodeID = a.nodeID
                        k.accepted = true
                        _ = sim.send(.assignmentAck(k), from: sim.agent)
                        _ = sim.status(a, .running)
                        let end = t + (byID[a.jobID]?.runS ?? 60)
                        running[a.assignmentID] = (a, t, end)
                        let pos = ends.firstIndex { $0.0 < end } ?? ends.count
                        ends.insert((end, a.assignmentID), at: pos)
                    case .cancel(let c):
                        guard let r = running.removeValue(forKey: c.assignmentID) else { continue }
                        progressed = true
                        out.preemptions += 1
                        account(r.assignment, from: r.startS, to: t, into: &out)
                        ends.removeAll { $0.1 == c.assignmentID }
                        directives += sim.status(r.assignment, .cancelled, reason: .cancelled)
                    case .statusUpdate(let u):
                        var ack = Wire.StatusAck()
                        ack.updateID = u.updateID
                        ack.applied = true
                        _ = sim.send(.statusAck(ack), from: sim.national)
                    default: break
                    }
                }
                directives = []
                quiet = progressed ? 0 : quiet + 1
            }
        }
        for r in running.values { account(r.assignment, from: r.startS, to: horizonS, into: &out) }
        return out
    }

    mutating func status(_ a: Wire.Assignment, _ state: JobState, reason: EndReason? = nil) -> [ControllerDirective] {
        var u = Wire.StatusUpdate()
        u.jobID = a.jobID
        u.assignmentID = a.assignmentID
        u.epoch = a.epoch
        u.nodeID = a.nodeID
        u.state = state.rawValue
        if state.isTerminal { u.exitCode = 0; u.hasExitCode_p = true; u.endReason = Wire.EndReason(reason ?? .exited) }
        u.updateID = "\(a.assignmentID):\(state.rawValue)"
        return send(.statusUpdate(u), from: agent)
    }
}

/// Hashable by what makes a device class, for listing the classes of a fleet.
struct HashableDevice: Hashable {
    let device: DeviceInventory
    init(_ d: DeviceInventory) { device = d }
    static func == (a: HashableDevice, b: HashableDevice) -> Bool {
        a.device.model == b.device.model && a.device.grade == b.device.grade && a.device.memoryTotalMiB == b.device.memoryTotalMiB
            && a.device.vendor == b.device.vendor
    }
    func hash(into h: inout Hasher) {
        h.combine(device.model)
        h.combine(device.grade)
        h.combine(device.memoryTotalMiB)
        h.combine(device.vendor)
    }
}

/// The baseline: FIFO over whole devices, each job on the first node (by id) with enough free
/// matching devices; a job that does not fit waits without blocking those behind it. No
/// priorities, quotas, preemption or grade preference; a model job takes the most precise
/// precision the first fitting node allows.
enum FIFOFirstFit {
    static func run(trace: [TraceJob], nodes: [(NodeID, [DeviceInventory])], horizonS: Double) -> TraceOutcome {
        var out = TraceOutcome(name: "fifo-first-fit")
        let classes = Array(Set(nodes.flatMap { $0.1 }.map { HashableDevice($0) })).map(\.device)
        // Each device's class, and per request shape which classes it may use (worked out once).
        let classIndex = Dictionary(uniqueKeysWithValues: classes.enumerated().map { (HashableDevice($0.element), $0.offset) })
        let classOf: [[Int]] = nodes.map { $0.1.map { classIndex[HashableDevice($0)]! } }
        var eligible: [AcceleratorRequest: [Bool]] = [:]
        func usable(_ want: AcceleratorRequest) -> [Bool] {
            if let e = eligible[want] { return e }
            let e = classes.map { RegionPlacement.eligibleDevice($0, for: want, policy: PlacementPolicy()) }
            eligible[want] = e
            return e
        }
        var free: [[Bool]] = nodes.map { $0.1.map { _ in true } }
        var queue: [TraceJob] = []
        var ends: [(Double, Int, [Int], TraceJob, Double)] = []  // end, node, device indexes, job, start
        var next = 0
        var clock = 0.0
        func release(_ e: (Double, Int, [Int], TraceJob, Double), at t: Double) {
            for k in e.2 { free[e.1][k] = true }
            let secs = max(0, min(t, horizonS) - e.4)
            out.busyDeviceSeconds += secs * Double(e.2.count)
            let onA = e.2.filter { nodes[e.1].1[$0].grade == .a }.count
            out.frontierDeviceSeconds += secs * Double(onA)
            if onA > 0 && lowerGradeCouldRun(e.3.spec, classes: classes) { out.frontierAvoidable += secs * Double(onA) }
        }
        while clock < horizonS {
            let nextArrival = next < trace.count ? trace[next].arrivalS : .infinity
            let nextEnd = ends.map(\.0).min() ?? .infinity
            let t = min(nextArrival, nextEnd, horizonS)
            if t == .infinity { break }
            clock = t
            while next < trace.count, trace[next].arrivalS <= t { queue.append(trace[next]); next += 1 }
            ends.removeAll { e in
                guard e.0 <= t else { return false }
                release(e, at: e.0)
                out.completed += 1
                return true
            }
            var kept: [TraceJob] = []
            for job in queue {
                let wants = ModelFit.requests(for: job.spec)
                let masks = wants.map(usable)
                var placed = false
                if job.spec.nodes > 1 {
                    // A gang: the first `nodes` nodes (by id) with enough free matching devices,
                    // all at once or none (the baseline knows gangs, nothing more).
                    let want = wants[0]
                    var ranks: [(Int, [Int])] = []
                    for (n, node) in nodes.enumerated() where ranks.count < job.spec.nodes {
                        let fits = node.1.indices.filter { free[n][$0] && masks[0][classOf[n][$0]] }
                        if fits.count >= want.count { ranks.append((n, Array(fits.prefix(want.count)))) }
                    }
                    if ranks.count == job.spec.nodes {
                        for (n, take) in ranks {
                            for k in take { free[n][k] = false }
                            ends.append((t + job.runS, n, take, job, t))
                        }
                        out.waits[job.id] = t - job.arrivalS
                    } else {
                        kept.append(job)
                    }
                    continue
                }
                nodeLoop: for (n, node) in nodes.enumerated() {
                    for (w, want) in wants.enumerated() {
                        let fits = node.1.indices.filter { free[n][$0] && masks[w][classOf[n][$0]] }
                        if fits.count >= want.count {
                            let take = Array(fits.prefix(want.count))
                            for k in take { free[n][k] = false }
                            ends.append((t + job.runS, n, take, job, t))
                            out.waits[job.id] = t - job.arrivalS
                            placed = true
                            break nodeLoop
                        }
                    }
                }
                if !placed { kept.append(job) }
            }
            queue = kept
        }
        for e in ends { release(e, at: horizonS) }
        return out
    }
}

struct RegionTraceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "region-trace",
        abstract: "Issue 9: the region's scheduler (priorities, fair share, quotas with borrowing, preemption, model fit, grade preference) on a mixed 24 h trace against FIFO first-fit, same trace, same fleet.")
    @Option var nodes = 240
    @Option var hours: Double = 24
    @Option(help: "Offered load: device-seconds asked for ÷ device-seconds there are.") var load = 1.0
    @Option var seed: UInt64 = 1
    @Option var fixtures = "Tests/Fixtures/vendor"
    @Option var devicesPerNode = 8
    @Option(help: "How many waiting jobs may hold reservations at once (the region's reservation_depth).") var reservationDepth = 4
    @Option(help: "Share (0…1) of the offered device-time that is gang training: 2–4 nodes × 8 devices of grade ≥ B, taken from single-node training.") var gangs = 0.0

    func run() throws {
        Machine.header("region-trace", "\(nodes) nodes x \(devicesPerNode) devices, \(hours) h, load \(load), seed \(seed), gangs \(gangs), reservation depth \(reservationDepth)")
        let fleet = TraceFleet.nodes(nodes, fixtures: fixtures, devicesPerNode: devicesPerNode)
        let devices = fleet.reduce(0) { $0 + $1.1.count }
        let trace = MixedTrace.make(hours: hours, devices: devices, load: load, seed: seed, gangShare: gangs)
        let horizon = hours * 3600
        let gradeA = fleet.flatMap { $0.1 }.filter { $0.grade == .a }.count
        print("devices: \(devices) (\(gradeA) grade A); jobs: \(trace.count)")
        let quarter = devices / 4
        let accounts = AccountPolicy(quotas: [
            "ml": AccountQuota(shares: 2, devices: quarter + quarter / 2, cohort: "research"),
            "vision": AccountQuota(shares: 2, devices: quarter + quarter / 2, cohort: "research"),
            "web": AccountQuota(shares: 1),
            "batch": AccountQuota(shares: 1, devices: quarter),
        ])
        func timed<T>(_ name: String, _ body: () -> T) -> T {
            let t0 = ContinuousClock.now
            let r = body()
            print("\(name): simulated in \(ContinuousClock.now - t0)")
            return r
        }
        let region = timed("region/reserve") { RegionSimulation.run(trace: trace, nodes: fleet, accounts: accounts, preemption: true, frontier: .reserve, reservationDepth: reservationDepth, horizonS: horizon) }
        let shared = timed("region/share") { RegionSimulation.run(trace: trace, nodes: fleet, accounts: accounts, preemption: true, frontier: .share, reservationDepth: reservationDepth, horizonS: horizon) }
        let borrowing = timed("region/borrow") { RegionSimulation.run(trace: trace, nodes: fleet, accounts: accounts, preemption: true, frontier: .borrow, reservationDepth: reservationDepth, horizonS: horizon) }
        let fifo = timed("fifo-first-fit") { FIFOFirstFit.run(trace: trace, nodes: fleet, horizonS: horizon) }
        let classes: [(String, Int)] = [("high (100)", 100), ("normal (0)", 0), ("low (-100)", -100)]
        print("")
        print("policy           busy %   frontier misuse %   preempted  started   mean/p99 wait, min, per class")
        for o in [region, shared, borrowing, fifo] {
            var perClass: [String] = []
            for (label, p) in classes {
                let waits = trace.filter { $0.spec.priority == p }.map { o.waits[$0.id] ?? (horizon - $0.arrivalS) }.sorted()
                let mean = waits.reduce(0, +) / Double(max(1, waits.count)) / 60
                let p99 = waits.isEmpty ? 0 : waits[min(waits.count - 1, Int(Double(waits.count) * 0.99))] / 60
                perClass.append(String(format: "%@ %.1f/%.1f", label, mean, p99))
            }
            let busy = 100 * o.busyDeviceSeconds / (Double(devices) * horizon)
            let misuse = o.frontierDeviceSeconds > 0 ? 100 * o.frontierAvoidable / o.frontierDeviceSeconds : 0
            print(o.name.padding(toLength: 16, withPad: " ", startingAt: 0)
                  + String(format: " %6.1f   %17.1f   %9d  %7d   ", busy, misuse, o.preemptions, o.waits.count) + perClass.joined(separator: "; "))
        }
        let gangJobs = trace.filter { $0.spec.nodes > 1 }
        if !gangJobs.isEmpty {
            print("")
            print("gangs (\(gangJobs.count) jobs, \(gangJobs.reduce(0) { $0 + $1.spec.nodes }) ranks): started, mean/p99 wait in minutes")
            for o in [region, shared, borrowing, fifo] {
                let waits = gangJobs.map { o.waits[$0.id] ?? (horizon - $0.arrivalS) }.sorted()
                let mean = waits.reduce(0, +) / Double(waits.count) / 60
                let p99 = waits[min(waits.count - 1, Int(Double(waits.count) * 0.99))] / 60
                let started = gangJobs.filter { o.waits[$0.id] != nil }.count
                print(o.name.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: " %7d   %.1f/%.1f", started, mean, p99))
            }
        }
        print("")
        print("jobs never started count as waiting until the end of the window")
        print(String(format: "RESULT region-trace: region busy %.1f%%, frontier misuse %.1f%%; fifo busy %.1f%%, frontier misuse %.1f%%",
                     100 * region.busyDeviceSeconds / (Double(devices) * horizon),
                     region.frontierDeviceSeconds > 0 ? 100 * region.frontierAvoidable / region.frontierDeviceSeconds : 0,
                     100 * fifo.busyDeviceSeconds / (Double(devices) * horizon),
                     fifo.frontierDeviceSeconds > 0 ? 100 * fifo.frontierAvoidable / fifo.frontierDeviceSeconds : 0))
    }
}

/// Placements/s of the region's whole decision path at scale: 10,000 nodes × 8 devices
/// registered in a `RegionInstance`, 100,000 jobs of mixed shapes, five priorities, four
/// accounts with quotas and a cohort, model jobs; time spent in its placement turns only.
struct RegionPlacementBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "region-placement",
        abstract: "Issue 9: placements/s through RegionInstance (priorities, quotas, fair share, model fit on) at 10,000 nodes × 8 devices.")
    @Option var nodes = 10_000
    @Option var jobs = 100_000
    @Option var fixtures = "Tests/Fixtures/vendor"
    @Option var devicesPerNode = 8
    @Flag(help: "No account quotas (priorities and fair share still on).") var noQuotas = false
    @Option(help: "Share of the jobs (0…1) that are gangs: 2–4 nodes, each with the job's devices.") var gangs = 0.0

    func run() throws {
        Machine.header("region-placement", "\(nodes) nodes x \(devicesPerNode) devices, \(jobs) jobs, quotas \(noQuotas ? "off" : "on"), gangs \(gangs)")
        let fleet = TraceFleet.nodes(nodes, fixtures: fixtures, devicesPerNode: devicesPerNode)
        let devices = fleet.reduce(0) { $0 + $1.1.count }
        let quarter = devices / 4
        let accounts = noQuotas ? AccountPolicy() : AccountPolicy(quotas: [
            "ml": AccountQuota(shares: 2, devices: quarter, devicesByGrade: [.a: quarter / 2], cohort: "research"),
            "vision": AccountQuota(shares: 2, devices: quarter, cohort: "research"),
            "web": AccountQuota(shares: 1, gcu: Double(devices) * 100),
            "batch": AccountQuota(shares: 1, devices: quarter),
        ])
        var sim = RegionSimulation(nodes: fleet, accounts: accounts, preemption: false)
        let trace = MixedTrace.make(hours: 1.2 * Double(jobs) / Double(max(1, devices)), devices: devices, load: 1, seed: 7).prefix(jobs)
        var rng = SplitMix64(seed: 3)
        var forwarding: Duration = .zero
        for j in trace {
            var f = Wire.JobForward()
            f.jobID = j.id
            var spec = j.spec
            spec.priority = [-100, 0, 0, 100, 1000][Int(rng.next() % 5)]
            if gangs > 0, Double(rng.next() % 1_000_000) / 1_000_000 < gangs, spec.replica == nil {
                spec.nodes = 2 + Int(rng.next() % 3)
            }
            f.spec = Wire.JobSpec(spec)
            let t0 = ContinuousClock.now
            _ = sim.send(.jobForward(f), from: sim.national)
            forwarding += ContinuousClock.now - t0
        }
        // Taking in the burst: validation, the record, the queue (before any placement).
        let forwardSecs = Double(forwarding.components.seconds) + Double(forwarding.components.attoseconds) / 1e18
        print(String(format: "RESULT region-placement intake: %.0f jobs forwarded/s into a queue growing to %d", Double(trace.count) / forwardSecs, trace.count))
        print("devices: \(devices); jobs queued: \(trace.count); directive \(MemoryLayout<ControllerDirective>.size) B, mutation \(MemoryLayout<StoreMutation>.size) B, job \(MemoryLayout<JobRecord>.size) B, spec \(MemoryLayout<JobSpec>.size) B")
        var placed = 0
        var assignments = 0
        var turns = 0
        var spent: Duration = .zero
        var idle = 0
        // Until a whole pass over what is still queued places nothing (each turn examines at
        // most the placement budget, 4096 here).
        while idle < (trace.count - placed) / 4096 + 2 {
            sim.at(Double(turns) * 0.001)
            let t0 = ContinuousClock.now
            let out = sim.instance.onTick(now: sim.now)
            spent += ContinuousClock.now - t0
            turns += 1
            let sent = out.compactMap { d -> Wire.Assignment? in if case .send(.assignment(let a), _, _, _) = d { return a } else { return nil } }
            let n = sent.filter { $0.gangRank == 0 }.count
            assignments += sent.count
            placed += n
            idle = n == 0 ? idle + 1 : 0
        }
        let secs = Double(spent.components.seconds) + Double(spent.components.attoseconds) / 1e18
        print("turns: \(turns); placed: \(placed) jobs (\(assignments) assignments: a gang's ranks each count); still queued: \(trace.count - placed); time in placement turns: \(String(format: "%.3f", secs)) s")
        print(String(format: "RESULT region-placement: %.0f placements/s (jobs), %.0f assignments/s", Double(placed) / secs, Double(assignments) / secs))
    }
}

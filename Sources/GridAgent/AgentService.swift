import Foundation
import GridCore
import GridProtocol
import GridTransport
import Logging
import Metrics
import Synchronization
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Performs what an `AgentInstance` decides: journals (one fsync per turn, before anything the
/// turn sends or starts), encodes and sends messages, starts job runs under their shims, signals
/// them, writes the lease file, watches reattached runs, logs, and feeds back what happened.
/// Runs on the socket loop's thread.
public final class AgentShell {
    /// A run the shell can signal: its own child (`process`) or one reattached after a restart.
    final class Handle {
        let pid: pid_t
        let startTicks: UInt64?
        let outputPath: String
        let exitPath: String
        let process: JobProcess?
        var firstKill: Date?

        init(pid: pid_t, startTicks: UInt64?, outputPath: String, exitPath: String, process: JobProcess?) {
            self.pid = pid
            self.startTicks = startTicks
            self.outputPath = outputPath
            self.exitPath = exitPath
            self.process = process
        }

        /// SIGTERM (and other signals) go to the job's whole process group; the shim ignores
        /// them. SIGKILL is asked of the shim (SIGUSR1), which kills every other process of the
        /// group and its descendants and stays to record the end; only a shim that has not
        /// managed in 10 s gets SIGKILL with its group.
        func signal(_ sig: Int32) {
            var target = sig
            var groupWide = true
            if sig == SIGKILL {
                let first = firstKill ?? Date()
                firstKill = first
                if Date().timeIntervalSince(first) < 10 {
                    target = SIGUSR1
                    groupWide = false
                }
            }
            if let process { return process.signal(target, group: groupWide) }
            // Not our child: signal only while the leader is still the journalled process.
            guard ProcessIdentity.isAlive(pid, startTicks: startTicks) else { return }
            if !groupWide || kill(-pid, target) != 0 { _ = kill(pid, target) }
        }
    }

    public private(set) var instance: AgentInstance
    let codec: EnvelopeCodec
    let logger: Logger
    let post: @Sendable (AgentEvent) -> Void
    let outputTailBytes: Int
    let clock: @Sendable () -> Int64
    let journal: AgentJournal
    let shim: ShimOptions
    let stopLoop: @Sendable () -> Void
    var handles: [AssignmentID: Handle] = [:]
    var sequence: UInt64 = 0
    var initial: [AgentDirective] = []
    var lastWatchMs: Int64 = .min
    public private(set) var rejectedFrames = 0
    /// With CURVE on: the region's signing key; only assignments it signed, unexpired, run.
    let verifier: AssignmentVerifier?
    public private(set) var refusedAssignments = 0
    public private(set) var journalFailures = 0
    /// Output files past this size are cut back to their tail (`max_output_bytes`); 0 = no bound.
    let maxOutputBytes: Int
    var lastOutputCheckMs: Int64 = .min
    public private(set) var outputsCut = 0

    public init(instance: AgentInstance, journal: AgentJournal, shim: ShimOptions, maxFrameBytes: Int, outputTailBytes: Int,
                logger: Logger, clock: @escaping @Sendable () -> Int64 = AgentShell.monotonicMs, verifier: AssignmentVerifier? = nil,
                maxOutputBytes: Int = 0,
                stopLoop: @escaping @Sendable () -> Void, post: @escaping @Sendable (AgentEvent) -> Void) {
        self.verifier = verifier
        self.maxOutputBytes = maxOutputBytes
        self.instance = instance
        self.journal = journal
        self.shim = shim
        self.codec = EnvelopeCodec(maxFrameBytes: maxFrameBytes)
        self.logger = logger
        self.post = post
        self.stopLoop = stopLoop
        self.outputTailBytes = outputTailBytes
        self.clock = clock
    }

    /// CLOCK_MONOTONIC in milliseconds: the clock the shims read the lease file with.
    public static let monotonicMs: @Sendable () -> Int64 = {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    // MARK: recovery

    /// Replays the journal, finds every journalled run again (alive with the same start time,
    /// or ended with or without an exit record), compacts the journal, and queues what the
    /// instance decided for the loop's first turn. Throws when the journal cannot be used.
    public func recover() throws {
        let state = try journal.load()
        var found: [AssignmentID: RecoveredProcess] = [:]
        for job in state.jobs {
            let id = AssignmentID(job.assignment.assignmentID)
            let exitPath = exitFile(id)
            if let pid = job.pid {
                if ProcessIdentity.isAlive(pid, startTicks: job.startTicks) {
                    found[id] = .alive(pid: pid, startTicks: job.startTicks)
                    handles[id] = Handle(pid: pid, startTicks: job.startTicks, outputPath: outputFile(id), exitPath: exitPath, process: nil)
                } else {
                    found[id] = .ended(JobProcess.readExitRecord(exitPath) ?? ProcessOutcome(end: nil))
                }
            } else if let pid = ProcessIdentity.findShim(assignment: id.rawValue), let ticks = ProcessIdentity.startTicks(pid) {
                // Started, but the agent died before journalling the pid.
                found[id] = .alive(pid: pid, startTicks: ticks)
                handles[id] = Handle(pid: pid, startTicks: ticks, outputPath: outputFile(id), exitPath: exitPath, process: nil)
            } else if let outcome = JobProcess.readExitRecord(exitPath) {
                found[id] = .ended(outcome)
            } else {
                found[id] = .neverStarted
            }
        }
        let leaseUntil = readLeaseFile()
        initial = instance.recover(state, found: found, leaseUntilMs: leaseUntil, now: clock())
        try journal.rewrite(state)
        // Exit records of runs the journal no longer holds are spent.
        let live = Set(state.jobs.map(\.assignment.assignmentID))
        if let names = try? FileManager.default.contentsOfDirectory(atPath: instance.settings.jobsDirectory) {
            for n in names where n.hasSuffix(".exit") && !live.contains(String(n.dropLast(5))) {
                unlink(instance.settings.jobsDirectory + "/" + n)
            }
        }
        // Work directories of runs that ended while the agent was away.
        let work = instance.settings.jobsDirectory + "/work"
        for n in (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? [] where handles[AssignmentID(n)] == nil {
            try? FileManager.default.removeItem(atPath: work + "/" + n)
        }
        if !state.jobs.isEmpty || !state.pending.isEmpty {
            logger.notice("journal replayed", metadata: [
                "runs": "\(state.jobs.count)", "alive": "\(found.values.filter { if case .alive = $0 { return true } else { return false } }.count)",
                "unacknowledged_statuses": "\(state.pending.count)",
            ])
        }
    }

    /// A run's private directory: mode 0700, owned by the user it runs as (a stale one of the
    /// same run is replaced). The jobs directory above it lets users pass, not list (0711).
    static func makeWorkDirectory(_ dir: String, for user: RunIdentity) throws(SpawnError) {
        let parent = URL(fileURLWithPath: dir).deletingLastPathComponent().path
        func fail(_ what: String) -> SpawnError { SpawnError(command: dir, reason: "\(what): \(String(cString: strerror(errno)))") }
        mkdir(parent, 0o711)
        chmod(parent, 0o711)
        try? FileManager.default.removeItem(atPath: dir)
        guard mkdir(dir, 0o700) == 0 else { throw fail("cannot make the run's work directory") }
        guard chown(dir, user.uid, user.gid) == 0, chmod(dir, 0o700) == 0 else { throw fail("cannot give the work directory to \(user.name)") }
    }

    /// Cuts every run's output file that has grown past `maxOutputBytes` back to its last
    /// 64 KiB, after a line that says so (every 5 s). The run writes with O_APPEND, so it goes
    /// on at the new end.
    func boundOutputs(now: Int64) {
        guard maxOutputBytes > 0, lastOutputCheckMs == .min || now - lastOutputCheckMs >= 5000 else { return }
        lastOutputCheckMs = now
        for (id, h) in handles {
            var st = stat()
            guard stat(h.outputPath, &st) == 0, Int(st.st_size) > maxOutputBytes else { continue }
            let keep = min(65_536, maxOutputBytes / 2)
            let tail = JobProcess.tail(of: h.outputPath, limit: keep)
            let fd = open(h.outputPath, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            guard ftruncate(fd, 0) == 0 else { continue }
            let text = "[grid-agent: output passed max_output_bytes (\(maxOutputBytes)); earlier output dropped]\n" + tail
            _ = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
            outputsCut += 1
            logger.warning("output of \(id) cut back to its tail", metadata: ["bytes": "\(st.st_size)", "max_output_bytes": "\(maxOutputBytes)"])
        }
    }

    func exitFile(_ id: AssignmentID) -> String { instance.settings.jobsDirectory + "/" + id.rawValue + ".exit" }
    func outputFile(_ id: AssignmentID) -> String { instance.settings.jobsDirectory + "/" + id.rawValue + ".log" }

    // MARK: the loop

    public func handle(_ input: LoopInput<AgentEvent>) -> [LoopOutput] {
        var out: [LoopOutput] = []
        if !initial.isEmpty {
            let first = initial
            initial = []
            out += perform(first)
        }
        let now = clock()
        switch input {
        case .tick:
            out += perform(instance.onTick(now: now))
            out += watchReattached(now: now)
            boundOutputs(now: now)
        case .badShape(let peer, let frames):
            rejectedFrames += 1
            logger.warning("ignored message with \(frames) frames from \(peer.label)")
        case .event(.inventory(let report)): out += perform(instance.onInventory(report, ownedPIDs: ownedPIDs(), now: now))
        case .event(.exited(let id, let outcome)):
            let tail = handles.removeValue(forKey: id).map { JobProcess.tail(of: $0.outputPath, limit: outputTailBytes) } ?? ""
            if !instance.settings.runAs.isEmpty { try? FileManager.default.removeItem(atPath: instance.settings.workDirectory(id)) }
            out += perform(instance.onProcessExited(id, outcome, tail: tail, now: now))
        case .event(.shutdown):
            out += perform(instance.onShutdown(now: now))
        case .event(.probed(let id, let kind, let ok, let detail)):
            out += perform(instance.onProbeResult(id, kind, ok: ok, detail: detail, now: now))
        case .event(.observe(let reply)):
            reply(observation(now: now))
        case .frame(_, let payload, _, _):
            do {
                let message = try codec.decode(payload)
                if let verifier, case .assignment(let a) = message.body,
                   let why = verifier.problem(with: a, nowMs: UInt64(clamping: Date().unixMilliseconds)) {
                    // Not run, and said so: the region places the job again (never as an attempt).
                    refusedAssignments += 1
                    logger.warning("refused assignment \(a.assignmentID): \(why)", metadata: ["refused_total": "\(refusedAssignments)"])
                    out += perform([AgentInstance.ack(a, false, "signature: \(why)")])
                    return out
                }
                out += perform(instance.receive(message, now: now))
            } catch {
                rejectedFrames += 1
                logger.warning("rejected frame from region: \(error)", metadata: ["rejected_total": "\(rejectedFrames)"])
            }
        }
        return out
    }

    func observation(now: Int64) -> AgentObservation {
        AgentObservation(node: instance.settings.node.rawValue, registered: instance.registered, stopping: instance.stopping,
                         heartbeatsSent: instance.heartbeatsSent, runningJobs: instance.runningAssignments.count,
                         unacknowledgedStatuses: instance.unacknowledgedStatuses,
                         leaseRemainingMs: instance.leaseDeadlineMs.map { $0 - now }, devices: instance.currentDevices,
                         rejectedFrames: rejectedFrames, journalFailures: journalFailures)
    }

    /// Makes the queued journal records durable; false (and logged, counted) when it cannot.
    func flush() -> Bool {
        guard journal.hasUnsynced else { return true }
        do {
            try journal.sync()
            return true
        } catch {
            journalFailures += 1
            logger.error("cannot write the agent journal: \(error); holding back what depends on it",
                         metadata: ["journal_failures": "\(journalFailures)"])
            return false
        }
    }

    func perform(_ directives: [AgentDirective]) -> [LoopOutput] {
        var out: [LoopOutput] = []
        var queue = directives[...]
        while let d = queue.popFirst() {
            switch d {
            case .journal(let record):
                journal.append(record)
            case .send(let body):
                // Nothing leaves before the records it depends on are on disk; a held-back
                // message is sent again by the retry that covers it (assignment resend, status retry).
                guard flush() else { continue }
                sequence &+= 1
                out.append(LoopOutput(to: .upstream, payload: codec.encode(Message(sender: instance.settings.node.rawValue, sequence: sequence, body: body))))
            case .log(let level, let message):
                logger.log(level: level, "\(message)")
            case .signal(let id, let sig):
                handles[id]?.signal(sig)
            case .lease(let until, let grace):
                writeLeaseFile(until, graceMs: grace)
            case .watch(let id, let pid):
                if handles[id] == nil {
                    handles[id] = Handle(pid: pid, startTicks: ProcessIdentity.startTicks(pid), outputPath: outputFile(id),
                                         exitPath: exitFile(id), process: nil)
                }
            case .exit:
                _ = flush()
                stopLoop()
            case .probe(let id, let kind, let url, let timeoutMs):
                ReplicaProbe.get(url, timeoutMs: timeoutMs) { [post] ok, detail in post(.probed(id, kind, ok: ok, detail: detail)) }
            case .start(let id, let command, let args, let environment, let outputPath, let keep, let runAs):
                guard flush() else {
                    queue.append(contentsOf: instance.onProcessFailed(id, reason: "the agent journal cannot be written (disk full?); not started", now: clock()))
                    continue
                }
                let post = self.post
                let exitPath = exitFile(id)
                let dir = URL(fileURLWithPath: outputPath).deletingLastPathComponent()
                try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                let cgroup = shim.cgroupParent.map { JobCgroups.path(parent: $0, assignment: id.rawValue) }
                var workDirectory: String? = nil
                if let runAs {
                    let dir = instance.settings.workDirectory(id)
                    do { try Self.makeWorkDirectory(dir, for: runAs) } catch {
                        queue.append(contentsOf: instance.onProcessFailed(id, reason: "\(error)", now: clock()))
                        continue
                    }
                    workDirectory = dir
                }
                do {
                    let process = try JobProcess(command: command, args: args, environment: environment, outputPath: outputPath,
                                                 exitPath: exitPath, shim: shim, keepOnLeaseLoss: keep, cgroup: cgroup,
                                                 runAs: runAs, workDirectory: workDirectory) { end in
                        // The shim has ended: its (empty) cgroup goes too.
                        if let cgroup { rmdir(cgroup) }
                        post(.exited(id, JobProcess.readExitRecord(exitPath) ?? ProcessOutcome(end: end)))
                    }
                    handles[id] = Handle(pid: process.pid, startTicks: process.startTicks, outputPath: outputPath, exitPath: exitPath, process: process)
                    queue.append(contentsOf: instance.onProcessStarted(id, pid: process.pid, startTicks: process.startTicks, now: clock()))
                } catch {
                    queue.append(contentsOf: instance.onProcessFailed(id, reason: "\(error)", now: clock()))
                }
            }
        }
        _ = flush()
        if journal.lines > journal.compactAfter {
            do { try journal.rewrite(instance.journalSnapshot()) } catch {
                logger.error("cannot compact the agent journal: \(error)")
            }
        }
        return out
    }

    /// Runs reattached after a restart are not our children: look at /proc every 250 ms.
    func watchReattached(now: Int64) -> [LoopOutput] {
        guard lastWatchMs == .min || now - lastWatchMs >= 250 else { return [] }
        lastWatchMs = now
        var out: [LoopOutput] = []
        for (id, h) in handles where h.process == nil && !ProcessIdentity.isAlive(h.pid, startTicks: h.startTicks) {
            handles[id] = nil
            if let parent = shim.cgroupParent { rmdir(JobCgroups.path(parent: parent, assignment: id.rawValue)) }
            let outcome = JobProcess.readExitRecord(h.exitPath) ?? ProcessOutcome(end: nil)
            out += perform(instance.onProcessExited(id, outcome, tail: JobProcess.tail(of: h.outputPath, limit: outputTailBytes), now: now))
        }
        return out
    }

    /// Every process in one of our runs' process groups (the shims lead them), from /proc.
    func ownedPIDs() -> Set<Int32> {
        let groups = Set(handles.values.map(\.pid))
        guard !groups.isEmpty, let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var out: Set<Int32> = []
        for n in names {
            guard let pid = Int32(n) else { continue }
            let g = getpgid(pid)
            if g > 0 && groups.contains(g) { out.insert(pid) }
        }
        return out
    }

    // MARK: lease file

    var leaseFile: String { shim.leaseFile }

    /// This boot's id: CLOCK_MONOTONIC starts again at each boot, so a lease file from an
    /// earlier boot means nothing.
    static let bootID: String = ((try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)) ?? "")
        .trimmingCharacters(in: .whitespacesAndNewlines)

    /// Writes "DEADLINE GRACE BOOT": the deadline as CLOCK_MONOTONIC milliseconds, the fence
    /// grace and the boot id (temporary file and rename, so a shim never reads half a line). No
    /// fsync: the shims read the page cache, and a host that crashes takes its jobs with it.
    func writeLeaseFile(_ untilMs: Int64, graceMs: Int64) {
        let value = Self.monotonicMs() + (untilMs - clock())
        let tmp = leaseFile + ".tmp"
        do {
            try Data("\(value) \(graceMs) \(Self.bootID)\n".utf8).write(to: URL(fileURLWithPath: tmp))
            guard rename(tmp, leaseFile) == 0 else { throw JournalError(path: leaseFile, what: String(cString: strerror(errno))) }
        } catch {
            logger.error("cannot write the lease file \(leaseFile): \(error); jobs will be fenced when the old lease lapses")
        }
    }

    /// The deadline the previous agent left (this boot only, within a day), on this shell's clock.
    func readLeaseFile() -> Int64? {
        guard let text = try? String(contentsOfFile: leaseFile, encoding: .utf8) else { return nil }
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let first = fields.first, let value = Int64(first), fields.count >= 3, fields[2] == Self.bootID else { return nil }
        let left = value.subtractingReportingOverflow(Self.monotonicMs())
        guard !left.overflow, abs(left.partialValue) < 86_400_000 else { return nil }
        return clock() + left.partialValue
    }

    // MARK: stop

    /// Last resort when the loop stopped without a graceful stop (task cancelled): no run
    /// outlives the agent. A graceful stop has already stopped and reported every run.
    public func terminateAll(grace: Double) {
        guard !handles.isEmpty else { return }
        func alive(_ h: Handle) -> Bool { ProcessIdentity.isAlive(h.pid, startTicks: h.startTicks) }
        func waitForAll(_ seconds: Double) {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline && handles.values.contains(where: alive) { usleep(50_000) }
        }
        for h in handles.values { h.signal(SIGTERM) }
        waitForAll(grace)
        for h in handles.values { h.signal(SIGKILL) }
        waitForAll(5)
        // A shim that could not end its job in time goes with its group.
        for h in handles.values where alive(h) {
            h.firstKill = .distantPast
            h.signal(SIGKILL)
        }
    }
}

/// The agent's I/O shell: the socket loop thread (registration, heartbeats, jobs) and a probe
/// task feeding it fresh inventories. Heartbeats never wait for a probe: a hung vendor tool
/// delays only the next inventory. A graceful stop (SIGTERM, SIGINT, `grid-agent drain`) stops
/// every job, reports it, and exits once the region acknowledged (or after
/// `kill_grace_s` + 5 s); a kill -9 leaves the jobs running under their shims, to be found
/// again by the next start or fenced by the shims when the lease lapses.
public final class AgentService: Service, @unchecked Sendable {
    public let config: AgentConfig
    let source: any InventorySource
    let logger: Logger
    let loop: SocketLoop<AgentEvent>
    /// Touched only on the loop thread once `run` starts.
    let shell: AgentShell
    let pidFile: String
    /// Holds the data directory's lock for the agent's life.
    let lockFD: Int32

    let metrics: any MetricsFactory
    /// The last probe's duration, for /metrics.
    let lastProbe = Mutex<InventoryReport?>(nil)

    public init(config: AgentConfig, source: any InventorySource, initial: InventoryReport, logger: Logger,
                metrics: any MetricsFactory = NOOPMetricsHandler.instance) throws {
        self.config = config
        self.metrics = metrics
        self.source = source
        self.logger = logger
        var options = SocketLoopOptions(connect: config.region, identity: nil, maxMessageBytes: config.maxMessageBytes, tickMilliseconds: 50)
        let verifier: AssignmentVerifier?
        if !config.keyFile.isEmpty {
            do {
                let pair = try CurveKeyFile.readPair(config.keyFile)
                let region = try CurveKeyFile.readPublicKeys(config.regionKey)
                options.curveClient = (region.curve, pair.publicKey, pair.secretKey)
                // Fail closed: with CURVE on, only signed assignments run, so the region's signing key is required.
                guard let signing = region.signing else {
                    throw KeyFileError(config.regionKey, "no 'signing:' line: give region_key as the region's .pub file (gridctl keys generate writes it), so assignments can be verified")
                }
                verifier = try AssignmentVerifier(publicKey: signing)
                logger.info("CURVE on: the region is authenticated by its key; only assignments it signed run", metadata: ["public_key": "\(pair.publicKey)"])
            } catch {
                throw ConfigError(source: "key_file/region_key", problems: ["\(error)"])
            }
        } else {
            verifier = nil
        }
        let loop = try SocketLoop<AgentEvent>(options: options)
        self.loop = loop
        var env = ProcessInfo.processInfo.environment.filter { ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"].contains($0.key) }
        env.merge(config.jobEnvironment) { _, new in new }
        let data = URL(fileURLWithPath: config.dataDir)
        var settings = AgentInstance.Settings(
            node: NodeID(config.nodeID), hostname: ProcessInfo.processInfo.hostName,
            jobsDirectory: data.appendingPathComponent("jobs").path, baseEnvironment: env)
        settings.heartbeatIntervalMs = Int64(config.heartbeatIntervalMs)
        settings.killGraceMs = Int64(config.killGraceSeconds * 1000)
        settings.fenceGraceMs = Int64(config.fenceGraceMs)
        if let ports = config.servicePortRange { settings.portRange = ports }
        settings.advertiseHost = config.advertiseHost
        settings.runAs = RunAsTable.resolve(config.runAs).table
        try FileManager.default.createDirectory(atPath: settings.jobsDirectory, withIntermediateDirectories: true)
        if !settings.runAs.isEmpty {
            // Users pass through to their own work directory; they list nothing, read no output file.
            chmod(settings.jobsDirectory, 0o711)
            logger.info("jobs run as their account's user (run_as)", metadata: [
                "accounts": "\(config.runAs.keys.sorted().joined(separator: ","))"])
        }
        let shimPath = try config.resolvedJobShim()
        let cgroups = JobCgroups.decide(setting: config.cgroup,
                                        procSelfCgroup: (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? "")
        logger.info("\(cgroups.note)")
        // One agent per data directory: a second would rewrite the first one's journal.
        let lockPath = data.appendingPathComponent("agent.lock").path
        let lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            if lockFD >= 0 { close(lockFD) }
            throw ConfigError(source: config.dataDir, problems: [
                "data_dir is in use by another grid-agent (\(lockPath) is locked); give each agent its own data_dir",
            ])
        }
        self.lockFD = lockFD
        let journal = try AgentJournal(path: data.appendingPathComponent("agent.journal").path)
        self.pidFile = data.appendingPathComponent("agent.pid").path
        self.shell = AgentShell(instance: AgentInstance(settings: settings, devices: initial.devices), journal: journal,
                                shim: ShimOptions(path: shimPath, leaseFile: data.appendingPathComponent("lease").path,
                                                  fenceGraceMs: Int64(config.fenceGraceMs), cgroupParent: cgroups.parent),
                                maxFrameBytes: config.maxMessageBytes, outputTailBytes: config.outputTailBytes,
                                logger: logger, verifier: verifier, maxOutputBytes: config.maxOutputBytes, stopLoop: { loop.stop() }) { loop.post($0) }
        try shell.recover()
        try Data("\(getpid())\n".utf8).write(to: URL(fileURLWithPath: pidFile), options: .atomic)
        record(initial)
    }

    /// Probe figures for /metrics: each source's duration, and how each ended.
    func record(_ report: InventoryReport) {
        lastProbe.withLock { $0 = report }
        Metrics.Timer(label: AgentMetricLabels.probeSeconds, dimensions: [("source", "all")], factory: metrics)
            .recordSeconds(report.durationSeconds)
        for s in report.sources {
            if let d = s.durationSeconds {
                Metrics.Timer(label: AgentMetricLabels.probeSeconds, dimensions: [("source", s.name)], factory: metrics).recordSeconds(d)
            }
            Counter(label: "grid_agent_probe_source_results_total", dimensions: [("source", s.name), ("outcome", s.outcome.rawValue)],
                    factory: metrics).increment()
        }
    }

    /// The agent's counts and gauges now, from its loop thread; nil when the loop does not
    /// answer within `timeout`.
    public func observe(timeout: Duration = .seconds(5)) async -> AgentObservation? {
        await OnceAnswer<AgentObservation?>.awaiting(timeout: timeout, fallback: { nil }) { [loop] answer in
            loop.post(.observe(reply: { answer($0) }))
        }
    }

    /// Hands back the pages only the start touched (`release_startup_pages_s`, StartupPages).
    func releaseStartupPages() {
        let outcome = StartupPages.release()
        if outcome.refused > 0 {
            logger.notice("startup pages not handed back: the kernel refused MADV_PAGEOUT (Linux 5.4+ has it)", metadata: [
                "mappings": "\(outcome.advised)", "refused": "\(outcome.refused)", "errno": "\(outcome.firstError)"])
        } else {
            logger.info("startup-only pages handed back to the kernel", metadata: [
                "rss_kib_before": "\(outcome.residentKiBBefore)", "rss_kib_after": "\(outcome.residentKiBAfter)",
                "mappings": "\(outcome.advised)"])
        }
    }

    /// The last probe (sources, duration), for /metrics.
    public var lastProbeReport: InventoryReport? { lastProbe.withLock { $0 } }

    public func run() async throws {
        let loop = self.loop
        let source = self.source
        let interval = config.probeIntervalSeconds
        let grace = config.killGraceSeconds
        let releaseAfter = config.releaseStartupPagesSeconds
        logger.info("agent \(config.nodeID) connecting to \(config.region)")
        await withTaskCancellationOrGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await runOnDedicatedThread(name: "grid-agent") {
                        loop.run { self.shell.handle($0) }
                        self.shell.terminateAll(grace: grace)
                    }
                }
                group.addTask {
                    let clock = ContinuousClock()
                    var releaseAt = releaseAfter > 0 ? clock.now + .seconds(releaseAfter) : nil
                    var nextProbe = clock.now + .seconds(interval)
                    while !Task.isCancelled {
                        try? await Task.sleep(until: min(nextProbe, releaseAt ?? nextProbe), clock: clock)
                        if Task.isCancelled { break }
                        if let at = releaseAt, clock.now >= at {
                            releaseAt = nil
                            self.releaseStartupPages()
                            continue
                        }
                        let report = await source.collect()
                        self.record(report)
                        loop.post(.inventory(report))
                        nextProbe = clock.now + .seconds(interval)
                    }
                }
                await group.next()
                group.cancelAll()
            }
        } onCancelOrGracefulShutdown: {
            // Stop the jobs and report them first; the instance stops the loop when done.
            loop.post(.shutdown)
        }
        unlink(pidFile)
        logger.info("agent \(config.nodeID) stopped")
    }
}

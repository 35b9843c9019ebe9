#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GridCore

/// Turns vendor tool output into devices. The production parser is `VendorOutputParser.parse`
/// (wired in ProberDefaults.swift); tests inject their own.
public typealias VendorParse = @Sendable (String, VendorTool?) throws -> VendorParseResult

/// The outcome of one probe: every accelerator with its health, and what went wrong.
public struct ProbeReport: Sendable, Hashable {
    public var devices: [DeviceInventory]
    /// Operator-readable lines: tool failures, parser warnings, unreadable sysfs files.
    public var problems: [String]
    public var durationSeconds: Double
    /// Ids of devices whose published health (state or reason kinds) changed with this probe,
    /// including devices seen for the first time. Empty for `simulate`.
    public var healthChanged: [String]
    /// Every source the probe tried, in order, and what each said: why it found what it found.
    public var sources: [ProbeSource]

    public init(devices: [DeviceInventory], problems: [String], durationSeconds: Double, healthChanged: [String] = [],
                sources: [ProbeSource] = []) {
        self.devices = devices
        self.problems = problems
        self.durationSeconds = durationSeconds
        self.healthChanged = healthChanged
        self.sources = sources
    }
}

/// One place the probe looked for accelerators: the kernel's PCI view (sysfs), a vendor tool,
/// or a captured output (`--simulate`).
public struct ProbeSource: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable { case sysfs, tool, capture, kernelLog = "kernel_log" }
    public enum Outcome: String, Sendable, Codable {
        /// Ran and answered (a tool: exit status 0).
        case ok
        /// A tool exited with a non-zero status.
        case failed
        case timedOut = "timed_out"
        case notInstalled = "not_installed"
        /// Not run: disabled, or no device of its vendors on the PCI bus.
        case skipped
        /// Could not tell (sysfs not listable, a stuck earlier run).
        case unavailable
    }
    /// "sysfs", the tool's configured name ("nvidia-smi"), or the capture's file name.
    public var name: String
    public var kind: Kind
    /// The executable (as run or searched), the sysfs root, or the capture's path.
    public var path: String
    public var outcome: Outcome
    public var exitStatus: Int32?
    public var durationSeconds: Double?
    /// Devices this source described.
    public var devices: Int
    /// What it said, in words (why skipped, the error, what it found).
    public var note: String

    public init(name: String, kind: Kind, path: String, outcome: Outcome, exitStatus: Int32? = nil, durationSeconds: Double? = nil,
                devices: Int = 0, note: String = "") {
        self.name = name
        self.kind = kind
        self.path = path
        self.outcome = outcome
        self.exitStatus = exitStatus
        self.durationSeconds = durationSeconds
        self.devices = devices
        self.note = note
    }
}

/// Discovers accelerators and judges their health: sysfs first, vendor tools second, merged
/// into one inventory per device.
///
/// `probe()` never throws and returns in bounded time: the sysfs scan runs on its own thread
/// under `sysfsTimeoutSeconds`, tools run concurrently under their own deadlines through the
/// `ToolRunner`, so the worst case is about max(sysfs, tool timeout) + the runner's kill and
/// reap graces (1.5 s).
///
/// Flap damping state lives here: `probe()` passes each device's evaluated health through a
/// `HealthDamper` (worse at once, better after `health.cleanProbesToRecover` consecutive
/// probes, keyed by PCI bus id, else id) and reports which devices' published health changed. `simulate` is undamped and
/// leaves that state alone.
public final class Prober: Sendable {
    public let settings: ProbeSettings
    private let parse: VendorParse
    private let runner: ToolRunner
    private let damper: ProbeLockedBox<HealthDamper>
    private let scanInFlight = ProbeLockedBox(false)

    /// - Parameters:
    ///   - runner: shared by default, so a hung tool stays in flight across probers.
    ///   - parse: the vendor output parser.
    public init(settings: ProbeSettings, runner: ToolRunner = .shared, parse: @escaping VendorParse) {
        self.settings = settings
        self.runner = runner
        self.parse = parse
        self.damper = ProbeLockedBox(HealthDamper(cleanProbesToRecover: settings.health.cleanProbesToRecover))
    }

    /// Forgets damping history (e.g. after a driver reload).
    public func resetDamping() {
        damper.withLock { $0 = HealthDamper(cleanProbesToRecover: settings.health.cleanProbesToRecover) }
    }

    // MARK: - Probe

    public func probe() async -> ProbeReport {
        let start = Date()
        var problems: [String] = []

        var sources: [ProbeSource] = []

        // 1. Kernel view.
        let scanStart = Date()
        let scan = await scanSysfs()
        var sysfsDevices: [SysfsDevice] = []
        var sysfsListed = false
        if let scan {
            sysfsDevices = scan.devices
            sysfsListed = scan.pciBusListed
            problems += scan.warnings.map { "sysfs: \($0)" }
        }
        let seenVendors = Set(sysfsDevices.map(\.vendor))
        let sysfsPath = settings.sysfsRoot + "/bus/pci/devices"
        let scanSeconds = Date().timeIntervalSince(scanStart)
        if let scan, scan.pciBusListed {
            let byVendor = Dictionary(grouping: sysfsDevices, by: \.vendor).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
            sources.append(ProbeSource(name: "sysfs", kind: .sysfs, path: sysfsPath, outcome: .ok, durationSeconds: scanSeconds,
                                       devices: sysfsDevices.count,
                                       note: sysfsDevices.isEmpty ? "no accelerator (display, 3D or processing-accelerator class) PCI device of a known vendor"
                                           : "accelerator PCI devices: " + byVendor.joined(separator: ", ")))
        } else {
            sources.append(ProbeSource(name: "sysfs", kind: .sysfs, path: sysfsPath, outcome: .unavailable, durationSeconds: scanSeconds,
                                       note: scan == nil ? "the scan did not finish within \(HealthEvaluator.format(settings.sysfsTimeoutSeconds)) s"
                                           : (scan?.warnings.first ?? "the PCI bus could not be listed (no /sys here, e.g. a container without it)")
                                           + "; every tool is tried"))
        }

        // 2. Vendor tools, concurrently.
        let chosen = settings.tools.sorted { $0.key < $1.key }.filter { name, tool in
            guard tool.enabled else {
                sources.append(ProbeSource(name: name, kind: .tool, path: tool.executable, outcome: .skipped, note: "disabled in the configuration"))
                return false
            }
            guard settings.onlyToolsForDetectedVendors, sysfsListed else { return true }
            if seenVendors.isDisjoint(with: tool.vendors) {
                sources.append(ProbeSource(name: name, kind: .tool, path: tool.executable, outcome: .skipped,
                                           note: "no \(tool.vendors.map(\.rawValue).joined(separator: "/")) device on the PCI bus (probe.only_tools_for_detected_vendors)"))
                return false
            }
            return true
        }
        let runs: [(String, ToolSettings, ToolResult)] = await withTaskGroup(of: (String, ToolSettings, ToolResult).self) { group in
            for (name, tool) in chosen {
                group.addTask { [runner, settings] in
                    let result = await runner.run(
                        tool.executable, arguments: tool.arguments, tool: name,
                        timeoutSeconds: tool.timeoutSeconds ?? settings.toolTimeoutSeconds,
                        maxOutputBytes: settings.maxOutputBytes)
                    return (name, tool, result)
                }
            }
            var all: [(String, ToolSettings, ToolResult)] = []
            for await r in group { all.append(r) }
            return all.sorted { $0.0 < $1.0 }
        }

        // 3. Interpret, merge, judge.
        var parsed: [VendorParseResult] = []
        var failures: [ToolFailure] = []
        for (name, tool, result) in runs {
            let vendors = Set(tool.vendors)
            let relevant = !seenVendors.isDisjoint(with: vendors)
            let i = interpret(name: name, tool: tool, result: result, vendorsPresent: relevant)
            sources.append(Self.source(name: name, result: result, interpretation: i))
            if let p = i.parsed { parsed.append(p) }
            failures += i.failures
            problems += i.problems
        }
        var devices = InventoryMerger.merge(sysfs: sysfsDevices, vendor: parsed, failures: failures, policy: settings.health)

        // 3b. Fault codes from the kernel log (NVIDIA Xid), judged by the health policy.
        if !settings.kernelLog.isEmpty {
            let (source, events) = Self.readKernelLog(settings.kernelLog, window: settings.kernelLogWindowSeconds)
            sources.append(source)
            Self.apply(xids: events, to: &devices, policy: settings.health)
        }

        // 4. Damp.
        var changed: [String] = []
        damper.withLock { d in
            for i in devices.indices {
                let r = d.observe(deviceID: Self.dampingKey(devices[i]), health: devices[i].health)
                devices[i].health = r.health
                if r.changed { changed.append(devices[i].id) }
            }
            d.retain(deviceIDs: Set(devices.map(Self.dampingKey)))
        }
        return ProbeReport(
            devices: devices, problems: problems, durationSeconds: Date().timeIntervalSince(start), healthChanged: changed,
            sources: sources)
    }

    /// Xid events from the kernel log (`/dev/kmsg` records, or a file of `dmesg` lines), read
    /// without blocking; the source says what it found or why it could not read.
    static func readKernelLog(_ path: String, window: Double, uptime: Double = Prober.secondsSinceBoot())
        -> (ProbeSource, [(pciBusID: String, code: Int)]) {
        let start = Date()
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let why = errno == EACCES || errno == EPERM
                ? "not readable (needs CAP_SYSLOG, or kernel.dmesg_restrict=0); Xid faults come only from the vendor tool"
                : "cannot open: \(String(cString: strerror(errno)))"
            return (ProbeSource(name: "kernel-log", kind: .kernelLog, path: path, outcome: .unavailable, note: why), [])
        }
        defer { close(fd) }
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 8192)
        var total = 0
        while total < 16 << 20 {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 {
                total += n
                text += String(decoding: buffer[0..<n], as: UTF8.self)
                if !text.hasSuffix("\n") { text += "\n" }  // /dev/kmsg: one record per read
            } else if n < 0 && errno == EPIPE {
                continue  // a record was overwritten while reading: go on with the next
            } else {
                break  // 0: end of file; EAGAIN: no more records now
            }
        }
        let all = XidCatalog.events(inKernelLog: text)
        // Recent ones only: an Xid older than the window (or from a log whose clock is ahead,
        // a file from another boot) no longer counts.
        let events = all.filter { e in e.secondsSinceBoot.map { $0 <= uptime && uptime - $0 <= window } ?? true }
            .map { (pciBusID: $0.pciBusID, code: $0.code) }
        let codes = Array(Set(events.map(\.code))).sorted()
        return (ProbeSource(name: "kernel-log", kind: .kernelLog, path: path, outcome: .ok, durationSeconds: Date().timeIntervalSince(start),
                            devices: Set(events.map(\.pciBusID)).count,
                            note: events.isEmpty ? "no Xid events in the last \(Int(window)) s" + (all.isEmpty ? "" : " (\(all.count) older)") : "\(events.count) Xid event(s): " + codes.map { "\($0) (\(XidCatalog.meaning($0)))" }.joined(separator: ", ")),
                events)
    }

    /// Seconds since boot (CLOCK_BOOTTIME), the kernel log's clock.
    public static func secondsSinceBoot() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Adds each device's Xids (matched by PCI address: the kernel writes `0000:3b:00`, devices
    /// carry `0000:3b:00.0`) to its fault codes and judges them by the policy.
    static func apply(xids: [(pciBusID: String, code: Int)], to devices: inout [DeviceInventory], policy: HealthPolicy) {
        guard !xids.isEmpty else { return }
        for i in devices.indices {
            guard let bus = devices[i].pciBusID?.lowercased() else { continue }
            let mine = xids.filter { bus == $0.pciBusID || bus.hasPrefix($0.pciBusID + ".") }.map(\.code)
            let new = mine.filter { !devices[i].signals.faultCodes.contains($0) }
            guard !new.isEmpty else { continue }
            var unique: [Int] = []
            for c in new where !unique.contains(c) { unique.append(c) }
            devices[i].signals.faultCodes += unique
            var onlyFaults = HealthSignals()
            onlyFaults.faultCodes = unique
            devices[i].health = HealthEvaluator.combine([devices[i].health, HealthEvaluator.evaluate(signals: onlyFaults, policy: policy)])
        }
    }

    /// A tool run as a probe source.
    static func source(name: String, result r: ToolResult, interpretation i: Interpretation) -> ProbeSource {
        var s = ProbeSource(name: name, kind: .tool, path: r.executable, outcome: .ok, exitStatus: r.exitStatus,
                            durationSeconds: r.durationSeconds, devices: i.parsed?.devices.count ?? 0)
        switch r.outcome {
        case .exited(let code):
            s.outcome = code == 0 && i.parsed != nil ? .ok : .failed
            s.note = i.parsed.map { "listed \($0.devices.count) device(s)" } ?? "output not understood"
            if code != 0 { s.note = "exit status \(code); " + s.note }
            if let first = i.problems.first, s.outcome != .ok { s.note += ": " + first }
        case .timedOut, .busy:
            s.outcome = .timedOut
            s.note = i.problems.first ?? "timed out"
        case .notFound(let exe):
            s.outcome = .notInstalled
            s.note = "\(exe) is not installed (not on PATH)"
        default:
            s.outcome = .failed
            s.note = i.problems.first ?? "failed"
        }
        return s
    }

    /// Damping follows the PCI address when known: a device keeps it whether a vendor tool or
    /// only sysfs described it (ids can differ between the two, e.g. rocm-smi unique id vs bus id).
    static func dampingKey(_ d: DeviceInventory) -> String { d.pciBusID ?? d.id }

    // MARK: - Simulate

    /// The parse → merge → health pipeline on captured outputs (no sysfs, no processes, no
    /// damping). `name` is a configured tool name ("nvidia-smi"), a format name
    /// ("nvidia-smi-xml") or anything else (format detected from the text).
    public func simulate(captures: [(name: String, text: String)]) -> ProbeReport {
        let start = Date()
        var parsed: [VendorParseResult] = []
        var failures: [ToolFailure] = []
        var problems: [String] = []
        var sources: [ProbeSource] = []
        for capture in captures {
            let format = VendorTool(rawValue: capture.name) ?? settings.tools[capture.name]?.format
            let vendors = settings.tools[capture.name]?.vendors ?? format.map { [$0.vendor] } ?? []
            let i = interpretOutput(
                name: capture.name, vendors: Set(vendors), format: format, stdout: capture.text, stderr: "", exitCode: 0)
            if let p = i.parsed { parsed.append(p) }
            failures += i.failures
            problems += i.problems
            sources.append(ProbeSource(name: capture.name, kind: .capture, path: capture.name, outcome: i.parsed == nil ? .failed : .ok,
                                       devices: i.parsed?.devices.count ?? 0,
                                       note: i.parsed.map { "captured \(format?.rawValue ?? "vendor") output: \($0.devices.count) device(s)" }
                                           ?? ("not understood" + (i.problems.first.map { ": " + $0 } ?? ""))))
        }
        let devices = InventoryMerger.merge(sysfs: [], vendor: parsed, failures: failures, policy: settings.health)
        return ProbeReport(devices: devices, problems: problems, durationSeconds: Date().timeIntervalSince(start), sources: sources)
    }

    // MARK: - Pieces

    struct Interpretation {
        var parsed: VendorParseResult?
        var failures: [ToolFailure] = []
        var problems: [String] = []
    }

    /// What a tool run means for its devices. A topology tool only adds links: its failures are
    /// problems for the log, never health reasons of the devices.
    func interpret(name: String, tool: ToolSettings, result r: ToolResult, vendorsPresent: Bool) -> Interpretation {
        var i = interpretRun(name: name, tool: tool, result: r, vendorsPresent: vendorsPresent)
        if tool.format == .nvidiaSMITopo { i.failures = [] }
        return i
    }

    func interpretRun(name: String, tool: ToolSettings, result r: ToolResult, vendorsPresent: Bool) -> Interpretation {
        let vendors = Set(tool.vendors)
        func fail(_ kind: HealthReasonKind, _ detail: String, state: HealthState? = nil) -> Interpretation {
            Interpretation(
                parsed: nil, failures: [ToolFailure(tool: name, vendors: vendors, reason: HealthReason(kind, detail), state: state)],
                problems: ["\(name): \(detail)"])
        }
        let timeout = tool.timeoutSeconds ?? settings.toolTimeoutSeconds
        switch r.outcome {
        case .exited(let code):
            return interpretOutput(
                name: name, vendors: vendors, format: tool.format, stdout: r.stdout, stderr: r.stderrTail, exitCode: code)
        case .timedOut:
            var detail = "\(name) did not finish within \(HealthEvaluator.format(timeout)) s; killed"
            if !r.reaped { detail += "; the process cannot be reaped (stuck in the kernel?), later runs wait for it" }
            return fail(.toolTimeout, detail)
        case .busy:
            return fail(.toolTimeout, "an earlier \(name) run is still hung (not reaped); not started again")
        case .signaled(let sig):
            return fail(.toolFailed, "\(name) died from signal \(sig)\(Self.tailNote(r.stderrTail))")
        case .outputTooLarge:
            return fail(.toolFailed, "\(name) printed more than \(settings.maxOutputBytes) bytes; killed")
        case .notFound(let exe):
            // Only worth a word when the kernel shows devices this tool should describe.
            var i = Interpretation()
            let detail = "\(exe) not found; no vendor tool output"
            i.failures = [ToolFailure(tool: name, vendors: vendors, reason: HealthReason(.notReported, detail))]
            if vendorsPresent { i.problems = ["\(name): \(detail)"] }
            return i
        case .launchFailed(let msg):
            return fail(.toolFailed, "\(name) could not be started: \(msg)")
        case .cancelled:
            return fail(.toolFailed, "\(name) run cancelled")
        }
    }

    /// What a tool's output means (the part shared with `simulate`).
    func interpretOutput(
        name: String, vendors: Set<AcceleratorVendor>, format: VendorTool?, stdout: String, stderr: String, exitCode: Int32
    ) -> Interpretation {
        var i = Interpretation()
        let all = stdout + "\n" + stderr

        // Text that condemns devices whatever else the output says.
        let lines = all.split(whereSeparator: \.isNewline)
        let lostLines = lines.filter { l in
            let s = l.lowercased()
            return s.contains("fallen off the bus") || s.contains("gpu is lost") || s.contains("fell off the bus")
        }
        if !lostLines.isEmpty {
            let ids = InventoryMerger.busIDs(in: lostLines.joined(separator: "\n"))
            let quote = Self.clip(String(lostLines[0]))
            i.failures.append(ToolFailure(
                tool: name, vendors: vendors, busIDs: ids.isEmpty ? nil : ids,
                reason: HealthReason(.fallenOffBus, "\(name): \(quote)")))
            i.problems.append("\(name): \(quote)")
        }
        if let mismatch = lines.first(where: { $0.lowercased().contains("version mismatch") }) {
            let quote = Self.clip(String(mismatch))
            i.failures.append(ToolFailure(tool: name, vendors: vendors, reason: HealthReason(.driverMismatch, "\(name): \(quote)")))
            i.problems.append("\(name): \(quote)")
        }

        do {
            let result = try parse(stdout, format)
            i.parsed = result
            i.problems += result.warnings.map { "\(name): \($0)" }
            if exitCode != 0 {
                let detail = "\(name) exited with status \(exitCode) after listing \(result.devices.count) device(s)\(Self.tailNote(stderr)); devices it did not list are unknown"
                i.failures.append(ToolFailure(tool: name, vendors: vendors, reason: HealthReason(.toolFailed, detail)))
                i.problems.append(detail)
            }
        } catch {
            if exitCode != 0 {
                let detail = "\(name) exited with status \(exitCode)\(Self.tailNote(stderr.isEmpty ? stdout : stderr))"
                i.failures.append(ToolFailure(tool: name, vendors: vendors, reason: HealthReason(.toolFailed, detail)))
                i.problems.append(detail)
            } else {
                let detail = "\(name) output could not be parsed: \(error)"
                i.failures.append(ToolFailure(tool: name, vendors: vendors, reason: HealthReason(.unparseable, detail)))
                i.problems.append(detail)
            }
        }
        return i
    }

    static func tailNote(_ text: String) -> String {
        let last = text.split(whereSeparator: \.isNewline).last { !$0.trimmingSpaces().isEmpty }
        guard let last else { return "" }
        return ": \(clip(String(last)))"
    }

    static func clip(_ s: String, _ limit: Int = 200) -> String {
        let t = s.trimmingSpaces()
        return t.count <= limit ? t : String(t.prefix(limit)) + "…"
    }

    /// Runs the sysfs scan on its own thread; nil when it misses its deadline (or an earlier
    /// scan is still stuck).
    private func scanSysfs() async -> SysfsScanResult? {
        let claimed = scanInFlight.withLock { busy -> Bool in
            if busy { return false }
            busy = true
            return true
        }
        guard claimed else {
            return SysfsScanResult(
                devices: [], warnings: ["an earlier sysfs scan is still stuck; kernel view skipped"], pciBusListed: false)
        }
        let scanner = SysfsScanner(
            sysRoot: URL(fileURLWithPath: settings.sysfsRoot), procRoot: URL(fileURLWithPath: settings.procRoot))
        let flag = scanInFlight
        let seconds = settings.sysfsTimeoutSeconds
        let result: SysfsScanResult? = await withCheckedContinuation { continuation in
            let once = ProbeLockedBox(false)
            let finish: @Sendable (SysfsScanResult?) -> Void = { value in
                let first = once.withLock { done -> Bool in
                    if done { return false }
                    done = true
                    return true
                }
                if first { continuation.resume(returning: value) }
            }
            let thread = Thread {
                let r = scanner.scan()
                flag.withLock { $0 = false }
                finish(r)
            }
            thread.name = "sysfs scan"
            thread.start()
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { finish(nil) }
        }
        return result ?? SysfsScanResult(
            devices: [],
            warnings: ["scan did not finish within \(HealthEvaluator.format(seconds)) s; kernel view skipped"],
            pciBusListed: false)
    }
}

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

    public init(devices: [DeviceInventory], problems: [String], durationSeconds: Double, healthChanged: [String] = []) {
        self.devices = devices
        self.problems = problems
        self.durationSeconds = durationSeconds
        self.healthChanged = healthChanged
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

        // 1. Kernel view.
        let scan = await scanSysfs()
        var sysfsDevices: [SysfsDevice] = []
        var sysfsListed = false
        if let scan {
            sysfsDevices = scan.devices
            sysfsListed = scan.pciBusListed
            problems += scan.warnings.map { "sysfs: \($0)" }
        }
        let seenVendors = Set(sysfsDevices.map(\.vendor))

        // 2. Vendor tools, concurrently.
        let chosen = settings.tools.sorted { $0.key < $1.key }.filter { _, tool in
            guard tool.enabled else { return false }
            guard settings.onlyToolsForDetectedVendors, sysfsListed else { return true }
            return !seenVendors.isDisjoint(with: tool.vendors)
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
            if let p = i.parsed { parsed.append(p) }
            failures += i.failures
            problems += i.problems
        }
        var devices = InventoryMerger.merge(sysfs: sysfsDevices, vendor: parsed, failures: failures, policy: settings.health)

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
            devices: devices, problems: problems, durationSeconds: Date().timeIntervalSince(start), healthChanged: changed)
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
        for capture in captures {
            let format = VendorTool(rawValue: capture.name) ?? settings.tools[capture.name]?.format
            let vendors = settings.tools[capture.name]?.vendors ?? format.map { [$0.vendor] } ?? []
            let i = interpretOutput(
                name: capture.name, vendors: Set(vendors), format: format, stdout: capture.text, stderr: "", exitCode: 0)
            if let p = i.parsed { parsed.append(p) }
            failures += i.failures
            problems += i.problems
        }
        let devices = InventoryMerger.merge(sysfs: [], vendor: parsed, failures: failures, policy: settings.health)
        return ProbeReport(devices: devices, problems: problems, durationSeconds: Date().timeIntervalSince(start))
    }

    // MARK: - Pieces

    struct Interpretation {
        var parsed: VendorParseResult?
        var failures: [ToolFailure] = []
        var problems: [String] = []
    }

    /// What a tool run means for its devices.
    func interpret(name: String, tool: ToolSettings, result r: ToolResult, vendorsPresent: Bool) -> Interpretation {
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
        let last = text.split(whereSeparator: \.isNewline).last { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        guard let last else { return "" }
        return ": \(clip(String(last)))"
    }

    static func clip(_ s: String, _ limit: Int = 200) -> String {
        let t = s.trimmingCharacters(in: .whitespaces)
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

import Foundation
import GridCore
import Testing
@testable import GridProbe

@Suite("Prober")
struct ProberTests {
    func prober(_ settings: ProbeSettings) -> Prober {
        Prober(settings: settings, runner: ToolRunner(killGraceSeconds: 0.5, reapGraceSeconds: 0.5), parse: fakeParse)
    }

    @Test func goodToolOutputMergesWithSysfs() async throws {
        let r = try FakeRoot("probe-good")
        try makeNvidiaTree(r)
        let tool = try r.script("nvidia-smi", "echo FAKE-SMI; echo 'GPU 00000000:3B:00.0 GPU-1111 NVIDIA H100 80GB HBM3 temp=40'")
        let report = await prober(fakeSettings(r, tool: tool)).probe()
        #expect(report.problems == [])
        #expect(report.devices.count == 1)
        let d = try #require(report.devices.first)
        #expect(d.id == "GPU-1111")
        #expect(d.numaNode == 1)
        #expect(d.health == .healthy)
        #expect(report.healthChanged == ["GPU-1111"])
    }

    /// The probe says where it looked: sysfs with what it saw, then each tool with its path,
    /// outcome, exit status and duration (`grid-agent probe` prints these).
    @Test func reportListsEverySourceTriedAndHowEachEnded() async throws {
        let r = try FakeRoot("probe-sources")
        try makeNvidiaTree(r)
        let good = try r.script("nvidia-smi", "echo FAKE-SMI; echo 'GPU 00000000:3B:00.0 GPU-1111 NVIDIA H100 80GB HBM3 temp=40'")
        var settings = fakeSettings(r, tool: good)
        settings.tools["rocm-smi"] = ToolSettings(executable: "rocm-smi", format: .rocmSMIJSON, vendors: [.amd])
        settings.tools["xpu-smi"] = ToolSettings(enabled: false, executable: "xpu-smi", format: .xpuSMIDiscovery, vendors: [.intel])
        let report = await prober(settings).probe()
        let byName = Dictionary(uniqueKeysWithValues: report.sources.map { ($0.name, $0) })
        let sysfs = try #require(byName["sysfs"])
        #expect(sysfs.kind == .sysfs && sysfs.outcome == .ok && sysfs.devices == 1 && sysfs.note.contains("1 nvidia"))
        let nv = try #require(byName["nvidia-smi"])
        #expect(nv.outcome == .ok && nv.exitStatus == 0 && nv.devices == 1 && nv.path == good && (nv.durationSeconds ?? -1) >= 0, "\(nv)")
        #expect(byName["rocm-smi"]?.outcome == .skipped && byName["rocm-smi"]?.note.contains("no amd device") == true)
        #expect(byName["xpu-smi"]?.outcome == .skipped && byName["xpu-smi"]?.note.contains("disabled") == true)
    }

    @Test func aMissingOrFailingToolIsNamedAsSuch() async throws {
        let r = try FakeRoot("probe-sources-bad")
        try makeNvidiaTree(r)
        var settings = fakeSettings(r, tool: try r.script("nvidia-smi", "echo broken >&2; exit 9"))
        settings.tools["nvidia-smi-2"] = ToolSettings(executable: r.path + "/no-such-tool", format: .nvidiaSMIXML, vendors: [.nvidia])
        let report = await prober(settings).probe()
        let byName = Dictionary(uniqueKeysWithValues: report.sources.map { ($0.name, $0) })
        #expect(byName["nvidia-smi"]?.outcome == .failed && byName["nvidia-smi"]?.exitStatus == 9)
        #expect(byName["nvidia-smi-2"]?.outcome == .notInstalled && byName["nvidia-smi-2"]?.note.contains("not installed") == true)
    }

    /// An Xid in the kernel log makes the device it names unhealthy (a fatal code per policy)
    /// or degraded, with the code's meaning; other devices are untouched; the source says so.
    @Test func kernelLogXidsJudgeTheirDevice() async throws {
        let r = try FakeRoot("probe-xid")
        try makeNvidiaTree(r)
        let tool = try r.script("nvidia-smi", "echo FAKE-SMI; echo 'GPU 00000000:3B:00.0 GPU-1111 NVIDIA H100 80GB HBM3 temp=40'")
        var settings = fakeSettings(r, tool: tool)
        // Records stamped a second ago (by this host's boot clock), and one from long before.
        // The window is 5 minutes: in a loaded clean-clone CI run the probe started 42 s after
        // the records were written, and a 30 s window had dropped the recent one too. The old
        // record is an hour back, or at boot when the host is younger than that but older than
        // the window (on a host up for less than the window it is left out).
        let now = Int(Prober.secondsSinceBoot() * 1_000_000)
        settings.kernelLogWindowSeconds = 300
        let oldStamp = now - 3_600_000_000 >= 0 ? now - 3_600_000_000 : (now > 301_000_000 ? 0 : nil)
        let old = oldStamp.map { "4,1200,\($0),-;NVRM: Xid (PCI:0000:3b:00): 48, pid=1, name=old, double bit error\n" } ?? ""
        try r.file("kmsg", old
                   + "4,1201,\(now - 1_000_000),-;NVRM: Xid (PCI:0000:3b:00): 79, pid=4242, name=python3, GPU has fallen off the bus.\n"
                   + "6,1202,\(now - 900_000),-;usb 1-1: new device\n")
        settings.kernelLog = r.path + "/kmsg"
        let report = await prober(settings).probe()
        let d = try #require(report.devices.first)
        #expect(d.signals.faultCodes == [79], "only the recent Xid counts, not the one from an hour ago (window 5 min)")
        #expect(d.health.state == .unhealthy, "\(d.health)")
        #expect(d.health.reasons.contains { $0.kind == .fallenOffBus && $0.detail.contains("79") })
        let source = try #require(report.sources.first { $0.kind == .kernelLog })
        #expect(source.outcome == .ok && source.note.contains("79 (GPU has fallen off the bus)"))
        // An unreadable log is said, not an error.
        settings.kernelLog = r.path + "/no-such-log"
        let none = await prober(settings).probe()
        #expect(none.sources.first { $0.kind == .kernelLog }?.outcome == .unavailable)
        #expect(none.devices.first?.health.state == .healthy)
    }

    @Test func xidEventsAreReadFromKernelLogLines() {
        let log = """
            [ 1234.5] NVRM: Xid (PCI:0000:3B:00): 79, pid=1234, name=python, GPU has fallen off the bus.
            [ 1240.0] nvidia 0000:3b:00.0: something else
            [ 1300.1] NVRM: Xid (PCI:0000:86:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error
            """
        let events = XidCatalog.events(inKernelLog: log)
        #expect(events.map(\.code) == [79, 48])
        #expect(events.map(\.pciBusID) == ["0000:3b:00", "0000:86:00"])
        #expect(XidCatalog.meaning(79).contains("fallen off the bus"))
    }

    @Test func hangingToolGivesTimelyUnknown() async throws {
        let r = try FakeRoot("probe-hang")
        try makeNvidiaTree(r)
        let tool = try r.script("nvidia-smi", "exec sleep 1000")
        let start = Date()
        let report = await prober(fakeSettings(r, tool: tool, timeout: 1)).probe()
        #expect(secondsElapsed(since: start) < 60, "bounded by the deadline, not by the 1000 s tool (60 s leaves room for a loaded 2-core CI machine)")
        let d = try #require(report.devices.first)
        #expect(d.health.state == .unknown)
        #expect(d.health.reasons.map(\.kind) == [.toolTimeout])
        #expect(d.model == "NVIDIA H100 80GB HBM3")  // still named, from procfs
        #expect(report.problems.contains { $0.contains("did not finish within 1 s") })
    }

    @Test func stubbornToolIgnoringSigtermGivesTimelyUnknown() async throws {
        let r = try FakeRoot("probe-trap")
        try makeNvidiaTree(r)
        let tool = try r.script("nvidia-smi", "trap '' TERM INT HUP\nwhile :; do sleep 1; done")
        let start = Date()
        let report = await prober(fakeSettings(r, tool: tool, timeout: 1)).probe()
        #expect(secondsElapsed(since: start) < 60, "bounded by the deadline, not by the 1000 s tool (60 s leaves room for a loaded 2-core CI machine)")
        #expect(report.devices.first?.health.reasons.map(\.kind) == [.toolTimeout])
    }

    @Test func garbageIsUnparseable() async throws {
        let r = try FakeRoot("probe-garbage")
        try makeNvidiaTree(r)
        let tool = try r.script("nvidia-smi", "echo '<<<%%% not a table'; head -c 200 /dev/urandom")
        let report = await prober(fakeSettings(r, tool: tool)).probe()
        let d = try #require(report.devices.first)
        #expect(d.health.state == .unknown)
        #expect(d.health.reasons.map(\.kind) == [.unparseable])
    }

    @Test func nonZeroExitIsToolFailed() async throws {
        let r = try FakeRoot("probe-exit")
        try makeNvidiaTree(r)
        let tool = try r.script(
            "nvidia-smi", "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 3")
        let report = await prober(fakeSettings(r, tool: tool)).probe()
        let d = try #require(report.devices.first)
        #expect(d.health.state == .unknown)
        #expect(d.health.reasons.map(\.kind) == [.toolFailed])
        #expect(d.health.reasons.first?.detail.contains("status 3") == true)
        #expect(d.health.reasons.first?.detail.contains("couldn't communicate") == true)
    }

    @Test func fallenOffTheBusIsUnhealthy() async throws {
        let r = try FakeRoot("probe-lost")
        try makeNvidiaTree(r)
        let tool = try r.script(
            "nvidia-smi", "echo 'Unable to determine the device handle for GPU 0000:3B:00.0: GPU is lost.  Reboot the system to recover this GPU' >&2; exit 15")
        let report = await prober(fakeSettings(r, tool: tool)).probe()
        let d = try #require(report.devices.first)
        #expect(d.health.state == .unhealthy)
        #expect(d.health.reasons.first?.kind == .fallenOffBus)
    }

    @Test func driverMismatchIsUnhealthy() async throws {
        let r = try FakeRoot("probe-mismatch")
        try makeNvidiaTree(r)
        let tool = try r.script("nvidia-smi", "echo 'Failed to initialize NVML: Driver/library version mismatch'; exit 18")
        let report = await prober(fakeSettings(r, tool: tool)).probe()
        let d = try #require(report.devices.first)
        #expect(d.health.state == .unhealthy)
        #expect(d.health.reasons.first?.kind == .driverMismatch)
    }

    @Test func missingToolLeavesDevicesUnknown() async throws {
        let r = try FakeRoot("probe-missing")
        try makeNvidiaTree(r)
        let report = await prober(fakeSettings(r, tool: r.path + "/bin/nvidia-smi")).probe()
        let d = try #require(report.devices.first)
        #expect(d.health.state == .unknown)
        #expect(d.health.reasons.map(\.kind) == [.notReported])
        #expect(report.problems.contains { $0.contains("not found") })
    }

    @Test func noAcceleratorRunsNoTool() async throws {
        let r = try FakeRoot("probe-none")
        try r.pci("0000:00:00.0", vendor: "0x8086", device: "0x09a2", cls: "0x060000")
        let marker = r.path + "/ran"
        let tool = try r.script("nvidia-smi", "touch '\(marker)'; exec sleep 1000")
        let report = await prober(fakeSettings(r, tool: tool, timeout: 5)).probe()
        #expect(report.devices.isEmpty)
        #expect(report.problems.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test func dampingAcrossProbes() async throws {
        let r = try FakeRoot("probe-damp")
        try makeNvidiaTree(r)
        let state = r.path + "/mode"
        try r.file("mode", "good")
        let tool = try r.script(
            "nvidia-smi",
            "if [ \"$(cat '\(state)')\" = good ]; then echo FAKE-SMI; echo 'GPU 0000:3b:00.0 GPU-1111 H100'; else echo garbage; fi")
        let p = prober(fakeSettings(r, tool: tool, cleanProbes: 2))
        var report = await p.probe()
        #expect(report.devices.first?.health == .healthy)
        try r.file("mode", "bad")
        report = await p.probe()
        // The id stays stable (UUID from procfs) so damping follows the device.
        #expect(report.devices.first?.id == "GPU-11111111-2222-3333-4444-555555555555")
        #expect(report.devices.first?.health.state == .unknown)
        try r.file("mode", "good")
        report = await p.probe()
        #expect(report.devices.first?.id == "GPU-1111")
        #expect(report.devices.first?.health.state == .unknown)  // damped: 1 of 2 clean probes
        #expect(report.healthChanged.isEmpty)
        report = await p.probe()
        #expect(report.devices.first?.health.state == .healthy)
        #expect(report.healthChanged == ["GPU-1111"])
    }

    @Test func dampingHoldsUnhealthyUntilCleanProbes() async throws {
        let r = try FakeRoot("probe-damp2")
        try makeNvidiaTree(r)
        let state = r.path + "/mode"
        try r.file("mode", "xid=79")
        let tool = try r.script("nvidia-smi", "echo FAKE-SMI; echo \"GPU 0000:3b:00.0 GPU-1111 H100 $(cat '\(state)')\"")
        let p = prober(fakeSettings(r, tool: tool, cleanProbes: 3))
        var report = await p.probe()
        #expect(report.devices.first?.health.state == .unhealthy)
        try r.file("mode", "temp=40")
        var states: [HealthState] = []
        var changes: [[String]] = []
        for _ in 0..<3 {
            report = await p.probe()
            states.append(report.devices.first?.health.state ?? .unknown)
            changes.append(report.healthChanged)
        }
        #expect(states == [.unhealthy, .unhealthy, .healthy])
        #expect(changes == [[], [], ["GPU-1111"]])
    }

    @Test func simulateRunsTheSamePipelineWithoutSysfs() {
        let p = Prober(settings: ProbeSettings(), parse: fakeParse)
        let report = p.simulate(captures: [
            (name: "nvidia-smi", text: "FAKE-SMI\nGPU 00000000:3B:00.0 GPU-1 H100 xid=48\nGPU 00000000:5E:00.0 GPU-2 H100 health=OK"),
            (name: "npu-smi", text: "garbage"),
        ])
        #expect(report.devices.map(\.id) == ["GPU-1", "GPU-2"])
        #expect(report.devices.map(\.health.state) == [.unhealthy, .healthy])
        #expect(report.devices[0].health.reasons.map(\.kind) == [.xid])
        #expect(report.problems.count == 1)
        #expect(report.problems[0].contains("npu-smi output could not be parsed"))
        #expect(report.healthChanged.isEmpty)
    }
}

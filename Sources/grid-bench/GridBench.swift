import ArgumentParser
import Foundation
import GridCatalog
import GridCore
import GridDaemon
import GridProbe
import GridProtocol
import GridScheduler

/// Micro-benchmarks for the hot paths. Figures go to BENCHMARKS.md with the command that made
/// them; tests never assert timings.
@main
struct GridBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grid-bench", abstract: "Measure ComputeGrid: hot paths and the scale benchmarks of BENCHMARKS.md.",
        version: BuildInfo.line,
        subcommands: [Micro.self, PlacementBench.self, HeartbeatBench.self, EndToEndBench.self, LatencyBench.self,
                      FailoverBench.self, RecoveryBench.self, AgentCostBench.self, NationalBench.self,
                      RegionTraceBench.self, RegionPlacementBench.self, ObserveBench.self, ServeBench.self],
        defaultSubcommand: Micro.self)
}

/// Micro-benchmarks of single operations (median and p99 of iterations).
struct Micro: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "micro", abstract: "Hot paths: codec, parsers, probe cycle, placement.")

    @Option(help: "Directory of captured vendor outputs.")
    var fixtures = "Tests/Fixtures/vendor"
    @Option(help: "Minimum seconds per benchmark.")
    var seconds: Double = 2
    @Option(help: "Only benchmarks whose name contains this.")
    var filter: String?

    func run() throws {
        let xmlText = try String(contentsOfFile: "\(fixtures)/nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml", encoding: .utf8)
        let devices = try VendorOutputParser.parse(xmlText).devices
        let catalog = AcceleratorCatalog.bundled
        let prober = Prober(settings: ProbeSettings())

        var register = Wire.Register()
        register.nodeID = "node-0001"
        register.hostname = "node-0001.example"
        register.devices = Grader.graded(devices, catalog: catalog, currentYear: 2026).map(Wire.Device.init)
        let codec = EnvelopeCodec()
        let frame = codec.encode(Message(sender: "node-0001", sequence: 1, body: .register(register)))

        let nodes = (0..<1000).map { n in
            RegionSnapshot.Node(id: NodeID("n\(n)"), devices: (0..<8).map { i in
                DeviceInventory(id: "n\(n)-g\(i)", index: i, vendor: n % 3 == 0 ? .amd : .nvidia, model: n % 2 == 0 ? "A100" : "T4",
                                memoryTotalMiB: n % 2 == 0 ? 81920 : 16384, grade: n % 2 == 0 ? .b : .c)
            }, busyDeviceIDs: n % 4 == 0 ? ["n\(n)-g0", "n\(n)-g1"] : [])
        }
        let requests = (0..<100).map { PlacementRequest(job: JobID("j\($0)"), accelerators: AcceleratorRequest(count: 1 + $0 % 4, vendor: $0 % 5 == 0 ? .amd : nil)) }

        print("grid-bench: \(ProcessInfo.processInfo.processorCount) cores, min \(seconds)s per benchmark, \(frame.count)-byte Register (8 devices)")
        print("benchmark".padding(toLength: 46, withPad: " ", startingAt: 0) + "iterations      median         p99")
        bench("envelope encode Register (8 GPUs)") { _ = codec.encode(Message(sender: "n", sequence: 1, body: .register(register))) }
        bench("envelope decode Register (8 GPUs)") { _ = try? codec.decode(frame) }
        var unbounded = codec
        unbounded.checksFieldBounds = false
        bench("envelope decode Register (8 GPUs), without FieldBounds") { _ = try? unbounded.decode(frame) }
        bench("parse nvidia-smi -q -x, 8 GPUs (V100S)") { _ = try? VendorOutputParser.parse(xmlText, as: .nvidiaSMIXML) }
        bench("probe cycle from capture: parse+merge+health") { _ = prober.simulate(captures: [("v100s.xml", xmlText)]) }
        bench("probe cycle + grading (8 GPUs)") {
            let r = prober.simulate(captures: [("v100s.xml", xmlText)])
            _ = Grader.graded(r.devices, catalog: catalog, currentYear: 2026)
        }
        bench("sysfs scan of this host (/sys)") { _ = SysfsScanner().scan() }
        bench("region placement: 1000 nodes x 8, 100 jobs (index built per call)") {
            _ = RegionPlacement.plan(snapshot: RegionSnapshot(nodes: nodes), requests: requests, policy: PlacementPolicy())
        }
    }

    func bench(_ name: String, _ body: () -> Void) {
        if let filter, !name.contains(filter) { return }
        for _ in 0..<3 { body() }  // warm-up
        var samples: [Double] = []
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: .seconds(seconds))
        while clock.now < end || samples.count < 10 {
            let t0 = clock.now
            body()
            let d = clock.now - t0
            samples.append(Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12)
        }
        samples.sort()
        let median = samples[samples.count / 2]
        let p99 = samples[min(samples.count - 1, Int(Double(samples.count) * 0.99))]
        print(name.padding(toLength: 46, withPad: " ", startingAt: 0)
              + String(samples.count).padding(toLength: 12, withPad: " ", startingAt: 0)
              + format(median).padding(toLength: 15, withPad: " ", startingAt: 0) + format(p99))
    }

    func format(_ us: Double) -> String {
        us >= 1000 ? String(format: "%.2f ms", us / 1000) : String(format: "%.1f µs", us)
    }
}

import Foundation
import GridCatalog
import GridCore
import GridProbe

/// The probe pipeline as the agent uses it: discover (or replay captured outputs), merge,
/// evaluate health with damping, then grade against the catalog.
public struct ProbeInventorySource: InventorySource {
    let prober: Prober
    let captures: [(name: String, text: String)]?
    let grading: GradingPolicy
    let catalog: AcceleratorCatalog
    let currentYear: @Sendable () -> Int

    /// `captures` non-nil replays those vendor outputs instead of probing the host.
    public init(prober: Prober, captures: [(name: String, text: String)]?, grading: GradingPolicy,
                catalog: AcceleratorCatalog = .bundled,
                currentYear: @escaping @Sendable () -> Int = { Calendar(identifier: .gregorian).component(.year, from: Date()) }) {
        self.prober = prober
        self.captures = captures
        self.grading = grading
        self.catalog = catalog
        self.currentYear = currentYear
    }

    public func collect() async -> InventoryReport {
        let report: ProbeReport
        if let captures { report = prober.simulate(captures: captures) } else { report = await prober.probe() }
        var devices = Grader.graded(report.devices, catalog: catalog, policy: grading, currentYear: currentYear())
        if captures != nil {
            // Captured outputs name processes of the host they were captured on: keep only those
            // that run here under the same pid and name (how a test or demo shows a held device).
            for i in devices.indices {
                devices[i].processes = devices[i].processes?.filter { Self.runsHere(pid: $0.pid, name: $0.name) }
            }
        }
        return InventoryReport(devices: devices, problems: report.problems, sources: report.sources, durationSeconds: report.durationSeconds)
    }

    /// Whether `pid` is a live (not zombie) process on this host whose command name is `name`'s last path
    /// component (as /proc/PID/comm holds it: at most 15 bytes).
    static func runsHere(pid: Int, name: String) -> Bool {
        guard pid > 0, ProcessIdentity.startTicks(Int32(clamping: pid)) != nil,  // exists and is not a zombie
              let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return false }
        let base = String(name.split(separator: "/").last ?? Substring(name)).prefix(15)
        return comm.trimmingCharacters(in: .whitespacesAndNewlines) == base
    }

    /// Reads captured outputs for `--simulate`; errors name the file.
    public static func readCaptures(_ paths: [String]) throws -> [(name: String, text: String)] {
        try paths.map { path in
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: path))
                return (URL(fileURLWithPath: path).lastPathComponent, String(decoding: data, as: UTF8.self))
            } catch {
                throw ConfigError(source: path, problems: ["cannot read captured vendor output: \(error.localizedDescription)"])
            }
        }
    }
}

import Foundation
import GridCore
import GridProbe

/// `grid-agent probe` table: one line per device (and per partition), then reasons.
public enum InventoryTable {
    public static func render(_ devices: [DeviceInventory]) -> String {
        var rows: [[String]] = []
        var notes: [String] = []
        for d in devices {
            rows.append([
                String(d.index), d.vendor.rawValue, d.model,
                memory(used: d.memoryUsedMiB, total: d.memoryTotalMiB),
                d.utilizationPercent.map { String(format: "%.0f%%", $0) } ?? "-",
                power(draw: d.powerDrawW, limit: d.powerLimitW),
                d.health.state.rawValue, d.grade?.rawValue ?? "-",
                gcu(d),
                d.temperatureC.map { String(format: "%.0f C", $0) } ?? "-",
                d.pciBusID ?? "-", d.id,
            ])
            for p in d.partitions {
                rows.append(["  └", "", p.profile ?? "partition", p.memoryTotalMiB.map { String(format: "%.1f GiB", Double($0) / 1024) } ?? "?",
                             "", "", "", "", p.computeFraction.map { String(format: "%.0f%%", $0 * 100) } ?? "", "", "", p.id])
            }
            for r in d.health.reasons { notes.append("device \(d.index) \(d.health.state.rawValue): \(r.kind.rawValue): \(r.detail)") }
            for code in d.signals.faultCodes { notes.append("device \(d.index) fault Xid \(code): \(XidCatalog.meaning(code))") }
            if let g = d.gradeReason { notes.append("device \(d.index) grade \(g)") }
        }
        let header = ["IDX", "VENDOR", "MODEL", "MEMORY USED/TOTAL", "UTIL", "POWER", "HEALTH", "GRADE", "GCU", "TEMP", "PCI", "ID"]
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line) + (notes.isEmpty ? [] : [""] + notes)).joined(separator: "\n")
    }

    /// Effective GCU; a device that takes no work says why ("0 (unhealthy)"), since its grade is
    /// what it can do when healthy.
    static func gcu(_ d: DeviceInventory) -> String {
        guard let cu = d.computeUnits else { return "-" }
        if cu == 0 && ![.healthy, .degraded].contains(d.health.state) { return "0 (\(d.health.state.rawValue))" }
        return String(format: "%.1f", cu)
    }

    /// "12.0/40.0 GiB", "40.0 GiB" when only the total is known, "?" when nothing is.
    static func memory(used: Int?, total: Int?) -> String {
        func gib(_ m: Int) -> String { String(format: "%.1f", Double(m) / 1024) }
        switch (used, total) {
        case (let u?, let t?): return "\(gib(u))/\(gib(t)) GiB"
        case (nil, let t?): return "?/\(gib(t)) GiB"
        case (let u?, nil): return "\(gib(u))/? GiB"
        default: return "?"
        }
    }

    static func power(draw: Double?, limit: Double?) -> String {
        switch (draw, limit) {
        case (let d?, let l?): return String(format: "%.0f/%.0f W", d, l)
        case (let d?, nil): return String(format: "%.0f W", d)
        case (nil, let l?): return String(format: "?/%.0f W", l)
        default: return "-"
        }
    }

    /// Where the probe looked, one line per source: what ran, how it ended, how long, what it found.
    public static func renderSources(_ sources: [ProbeSource]) -> String {
        var lines = ["Sources tried:"]
        for s in sources {
            var parts = ["  \(s.name)", "[\(s.kind.rawValue)]", s.path, "→", s.outcome.rawValue.replacingOccurrences(of: "_", with: " ")]
            if let d = s.durationSeconds { parts.append(String(format: "(%.2f s)", d)) }
            if !s.note.isEmpty { parts.append("— " + s.note) }
            lines.append(parts.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}

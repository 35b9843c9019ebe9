import Foundation
import GridCore

/// `grid-agent probe` table: one line per device (and per partition), then reasons.
public enum InventoryTable {
    public static func render(_ devices: [DeviceInventory]) -> String {
        var rows: [[String]] = []
        var notes: [String] = []
        for d in devices {
            rows.append([
                String(d.index), d.vendor.rawValue, d.model,
                d.memoryTotalMiB.map { String(format: "%.1f GiB", Double($0) / 1024) } ?? "?",
                d.health.state.rawValue, d.grade?.rawValue ?? "-",
                d.computeUnits.map { String(format: "%.1f", $0) } ?? "-",
                d.temperatureC.map { String(format: "%.0f C", $0) } ?? "-",
                d.pciBusID ?? "-", d.id,
            ])
            for p in d.partitions {
                rows.append(["  └", "", p.profile ?? "partition", p.memoryTotalMiB.map { String(format: "%.1f GiB", Double($0) / 1024) } ?? "?",
                             "", "", p.computeFraction.map { String(format: "%.0f%%", $0 * 100) } ?? "", "", "", p.id])
            }
            for r in d.health.reasons { notes.append("device \(d.index) \(d.health.state.rawValue): \(r.kind.rawValue): \(r.detail)") }
            if let g = d.gradeReason { notes.append("device \(d.index) grade \(g)") }
        }
        let header = ["IDX", "VENDOR", "MODEL", "MEMORY", "HEALTH", "GRADE", "GCU", "TEMP", "PCI", "ID"]
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line) + (notes.isEmpty ? [] : [""] + notes)).joined(separator: "\n")
    }
}

import Foundation
import GridCore

/// Plain-text tables for humans; `--json` output uses the Codable records instead.
public enum Table {
    public static func render(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    public static func jobs(_ jobs: [JobRecord]) -> String {
        render(["JOB", "NAME", "STATE", "REGION", "NODE", "DEVICES", "VISIBLE", "EXIT", "MESSAGE"], jobs.map { j in
            [j.id.rawValue, j.spec.name, j.state.rawValue, j.region?.rawValue ?? "-", j.node?.rawValue ?? "-",
             j.deviceModels.isEmpty ? "-" : summarize(j.deviceModels),
             j.visibleDevices.isEmpty ? "-" : j.visibleDevices.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "),
             j.exitCode.map(String.init) ?? "-", String(j.message.prefix(60))]
        })
    }

    /// Every run of one job: where, which epoch, when, and why it ended.
    public static func attempts(_ job: JobRecord) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let limit = job.spec.retry.requeueNever ? "1 (requeue: never)" : String(job.spec.retry.maxAttempts)
        return "attempts: \(job.attempts.filter { $0.endReason != .rejected }.count) of at most \(limit)\n"
            + render(["#", "NODE", "ASSIGNMENT", "EPOCH", "STARTED", "ENDED", "WHY", "MESSAGE"], job.attempts.map { a in
                [String(a.number), a.node.rawValue, a.assignment.rawValue, String(a.epoch),
                 a.startedAt.map { f.string(from: $0) } ?? "-", a.endedAt.map { f.string(from: $0) } ?? (a.endReason == nil ? "running" : "-"),
                 a.endReason?.rawValue ?? "-", String(a.message.prefix(70))]
            })
    }

    public static func nodes(_ nodes: [NodeBrief]) -> String {
        render(["NODE", "REGION", "STATE", "DEVICES", "FREE", "HEALTH", "MODELS"], nodes.map { n in
            [n.node.rawValue, n.region.rawValue, n.state.rawValue, String(n.deviceCount), String(n.freeDevices),
             n.worstHealth.rawValue, n.models.joined(separator: ", ")]
        })
    }

    public static func regions(_ regions: [RegionSummary], now: Date = Date()) -> String {
        render(["REGION", "NODES", "LOST", "QUEUED", "RUNNING", "DEVICES", "FREE", "SEEN", "CAPACITY"], regions.map { r in
            [r.region.rawValue, String(r.nodesReady), String(r.nodesLost), String(r.queuedJobs), String(r.runningJobs),
             String(r.capacity.reduce(0) { $0 + $1.total }), String(r.capacity.reduce(0) { $0 + $1.free }),
             "\(max(0, Int(now.timeIntervalSince(r.generatedAt))))s ago",
             r.capacity.map { "\($0.total)x \($0.model)" + ($0.grade.map { " (\($0.rawValue))" } ?? "") }.joined(separator: ", ")]
        })
    }

    /// "NVIDIA A100 x2" for repeated models.
    static func summarize(_ models: [String]) -> String {
        var counts: [(String, Int)] = []
        for m in models {
            if let i = counts.firstIndex(where: { $0.0 == m }) { counts[i].1 += 1 } else { counts.append((m, 1)) }
        }
        return counts.map { $0.1 > 1 ? "\($0.0) x\($0.1)" : $0.0 }.joined(separator: ", ")
    }
}

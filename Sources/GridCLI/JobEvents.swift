import Foundation
import GridCore

/// A job's life as a list of dated events, worked out from its record: submitted, the national
/// decision, holds, each attempt's start and end (with why), and how it ended. What
/// `gridctl job` prints under "events" and `GET /api/v1/jobs/{id}/events` returns.
public struct JobEvent: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable {
        case submitted, decided, held, started, ended, finished
    }
    public var at: Date
    public var kind: Kind
    public var text: String
    public init(at: Date, kind: Kind, text: String) {
        self.at = at
        self.kind = kind
        self.text = text
    }

    public static func of(_ j: JobRecord) -> [JobEvent] {
        var out = [JobEvent(at: j.submittedAt, kind: .submitted, text: "submitted: \(j.spec.accelerators.count) device(s)" + requestNote(j.spec))]
        if let r = j.route {
            let chosen = r.region.map { "chose \($0)" } ?? "no region yet"
            let feasible = r.candidates.filter { $0.reason == nil }.count
            out.append(JobEvent(at: r.decidedAt, kind: .decided,
                                text: "\(chosen) by \(r.objective) (\(feasible) of \(r.candidates.count) region(s) feasible)"
                                    + (r.start.map { ", start \(ISO8601DateFormatter().string(from: $0))" } ?? "")
                                    + (r.note.isEmpty ? "" : "; \(r.note)")))
        }
        if let h = j.hold {
            out.append(JobEvent(at: h.since, kind: .held, text: "held" + (h.reason.isEmpty ? "" : ": \(h.reason)")))
        }
        for a in j.attempts {
            if let s = a.startedAt {
                out.append(JobEvent(at: s, kind: .started, text: "attempt \(a.number) started on \(a.node) (epoch \(a.epoch))"))
            }
            if let e = a.endedAt {
                out.append(JobEvent(at: e, kind: .ended,
                                    text: "attempt \(a.number) on \(a.node) ended: \(a.endReason?.rawValue ?? "?")" + (a.message.isEmpty ? "" : " — \(a.message)")))
            }
        }
        if j.state.isTerminal {
            out.append(JobEvent(at: j.updatedAt, kind: .finished,
                                text: j.state.rawValue + (j.exitCode.map { " (exit \($0))" } ?? "") + (j.message.isEmpty ? "" : ": \(j.message)")))
        }
        return out.enumerated().sorted { ($0.element.at, $0.offset) < ($1.element.at, $1.offset) }.map(\.element)
    }

    static func requestNote(_ s: JobSpec) -> String {
        var parts: [String] = []
        let a = s.accelerators
        if let v = a.vendor { parts.append(v.rawValue) }
        if let m = a.model { parts.append(m) }
        if let mem = a.minMemoryMiB { parts.append("≥\(mem / 1024) GiB") }
        if a.minGrade != nil || a.maxGrade != nil {
            parts.append("grade \(a.minGrade?.rawValue ?? "A")…\(a.maxGrade?.rawValue ?? "D")")
        }
        if let p = a.partition { parts.append("slice \(p)") }
        if let m = s.model { parts.append("model \(Table.compact(m.parameters)) params") }
        if !s.account.isEmpty { parts.append("account \(s.account)") }
        if s.priority != 0 { parts.append("priority \(s.priority)") }
        return parts.isEmpty ? "" : " (" + parts.joined(separator: ", ") + ")"
    }
}

import Foundation
import GridCore
import GridProtocol
import GridScheduler

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
        (try? Printer(format: .table).list(jobs, Columns.jobs)) ?? ""
    }

    /// One job in full (`gridctl job ID`): where it is, the complete reason it waits or ended
    /// (never cut), and for a model job what each precision needs and which was chosen.
    public static func detail(_ j: JobRecord) -> String {
        var lines = ["job \(j.id) (\(j.spec.name)): \(j.state.rawValue)"]
        let gang = j.spec.nodes > 1 ? " on each of \(j.spec.nodes) nodes (gang)" : ""
        lines.append("asked: \(j.spec.accelerators.count) device(s)\(gang)\(JobEvent.requestNote(j.spec)); command \(([j.spec.command] + j.spec.args).joined(separator: " "))")
        lines.append("submitted: \(Columns.time(j.submittedAt)); updated: \(Columns.time(j.updatedAt))")
        if let r = j.region { lines.append("region: \(r)" + (j.node.map { ", node \($0)" } ?? "")) }
        if !j.deviceIDs.isEmpty {
            lines.append("devices: " + zip(j.deviceIDs, j.deviceModels + Array(repeating: "?", count: max(0, j.deviceIDs.count - j.deviceModels.count)))
                .map { "\($0) (\($1))" }.joined(separator: ", "))
        }
        if !j.gang.isEmpty {
            lines.append("ranks:")
            for m in j.gang {
                let devices = zip(m.deviceIDs, m.deviceModels + Array(repeating: "?", count: max(0, m.deviceIDs.count - m.deviceModels.count)))
                    .map { "\($0) (\($1))" }.joined(separator: ", ")
                lines.append("  \(m.rank)  \(m.node)  \(m.state.rawValue)\(m.exitCode.map { " exit \($0)" } ?? "")  \(devices.isEmpty ? "-" : devices)  \(m.assignment)")
            }
        }
        if !j.visibleDevices.isEmpty {
            lines.append("visible: " + j.visibleDevices.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        if let m = j.spec.model {
            let a = ModelFit.architecture(m)
            let shape = "\(a.layers) layers, hidden \(a.hiddenSize), \(a.attentionHeads) heads, \(a.kvHeads) KV heads" + (a.estimated ? " (estimated)" : "")
            lines.append("model: \(m.name.map { $0 + ", " } ?? "")\(compact(m.parameters)) parameters, \(m.workload.rawValue), context \(m.contextTokens), batch \(m.batchSize); \(shape)")
            let count = max(1, j.spec.accelerators.count)
            for o in ModelFit.options(for: j.spec) {
                let e = ModelFit.memory(m, at: o.precision)
                let mark = o.precision == j.precision ? "* " : "  "
                lines.append("\(mark)\(o.precision.rawValue): \(o.perDeviceMiB) MiB per device on \(count) device(s): weights \(gib(e.weights)), KV cache \(gib(e.kvCache)), activations \(gib(e.activations)), optimizer \(gib(e.optimizerState)) GiB in all, + \(ModelFit.runtimeReserveMiB) MiB runtime each")
            }
            if let c = ModelFit.computeGCU(m) { lines.append("compute: \(Int(c.rounded(.up))) GCU over all devices") }
            lines.append("precision: \(j.precision?.rawValue ?? "not chosen yet")")
        }
        if let h = j.hold { lines.append("held: \(h.reason.isEmpty ? "(no reason given)" : h.reason) (gridctl release \(j.id))") }
        if let code = j.exitCode { lines.append("exit code: \(code)") }
        if !j.message.isEmpty { lines.append("message: \(j.message)") }
        lines.append("events:")
        for e in JobEvent.of(j) { lines.append("  \(Columns.time(e.at))  \(e.text)") }
        return lines.joined(separator: "\n")
    }

    static func gib(_ bytes: Double) -> String { String(format: "%.1f", bytes / 1_073_741_824) }

    static func compact(_ n: Double) -> String {
        for (v, s) in [(1e12, "T"), (1e9, "B"), (1e6, "M")] where n >= v {
            return String(format: n / v >= 100 || (n / v).rounded() == n / v ? "%.0f" : "%.1f", n / v) + s
        }
        return String(format: "%.0f", n)
    }

    /// `gridctl accounts`: quota, what each account holds (borrowed), usage and fair share.
    public static func accounts(_ rows: [Wire.AccountStatus]) -> String {
        func limit(_ v: Int32) -> String { v < 0 ? "-" : String(v) }
        func grades(_ m: [String: Int32]) -> String { m.isEmpty ? "" : " (" + m.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: " ") + ")" }
        return render(["ACCOUNT", "REGION", "SHARES", "COHORT", "QUOTA DEV", "QUOTA GCU", "IN USE", "BORROWED", "GCU", "QUEUED",
                       "DEVICE-H", "GCU-H", "FAIR SHARE"], rows.map { a in
            [a.account, a.regionID, String(format: "%g", a.shares), a.cohort.isEmpty ? "-" : a.cohort,
             limit(a.quotaDevices) + grades(a.quotaDevicesByGrade), a.quotaGcu < 0 ? "-" : String(format: "%.0f", a.quotaGcu),
             String(a.devicesInUse) + grades(a.devicesInUseByGrade), String(a.borrowedDevices), String(format: "%.0f", a.gcuInUse),
             String(a.queuedJobs), String(format: "%.1f", a.deviceHours), String(format: "%.1f", a.gcuHours), String(format: "%.3f", a.fairShare)]
        })
    }

    /// The national scheduler's decision for one job: every region weighed, why it could or
    /// could not take the job, each cost term, the total and the start hour (`gridctl explain`).
    public static func explain(_ job: JobRecord) -> String {
        guard let e = job.route else {
            return "job \(job.id): no decision recorded (the national scheduler routes by free devices when it has no region profiles)"
        }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        func money(_ v: Double) -> String { String(format: "%.2f", v) }
        var head = "job \(job.id) (\(job.spec.name)): \(job.state.rawValue)"
        head += "\nobjective: \(e.objective); decided \(f.string(from: e.decidedAt)); chosen: \(e.region?.rawValue ?? "none yet")"
        if let s = e.start { head += " from \(f.string(from: s))" }
        if !e.note.isEmpty { head += "\nnote: \(e.note)" }
        if !e.refusedBy.isEmpty { head += "\nrefused by: \(e.refusedBy.map(\.rawValue).joined(separator: ", "))" }
        let r = job.spec.routing
        var asked: [String] = []
        if let o = r.origin { asked.append("origin \(o)") }
        if r.dataGB > 0 { asked.append("data \(r.dataGB) GB") }
        if !r.jurisdictions.isEmpty { asked.append("jurisdictions \(r.jurisdictions.joined(separator: "|"))") }
        if let l = r.latencySLOMs { asked.append("latency SLO \(l) ms") }
        if let d = r.deadline { asked.append("deadline \(f.string(from: d))") }
        if !asked.isEmpty { head += "\nasked: " + asked.joined(separator: ", ") }
        let sorted = e.candidates.sorted { a, b in
            if (a.reason == nil) != (b.reason == nil) { return a.reason == nil }
            return a.reason == nil ? a.score < b.score : a.region < b.region
        }
        let rows = sorted.map { c -> [String] in
            let feasible = c.reason == nil
            return [(c.region == e.region ? "* " : "  ") + c.region.rawValue, feasible ? "yes" : "no", c.reason ?? "-",
                    feasible ? money(c.energy) : "-", feasible ? money(c.carbon) : "-", feasible ? money(c.transfer) : "-",
                    feasible ? money(c.wait) : "-", feasible ? money(c.total) : "-", feasible ? money(c.score) : "-",
                    feasible ? String(format: "%.1f", (c.operationalG + c.embodiedG) / 1000) : "-",
                    feasible ? String(format: "%.0f", c.rttMs) : "-", c.start.map { f.string(from: $0) } ?? "-"]
        }
        return head + "\n\n" + render(["REGION", "FEASIBLE", "REASON", "ENERGY", "CARBON", "TRANSFER", "WAIT",
                                        "TOTAL \(e.currency)", "SCORE", "CO2 kg", "RTT ms", "START"], rows)
            + "\n\nTOTAL is money (energy + carbon price + transfer + waiting); SCORE is what the objective minimised (weighted terms + scarcity)"
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
        (try? Printer(format: .table).list(nodes, Columns.nodes)) ?? ""
    }

    /// ready, lost, draining (its agent stopping), or an operator's cordoned / draining / drained.
    static func stateText(_ n: NodeBrief) -> String {
        guard let c = n.cordon, n.state == .ready else { return n.state.rawValue }
        if !c.drain { return "cordoned" }
        return n.freeDevices >= n.deviceCount ? "drained" : "draining"
    }

    public static func regions(_ regions: [RegionSummary]) -> String {
        (try? Printer(format: .table).list(regions, Columns.regions)) ?? ""
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

/// The columns of `gridctl`'s lists (`-o table` shows those not marked wide; `-o wide` all of them).
public enum Columns {
    static let time: @Sendable (Date?) -> String = { d in
        guard let d else { return "-" }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: d)
    }

    public static let jobs: [Column<JobRecord>] = [
        Column("JOB") { j, _ in j.id.rawValue },
        Column("NAME") { j, _ in j.spec.name },
        Column("STATE", colourBy: { $0.hold == nil ? $0.state.rawValue : "held" }) { j, _ in j.state.rawValue + (j.hold == nil ? "" : " (held)") },
        Column("REGION") { j, _ in j.region?.rawValue ?? "-" },
        Column("NODE") { j, _ in j.node.map { $0.rawValue + (j.gang.count > 1 ? " +\(j.gang.count - 1)" : "") } ?? "-" },
        Column("DEVICES") { j, _ in
            j.gang.count > 1 ? Table.summarize(j.gang.flatMap(\.deviceModels)) : j.deviceModels.isEmpty ? "-" : Table.summarize(j.deviceModels)
        },
        Column("PRECISION", wide: true) { j, _ in j.precision?.rawValue ?? "-" },
        Column("ACCOUNT", wide: true) { j, _ in j.spec.account.isEmpty ? "-" : j.spec.account },
        Column("PRIORITY", wide: true) { j, _ in String(j.spec.priority) },
        Column("VISIBLE", wide: true) { j, _ in
            j.visibleDevices.isEmpty ? "-" : j.visibleDevices.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        },
        Column("EXIT") { j, _ in j.exitCode.map(String.init) ?? "-" },
        Column("ATTEMPTS", wide: true) { j, _ in String(j.attempts.filter { $0.endReason != .rejected }.count) },
        Column("SUBMITTED", wide: true) { j, _ in time(j.submittedAt) },
        Column("UPDATED", wide: true) { j, _ in time(j.updatedAt) },
        Column("MESSAGE") { j, wide in wide ? j.message : Printer.clip(j.message, 70) },
    ]

    public static let nodes: [Column<NodeBrief>] = [
        Column("NODE") { n, _ in n.node.rawValue },
        Column("REGION") { n, _ in n.region.rawValue },
        Column("STATE", colourBy: { Table.stateText($0) }) { n, _ in Table.stateText(n) },
        Column("DEVICES") { n, _ in String(n.deviceCount) },
        Column("FREE") { n, _ in String(n.freeDevices) },
        Column("HEALTH", colourBy: { $0.worstHealth.rawValue }) { n, _ in health(n) },
        Column("MODELS") { n, _ in n.models.joined(separator: ", ") },
        Column("CORDON") { n, _ in n.cordon.map { $0.reason.isEmpty ? "(no reason)" : $0.reason } ?? "-" },
        Column("DEDICATED", wide: true) { n, _ in n.accounts.isEmpty ? "-" : n.accounts.joined(separator: ",") },
        Column("HOSTNAME", wide: true) { n, _ in n.hostname },
        Column("LAST SEEN", wide: true) { n, _ in time(n.lastSeen) },
        Column("RESOURCE", wide: true) { n, _ in ResourceName(region: n.region, node: n.node).description },
    ]

    public static let units: [Column<Wire.UnitBrief>] = [
        Column("DEVICE") { u, _ in u.deviceID },
        Column("VENDOR") { u, _ in u.vendor },
        Column("MODEL") { u, _ in u.model + (u.partition.isEmpty ? "" : " [\(u.partition)]") },
        Column("MEMORY") { u, _ in String(format: "%.1f GiB", Double(u.memoryMib) / 1024) },
        Column("GRADE") { u, _ in u.grade.isEmpty ? "-" : u.grade },
        Column("HEALTH", colourBy: { $0.health }) { u, _ in u.health },
        Column("BUSY") { u, _ in u.busy ? "yes" : "no" },
        Column("JOB") { u, _ in u.jobID.isEmpty ? "-" : u.jobID },
        Column("NUMA", wide: true) { u, _ in u.numaNode < 0 ? "-" : String(u.numaNode) },
        Column("NVLINK", wide: true) { u, _ in u.nvlinkPeers.isEmpty ? "-" : u.nvlinkPeers.map(String.init).joined(separator: ",") },
        Column("RESOURCE", wide: true) { u, _ in u.resource.isEmpty ? "-" : u.resource },
    ]

    /// "healthy", or "6 healthy, 2 unhealthy" when they differ.
    static func health(_ n: NodeBrief) -> String {
        guard let counts = n.healthCounts, counts.count > 1 else { return n.worstHealth.rawValue }
        return HealthState.allCases.compactMap { h in counts[h].map { "\($0) \(h.rawValue)" } }.joined(separator: ", ")
    }

    public static let regions: [Column<RegionSummary>] = [
        Column("REGION") { r, _ in r.region.rawValue },
        Column("NODES") { r, _ in String(r.nodesReady) },
        Column("LOST") { r, _ in String(r.nodesLost) },
        Column("QUEUED") { r, _ in String(r.queuedJobs) },
        Column("WAIT") { r, _ in
            r.expectedWaitSeconds == 0 ? "-" : r.expectedWaitSeconds < 3600 ? "\(r.expectedWaitSeconds / 60)m"
                : "\(r.expectedWaitSeconds / 3600)h\(r.expectedWaitSeconds % 3600 / 60)m"
        },
        Column("RUNNING") { r, _ in String(r.runningJobs) },
        Column("DEVICES") { r, _ in String(r.capacity.reduce(0) { $0 + $1.total }) },
        Column("FREE") { r, _ in String(r.capacity.reduce(0) { $0 + $1.free }) },
        // Stale as the national scheduler judges it (its region lease, its clock).
        Column("SEEN", colourBy: { $0.stale ? "stale" : "live" }) { r, _ in
            let ago = max(0, Int(Date().timeIntervalSince(r.generatedAt)))
            return r.stale ? "\(ago)s ago (stale)" : "\(ago)s ago"
        },
        Column("CAPACITY") { r, wide in
            let text = r.capacity.map { "\($0.total)x \($0.model)" + ($0.partition.map { " [\($0)]" } ?? "") + ($0.grade.map { " (\($0.rawValue))" } ?? "") }
                .joined(separator: ", ")
            return wide ? text : Printer.clip(text, 90)
        },
    ]
}

// MARK: services

extension Table {
    /// `gridctl services`: one row per service.
    public static func services(_ list: [Wire.ServiceStatus]) -> String {
        render(["SERVICE", "STATE", "VERSION", "READY", "RPS", "P99 MS", "RESTARTS", "ENDPOINT"], list.map { s in
            [s.spec.name, s.state, versionText(s), "\(s.ready)/\(s.desired)",
             s.requestsPerSecond > 0 ? String(format: "%.1f", s.requestsPerSecond) : "-",
             s.p99Ms > 0 ? String(format: "%.1f", s.p99Ms) : "-", "\(s.restarts)", s.endpoints.first ?? "-"]
        })
    }

    static func versionText(_ s: Wire.ServiceStatus) -> String {
        let wanted = s.spec.model.version
        return s.servingVersion.isEmpty || s.servingVersion == wanted ? wanted : "\(s.servingVersion) → \(wanted)"
    }

    /// `gridctl service NAME`: the service, then one row per replica.
    public static func service(_ s: Wire.ServiceStatus) -> String {
        var lines: [String] = []
        lines.append("service:    \(s.spec.name) (model \(s.spec.model.name) \(versionText(s)))")
        lines.append("state:      \(s.state): \(s.message)")
        lines.append("replicas:   \(s.ready) ready of \(s.desired) wanted (min \(s.spec.minReplicas), max \(s.spec.maxReplicas)); \(s.restarts) restart(s)")
        lines.append("endpoint:   \(s.endpoints.isEmpty ? "- (no ready replica yet)" : s.endpoints.joined(separator: ", "))")
        let slo = s.spec.sloP99Ms > 0 ? String(format: "p99 ≤ %.0f ms", s.spec.sloP99Ms) + (s.spec.sloOrigin.isEmpty ? "" : " from \(s.spec.sloOrigin)") : "none"
        let measured = s.p99Ms > 0 ? String(format: "p99 %.1f ms at %.1f req/s (gateway)", s.p99Ms, s.requestsPerSecond) : "no requests yet"
        lines.append("latency:    SLO \(slo); measured \(measured)")
        lines.append("")
        lines.append(render(["REPLICA", "VERSION", "STATE", "READY", "REGION", "NODE", "DEVICES", "GRADE", "PRECISION", "RUNS", "ENDPOINT"], s.replicas.map { r in
            [r.jobID, r.version, r.state, r.ready ? "yes" : "no", r.regionID.isEmpty ? "-" : r.regionID, r.nodeID.isEmpty ? "-" : r.nodeID,
             r.deviceModels.isEmpty ? "-" : r.deviceModels.joined(separator: ","),
             r.deviceGrades.contains(where: { !$0.isEmpty }) ? r.deviceGrades.map { $0.isEmpty ? "?" : $0 }.joined(separator: ",") : "-",
             r.precision.isEmpty ? "-" : r.precision, "\(r.attempt)",
             r.endpoint.isEmpty ? "-" : r.endpoint]
        }))
        return lines.joined(separator: "\n")
    }
}

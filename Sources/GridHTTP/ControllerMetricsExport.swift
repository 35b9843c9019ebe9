import Foundation
import GridController
import GridCore
import GridHTTPServer
import Metrics
import Prometheus

extension MetricsExporter {
    /// The registry of a controller: its histograms' buckets set for commit, batch and
    /// placement-wait times.
    public static func controller() -> MetricsExporter {
        let fast: [Duration] = [.microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5),
                                .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5)]
        return MetricsExporter(
            durationBuckets: [
                ControllerMetrics.commitSecondsLabel: fast,
                ControllerMetrics.batchSecondsLabel: fast,
                ControllerMetrics.placementWaitLabel: [.milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1),
                                                       .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300), .seconds(900),
                                                       .seconds(3600), .seconds(4 * 3600), .seconds(24 * 3600)],
            ],
            valueBuckets: [ControllerMetrics.commitMutationsLabel: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000]])
    }

    /// Brings every controller counter and gauge up to date.
    public func update(from o: ControllerObservation) {
        guard newest(o.observedAt) else { return }
        let role = o.role.rawValue
        gauge("grid_controller_ready", o.ready ? 1 : 0, help: "1 when this controller is ready to serve (see /readyz for why not)")
        for (type, n) in o.receivedByType {
            count("grid_messages_received_total", [("type", Self.snake(type))], total: n,
                  help: "Messages received from peers and the HTTP API, by type")
        }
        // Every reason is exported from the start (at 0), so a rate() over it has a series.
        var rejected = Dictionary(uniqueKeysWithValues: Self.rejectReasons.map { ($0, 0) })
        rejected.merge(o.rejectedFrames) { $1 }
        for (reason, n) in rejected {
            count("grid_frames_rejected_total", [("reason", reason)], total: n,
                  help: "Inbound frames refused (not decodable, too large, bad field), by reason")
        }
        count("grid_store_commits_total", total: o.commits, help: "Batches committed to SQLite (one transaction and fsync each)")
        count("grid_store_commit_failures_total", total: o.failedCommits,
              help: "Batches that could not be stored (disk full, I/O error); nothing of them was acknowledged")
        count("grid_socket_frames_received_total", total: o.socket.received, help: "Frames read from the ZeroMQ sockets")
        count("grid_socket_frames_sent_total", total: o.socket.sent, help: "Frames written to the ZeroMQ sockets")
        count("grid_socket_unroutable_total", total: o.socket.unroutable, help: "Sends to a peer that was not connected (retried later)")
        count("grid_socket_dropped_total", total: o.socket.wouldBlock, help: "Sends dropped because the peer's queue was full")
        for c in ObservedCounter.allCases {
            guard let n = o.counters[c] else { continue }
            let (name, help) = Self.counterName(c, role: role)
            count(name, total: n, help: help)
        }
        gauges("grid_nodes", labelNames: ["state"],
               Dictionary(uniqueKeysWithValues: NodeState.allCases.map { ([$0.rawValue], Double(o.nodesByState[$0] ?? 0)) }),
               help: "Nodes by state (national: the sum over regions' summaries)")
        gauge("grid_nodes_cordoned", Double(o.cordonedNodes), help: "Nodes an operator cordoned or is draining")
        gauges("grid_devices", labelNames: ["vendor", "grade", "health"],
               Dictionary(uniqueKeysWithValues: o.devices.map { ([$0.key.vendor, $0.key.grade, $0.key.health.rawValue], Double($0.value.total)) }),
               help: "Schedulable accelerator units (devices or MIG slices) by vendor, grade (A frontier … D edge) and health")
        gauges("grid_devices_free", labelNames: ["vendor", "grade"],
               Dictionary(o.devices.filter { $0.key.health == .healthy }.map { ([$0.key.vendor, $0.key.grade], Double($0.value.free)) },
                          uniquingKeysWith: +),
               help: "Free healthy units by vendor and grade")
        gauges("grid_jobs", labelNames: ["state"],
               Dictionary(uniqueKeysWithValues: JobState.allCases.map { ([$0.rawValue], Double(o.jobsByState[$0] ?? 0)) }),
               help: "Jobs this controller keeps, by state (finished ones until history retention prunes them)")
        gauge("grid_queue_depth", Double(o.queueDepth),
              help: o.role == .region ? "Jobs waiting for devices" : "Jobs waiting for a region (no region can take them yet, or held for a cheaper hour)")
        gauge("grid_outbox_depth", Double(o.outboxDepth), help: "Messages waiting for their acknowledgement (resent until acknowledged)")
        gauge("grid_http_pending_calls", Double(o.pendingCalls), help: "HTTP requests waiting for an answer from the loop (relayed queries)")
        if o.role == .region {
            count("grid_region_stalled_seconds_total", total: o.stalledSeconds, help: "Time the region's loop was stalled beyond its threshold")
        }
        if o.role == .national {
            let c = o.decisionCost
            for (term, v) in [("energy", c.energy), ("carbon", c.carbon), ("transfer", c.transfer), ("wait", c.wait)] {
                count("grid_national_decision_cost_total", [("term", term)], total: v,
                      help: "Cost terms of the chosen region, summed over forwarded jobs, in the configured currency (energy, carbon price, data transfer, waiting)")
            }
            count("grid_national_decision_energy_joules_total", total: c.kWh * 3_600_000,
                  help: "Energy the chosen regions were expected to use for forwarded jobs, PUE included (1 kWh = 3.6e6 J)")
            count("grid_national_decision_co2_grams_total", total: c.co2Grams, help: "Carbon (operational + embodied) expected for forwarded jobs in their chosen regions")
            gauges("grid_region_up", labelNames: ["region"],
                   Dictionary(uniqueKeysWithValues: o.regions.map { ([$0.id], $0.state == .live ? 1 : 0) }),
                   help: "1 while a region's summaries arrive; 0 when it is stale (silent past its lease) or never reported")
            gauges("grid_region_seconds_since_summary", labelNames: ["region"],
                   Dictionary(uniqueKeysWithValues: o.regions.compactMap { r in r.secondsSinceSummary.map { ([r.id], $0) } }),
                   help: "Seconds since the region's last summary")
            gauges("grid_region_devices_free", labelNames: ["region"],
                   Dictionary(uniqueKeysWithValues: o.regions.map { ([$0.id], Double($0.devicesFree)) }),
                   help: "Free devices a region reported")
            gauges("grid_region_queued_jobs", labelNames: ["region"],
                   Dictionary(uniqueKeysWithValues: o.regions.map { ([$0.id], Double($0.queuedJobs)) }),
                   help: "Jobs queued in a region, as it reported")
            gauges("grid_region_electricity_price_per_kwh", labelNames: ["region"],
                   Dictionary(uniqueKeysWithValues: o.regions.compactMap { r in r.pricePerKWh.map { ([r.id], $0) } }),
                   help: "Electricity price per kWh this hour from the region's profile (the decision's energy term), in the configured currency")
            gauges("grid_region_carbon_grams_per_kwh", labelNames: ["region"],
                   Dictionary(uniqueKeysWithValues: o.regions.compactMap { r in r.carbonGPerKWh.map { ([r.id], $0) } }),
                   help: "Grid carbon intensity this hour from the region's profile, gCO2 per kWh (the decision's carbon term)")
            gauges("grid_region_pue", labelNames: ["region"],
                   Dictionary(uniqueKeysWithValues: o.regions.compactMap { r in r.pue.map { ([r.id], $0) } }),
                   help: "Power usage effectiveness from the region's profile")
        }
    }

    /// ProtocolError.counterLabel's values and the shells' own.
    static let rejectReasons = ["empty_frame", "oversized", "malformed_envelope", "unsupported_version", "unknown_type",
                                "malformed_payload", "invalid_field", "bad_shape"]

    static func counterName(_ c: ObservedCounter, role: String) -> (String, String) {
        switch c {
        case .heartbeats: return ("grid_region_heartbeats_received_total", "Agent heartbeats received")
        case .placements: return ("grid_region_placements_total", "Jobs placed on devices (each attempt counts)")
        case .nodesLost: return ("grid_region_nodes_lost_total", "Nodes declared lost after missing heartbeats")
        case .stalls: return ("grid_region_stalls_total", "Loop turns that came late beyond the stall threshold")
        case .staleUpdates: return ("grid_region_stale_updates_total", "Agent status updates refused for an old epoch (fenced)")
        case .submissions: return ("grid_national_jobs_submitted_total", "Jobs accepted by the national scheduler")
        case .decisions: return ("grid_national_decisions_total", "Routing decisions made (a job may be decided again)")
        case .forwards: return ("grid_national_forwards_total", "Job forwards sent to regions, resends included")
        case .movedFromSilent: return ("grid_national_jobs_moved_from_silent_regions_total", "Jobs taken back from a silent region and routed again")
        }
    }

    /// `statusUpdate` → `status_update`.
    static func snake(_ s: String) -> String {
        var out = ""
        for ch in s {
            if ch.isUppercase {
                if !out.isEmpty { out.append("_") }
                out.append(Character(ch.lowercased()))
            } else {
                out.append(ch)
            }
        }
        return out
    }
}

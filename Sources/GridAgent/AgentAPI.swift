import Foundation
import GridCore
import GridProbe
import GridHTTPServer
import Hummingbird

/// What an agent serves over HTTP: `/metrics`, `/healthz`, `/readyz` (registered with its
/// region) and `/api/v1/probe` (the last probe: devices, and every source tried). With
/// `tokens` (`http_token_file`), `/metrics` and `/api/v1/probe` answer only a request that
/// carries one of them (`Authorization: Bearer <token>`); the health routes stay open for
/// liveness and readiness probes.
public struct AgentAPI: Sendable {
    public let agent: AgentService
    public let metrics: MetricsExporter
    public let tokens: ReadTokens?

    public init(agent: AgentService, metrics: MetricsExporter, tokens: ReadTokens? = nil) {
        self.agent = agent
        self.metrics = metrics
        self.tokens = tokens
    }

    /// nil when the request may read; else the 401 to answer.
    func refusal(_ request: Request) -> Response? {
        guard let tokens, tokens.configured else { return nil }
        let header = request.headers[.authorization]
        if tokens.name(authorization: header) != nil { return nil }
        var challenge = HTTPFields()
        challenge[.wwwAuthenticate] = #"Bearer realm="grid-agent""#
        return HTTPProblem.response(.unauthorized, "unauthorized",
                                    header == nil ? "this route needs a bearer token from the agent's http_token_file"
                                                  : "the bearer token is not in the agent's http_token_file", headers: challenge)
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.middlewares.add(APIErrorMiddleware())
        router.get("/healthz") { _, _ in
            guard await agent.observe(timeout: .seconds(2)) != nil else {
                return HTTPProblem.response(.serviceUnavailable, "unavailable", "the agent's loop did not answer within 2 s")
            }
            return HTTPJSON.response(.ok, #"{"status":"ok"}"#)
        }
        router.get("/readyz") { _, _ in
            guard let o = await agent.observe(timeout: .seconds(2)) else {
                return HTTPProblem.response(.serviceUnavailable, "unavailable", "the agent's loop did not answer within 2 s")
            }
            if o.stopping { return HTTPProblem.response(.serviceUnavailable, "not_ready", "stopping: draining its jobs") }
            if !o.registered { return HTTPProblem.response(.serviceUnavailable, "not_ready", "not registered with its region yet") }
            return HTTPJSON.response(.ok, #"{"status":"ready"}"#)
        }
        router.get("/metrics") { request, _ in
            if let denied = refusal(request) { return denied }
            if let o = await agent.observe(timeout: .seconds(5)) { metrics.update(from: o, probe: agent.lastProbeReport) }
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.render())))
        }
        router.get("/api/v1/probe") { request, _ in
            if let denied = refusal(request) { return denied }
            struct Output: Encodable {
                var devices: [DeviceInventory]
                var problems: [String]
                var sources: [ProbeSource]
                var durationSeconds: Double
            }
            guard let r = agent.lastProbeReport else { return HTTPProblem.response(.serviceUnavailable, "unavailable", "no probe yet") }
            return HTTPJSON.response(.ok, try HTTPJSON.encode(Output(devices: r.devices, problems: r.problems, sources: r.sources,
                                                                                    durationSeconds: r.durationSeconds)))
        }
        return router
    }
}

extension MetricsExporter {
    /// Brings the agent's gauges and counters up to date.
    public func update(from o: AgentObservation, probe: InventoryReport?) {
        guard newest(o.observedAt) else { return }
        gauge("grid_agent_registered", o.registered ? 1 : 0, help: "1 while the agent is registered with its region")
        gauge("grid_agent_running_jobs", Double(o.runningJobs), help: "Jobs running on this node")
        gauge("grid_agent_unacknowledged_statuses", Double(o.unacknowledgedStatuses),
              help: "Job status updates sent to the region and not yet acknowledged (resent until they are)")
        if let lease = o.leaseRemainingMs {
            gauge("grid_agent_lease_remaining_seconds", Double(lease) / 1000,
                  help: "Seconds left on the lease the region renews; below zero, jobs are being fenced")
        }
        count("grid_agent_heartbeats_sent_total", total: o.heartbeatsSent, help: "Heartbeats sent to the region")
        count("grid_agent_frames_rejected_total", total: o.rejectedFrames, help: "Frames from the region that could not be decoded")
        count("grid_agent_journal_failures_total", total: o.journalFailures, help: "Journal writes that failed (full disk, I/O error)")
        var groups: [[String]: Double] = [:]
        var temperature: [[String]: Double] = [:]
        var utilisation: [[String]: Double] = [:]
        var memoryUsed: [[String]: Double] = [:]
        var power: [[String]: Double] = [:]
        for d in o.devices {
            groups[[d.vendor.rawValue, d.grade?.rawValue ?? "", d.health.state.rawValue], default: 0] += 1
            let key = [d.id, d.model]
            if let t = d.temperatureC { temperature[key] = t }
            if let u = d.utilizationPercent { utilisation[key] = u / 100 }
            if let m = d.memoryUsedMiB { memoryUsed[key] = Double(m) * 1_048_576 }
            if let p = d.powerDrawW { power[key] = p }
        }
        gauges("grid_devices", labelNames: ["vendor", "grade", "health"], groups,
               help: "Accelerators on this node by vendor, grade (A frontier … D edge) and health")
        gauges("grid_device_temperature_celsius", labelNames: ["device", "model"], temperature, help: "Device temperature")
        gauges("grid_device_utilization_ratio", labelNames: ["device", "model"], utilisation, help: "Device utilisation, 0 to 1")
        gauges("grid_device_memory_used_bytes", labelNames: ["device", "model"], memoryUsed, help: "Device memory in use")
        gauges("grid_device_power_watts", labelNames: ["device", "model"], power, help: "Device power draw")
        if let probe {
            gauges("grid_agent_probe_source_devices", labelNames: ["source", "outcome"],
                   Dictionary(probe.sources.map { ([$0.name, $0.outcome.rawValue], Double($0.devices)) }, uniquingKeysWith: +),
                   help: "Devices each probe source described in the last probe, with how the source ended")
            gauge("grid_agent_probe_problems", Double(probe.problems.count), help: "Problems the last probe met (tool failures, unreadable files)")
        }
    }
}

/// Labels of the agent's histograms.
public enum AgentMetricLabels {
    public static let probeSeconds = "grid_agent_probe_seconds"
}

extension MetricsExporter {
    /// The registry of an agent: its probe-time histogram's buckets set.
    public static func agent() -> MetricsExporter {
        MetricsExporter(durationBuckets: [AgentMetricLabels.probeSeconds: [
            .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2),
            .seconds(5), .seconds(10), .seconds(30)]])
    }
}

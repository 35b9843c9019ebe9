import Foundation
import GridCore
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A small HTTP client for the tests: status, headers and body of one request.
struct HTTPCall {
    var status: Int
    var body: String
    var headers: [String: String]

    var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]) ?? [:] }
    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
    var errorMessage: String { ((json["error"] as? [String: Any])?["message"] as? String) ?? "" }

    static func send(_ method: String, _ url: String, body: String? = nil, token: String? = nil) async throws -> HTTPCall {
        var r = URLRequest(url: try #require(URL(string: url)))
        r.httpMethod = method
        r.timeoutInterval = 30
        if let body {
            r.httpBody = Data(body.utf8)
            r.setValue("application/yaml", forHTTPHeaderField: "Content-Type")
        }
        if let token { r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: r)
        let http = try #require(response as? HTTPURLResponse)
        var headers: [String: String] = [:]
        for (k, v) in http.allHeaderFields { headers[String(describing: k).lowercased()] = String(describing: v) }
        return HTTPCall(status: http.statusCode, body: String(decoding: data, as: UTF8.self), headers: headers)
    }

    static func get(_ url: String) async throws -> HTTPCall { try await send("GET", url) }
}

/// Prometheus's own text-format parser (Debian's python3-prometheus-client) reads a scrape and
/// prints `name{labels} value` per sample, so the test checks what a real Prometheus would see.
enum PrometheusText {
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    static func parse(_ text: String) throws -> [Sample] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", """
            import sys, json
            from prometheus_client.parser import text_string_to_metric_families
            out = []
            for fam in text_string_to_metric_families(sys.stdin.read()):
                for s in fam.samples:
                    out.append({"name": s.name, "labels": s.labels, "value": s.value, "type": fam.type})
            print(json.dumps(out))
            """]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = errors
        try p.run()
        let outDrain = PipeDrain(output), errDrain = PipeDrain(errors)
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        try p.finish(within: 60)
        let data = try outDrain.result()
        let err = try errDrain.text()
        guard p.terminationStatus == 0 else { throw ClientErrorText("the Prometheus parser refused the scrape: \(err)") }
        let list = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        return list.map { Sample(name: $0["name"] as? String ?? "", labels: $0["labels"] as? [String: String] ?? [:],
                                 value: ($0["value"] as? NSNumber)?.doubleValue ?? .nan) }
    }
}

struct ClientErrorText: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension [PrometheusText.Sample] {
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        first { s in s.name == name && labels.allSatisfy { k, v in s.labels[k] == v } }?.value
    }
    func sum(_ name: String, _ labels: [String: String] = [:]) -> Double {
        filter { s in s.name == name && labels.allSatisfy { k, v in s.labels[k] == v } }.reduce(0) { $0 + $1.value }
    }
}

extension EndToEnd {
/// Every route of the HTTP API on a real national scheduler and region (with a real agent),
/// errors included, and /metrics read by Prometheus's own parser and checked against the state.
@Suite(.serialized) struct HTTPAPITests {
    static let token = "t0ken-for-tests-0123456789abcdef"

    @Test func everyRouteAnswersAndErrorsSayWhatIsWrong() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let tokens = c.dir.appendingPathComponent("tokens")
        try "# name token\nops \(Self.token)\n".write(to: tokens, atomically: true, encoding: .utf8)
        c.environment["GRID_HTTP_TOKEN_FILE"] = tokens.path
        // Profiles, so decisions carry their cost terms and the regions their price and carbon.
        try c.startNational(profiles: ["r1", "r2"])
        try c.startRegion("r1")
        try c.startRegion("r2")
        try c.startAgent("a10g-node", region: "r1", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        try c.startAgent("t4-node", region: "r2", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        let n = try c.httpBase(of: "national"), r1 = try c.httpBase(of: "r1")

        #expect(try await HTTPCall.get("\(n)/healthz").status == 200)
        // Ready once a region is connected; a region once its national scheduler answers.
        try await eventually("national ready") { try await HTTPCall.get("\(n)/readyz").status == 200 }
        try await eventually("region ready") { try await HTTPCall.get("\(r1)/readyz").status == 200 }
        try await eventually("both nodes ready") {
            let o = try await HTTPCall.get("\(n)/api/v1/overview").json
            return (o["nodes"] as? [String: Int])?["ready"] == 2
        }

        // Overview and regions.
        let o = try await HTTPCall.get("\(n)/api/v1/overview").json
        #expect(o["role"] as? String == "national" && o["ready"] as? Bool == true)
        let regions = try #require(try JSONSerialization.jsonObject(with: Data(try await HTTPCall.get("\(n)/api/v1/regions").body.utf8)) as? [[String: Any]])
        #expect(Set(regions.compactMap { $0["id"] as? String }) == ["r1", "r2"])
        #expect(regions.allSatisfy { $0["state"] as? String == "live" })
        #expect(regions.first { $0["id"] as? String == "r2" }?["price_per_kwh"] as? Double == 0.36)
        let r1View = try #require(regions.first { $0["id"] as? String == "r1" })
        #expect(r1View["nodes_ready"] as? Int == 1)
        let regionRefusal = try await HTTPCall.get("\(r1)/api/v1/regions")
        #expect(regionRefusal.status == 404 && regionRefusal.errorMessage.contains("national"))

        // Nodes: relayed to the region named; with two regions, one must be named.
        let nodes = try await HTTPCall.get("\(n)/api/v1/nodes?region=r1")
        #expect(nodes.status == 200, "\(nodes.body)")
        let list = try #require(nodes.json["nodes"] as? [[String: Any]])
        #expect(list.count == 1 && list[0]["node_id"] as? String == "a10g-node")
        #expect(nodes.json["total"] as? Int == 1)
        let unnamed = try await HTTPCall.get("\(n)/api/v1/nodes")
        #expect(unnamed.status == 400 && unnamed.errorMessage.contains("r1") && unnamed.errorMessage.contains("r2"))
        let one = try await HTTPCall.get("\(n)/api/v1/nodes/a10g-node?region=r1")
        #expect(one.status == 200 && (one.json["units"] as? [[String: Any]])?.first?["model"] as? String == "NVIDIA A10G", "\(one.body)")
        #expect(try await HTTPCall.get("\(n)/api/v1/nodes/ghost?region=r1").status == 404)
        let unknownRegion = try await HTTPCall.get("\(n)/api/v1/nodes?region=nowhere")
        #expect(unknownRegion.status == 404, "\(unknownRegion.body)")
        #expect(try await HTTPCall.get("\(r1)/api/v1/nodes").json["total"] as? Int == 1)
        let badLimit = try await HTTPCall.get("\(n)/api/v1/jobs?limit=0")
        #expect(badLimit.status == 400 && badLimit.errorMessage.contains("limit"))
        let badOffset = try await HTTPCall.get("\(n)/api/v1/jobs?offset=-1")
        #expect(badOffset.status == 400 && badOffset.errorMessage.contains("offset"))

        // Writes need a token: none, a wrong one, then the right one.
        let job = "command: /bin/sh\nargs: [\"-c\", \"echo from-http\"]\naccelerators: { count: 1, vendor: nvidia }\nallowed_regions: [r1]\n"
        let anonymous = try await HTTPCall.send("POST", "\(n)/api/v1/jobs", body: job)
        #expect(anonymous.status == 401 && anonymous.headers["www-authenticate"]?.contains("Bearer") == true)
        let wrong = try await HTTPCall.send("POST", "\(n)/api/v1/jobs", body: job, token: "not-the-token-000000")
        #expect(wrong.status == 401 && wrong.errorCode == "unauthorized")
        let bad = try await HTTPCall.send("POST", "\(n)/api/v1/jobs", body: "command: true\naccelerators: { count: -3 }\n", token: Self.token)
        #expect(bad.status == 400 && bad.errorMessage.contains("count"), "\(bad.body)")
        // A base-60 number too large for an integer stopped the national scheduler (found by fuzzing).
        let trap = try await HTTPCall.send("POST", "\(n)/api/v1/jobs", body: "command: true\npriority: 51288888888888888:8888888888888888889\n", token: Self.token)
        #expect(trap.status == 400 && trap.errorMessage.contains("base-60"), "\(trap.body)")
        let submitted = try await HTTPCall.send("POST", "\(n)/api/v1/jobs?id=http-1", body: job, token: Self.token)
        #expect(submitted.status == 201, "\(submitted.body)")
        let results = try #require(submitted.json["results"] as? [[String: Any]])
        #expect(results.first?["job_id"] as? String == "http-1")
        // A region takes no submissions.
        let atRegion = try await HTTPCall.send("POST", "\(r1)/api/v1/jobs", body: job, token: Self.token)
        #expect(atRegion.status == 404 && atRegion.errorMessage.contains("national"), "\(atRegion.body)")

        // The job, with its decision and attempts, once it has run.
        try await eventually("the job to succeed") {
            try await HTTPCall.get("\(n)/api/v1/jobs/http-1").json["state"] as? String == "succeeded"
        }
        let done = try await HTTPCall.get("\(n)/api/v1/jobs/http-1").json
        #expect(done["region_id"] as? String == "r1" && done["node_id"] as? String == "a10g-node")
        #expect((done["output_tail"] as? String)?.contains("from-http") == true)
        #expect((done["attempts"] as? [[String: Any]])?.count == 1)
        let route = try #require(done["route"] as? [String: Any])
        #expect(route["region_id"] as? String == "r1")
        // r2 was weighed and refused (not an allowed region); r1's terms are there.
        let candidates = try #require(route["candidates"] as? [[String: Any]])
        let chosen = try #require(candidates.first { $0["region_id"] as? String == "r1" })
        #expect((chosen["energy"] as? Double ?? 0) > 0 && (chosen["carbon"] as? Double ?? 0) > 0, "\(chosen)")
        let jobEvents = try #require(try JSONSerialization.jsonObject(with: Data(try await HTTPCall.get("\(n)/api/v1/jobs/http-1/events").body.utf8)) as? [[String: Any]])
        #expect(jobEvents.compactMap { $0["kind"] as? String } == ["submitted", "decided", "started", "ended", "finished"], "\(jobEvents)")
        #expect(try await HTTPCall.get("\(n)/api/v1/jobs/nope/events").status == 404)
        let page = try await HTTPCall.get("\(n)/api/v1/jobs?limit=10").json
        #expect(page["total"] as? Int == 1 && (page["jobs"] as? [[String: Any]])?.count == 1)
        let missing = try await HTTPCall.get("\(n)/api/v1/jobs/nope")
        #expect(missing.status == 404 && missing.errorCode == "not_found")

        // Job actions: an ended job cannot be held; an unknown one is not found.
        let hold = try await HTTPCall.send("POST", "\(n)/api/v1/jobs/http-1/hold?reason=test", token: Self.token)
        #expect(hold.status == 400 && hold.errorMessage.contains("ended"), "\(hold.body)")
        let cancelUnknown = try await HTTPCall.send("POST", "\(n)/api/v1/jobs/nope/cancel", token: Self.token)
        #expect(cancelUnknown.status == 404, "\(cancelUnknown.body)")
        let holdAnon = try await HTTPCall.send("POST", "\(n)/api/v1/jobs/http-1/release")
        #expect(holdAnon.status == 401)

        // Node actions through the national scheduler, relayed to the node's region.
        let cordon = try await HTTPCall.send("POST", "\(n)/api/v1/nodes/a10g-node/cordon?region=r1&reason=fan", token: Self.token)
        #expect(cordon.status == 200 && cordon.json["cordoned"] as? Bool == true && cordon.json["cordon_reason"] as? String == "fan", "\(cordon.body)")
        let uncordon = try await HTTPCall.send("POST", "\(n)/api/v1/nodes/a10g-node/uncordon?region=r1", token: Self.token)
        #expect(uncordon.status == 200 && uncordon.json["cordoned"] == nil, "\(uncordon.body)")
        let ghost = try await HTTPCall.send("POST", "\(r1)/api/v1/nodes/ghost/drain", token: Self.token)
        #expect(ghost.status == 404, "\(ghost.body)")

        // Writes that succeed: requeue and cancel a running job; drain a node, queue a job behind
        // it, hold and release that job; a live region cannot be removed.
        let long = "command: /bin/sleep\nargs: [\"300\"]\naccelerators: { count: 1, vendor: nvidia }\nallowed_regions: [r1]\n"
        #expect(try await HTTPCall.send("POST", "\(n)/api/v1/jobs?id=http-2", body: long, token: Self.token).status == 201)
        try await eventually("http-2 running") { try await HTTPCall.get("\(n)/api/v1/jobs/http-2").json["state"] as? String == "running" }
        let requeued = try await HTTPCall.send("POST", "\(n)/api/v1/jobs/http-2/requeue?reason=move", token: Self.token)
        #expect(requeued.status == 200 && requeued.json["job_id"] as? String == "http-2", "\(requeued.body)")
        try await eventually("http-2 running again") {
            let j = try await HTTPCall.get("\(n)/api/v1/jobs/http-2").json
            return j["state"] as? String == "running" && (j["attempts"] as? [Any])?.count == 2
        }
        let cancelled = try await HTTPCall.send("POST", "\(n)/api/v1/jobs/http-2/cancel", token: Self.token)
        #expect(cancelled.status == 200, "\(cancelled.body)")
        try await eventually("http-2 cancelled") { try await HTTPCall.get("\(n)/api/v1/jobs/http-2").json["state"] as? String == "cancelled" }
        let drained = try await HTTPCall.send("POST", "\(n)/api/v1/nodes/a10g-node/drain?region=r1&reason=maintenance", token: Self.token)
        #expect(drained.status == 200 && drained.json["cordon_drain"] as? Bool == true, "\(drained.body)")
        #expect(try await HTTPCall.send("POST", "\(n)/api/v1/jobs?id=http-3", body: long, token: Self.token).status == 201)
        // It waits: queued in r1 when it was forwarded before r1's next summary, or pending at
        // the national scheduler when that summary (the drained node's devices no longer
        // count) came first — seen under load in a full run.
        try await eventually("http-3 waiting behind the drain") {
            ["queued", "pending"].contains(try await HTTPCall.get("\(n)/api/v1/jobs/http-3").json["state"] as? String ?? "")
        }
        let held = try await HTTPCall.send("POST", "\(n)/api/v1/jobs/http-3/hold?reason=wait", token: Self.token)
        #expect(held.status == 200 && held.json["hold_reason"] as? String == "wait", "\(held.body)")
        let released = try await HTTPCall.send("POST", "\(n)/api/v1/jobs/http-3/release", token: Self.token)
        #expect(released.status == 200 && released.json["hold_reason"] == nil, "\(released.body)")
        #expect(try await HTTPCall.send("POST", "\(n)/api/v1/jobs/http-3/cancel", token: Self.token).status == 200)
        #expect(try await HTTPCall.send("POST", "\(n)/api/v1/nodes/a10g-node/uncordon?region=r1", token: Self.token).status == 200)
        let liveRegion = try await HTTPCall.send("POST", "\(n)/api/v1/regions/r2/remove", token: Self.token)
        #expect(liveRegion.status == 400 && liveRegion.errorMessage.contains("is live"), "\(liveRegion.body)")
        // The audit log names each write's token.
        let audit = try c.gridctl(["audit", "--limit", "50"])
        #expect(audit.status == 0 && audit.output.contains("http ops") && !audit.output.contains("http API"), "\(audit.output)")

        // Accounts, the documents, unknown routes.
        let accounts = try await HTTPCall.get("\(n)/api/v1/accounts?region=r1")
        #expect(accounts.status == 200 && accounts.json["accounts"] is [Any], "\(accounts.body)")
        let doc = try await HTTPCall.get("\(n)/openapi.yaml")
        #expect(doc.status == 200 && doc.body.contains("/api/v1/jobs/{id}/cancel"))
        let page0 = try await HTTPCall.get("\(n)/")
        #expect(page0.status == 200 && page0.headers["content-type"]?.contains("text/html") == true && page0.body.contains("dashboard.js"))
        #expect(try await HTTPCall.get("\(n)/dashboard.js").status == 200)
        #expect(try await HTTPCall.get("\(n)/dashboard.css").status == 200)
        let nowhere = try await HTTPCall.get("\(n)/api/v1/nothing")
        #expect(nowhere.status == 404 && nowhere.errorMessage.contains("openapi.yaml"))

        // The event stream starts with an overview.
        let events = try curl(["-sN", "--max-time", "3", "\(n)/api/v1/events"])
        #expect(events.contains("event: overview") && events.contains("\"role\":\"national\""), "\(events)")

        // Metrics, read by Prometheus's parser, agree with the state.
        let national = try PrometheusText.parse(try await HTTPCall.get("\(n)/metrics").body)
        #expect(national.value("grid_jobs", ["state": "succeeded"]) == 1)
        #expect(national.value("grid_national_jobs_submitted_total") == 3)
        #expect(national.value("grid_region_up", ["region": "r1"]) == 1)
        #expect(national.value("grid_nodes", ["state": "ready"]) == 2)
        #expect(national.value("grid_region_carbon_grams_per_kwh", ["region": "r2"]) == 642)
        #expect((national.value("grid_national_decision_cost_total", ["term": "energy"]) ?? 0) > 0)
        #expect((national.value("grid_national_decision_co2_grams_total") ?? 0) > 0)
        #expect((national.value("grid_store_commit_seconds_count") ?? 0) > 0)
        #expect((national.value("grid_messages_received_total", ["type": "submit"]) ?? 0) >= 1)
        let region = try PrometheusText.parse(try await HTTPCall.get("\(r1)/metrics").body)
        #expect((region.value("grid_region_heartbeats_received_total") ?? 0) > 0)
        #expect((region.value("grid_region_placements_total") ?? 0) >= 2)
        #expect(region.value("grid_nodes", ["state": "ready"]) == 1)
        // The A10G fixture: one healthy GPU, free again now the job has ended.
        let units = region.sum("grid_devices", ["vendor": "nvidia", "health": "healthy"])
        #expect(units > 0 && region.sum("grid_devices_free", ["vendor": "nvidia"]) == units)
        #expect((region.value("grid_region_placement_wait_seconds_count") ?? 0) >= 1)

        // SIGTERM with a dashboard's event stream open: the stream ends and the controller exits cleanly.
        let stream = Process()
        stream.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        stream.arguments = ["-sN", "\(n)/api/v1/events"]
        stream.standardOutput = FileHandle.nullDevice
        try stream.run()
        defer { if stream.isRunning { stream.terminate() } }
        try await Task.sleep(for: .seconds(1))
        let started = Date()
        #expect(c.stop("national", within: 10) == 0, "the national scheduler did not exit on SIGTERM with an event stream open")
        #expect(Date().timeIntervalSince(started) < 8)
    }

    /// An agent's /metrics and /readyz: registered once its region answers, heartbeats counted,
    /// the device's gauges from the probe, every probe source with its outcome.
    /// `http_token_file` on an agent: `/metrics` and `/api/v1/probe` answer a listed bearer token
    /// only (401 with a challenge otherwise), the health routes stay open, and a SIGHUP takes up
    /// a changed file (the old token then refused) or keeps the tokens in force if the new file
    /// is broken, saying so.
    @Test func anAgentsTokensGateItsMetricsAndProbe() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational(profiles: ["r1"])
        try c.startRegion("r1")
        let tokens = try c.writeFile("agent-tokens", ["# who may scrape", "prometheus  scrape-token-0123456789abcdef"])
        c.environment["GRID_AGENT_HTTP"] = "127.0.0.1:0"
        c.environment["GRID_AGENT_HTTP_TOKEN_FILE"] = tokens
        try c.startAgent("a10g-node", region: "r1", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        let a = try c.httpBase(of: "a10g-node")
        #expect(try await HTTPCall.get("\(a)/healthz").status == 200)
        try await eventually("the agent to be ready") { try await HTTPCall.get("\(a)/readyz").status == 200 }
        for route in ["/metrics", "/api/v1/probe"] {
            let none = try await HTTPCall.get(a + route)
            #expect(none.status == 401 && none.errorCode == "unauthorized" && none.errorMessage.contains("http_token_file"), "\(route): \(none.body)")
            #expect(none.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            #expect(try await HTTPCall.send("GET", a + route, token: "not-the-token-0123456789").status == 401)
            #expect(try await HTTPCall.send("GET", a + route, token: "scrape-token-0123456789abcdef").status == 200)
        }
        // A new file on SIGHUP: the new token reads, the old one no longer does.
        try "prometheus2 second-token-fedcba9876543210\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        let pid = try #require(c.daemon("a10g-node")).process.processIdentifier
        kill(pid, SIGHUP)
        try await eventually("the new token to be taken up") {
            try await HTTPCall.send("GET", "\(a)/metrics", token: "second-token-fedcba9876543210").status == 200
        }
        #expect(try await HTTPCall.send("GET", "\(a)/metrics", token: "scrape-token-0123456789abcdef").status == 401)
        try await eventually("the reload to be reported") { c.log("a10g-node").contains("http_token_file (1 token(s))") }
        // A broken file: refused with its line, the tokens in force stay.
        try "prometheus3 short\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        try await eventually("the refusal to be reported") { c.log("a10g-node").contains("line 1: the token of 'prometheus3' is shorter than 16 characters") }
        #expect(try await HTTPCall.send("GET", "\(a)/metrics", token: "second-token-fedcba9876543210").status == 200)
        #expect(c.daemon("a10g-node")?.process.isRunning == true)
    }

    @Test func agentServesMetricsReadinessAndItsProbe() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational(profiles: ["r1"])
        try c.startRegion("r1")
        c.environment["GRID_AGENT_HTTP"] = "127.0.0.1:0"
        try c.startAgent("a10g-node", region: "r1", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        let a = try c.httpBase(of: "a10g-node")
        #expect(try await HTTPCall.get("\(a)/healthz").status == 200)
        try await eventually("the agent to be ready") { try await HTTPCall.get("\(a)/readyz").status == 200 }
        try await eventually("a few heartbeats") {
            (try PrometheusText.parse(try await HTTPCall.get("\(a)/metrics").body).value("grid_agent_heartbeats_sent_total") ?? 0) >= 2
        }
        let m = try PrometheusText.parse(try await HTTPCall.get("\(a)/metrics").body)
        #expect(m.value("grid_agent_registered") == 1)
        #expect(m.value("grid_agent_running_jobs") == 0)
        #expect(m.value("grid_devices", ["vendor": "nvidia", "grade": "C", "health": "healthy"]) == 1)
        #expect(m.value("grid_device_power_watts", ["model": "NVIDIA A10G"]) == 25.58)
        #expect((m.value("grid_agent_probe_source_results_total", ["source": "nvidia-smi-q-x_a10g_v11.xml", "outcome": "ok"]) ?? 0) >= 1)
        #expect((m.value("grid_agent_probe_seconds_count", ["source": "all"]) ?? 0) >= 1)
        // Without http_token_file the API only reads.
        let readOnly = try await HTTPCall.send("POST", "\(try c.httpBase(of: "national"))/api/v1/jobs", body: "command: true\n", token: "whatever-token-123456")
        #expect(readOnly.status == 403 && readOnly.errorMessage.contains("http_token_file"), "\(readOnly.body)")
        let probe = try await HTTPCall.get("\(a)/api/v1/probe").json
        let sources = try #require(probe["sources"] as? [[String: Any]])
        #expect(sources.first?["kind"] as? String == "capture" && sources.first?["devices"] as? Int == 1)

        // The Grafana dashboard asks only for metrics these daemons export.
        var exported = Set<String>()
        for base in [a, try c.httpBase(of: "national"), try c.httpBase(of: "r1")] {
            for sample in try PrometheusText.parse(try await HTTPCall.get("\(base)/metrics").body) { exported.insert(sample.name) }
        }
        let dashboard = try String(contentsOf: Cluster.repoRoot.appendingPathComponent("deploy/grafana-dashboard.json"), encoding: .utf8)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(dashboard.utf8)) as? [String: Any])
        let exprs = ((json["panels"] as? [[String: Any]]) ?? []).flatMap { ($0["targets"] as? [[String: Any]]) ?? [] }.compactMap { $0["expr"] as? String }
        #expect(exprs.count >= 20)
        let regex = try Regex(#"grid_[a-z0-9_]+"#)
        let asked = Set(exprs.flatMap { e in e.matches(of: regex).map { String(e[$0.range]) } })
        #expect(!asked.isEmpty)
        for name in asked.sorted() {
            #expect(exported.contains(name), "the dashboard asks for \(name), which no daemon exports")
        }
        // Stopping: the agent goes, cleanly.
        #expect(c.stop("a10g-node") == 0)
    }

    /// Issue 11: the HTTP API over TLS (the fixture certificate), reads that need a token, and
    /// tokens that carry a right and a tenant — the rules an operator key has over ZeroMQ — with
    /// curl as the client.
    @Test func tokensCarryARightAndATenantOverTLS() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let tls = Cluster.repoRoot.appendingPathComponent("Tests/Fixtures/tls")
        let (ops, viewer, ana, bo) = ("ops-0123456789abcdef0123", "viewer-0123456789abcdef01", "ana-0123456789abcdef01234", "bo-0123456789abcdef012345")
        let tokens = try c.writeFile("tokens", ["# name token [right] [tenant=]", "ops \(ops)", "viewer \(viewer) read",
                                               "ana \(ana) submit tenant=team-a", "bo \(bo) operate tenant=team-b"])
        // The controller reads copies, so the certificate can be renewed in place below.
        let (certFile, keyFile) = (c.dir.appendingPathComponent("http.crt"), c.dir.appendingPathComponent("http.key"))
        try FileManager.default.copyItem(at: tls.appendingPathComponent("localhost.crt"), to: certFile)
        try FileManager.default.copyItem(at: tls.appendingPathComponent("localhost.key"), to: keyFile)
        c.environment = ["GRID_HTTP_TOKEN_FILE": tokens, "GRID_HTTP_READ": "token",
                         "GRID_HTTP_TLS_CERT": certFile.path, "GRID_HTTP_TLS_KEY": keyFile.path]
        try c.startNational()
        c.environment = [:]
        try c.startRegion("r1")
        try c.startAgent("a10g-node", region: "r1", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        let n = try c.httpBase(of: "national")
        #expect(n.hasPrefix("https://127.0.0.1:"), "\(n)")
        let original = tls.appendingPathComponent("localhost.crt").path
        /// One request by curl, the certificate checked against the fixture: status and body.
        func call(_ method: String, _ path: String, token: String? = nil, body: String? = nil, scheme: String? = nil,
                  ca: String = original) throws -> HTTPCall {
            var args = ["-sS", "--max-time", "20", "--cacert", ca, "-X", method, "-w", "\n%{http_code}"]
            if let token { args += ["-H", "Authorization: Bearer \(token)"] }
            if let body { args += ["-H", "Content-Type: application/yaml", "--data-binary", body] }
            let url = scheme.map { n.replacingOccurrences(of: "https://", with: "\($0)://") } ?? n
            let (status, out) = try Cluster.run("/usr/bin/curl", args + [url + path])
            let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
            guard status == 0, let code = lines.last.flatMap({ Int($0) }) else { return HTTPCall(status: -Int(status), body: out, headers: [:]) }
            return HTTPCall(status: code, body: lines.dropLast().joined(separator: "\n"), headers: [:])
        }
        // Probes stay open; plain HTTP to the TLS port gets no answer.
        #expect(try call("GET", "/healthz").status == 200)
        #expect(try call("GET", "/healthz", scheme: "http").status < 0, "plain HTTP was answered")
        try await eventually("national ready", seconds: 40) { try call("GET", "/readyz").status == 200 }

        // Reads need a token: none, a wrong one, a read token (header, or access_token for an EventSource).
        let anonymous = try call("GET", "/api/v1/jobs")
        #expect(anonymous.status == 401 && anonymous.errorMessage.contains("Bearer"), "\(anonymous.body)")
        #expect(try call("GET", "/api/v1/jobs", token: "not-a-token-0000000000").status == 401)
        #expect(try call("GET", "/api/v1/jobs", token: viewer).status == 200)
        #expect(try call("GET", "/api/v1/overview?access_token=\(viewer)").status == 200)
        #expect(try call("GET", "/metrics", token: viewer).status == 200)
        #expect(try call("GET", "/metrics").status == 401)

        // A read token cannot write; a tenant's token submits for its account only.
        let job = "command: /bin/sh\nargs: [\"-c\", \"sleep 30\"]\naccelerators: { count: 1, vendor: nvidia }\n"
        let byViewer = try call("POST", "/api/v1/jobs?id=v-1", token: viewer, body: job)
        #expect(byViewer.status == 403 && byViewer.errorMessage.contains("'submit' right"), "\(byViewer.body)")
        let other = try call("POST", "/api/v1/jobs?id=a-0", token: ana, body: job + "account: team-b\n")
        #expect(other.status == 422 && other.body.contains("tenant 'team-a'"), "\(other.body)")
        try await eventually("ana's job accepted", seconds: 40) {
            try call("POST", "/api/v1/jobs?id=a-1", token: ana, body: job).status == 201
        }
        let mine = try call("GET", "/api/v1/jobs/a-1", token: ana)
        #expect(mine.status == 200 && mine.json["spec"].flatMap { ($0 as? [String: Any])?["account"] as? String } == "team-a", "\(mine.body)")
        // Another tenant neither sees nor touches it; the fleet is not a tenant's to read.
        #expect(try call("GET", "/api/v1/jobs/a-1", token: bo).status == 404)
        #expect(try call("GET", "/api/v1/jobs", token: bo).json["total"] as? Int == 0)
        #expect(try call("POST", "/api/v1/jobs/a-1/cancel", token: bo).status == 404)
        for fleet in ["/api/v1/nodes", "/api/v1/overview", "/api/v1/accounts", "/metrics"] {
            let r = try call("GET", fleet, token: ana)
            #expect(r.status == 403 && r.errorMessage.contains("tenant 'team-a'"), "\(fleet): \(r.status) \(r.body)")
        }
        #expect(try call("POST", "/api/v1/nodes/a10g-node/cordon?region=r1", token: bo).status == 403)
        // ana's token may submit, not cancel; the operator's may.
        let selfCancel = try call("POST", "/api/v1/jobs/a-1/cancel", token: ana)
        #expect(selfCancel.status == 403 && selfCancel.errorMessage.contains("'operate' right"), "\(selfCancel.body)")
        #expect(try call("POST", "/api/v1/jobs/a-1/cancel", token: ops).status == 200)
        #expect(try call("GET", "/api/v1/jobs", token: viewer).json["total"] as? Int == 1)

        // The certificate renewed at the same paths (as cert-manager or certbot do): after
        // SIGHUP new connections get the new one, without a restart.
        let renewed = tls.appendingPathComponent("renewed.crt").path
        #expect(try call("GET", "/healthz", ca: renewed).status < 0, "the renewed certificate was served before it was installed")
        try FileManager.default.removeItem(at: certFile)
        try FileManager.default.removeItem(at: keyFile)
        try FileManager.default.copyItem(at: tls.appendingPathComponent("renewed.crt"), to: certFile)
        try FileManager.default.copyItem(at: tls.appendingPathComponent("renewed.key"), to: keyFile)
        let national = try #require(c.daemon("national")).process
        try await eventually("the renewed certificate is served", seconds: 20) {
            kill(national.processIdentifier, SIGHUP)
            try await Task.sleep(for: .milliseconds(300))
            return try call("GET", "/healthz", ca: renewed).status == 200
        }
        #expect(try call("GET", "/healthz").status < 0, "the old certificate is still served")
        #expect(try call("GET", "/api/v1/jobs", token: viewer, ca: renewed).status == 200)
        // A broken renewal (a key that is not the certificate's) is refused with the reason;
        // the certificate in force stays.
        try FileManager.default.removeItem(at: keyFile)
        try FileManager.default.copyItem(at: tls.appendingPathComponent("localhost.key"), to: keyFile)
        kill(national.processIdentifier, SIGHUP)
        try await eventually("the refused reload is logged", seconds: 20) {
            c.log("national").contains("does not match the certificate")
        }
        // The refusal is of the certificate alone: the same reload still applied the tokens,
        // and its report names both.
        let report = try #require(c.log("national").split(separator: "\n").last { $0.contains("configuration reloaded in part") })
        #expect(report.contains("http_tls_cert: ") && report.contains("does not match the certificate"), "\(report)")
        #expect(report.contains("http_token_file ("), "the tokens were reloaded with it: \(report)")
        #expect(national.isRunning)
        #expect(try call("GET", "/healthz", ca: renewed).status == 200)
    }

    /// With `http_tls_client_ca` the listener takes only clients whose certificate that CA
    /// signed: none, or a look-alike signed by itself, fails the handshake — even `/healthz`.
    @Test func clientCertificatesGateTheHTTPSListener() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let tls = Cluster.repoRoot.appendingPathComponent("Tests/Fixtures/tls")
        let file = { (name: String) in tls.appendingPathComponent(name).path }
        c.environment = ["GRID_HTTP_TLS_CERT": file("localhost.crt"), "GRID_HTTP_TLS_KEY": file("localhost.key"),
                         "GRID_HTTP_TLS_CLIENT_CA": file("client-ca.crt"), "GRID_HTTP_READ": "open"]
        try c.startNational()
        c.environment = [:]
        let n = try c.httpBase(of: "national")
        func status(_ path: String, client: String?) throws -> Int {
            var args = ["-sS", "--max-time", "20", "--cacert", file("localhost.crt"), "-o", "/dev/null", "-w", "%{http_code}"]
            if let client { args += ["--cert", file("\(client).crt"), "--key", file("\(client).key")] }
            let (rc, out) = try Cluster.run("/usr/bin/curl", args + [n + path])
            return rc == 0 ? Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1 : -Int(rc)
        }
        try await eventually("served to a client with a signed certificate", seconds: 30) {
            try status("/healthz", client: "client") == 200
        }
        #expect(try status("/api/v1/jobs", client: "client") == 200)
        #expect(try status("/healthz", client: nil) < 0, "answered a client without a certificate")
        #expect(try status("/healthz", client: "stranger") < 0, "answered a certificate the CA did not sign")
        #expect(try #require(c.daemon("national")).process.isRunning)
    }

    /// An agent's listener over mutual TLS (a scraper with a certificate the CA signed gets
    /// /metrics; no certificate, or one the CA did not sign, fails the handshake — /healthz
    /// included); the agent keeps running.
    @Test func anAgentsListenerAsksForClientCertificates() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational(profiles: ["r1"])
        try c.startRegion("r1")
        let tls = Cluster.repoRoot.appendingPathComponent("Tests/Fixtures/tls")
        let file = { (name: String) in tls.appendingPathComponent(name).path }
        // The agent reads copies, so the certificate can be renewed in place below.
        let (certFile, keyFile) = (c.dir.appendingPathComponent("agent-http.crt"), c.dir.appendingPathComponent("agent-http.key"))
        try FileManager.default.copyItem(at: tls.appendingPathComponent("localhost.crt"), to: certFile)
        try FileManager.default.copyItem(at: tls.appendingPathComponent("localhost.key"), to: keyFile)
        c.environment = ["GRID_AGENT_HTTP": "127.0.0.1:0", "GRID_AGENT_HTTP_TLS_CERT": certFile.path,
                         "GRID_AGENT_HTTP_TLS_KEY": keyFile.path, "GRID_AGENT_HTTP_TLS_CLIENT_CA": file("client-ca.crt")]
        try c.startAgent("a10g-node", region: "r1", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        c.environment = [:]
        let a = try c.httpBase(of: "a10g-node")
        #expect(a.hasPrefix("https://"), "\(a)")
        func get(_ path: String, client: String?, ca: String = "localhost.crt") throws -> (status: Int, body: String) {
            var args = ["-sS", "--max-time", "20", "--cacert", file(ca), "-w", "\n%{http_code}"]
            if let client { args += ["--cert", file("\(client).crt"), "--key", file("\(client).key")] }
            let (rc, out) = try Cluster.run("/usr/bin/curl", args + [a + path])
            guard rc == 0 else { return (-Int(rc), out) }
            let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? -1, lines.dropLast().joined(separator: "\n"))
        }
        try await eventually("served to a scraper with a signed certificate", seconds: 30) {
            try get("/healthz", client: "client").status == 200
        }
        let metrics = try get("/metrics", client: "client")
        #expect(metrics.status == 200 && metrics.body.contains("grid_agent_heartbeats_sent_total"))
        #expect(try get("/healthz", client: nil).status < 0, "answered a client without a certificate")
        #expect(try get("/metrics", client: "stranger").status < 0, "answered a certificate the CA did not sign")
        // A certificate renewed at the same paths is served after SIGHUP, without a restart.
        #expect(try get("/healthz", client: "client", ca: "renewed.crt").status < 0, "the renewal was served before it was installed")
        try FileManager.default.removeItem(at: certFile)
        try FileManager.default.removeItem(at: keyFile)
        try FileManager.default.copyItem(at: tls.appendingPathComponent("renewed.crt"), to: certFile)
        try FileManager.default.copyItem(at: tls.appendingPathComponent("renewed.key"), to: keyFile)
        let agent = try #require(c.daemon("a10g-node")).process
        try await eventually("the renewed certificate is served", seconds: 20) {
            kill(agent.processIdentifier, SIGHUP)
            try await Task.sleep(for: .milliseconds(300))
            return try get("/healthz", client: "client", ca: "renewed.crt").status == 200
        }
        #expect(c.log("a10g-node").contains("http_tls_cert (serial"), "the reload report names the certificate")
        #expect(agent.isRunning)
    }

    func eventually(_ what: String, seconds: Double = 30, _ probe: () async throws -> Bool) async throws {
        try await Cluster.eventually(what, seconds: seconds, probe)
    }

    func curl(_ args: [String]) throws -> String { try Cluster.run("/usr/bin/curl", args).output }
}
}

import ArgumentParser
import AsyncHTTPClient
import Foundation
import GridCLI
import GridCore
import GridProtocol
import NIOCore
import Synchronization

/// `grid-bench serve` (issue 13): the tiny model of examples/model deployed as a service on
/// real processes (national, region with its gateway, one agent, serve.py replicas), then:
/// the gateway's added latency against calling a replica directly (interleaved in the same
/// run), requests per second through one gateway, time from deploy to the first answer, and
/// time to replace a replica killed with SIGKILL.
struct ServeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Service gateway: added latency, throughput, deploy to first answer, replica replacement.")

    @Option(help: "Directory of captured vendor outputs.") var fixtures = "Tests/Fixtures/vendor"
    @Option(help: "The demo model's directory (serve.py and the model files).") var model = "examples/model"
    @Option(help: "Requests per path (direct and through the gateway) for the latency comparison.") var requests = 2000
    @Option(help: "Concurrent clients for the throughput run.") var clients = 8
    @Option(help: "Seconds of the throughput run.") var seconds: Double = 5
    @Option(help: "Replicas of the service.") var replicas = 2

    func run() throws {
        let modelDir = URL(fileURLWithPath: model).standardizedFileURL.path
        guard FileManager.default.fileExists(atPath: modelDir + "/serve.py") else { throw BenchError("no serve.py in \(modelDir) (run from the repository root or pass --model)") }
        Machine.header("serve", "\(replicas) replicas of tiny-mlp (serve.py, fp32), \(requests) requests per path, \(clients) clients × \(seconds)s")
        let cluster = try BenchCluster(name: "serve")
        let national = try cluster.controller("national", role: "national")
        let region = try cluster.controller("r1", role: "region", national: national,
                                            settings: ["gateway": "\"127.0.0.1:0\"", "summary_interval_ms": "500"])
        let gateway = try cluster.printedURL("r1", marker: " gateway on ")
        try cluster.start("agent", "grid-agent", ["run", "--node-id", "bench-agent", "--region", region,
                                                   "--data-dir", cluster.dir.appendingPathComponent("agent").path,
                                                   "--simulate", "\(fixtures)/nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        let client = try GridClient(endpoint: national)
        try waitFor(30, "the node to be ready") { try client.query(.regions).regions.first?.nodesReady == 1 }

        let http = HTTPClient(eventLoopGroupProvider: .singleton,
                              configuration: .init(timeout: .init(connect: .seconds(2), read: .seconds(10))))
        defer { try? http.syncShutdown() }
        let body = #"{"inputs": [[5.1, 3.5, 1.4, 0.2, 0.0, 0.0, 0.0, 0.0]]}"#
        @Sendable func predict(_ base: String) -> Bool {
            guard var r = try? HTTPClient.Request(url: base + "/v1/predict", method: .POST) else { return false }
            r.headers.add(name: "Content-Type", value: "application/json")
            r.body = .string(body)
            guard let response = try? http.execute(request: r).wait() else { return false }
            return response.status.code == 200
        }

        // Deploy → first answer through the gateway.
        let spec = ServiceSpec(
            name: "tiny-mlp",
            template: JobSpec(name: "tiny-mlp", command: "python3", args: [modelDir + "/serve.py"], accelerators: AcceleratorRequest(count: 1)),
            model: ServedModel(name: "tiny-mlp", version: "v1", artifact: modelDir + "/tiny-mlp-{version}.json"),
            replicas: ReplicaRange(min: replicas, max: replicas),
            readiness: ProbeSpec(path: "/readyz", intervalSeconds: 0.1, timeoutSeconds: 0.1, failureThreshold: 1))
        let deployStart = DispatchTime.now().uptimeNanoseconds
        _ = try client.deploy(spec, timeout: 10)
        let service = gateway + "/tiny-mlp"
        try waitFor(60, "a first answer through the gateway", every: 0.005) { predict(service) }
        let firstAnswer = DispatchTime.now().uptimeNanoseconds - deployStart
        try waitFor(60, "\(replicas) ready replicas") { try client.services("tiny-mlp").first?.ready == UInt32(replicas) }
        let allReady = DispatchTime.now().uptimeNanoseconds - deployStart
        let status = try client.services("tiny-mlp").first!
        let direct = "http://" + status.replicas.first { $0.ready }!.endpoint

        // Added latency: direct and through the gateway, interleaved, after a warm-up.
        for _ in 0..<200 { _ = predict(direct); _ = predict(service) }
        var viaDirect: [Int64] = []
        var viaGateway: [Int64] = []
        var failures = 0
        for _ in 0..<requests {
            for (base, into) in [(direct, 0), (service, 1)] {
                let t = DispatchTime.now().uptimeNanoseconds
                if !predict(base) { failures += 1 }
                let d = Int64(DispatchTime.now().uptimeNanoseconds - t)
                if into == 0 { viaDirect.append(d) } else { viaGateway.append(d) }
            }
        }
        viaDirect.sort()
        viaGateway.sort()
        func us(_ ns: Int64) -> String { String(format: "%.0f µs", Double(ns) / 1000) }
        print("latency (sequential, keep-alive, \(requests) each): direct p50 \(us(percentile(viaDirect, 50))) p99 \(us(percentile(viaDirect, 99)))"
              + "; gateway p50 \(us(percentile(viaGateway, 50))) p99 \(us(percentile(viaGateway, 99)))")
        print("gateway adds: p50 \(us(percentile(viaGateway, 50) - percentile(viaDirect, 50))), p99 \(us(percentile(viaGateway, 99) - percentile(viaDirect, 99)))"
              + (failures > 0 ? "; \(failures) failed requests" : ""))

        // Throughput: `clients` threads, each one request at a time, through the gateway and then direct.
        for (label, base) in [("gateway (\(replicas) replicas)", service), ("direct (1 replica)", direct)] {
            let cpuBefore = ProcessUsage.cpuSeconds(cluster.pid("r1"))
            let done = Atomic<Int>(0)
            let failed = Atomic<Int>(0)
            let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
            DispatchQueue.concurrentPerform(iterations: clients) { _ in
                while DispatchTime.now().uptimeNanoseconds < deadline {
                    if predict(base) { done.add(1, ordering: .relaxed) } else { failed.add(1, ordering: .relaxed) }
                }
            }
            let n = done.load(ordering: .relaxed)
            let cpu = ProcessUsage.cpuSeconds(cluster.pid("r1")) - cpuBefore
            print(String(format: "throughput %@: %.0f requests/s (%d clients, %d failed); region controller CPU %.0f%% of a core, %.0f µs per request",
                         label, Double(n) / seconds, clients, failed.load(ordering: .relaxed), 100 * cpu / seconds, n > 0 ? cpu / Double(n) * 1e6 : 0))
        }

        // Replacement: SIGKILL one replica's process; time until as many replicas are ready again.
        let victim = status.replicas.first { $0.ready }!
        guard let infoReq = try? HTTPClient.Request(url: "http://\(victim.endpoint)/v1/info"),
              let info = try? http.execute(request: infoReq).wait(), var buf = info.body,
              let json = try? JSONSerialization.jsonObject(with: Data(buf.readBytes(length: buf.readableBytes) ?? [])) as? [String: Any],
              let pid = json["pid"] as? Int else { throw BenchError("cannot read the replica's pid from /v1/info") }
        let killed = DispatchTime.now().uptimeNanoseconds
        kill(pid_t(pid), SIGKILL)
        try waitFor(60, "the killed replica replaced", every: 0.01) {
            guard let s = try client.services("tiny-mlp").first else { return false }
            return !s.replicas.contains { $0.jobID == victim.jobID } && s.replicas.filter(\.ready).count == replicas
        }
        let replaced = DispatchTime.now().uptimeNanoseconds - killed
        print("deploy → first answer: \(ms(Int64(firstAnswer))); → all \(replicas) ready: \(ms(Int64(allReady)))")
        print("replica killed (SIGKILL) → replaced and ready: \(ms(Int64(replaced)))")
        _ = try? client.serviceControl(.undeploy, name: "tiny-mlp")
        try? waitFor(20, "undeploy") { ((try? client.services("tiny-mlp")) ?? []).isEmpty }
    }

    func waitFor(_ seconds: Double, _ what: String, every: Double = 0.05, _ probe: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? probe()) == true { return }
            Thread.sleep(forTimeInterval: every)
        }
        throw BenchError("timed out waiting for \(what)")
    }
}

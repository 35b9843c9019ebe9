import ArgumentParser
import Foundation
import GridFleet
import Histogram
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What watching a region costs: latency of /metrics, /api/v1/overview and a page of
/// /api/v1/nodes on a region with N simulated nodes heartbeating, and the heartbeats it
/// acknowledges with and without someone scraping as fast as answers come back.
struct ObserveBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "observe", abstract: "HTTP API and /metrics on a busy region: answer latency, and what scraping costs the heartbeat path.")
    @Option var nodes = 10_000
    @Option(help: "Seconds per phase (quiet, then scraped).") var seconds: Double = 15
    @OptionGroup var fleet: FleetFlags

    func run() throws {
        Machine.header("observe", "\(nodes) nodes, \(fleet.heartbeatMs) ms heartbeats, \(seconds)s per phase")
        let cluster = try BenchCluster(name: "observe")
        let region = try cluster.controller("r1", role: "region", national: "tcp://127.0.0.1:9",
                                            settings: ["heartbeat_interval_ms": "\(fleet.heartbeatMs)", "node_lost_after_ms": "30000"])
        let base = try cluster.httpBase("r1")
        let runner = try FleetRunner(fleet.options(endpoint: region, nodes: nodes))
        defer { runner.stop() }
        guard runner.wait(seconds: 600, { $0.registered >= nodes }) else {
            throw BenchError("only \(runner.fleet.snapshot.registered) of \(nodes) nodes registered in 600 s")
        }
        Thread.sleep(forTimeInterval: 2)
        let pid = cluster.pid("r1")

        func rate(_ body: () -> Void) -> (acked: Double, cpu: Double) {
            let a = runner.fleet.snapshot, cpuA = ProcessUsage.cpuSeconds(pid), t = Date()
            body()
            let b = runner.fleet.snapshot, dt = Date().timeIntervalSince(t)
            return (Double(b.heartbeatAcks - a.heartbeatAcks) / dt, (ProcessUsage.cpuSeconds(pid) - cpuA) / dt * 100)
        }
        let quiet = rate { Thread.sleep(forTimeInterval: seconds) }

        let paths = ["/metrics", "/api/v1/overview", "/api/v1/nodes?limit=1000"]
        var histograms = paths.map { _ in Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three) }
        var bytes = paths.map { _ in 0 }
        var failures = 0
        let deadline = Date().addingTimeInterval(seconds)
        let scraped = rate {
            var i = 0
            while Date() < deadline {
                let k = i % paths.count
                let t0 = DispatchTime.now().uptimeNanoseconds
                if let body = Self.get(base + paths[k]) {
                    histograms[k].record((DispatchTime.now().uptimeNanoseconds - t0) / 1000)
                    bytes[k] = body
                } else {
                    failures += 1
                }
                i += 1
            }
        }
        for (k, p) in paths.enumerated() {
            let h = histograms[k]
            print(p.padding(toLength: 26, withPad: " ", startingAt: 0) + String(format: " %6d answers  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  %8d bytes", h.totalCount,
                         Double(h.valueAtPercentile(50)) / 1000, Double(h.valueAtPercentile(99)) / 1000, Double(h.max) / 1000, bytes[k]))
        }
        print(String(format: "heartbeats acknowledged: %.0f/s quiet (region CPU %.0f%%), %.0f/s while scraped back to back (CPU %.0f%%); %d failed requests",
                     quiet.acked, quiet.cpu, scraped.acked, scraped.cpu, failures))
        print(String(format: "RESULT observe: /metrics p99 %.1f ms, overview p99 %.1f ms at %d nodes; heartbeats %.0f/s → %.0f/s under back-to-back scraping",
                     Double(histograms[0].valueAtPercentile(99)) / 1000, Double(histograms[1].valueAtPercentile(99)) / 1000, nodes,
                     quiet.acked, scraped.acked))
    }

    /// A blocking GET; the body's size, or nil on any failure.
    static func get(_ url: String) -> Int? { fetch(url)?.count }

    /// A blocking GET of a text body; nil on any failure.
    static func text(_ url: String) -> String? { fetch(url).map { String(decoding: $0, as: UTF8.self) } }

    /// A blocking GET: the body of a 200 answer, nil on anything else.
    static func fetch(_ url: String) -> Data? {
        guard let u = URL(string: url) else { return nil }
        let done = DispatchSemaphore(value: 0)
        let result = Box()
        URLSession.shared.dataTask(with: u) { data, response, _ in
            if (response as? HTTPURLResponse)?.statusCode == 200 { result.value = data }
            done.signal()
        }.resume()
        done.wait()
        return result.value
    }

    /// The samples of a Prometheus text page whose names start with one of `prefixes`, on one line.
    static func samples(_ page: String?, _ prefixes: [String]) -> String {
        guard let page else { return "(no /metrics)" }
        return page.split(separator: "\n")
            .filter { line in !line.hasPrefix("#") && prefixes.contains { line.hasPrefix($0) } }
            .map { $0.replacingOccurrences(of: "grid_", with: "") }
            .joined(separator: ", ")
    }

    final class Box: @unchecked Sendable { var value: Data? }
}

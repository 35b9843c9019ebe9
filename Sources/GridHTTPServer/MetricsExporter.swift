import Foundation
import GridCore
import Metrics
import Prometheus
import Synchronization

/// One daemon's Prometheus registry. Histograms are recorded as work happens (through the
/// swift-metrics `factory` handed to the shell); counters and gauges are brought up to date from
/// an observation when `/metrics` is scraped, so nothing is counted twice on the hot path.
///
/// Names follow the Prometheus conventions: `grid_` prefix, base units (`_seconds`), `_total`
/// on counters, one metric per quantity with labels for vendor, grade, health, state, reason.
public final class MetricsExporter: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory
    /// Counter values already added (counters only go up: each scrape adds the difference), and
    /// the gauges' label sets seen (a set that disappears is reported as 0, not left stale).
    struct Seen {
        var counted: [String: Int] = [:]
        var countedDouble: [String: Double] = [:]
        var gauges: [String: Set<[String]>] = [:]
        var lastObservation = Date.distantPast
    }
    private let state = Mutex(Seen())

    /// `durationBuckets` and `valueBuckets`: histogram buckets by metric label, for the
    /// daemon's own histograms (each role passes its set; others get Prometheus' defaults).
    public init(durationBuckets: [String: [Duration]] = [:], valueBuckets: [String: [Double]] = [:]) {
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        for (label, buckets) in durationBuckets { f.durationHistogramBuckets[label] = buckets }
        for (label, buckets) in valueBuckets { f.valueHistogramBuckets[label] = buckets }
        factory = f
    }

    /// The text exposition format (version 0.0.4).
    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 << 10)
        registry.emit(into: &buffer)
        return buffer
    }

    /// Adds to a counter what `value` (a running total) gained since the last call.
    public func count(_ name: String, _ labels: [(String, String)] = [], total value: Int, help: String) {
        let d = delta(name, labels, value, \.counted)
        if d > 0 { registry.makeCounter(name: name, labels: labels, help: help).increment(by: Int64(d)) }
        else { _ = registry.makeCounter(name: name, labels: labels, help: help) }
    }

    /// `count` for running totals that are not whole numbers (money, kWh, grams).
    public func count(_ name: String, _ labels: [(String, String)] = [], total value: Double, help: String) {
        let d = delta(name, labels, value, \.countedDouble)
        if d > 0 { registry.makeCounter(name: name, labels: labels, help: help).increment(by: d) }
        else { _ = registry.makeCounter(name: name, labels: labels, help: help) }
    }

    /// What a running total gained since it was last seen; a total that went down (a restart of
    /// what counts) starts again from it.
    private func delta<T: Numeric & Comparable & Sendable>(_ name: String, _ labels: [(String, String)], _ value: T,
                                                 _ table: WritableKeyPath<Seen, [String: T]>) -> T {
        let key = name + "|" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        return state.withLock { s in
            let before = s[keyPath: table][key] ?? 0
            s[keyPath: table][key] = value
            return value >= before ? value - before : value
        }
    }

    /// Sets one gauge per label set in `values`; a label set reported before but absent now is
    /// removed (a removed region, a device class that went away), not left behind at 0.
    public func gauges(_ name: String, labelNames: [String], _ values: [[String]: Double], help: String) {
        let gone: Set<[String]> = state.withLock { s in
            let before = s.gauges[name] ?? []
            s.gauges[name] = Set(values.keys)
            return before.subtracting(values.keys)
        }
        for (labels, v) in values {
            registry.makeGauge(name: name, labels: Array(zip(labelNames, labels)), help: help).set(to: v)
        }
        for labels in gone {
            registry.unregisterGauge(registry.makeGauge(name: name, labels: Array(zip(labelNames, labels)), help: help))
        }
    }

    /// Whether an observation made at `at` is newer than the last one applied: two scrapes at
    /// once (a pair of Prometheus servers) may finish in either order, and an older total must
    /// not look like a restart.
    package func newest(_ at: Date) -> Bool {
        state.withLock { s in
            guard at >= s.lastObservation else { return false }
            s.lastObservation = at
            return true
        }
    }

    public func gauge(_ name: String, _ value: Double, help: String) {
        registry.makeGauge(name: name, help: help).set(to: value)
    }
}

import Foundation
import GridCore
import GridProtocol
import Synchronization

/// One ready replica in a service's rotation at the region's gateway.
public struct ServiceRoute: Sendable, Hashable {
    public var job: JobID
    /// host:port, as the replica's agent reported it.
    public var endpoint: String
    public var version: String
    public init(job: JobID, endpoint: String, version: String) {
        self.job = job
        self.endpoint = endpoint
        self.version = version
    }
}

/// What the region controller and its gateway share (SERVICES.md, "Gateway"): the rotation
/// of each service, written by the controller's shell from the region instance's `.routes`
/// directives; the gateway's address once it listens; and the load the gateway measures, read
/// back into the region's summaries. Lock-protected; every operation is short.
public final class GatewayTable: Sendable {
    struct Stats {
        /// Requests answered in each of the last `window` seconds (ring by second).
        var seconds: [Int64] = []
        var counts: [Int] = []
        var errors: UInt64 = 0
        var inFlight = 0
        var inFlightSum: Double = 0
        var inFlightSamples = 0
        /// The latest answered requests' latencies (ms), a ring of `latencyRing`.
        var latencies: [Double] = []
        var latencyNext = 0
    }

    struct State {
        var routes: [String: [ServiceRoute]] = [:]
        var url = ""
        var stats: [String: Stats] = [:]
        /// Requests waiting for a service with no ready replica (scale from zero), by service.
        var waiting: [String: Int] = [:]
    }

    static let window = 10
    static let latencyRing = 2048
    private let state = Mutex(State())

    public init() {}

    /// The clock both sides count seconds with.
    public static func nowSeconds() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000_000) }

    // MARK: the controller's side

    public func setRoutes(_ service: String, _ routes: [ServiceRoute]) {
        state.withLock { $0.routes[service] = routes.isEmpty ? nil : routes }
    }

    /// The gateway's base URL (http://host:port), advertised in the region's summaries.
    public var url: String {
        get { state.withLock { $0.url } }
        set { state.withLock { $0.url = newValue } }
    }

    /// Load per service over the last `window` seconds, for the region's summary.
    public func loads(nowSeconds: Int64 = GatewayTable.nowSeconds()) -> [Wire.ServiceLoad] {
        state.withLock { s in
            let names = Set(s.stats.keys).union(s.routes.keys).union(s.waiting.keys)
            return names.sorted().map { name in
                var l = Wire.ServiceLoad()
                l.service = name
                l.readyReplicas = UInt32(clamping: s.routes[name]?.count ?? 0)
                guard let st = s.stats[name] else { return l }
                var total = 0
                for (i, sec) in st.seconds.enumerated() where sec > nowSeconds - Int64(Self.window) && sec <= nowSeconds { total += st.counts[i] }
                l.requestsPerSecond = Double(total) / Double(Self.window)
                l.inFlight = st.inFlightSamples > 0 ? st.inFlightSum / Double(st.inFlightSamples) : Double(st.inFlight)
                l.inFlight += Double(s.waiting[name] ?? 0)
                l.errors = st.errors
                if !st.latencies.isEmpty {
                    let sorted = st.latencies.sorted()
                    l.p50Ms = sorted[min(sorted.count - 1, sorted.count / 2)]
                    l.p99Ms = sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
                }
                return l
            }
        }
    }

    /// Resets the in-flight average after a summary took it.
    public func resetInFlightAverage() {
        state.withLock { s in
            for k in s.stats.keys {
                s.stats[k]?.inFlightSum = 0
                s.stats[k]?.inFlightSamples = 0
            }
        }
    }

    // MARK: the gateway's side

    public func routes(_ service: String) -> [ServiceRoute] { state.withLock { $0.routes[service] ?? [] } }

    public var services: [String] { state.withLock { $0.routes.keys.sorted() } }

    public func began(_ service: String) {
        state.withLock { s in
            var st = s.stats[service] ?? Stats()
            st.inFlight += 1
            st.inFlightSum += Double(st.inFlight)
            st.inFlightSamples += 1
            s.stats[service] = st
        }
    }

    /// A request through the gateway ended: answered by a replica (`latencyMs`), or failed.
    public func ended(_ service: String, latencyMs: Double?, nowSeconds: Int64) {
        state.withLock { s in
            var st = s.stats[service] ?? Stats()
            st.inFlight = max(0, st.inFlight - 1)
            if let ms = latencyMs {
                if st.seconds.isEmpty {
                    st.seconds = Array(repeating: Int64.min, count: Self.window)
                    st.counts = Array(repeating: 0, count: Self.window)
                }
                let slot = Int(((nowSeconds % Int64(Self.window)) + Int64(Self.window)) % Int64(Self.window))
                if st.seconds[slot] != nowSeconds {
                    st.seconds[slot] = nowSeconds
                    st.counts[slot] = 0
                }
                st.counts[slot] += 1
                if st.latencies.count < Self.latencyRing {
                    st.latencies.append(ms)
                } else {
                    st.latencies[st.latencyNext] = ms
                }
                st.latencyNext = (st.latencyNext + 1) % Self.latencyRing
            } else {
                st.errors += 1
            }
            s.stats[service] = st
        }
    }

    /// A request is waiting for the service's first ready replica (or stopped waiting).
    public func waiting(_ service: String, _ delta: Int) {
        state.withLock { s in
            let n = (s.waiting[service] ?? 0) + delta
            s.waiting[service] = n > 0 ? n : nil
        }
    }
}

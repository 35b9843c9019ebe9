import Foundation

/// A model deployed as a service (SERVICES.md): what each replica runs, how many, how they are
/// judged alive and ready, the latency users must see, and how a new version rolls out.
///
/// A replica is a job built from `template` (so placement, precision choice by model fit,
/// fencing and retries are the job machinery's), plus a port the agent assigns (`GRID_PORT`)
/// and the model's artifact and version in its environment.
public struct ServiceSpec: Codable, Sendable, Hashable {
    /// The service's name: an identifier; the gateway serves it at `/<name>/…`.
    public var name: String
    /// What every replica runs: command, arguments, environment, accelerators, the model fit
    /// (parameters and allowed precisions), routing (origin, jurisdictions), account, priority.
    public var template: JobSpec
    public var model: ServedModel
    public var replicas: ReplicaRange
    /// Liveness: a replica failing it `failureThreshold` times in a row is restarted.
    public var health: ProbeSpec
    /// Readiness: only replicas passing it get requests.
    public var readiness: ProbeSpec
    /// The latency users should see: p99 from the origin, network included.
    public var slo: ServiceSLO
    public var update: UpdateStrategy
    /// Nil: the replica count stays at `replicas.min`.
    public var autoscale: Autoscale?

    public init(name: String, template: JobSpec, model: ServedModel, replicas: ReplicaRange = ReplicaRange(),
                health: ProbeSpec = .health, readiness: ProbeSpec = .readiness, slo: ServiceSLO = ServiceSLO(),
                update: UpdateStrategy = UpdateStrategy(), autoscale: Autoscale? = nil) {
        self.name = name
        self.template = template
        self.model = model
        self.replicas = replicas
        self.health = health
        self.readiness = readiness
        self.slo = slo
        self.update = update
        self.autoscale = autoscale
    }

    /// Most replicas one service may ask for.
    public static let maxReplicas = 1000

    /// Every problem, each starting with its key path (as in files).
    public func problems() -> [String] {
        template.problems().filter { !$0.hasPrefix("name:") } + serviceProblems()
    }

    /// The problems of the service's own keys (the template is a job spec, checked as one).
    public func serviceProblems() -> [String] {
        var out: [String] = []
        if let p = IdentifierRules.problem(with: name) { out.append("name: '\(name)' \(p)") }
        if name.contains(":") || name.contains(".") { out.append("name: '\(name)' is a path segment of the gateway: use letters, digits, '-', '_'") }
        out += model.problems()
        if !(0...Self.maxReplicas).contains(replicas.min) { out.append("replicas.min: 0…\(Self.maxReplicas), got \(replicas.min)") }
        if !(1...Self.maxReplicas).contains(replicas.max) { out.append("replicas.max: 1…\(Self.maxReplicas), got \(replicas.max)") }
        if replicas.max < replicas.min { out.append("replicas.max: \(replicas.max) is less than replicas.min \(replicas.min)") }
        if replicas.min == 0, autoscale?.scaleToZero != true {
            out.append("replicas.min: 0 needs autoscale.scale_to_zero: true (requests wait for a replica to start)")
        }
        out += health.problems("health")
        out += readiness.problems("readiness")
        out += slo.problems()
        if slo.tokensPerRequest != nil, template.model == nil {
            out.append("slo.tokens_per_request: needs the model's size (parameters, precisions) to turn tokens/s into compute")
        }
        if !(0...Self.maxReplicas).contains(update.maxSurge) { out.append("update.max_surge: 0…\(Self.maxReplicas), got \(update.maxSurge)") }
        if !(0...Self.maxReplicas).contains(update.maxUnavailable) {
            out.append("update.max_unavailable: 0…\(Self.maxReplicas), got \(update.maxUnavailable)")
        }
        if update.maxSurge == 0, update.maxUnavailable == 0 {
            out.append("update.max_surge: max_surge and max_unavailable cannot both be 0 (a rollout could never replace a replica)")
        }
        if let a = autoscale { out += a.problems() }
        return out
    }
}

/// What a replica job carries of its service (`JobSpec.replica`).
public struct ReplicaOf: Codable, Sendable, Hashable {
    public var service: String
    public var version: String
    public var health: ProbeSpec?
    public var readiness: ProbeSpec?
    /// The region takes the replica out of the gateway's rotation this long before it stops it,
    /// so requests in flight finish and no new one is sent to it.
    public var drainMs: Int

    public init(service: String, version: String, health: ProbeSpec? = nil, readiness: ProbeSpec? = nil, drainMs: Int = 2000) {
        self.service = service
        self.version = version
        self.health = health
        self.readiness = readiness
        self.drainMs = drainMs
    }

    public static let maxDrainMs = 600_000

    func problems() -> [String] {
        var out: [String] = []
        if let p = IdentifierRules.problem(with: service) { out.append("replica.service: '\(service)' \(p)") }
        if let p = IdentifierRules.problem(with: version) { out.append("replica.version: '\(version)' \(p)") }
        out += health?.problems("replica.health") ?? []
        out += readiness?.problems("replica.readiness") ?? []
        if !(0...Self.maxDrainMs).contains(drainMs) { out.append("replica.drain_ms: 0…\(Self.maxDrainMs), got \(drainMs)") }
        return out
    }
}

/// The model a service serves. `artifact` is handed to the replica as `GRID_MODEL_PATH`.
public struct ServedModel: Codable, Sendable, Hashable {
    public var name: String
    /// The version rolled out (`gridctl rollout NAME --version V` changes it).
    public var version: String
    /// A path on the nodes or a URL inside the network (http://, https://, s3://).
    public var artifact: String
    /// onnx, safetensors, gguf, torchscript, … (free text: the runtime reads it).
    public var format: String

    public init(name: String, version: String, artifact: String, format: String = "") {
        self.name = name
        self.version = version
        self.artifact = artifact
        self.format = format
    }

    func problems() -> [String] {
        var out: [String] = []
        if name.isEmpty { out.append("model.name: required") }
        if let p = IdentifierRules.problem(with: version) { out.append("model.version: '\(version)' \(p)") }
        if artifact.isEmpty { out.append("model.artifact: required (a path on the nodes, or an http(s):// or s3:// URL)") }
        if artifact.contains("://"), !["http://", "https://", "s3://"].contains(where: artifact.hasPrefix) {
            out.append("model.artifact: '\(artifact)' is neither a path nor an http://, https:// or s3:// URL")
        }
        if artifact.contains("\0") { out.append("model.artifact: contains a NUL byte") }
        return out
    }

    /// The artifact for `version`: `{version}` in the artifact is replaced (a rollout changes
    /// the version and so the file).
    public func artifact(for version: String) -> String {
        artifact.replacingOccurrences(of: "{version}", with: version)
    }
}

public struct ReplicaRange: Codable, Sendable, Hashable {
    public var min: Int
    public var max: Int
    public init(min: Int = 1, max: Int? = nil) {
        self.min = min
        self.max = max ?? Swift.max(1, min)
    }
}

/// An HTTP probe of a replica: GET `path` on its port.
public struct ProbeSpec: Codable, Sendable, Hashable {
    public var path: String
    public var intervalSeconds: Double
    public var timeoutSeconds: Double
    /// Failures in a row before it counts (health: restart; readiness: out of rotation).
    public var failureThreshold: Int
    /// Not probed (and not counted) for this long after the replica starts.
    public var initialDelaySeconds: Double

    public init(path: String, intervalSeconds: Double, timeoutSeconds: Double = 1, failureThreshold: Int, initialDelaySeconds: Double = 0) {
        self.path = path
        self.intervalSeconds = intervalSeconds
        self.timeoutSeconds = timeoutSeconds
        self.failureThreshold = failureThreshold
        self.initialDelaySeconds = initialDelaySeconds
    }

    public static let health = ProbeSpec(path: "/healthz", intervalSeconds: 5, failureThreshold: 3, initialDelaySeconds: 10)
    public static let readiness = ProbeSpec(path: "/readyz", intervalSeconds: 1, failureThreshold: 1)

    func problems(_ key: String) -> [String] {
        var out: [String] = []
        if !path.hasPrefix("/") || path.contains(where: { $0.isWhitespace }) || path.utf8.count > 1024 {
            out.append("\(key).path: '\(path)' must start with '/', have no spaces, and be at most 1024 bytes")
        }
        if !(intervalSeconds.isFinite && (0.1...3600).contains(intervalSeconds)) { out.append("\(key).interval: 0.1…3600 s, got \(intervalSeconds)") }
        if !(timeoutSeconds.isFinite && (0.01...60).contains(timeoutSeconds)) { out.append("\(key).timeout: 0.01…60 s, got \(timeoutSeconds)") }
        if timeoutSeconds > intervalSeconds { out.append("\(key).timeout: \(timeoutSeconds) s is longer than the interval \(intervalSeconds) s") }
        if !(1...100).contains(failureThreshold) { out.append("\(key).failure_threshold: 1…100, got \(failureThreshold)") }
        if !(initialDelaySeconds.isFinite && (0...3600).contains(initialDelaySeconds)) {
            out.append("\(key).initial_delay: 0…3600 s, got \(initialDelaySeconds)")
        }
        return out
    }
}

public struct ServiceSLO: Codable, Sendable, Hashable {
    /// Latency users should see at the 99th percentile, ms (network from `origin` included).
    public var p99Ms: Double?
    /// Where the service's traffic comes from (a region id, as in jobs' `origin`).
    public var origin: RegionID?
    /// Tokens one request generates at most (a model service): with `p99Ms`, sets the
    /// throughput a replica needs, and from it the compute its devices must have.
    public var tokensPerRequest: Int?
    /// The part of `p99Ms` left to the network (RTT from `origin`); the rest is the replica's
    /// compute time. Nil: regions up to `p99Ms` away may be used and the compute budget is the
    /// whole `p99Ms` (a network much faster than the model).
    public var networkMs: Double?

    public init(p99Ms: Double? = nil, origin: RegionID? = nil, tokensPerRequest: Int? = nil, networkMs: Double? = nil) {
        self.p99Ms = p99Ms
        self.origin = origin
        self.tokensPerRequest = tokensPerRequest
        self.networkMs = networkMs
    }

    public static let tokensPerRequestRange = 1...10_000_000

    /// The RTT bound from `origin` the replicas' regions must keep.
    public var networkBoundMs: Double? { networkMs ?? p99Ms }

    /// Time a replica has to generate a request's tokens, ms: p99 less the network's share.
    public var computeBudgetMs: Double? { p99Ms.map { $0 - (networkMs ?? 0) } }

    /// Tokens/s a replica must generate so that `batch` concurrent requests of
    /// `tokensPerRequest` tokens each finish within the compute budget; nil without both.
    public func tokensPerSecond(batch: Int) -> Double? {
        guard let t = tokensPerRequest, let budget = computeBudgetMs, budget > 0 else { return nil }
        return Double(max(1, batch)) * Double(t) * 1000 / budget
    }

    func problems() -> [String] {
        var out: [String] = []
        if let p = p99Ms, !(p.isFinite && p > 0 && p <= 600_000) { out.append("slo.p99_ms: 0 < p99 ≤ 600000 ms, got \(p)") }
        if origin != nil, p99Ms == nil { out.append("slo.p99_ms: required with slo.origin (the latency to keep from it)") }
        if let t = tokensPerRequest {
            if !Self.tokensPerRequestRange.contains(t) { out.append("slo.tokens_per_request: 1…10000000, got \(t)") }
            if p99Ms == nil { out.append("slo.tokens_per_request: needs slo.p99_ms (the time to generate them in)") }
        }
        if let n = networkMs {
            if p99Ms == nil { out.append("slo.network_ms: needs slo.p99_ms (the network's share of it)") }
            if !(n.isFinite && n > 0 && n < (p99Ms ?? .infinity)) {
                out.append("slo.network_ms: 0 < network_ms < p99_ms (\(p99Ms.map { "\($0)" } ?? "unset")), got \(n)")
            }
        }
        return out
    }
}

/// A rolling update: at most `maxSurge` replicas above the count, at most `maxUnavailable`
/// below it, while old replicas are replaced by new ones.
public struct UpdateStrategy: Codable, Sendable, Hashable {
    public var maxSurge: Int
    public var maxUnavailable: Int
    public init(maxSurge: Int = 1, maxUnavailable: Int = 0) {
        self.maxSurge = maxSurge
        self.maxUnavailable = maxUnavailable
    }
}

/// Between `replicas.min` and `replicas.max` on measured load per ready replica.
public struct Autoscale: Codable, Sendable, Hashable {
    /// Requests per second one replica should take; nil = not a signal.
    public var targetRequestsPerSecond: Double?
    /// Requests in flight (queued at the gateway or in the replica) per replica; nil = not a signal.
    public var targetInFlight: Double?
    public var scaleUpCooldownSeconds: Double
    public var scaleDownCooldownSeconds: Double
    /// With `replicas.min: 0`: no replica while idle; the first request waits for one.
    public var scaleToZero: Bool

    public init(targetRequestsPerSecond: Double? = nil, targetInFlight: Double? = nil, scaleUpCooldownSeconds: Double = 30,
                scaleDownCooldownSeconds: Double = 300, scaleToZero: Bool = false) {
        self.targetRequestsPerSecond = targetRequestsPerSecond
        self.targetInFlight = targetInFlight
        self.scaleUpCooldownSeconds = scaleUpCooldownSeconds
        self.scaleDownCooldownSeconds = scaleDownCooldownSeconds
        self.scaleToZero = scaleToZero
    }

    func problems() -> [String] {
        var out: [String] = []
        if targetRequestsPerSecond == nil, targetInFlight == nil {
            out.append("autoscale: name a signal: target_rps (requests/s per replica) or target_in_flight")
        }
        for (key, v) in [("target_rps", targetRequestsPerSecond), ("target_in_flight", targetInFlight)] {
            if let v, !(v.isFinite && v > 0 && v <= 1e7) { out.append("autoscale.\(key): 0 < value ≤ 1e7, got \(v)") }
        }
        for (key, v) in [("scale_up_cooldown", scaleUpCooldownSeconds), ("scale_down_cooldown", scaleDownCooldownSeconds)] {
            if !(v.isFinite && (0...86_400).contains(v)) { out.append("autoscale.\(key): 0…86400 s, got \(v)") }
        }
        return out
    }
}

/// Where a service stands (`gridctl services`).
public enum ServicePhase: String, Codable, Sendable, Hashable, CaseIterable {
    /// Replicas are being started; fewer than wanted are ready.
    case deploying
    /// As many replicas ready as wanted, all of the wanted version.
    case ready
    /// Fewer ready than wanted after having been ready (a replica failed, a node was lost).
    case degraded
    /// A new version replaces the old, replica by replica (`update` strategy).
    case rollingOut = "rolling_out"
    /// The new version failed; the previous one is being brought back.
    case rollingBack = "rolling_back"
    /// Every replica drains and stops; then the service is forgotten.
    case undeploying
}

/// A service as the national scheduler keeps it (and stores it, one row per service).
public struct ServiceRecord: Codable, Sendable, Hashable {
    /// The spec in force: `spec.model.version` is the version wanted.
    public var spec: ServiceSpec
    /// Replicas wanted now (min…max: set by deploy, `gridctl scale` or the autoscaler).
    public var desired: Int
    /// The version all replicas served at the last steady state ("" before the first).
    public var servingVersion: String
    /// The spec of `servingVersion` while a rollout is in progress (a rollback restores it).
    public var stableSpec: ServiceSpec?
    public var phase: ServicePhase
    /// Its replica jobs still live, oldest first.
    public var replicas: [JobID]
    /// Replica jobs that have been ready at least once (a rollout judges the new version by them).
    public var everReady: Set<JobID>
    public var nextSerial: Int
    /// Replicas replaced after a failure, all time.
    public var restarts: Int
    /// Replicas of the wanted version that failed before ever being ready, in a row: the
    /// backoff before the next start, and the rollout's verdict.
    public var failuresInRow: Int
    /// No replica is started before this (backoff after failures).
    public var backoffUntil: Date?
    public var message: String
    public var createdAt: Date
    public var updatedAt: Date
    /// The autoscaler's last change (cooldowns run from it).
    public var lastScaledAt: Date?

    public init(spec: ServiceSpec, desired: Int, now: Date) {
        self.spec = spec
        self.desired = desired
        servingVersion = ""
        stableSpec = nil
        phase = .deploying
        replicas = []
        everReady = []
        nextSerial = 1
        restarts = 0
        failuresInRow = 0
        backoffUntil = nil
        message = "starting \(desired) replica(s) of \(spec.model.version)"
        createdAt = now
        updatedAt = now
        lastScaledAt = nil
    }
}

extension ServiceSpec {
    /// The job spec of one replica of `version`: the template, plus the port, the probes,
    /// the model's artifact and version in its environment, the SLO's network share as the
    /// routing bound, and its compute share as the model's throughput need (so the region's
    /// model fit asks for devices with the compute to meet it, on the lowest grade that has it).
    public func replicaSpec(version: String, drainMs: Int) -> JobSpec {
        var j = template
        j.name = name
        j.ports = max(1, template.ports)
        j.replica = ReplicaOf(service: name, version: version, health: health, readiness: readiness, drainMs: drainMs)
        j.env["GRID_SERVICE"] = name
        j.env["GRID_MODEL_NAME"] = model.name
        j.env["GRID_MODEL_VERSION"] = version
        j.env["GRID_MODEL_PATH"] = model.artifact(for: version)
        if !model.format.isEmpty { j.env["GRID_MODEL_FORMAT"] = model.format }
        if let origin = slo.origin {
            j.routing.origin = origin
            // The SLO bounds the network part too: no region farther than its share from the origin.
            if let bound = slo.networkBoundMs { j.routing.latencySLOMs = min(j.routing.latencySLOMs ?? .infinity, bound) }
        }
        if var m = j.model, let need = slo.tokensPerSecond(batch: m.batchSize) {
            m.tokensPerSecond = max(m.tokensPerSecond ?? 0, need)
            j.model = m
        }
        return j
    }

    /// The spec with `version` as the model version wanted.
    public func with(version: String) -> ServiceSpec {
        var s = self
        s.model.version = version
        return s
    }
}

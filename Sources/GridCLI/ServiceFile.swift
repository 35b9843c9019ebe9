import Foundation
import GridCore
import Yams

/// A service file (SERVICES.md): a job file's keys for what each replica runs, plus the
/// service's own. Every problem is reported at once with its line and column, as for jobs.
///
///     name: tiny-mlp                    # the service; the gateway serves /tiny-mlp/...
///     command: python3                  # what each replica runs, with args, env, accelerators,
///     args: [examples/model/serve.py]   #   jurisdictions, allowed_regions, account, priority
///     accelerators: {count: 1, max_grade: C}
///     model:
///       name: tiny-mlp
///       version: v1
///       artifact: /srv/models/tiny-mlp-{version}.json   # GRID_MODEL_PATH; {version} is replaced
///       format: computegrid-mlp-json
///       parameters: 211
///       precisions: [fp32, int8]        # the region picks one (GRID_PRECISION)
///     replicas: {min: 2, max: 4}        # or replicas: 2
///     health: {path: /healthz, interval: 5s, timeout: 1s, failure_threshold: 3, initial_delay: 10s}
///     readiness: {path: /readyz, interval: 1s, failure_threshold: 1}
///     slo: {p99_ms: 50, origin: east}
///     update: {max_surge: 1, max_unavailable: 0}
///     autoscale: {target_rps: 50, scale_up_cooldown: 30s, scale_down_cooldown: 5m}
public enum ServiceFile {
    static let topKeys = ["replicas", "health", "readiness", "slo", "update", "autoscale"]
    static let modelKeys = ["version", "artifact", "format"]

    struct Raw: Decodable {
        var job: JobFile.Raw
        var replicas: RawReplicas?
        var health: RawProbe?
        var readiness: RawProbe?
        var slo: RawSLO?
        var update: RawUpdate?
        var autoscale: RawAutoscale?
        var version: String?
        var artifact: String?
        var format: String?

        enum Keys: String, CodingKey { case replicas, health, readiness, slo, update, autoscale, model }
        enum ModelKeys: String, CodingKey { case version, artifact, format }

        init(from decoder: any Decoder) throws {
            job = try JobFile.Raw(from: decoder)
            let c = try decoder.container(keyedBy: Keys.self)
            if let n = try? c.decodeIfPresent(Int.self, forKey: .replicas) {
                replicas = RawReplicas(min: n, max: n)
            } else {
                replicas = try c.tolerant(RawReplicas.self, forKey: .replicas)
            }
            health = try c.tolerant(RawProbe.self, forKey: .health)
            readiness = try c.tolerant(RawProbe.self, forKey: .readiness)
            slo = try c.tolerant(RawSLO.self, forKey: .slo)
            update = try c.tolerant(RawUpdate.self, forKey: .update)
            autoscale = try c.tolerant(RawAutoscale.self, forKey: .autoscale)
            if let m = try? c.nestedContainer(keyedBy: ModelKeys.self, forKey: .model) {
                version = try m.numberOrText(.version)
                artifact = try m.tolerant(String.self, forKey: .artifact)
                format = try m.tolerant(String.self, forKey: .format)
            }
        }
    }

    struct RawReplicas: Decodable {
        var min: Int?
        var max: Int?
        enum CodingKeys: String, CodingKey, CaseIterable { case min, max }
        init(min: Int?, max: Int?) {
            self.min = min
            self.max = max
        }
        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            min = try c.tolerant(Int.self, forKey: .min)
            max = try c.tolerant(Int.self, forKey: .max)
        }
    }

    struct RawProbe: Decodable {
        var path: String?
        var interval: String?
        var timeout: String?
        var failureThreshold: Int?
        var initialDelay: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case path, interval, timeout
            case failureThreshold = "failure_threshold"
            case initialDelay = "initial_delay"
        }
        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            path = try c.tolerant(String.self, forKey: .path)
            interval = try c.numberOrText(.interval)
            timeout = try c.numberOrText(.timeout)
            failureThreshold = try c.tolerant(Int.self, forKey: .failureThreshold)
            initialDelay = try c.numberOrText(.initialDelay)
        }
    }

    struct RawSLO: Decodable {
        var p99Ms: Double?
        var origin: String?
        var tokensPerRequest: Int?
        var networkMs: Double?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case origin
            case p99Ms = "p99_ms"
            case tokensPerRequest = "tokens_per_request"
            case networkMs = "network_ms"
        }
        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            p99Ms = try c.tolerant(Double.self, forKey: .p99Ms)
            origin = try c.tolerant(String.self, forKey: .origin)
            tokensPerRequest = try c.tolerant(Int.self, forKey: .tokensPerRequest)
            networkMs = try c.tolerant(Double.self, forKey: .networkMs)
        }
    }

    struct RawUpdate: Decodable {
        var maxSurge: Int?
        var maxUnavailable: Int?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case maxSurge = "max_surge"
            case maxUnavailable = "max_unavailable"
        }
        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maxSurge = try c.tolerant(Int.self, forKey: .maxSurge)
            maxUnavailable = try c.tolerant(Int.self, forKey: .maxUnavailable)
        }
    }

    struct RawAutoscale: Decodable {
        var targetRPS: Double?
        var targetInFlight: Double?
        var scaleUpCooldown: String?
        var scaleDownCooldown: String?
        var scaleToZero: Bool?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case targetRPS = "target_rps"
            case targetInFlight = "target_in_flight"
            case scaleUpCooldown = "scale_up_cooldown"
            case scaleDownCooldown = "scale_down_cooldown"
            case scaleToZero = "scale_to_zero"
        }
        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            targetRPS = try c.tolerant(Double.self, forKey: .targetRPS)
            targetInFlight = try c.tolerant(Double.self, forKey: .targetInFlight)
            scaleUpCooldown = try c.numberOrText(.scaleUpCooldown)
            scaleDownCooldown = try c.numberOrText(.scaleDownCooldown)
            scaleToZero = try c.tolerant(Bool.self, forKey: .scaleToZero)
        }
    }

    /// "500ms" → 0.5, "2s" / "2" → 2, "1.5m" → 90, "1h" → 3600; nil for anything else.
    public static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = t.prefix { $0.isNumber || $0 == "." }
        guard let value = Double(digits), value.isFinite, value >= 0 else { return nil }
        switch t.dropFirst(digits.count) {
        case "ms": return value / 1000
        case "", "s": return value
        case "m": return value * 60
        case "h": return value * 3600
        default: return nil
        }
    }

    /// Parses and validates a service file; errors name the file and every problem found.
    public static func parse(_ text: String, source: String, now: Date = Date()) throws -> ServiceSpec {
        let decoded = try JobFile.$extraKeys.withValue((top: topKeys, model: modelKeys)) {
            try ConfigFile.decode(Raw.self, from: text, source: source)
        }
        let (raw, node) = (decoded.value, decoded.node)
        var (template, problems) = JobFile.build(raw.job, source: source, now: now)
        // A service's model is fitted to devices only when its size is given; without
        // `parameters` the accelerator request alone decides (and GRID_PRECISION is unset).
        if raw.job.model != nil, raw.job.model?.parameters == nil {
            template.model = nil
            problems.removeAll { $0.hasPrefix("model.parameters: required") || $0.hasPrefix("model: a model job needs") }
            if !(raw.job.model?.precisions ?? []).isEmpty {
                problems.append("model.precisions: choosing a precision needs model.parameters (the fit decides which precision fits)")
            }
        }
        if raw.job.count != nil { problems.append("count: a service has replicas, not a job array's count") }
        func duration(_ key: String, _ text: String?, _ fallback: Double) -> Double {
            guard let text else { return fallback }
            if let s = seconds(text) { return s }
            problems.append("\(key): '\(text)' is not a duration (500ms, 2s, 1m, or seconds)")
            return fallback
        }
        func probe(_ key: String, _ r: RawProbe?, _ d: ProbeSpec) -> ProbeSpec {
            guard let r else { return d }
            return ProbeSpec(path: r.path ?? d.path, intervalSeconds: duration("\(key).interval", r.interval, d.intervalSeconds),
                             timeoutSeconds: duration("\(key).timeout", r.timeout,
                                                      min(d.timeoutSeconds, r.interval.flatMap(seconds) ?? d.intervalSeconds)),
                             failureThreshold: r.failureThreshold ?? d.failureThreshold,
                             initialDelaySeconds: duration("\(key).initial_delay", r.initialDelay, d.initialDelaySeconds))
        }
        let name = raw.job.name ?? URL(fileURLWithPath: source).deletingPathExtension().lastPathComponent
        template.name = name
        let slo = ServiceSLO(p99Ms: raw.slo?.p99Ms, origin: raw.slo?.origin.map(RegionID.init),
                             tokensPerRequest: raw.slo?.tokensPerRequest, networkMs: raw.slo?.networkMs)
        // The SLO bounds the network: the national scheduler keeps to regions within its share of the origin.
        if template.routing.origin == nil { template.routing.origin = slo.origin }
        if template.routing.latencySLOMs == nil, template.routing.origin != nil { template.routing.latencySLOMs = slo.networkBoundMs }
        if raw.job.model == nil { problems.append("model: required (name, version, artifact; parameters and precisions on accelerators)") }
        let model = ServedModel(name: raw.job.model?.name ?? "", version: raw.version ?? "", artifact: raw.artifact ?? "", format: raw.format ?? "")
        var autoscale: Autoscale?
        if let a = raw.autoscale {
            let d = Autoscale()
            autoscale = Autoscale(targetRequestsPerSecond: a.targetRPS, targetInFlight: a.targetInFlight,
                                  scaleUpCooldownSeconds: duration("autoscale.scale_up_cooldown", a.scaleUpCooldown, d.scaleUpCooldownSeconds),
                                  scaleDownCooldownSeconds: duration("autoscale.scale_down_cooldown", a.scaleDownCooldown, d.scaleDownCooldownSeconds),
                                  scaleToZero: a.scaleToZero ?? false)
        }
        let minimum = raw.replicas?.min ?? 1
        let spec = ServiceSpec(
            name: name, template: template, model: model,
            replicas: ReplicaRange(min: minimum, max: raw.replicas?.max ?? max(1, minimum)),
            health: probe("health", raw.health, .health), readiness: probe("readiness", raw.readiness, .readiness),
            slo: slo, update: UpdateStrategy(maxSurge: raw.update?.maxSurge ?? 1, maxUnavailable: raw.update?.maxUnavailable ?? 0),
            autoscale: autoscale)
        // The template's problems were found by JobFile.build; add the service's own.
        problems += spec.serviceProblems().filter { raw.job.model != nil || !$0.hasPrefix("model.name:") }
        let all = ConfigFile.inFileOrder(decoded.problems + ConfigFile.locate(problems, in: node))
        if !all.isEmpty { throw ConfigError(source: source, problems: all) }
        return spec
    }
}

import Foundation
import GridCore

// Services (SERVICES.md) between the wire and the domain. Ranges are checked by the domain's
// `problems()`; what cannot be represented at all (an unknown action) throws here.

extension Wire.ProbeSpec {
    public init(_ p: ProbeSpec) {
        self.init()
        path = p.path
        intervalMs = Self.ms(p.intervalSeconds)
        timeoutMs = Self.ms(p.timeoutSeconds)
        failureThreshold = UInt32(clamping: p.failureThreshold)
        initialDelayMs = Self.ms(p.initialDelaySeconds)
    }

    static func ms(_ seconds: Double) -> UInt32 {
        guard seconds.isFinite else { return UInt32.max }
        return UInt32(clamping: Int64((seconds * 1000).rounded().clamped(to: -1...4e9)))
    }

    public var probe: ProbeSpec {
        ProbeSpec(path: path, intervalSeconds: Double(intervalMs) / 1000, timeoutSeconds: Double(timeoutMs) / 1000,
                  failureThreshold: Int(failureThreshold), initialDelaySeconds: Double(initialDelayMs) / 1000)
    }
}

extension Double {
    func clamped(to r: ClosedRange<Double>) -> Double { Swift.min(Swift.max(self, r.lowerBound), r.upperBound) }
}

extension Wire.ReplicaOf {
    public init(_ r: ReplicaOf) {
        self.init()
        service = r.service
        version = r.version
        if let h = r.health { health = Wire.ProbeSpec(h) }
        if let p = r.readiness { readiness = Wire.ProbeSpec(p) }
        drainMs = UInt32(clamping: r.drainMs)
    }

    public var replica: ReplicaOf {
        ReplicaOf(service: service, version: version, health: hasHealth ? health.probe : nil,
                  readiness: hasReadiness ? readiness.probe : nil, drainMs: Int(drainMs))
    }
}

extension Wire.ServiceSpec {
    public init(_ s: ServiceSpec) {
        self.init()
        name = s.name
        template = Wire.JobSpec(s.template)
        var m = Wire.ServedModel()
        m.name = s.model.name
        m.version = s.model.version
        m.artifact = s.model.artifact
        m.format = s.model.format
        model = m
        minReplicas = UInt32(clamping: s.replicas.min)
        maxReplicas = UInt32(clamping: s.replicas.max)
        health = Wire.ProbeSpec(s.health)
        readiness = Wire.ProbeSpec(s.readiness)
        sloP99Ms = s.slo.p99Ms ?? 0
        sloOrigin = s.slo.origin?.rawValue ?? ""
        sloTokensPerRequest = UInt32(clamping: s.slo.tokensPerRequest ?? 0)
        sloNetworkMs = s.slo.networkMs ?? 0
        maxSurge = UInt32(clamping: s.update.maxSurge)
        maxUnavailable = UInt32(clamping: s.update.maxUnavailable)
        if let a = s.autoscale {
            var w = Wire.Autoscale()
            w.targetRps = a.targetRequestsPerSecond ?? 0
            w.targetInFlight = a.targetInFlight ?? 0
            w.scaleUpCooldownMs = Wire.ProbeSpec.ms(a.scaleUpCooldownSeconds)
            w.scaleDownCooldownMs = Wire.ProbeSpec.ms(a.scaleDownCooldownSeconds)
            w.scaleToZero = a.scaleToZero
            autoscale = w
        }
    }

    /// The domain value; throws on what the template cannot hold and on any problem
    /// (`ServiceSpec.problems()`), naming the first.
    public func service() throws(ProtocolError) -> ServiceSpec {
        var t = template
        if t.name.isEmpty { t.name = name }
        // The template's own checks run with the service's (below), so every problem is named.
        let job: JobSpec
        do { job = try t.spec() } catch { throw error }
        var s = ServiceSpec(
            name: name, template: job,
            model: ServedModel(name: model.name, version: model.version, artifact: model.artifact, format: model.format),
            replicas: ReplicaRange(min: Int(minReplicas), max: Int(maxReplicas)),
            health: hasHealth ? health.probe : .health, readiness: hasReadiness ? readiness.probe : .readiness,
            slo: ServiceSLO(p99Ms: sloP99Ms != 0 ? sloP99Ms : nil, origin: sloOrigin.isEmpty ? nil : RegionID(sloOrigin),
                            tokensPerRequest: sloTokensPerRequest > 0 ? Int(sloTokensPerRequest) : nil,
                            networkMs: sloNetworkMs != 0 ? sloNetworkMs : nil),
            update: UpdateStrategy(maxSurge: Int(maxSurge), maxUnavailable: Int(maxUnavailable)))
        if hasAutoscale {
            let a = autoscale
            s.autoscale = Autoscale(
                targetRequestsPerSecond: a.targetRps > 0 ? a.targetRps : nil, targetInFlight: a.targetInFlight > 0 ? a.targetInFlight : nil,
                scaleUpCooldownSeconds: Double(a.scaleUpCooldownMs) / 1000, scaleDownCooldownSeconds: Double(a.scaleDownCooldownMs) / 1000,
                scaleToZero: a.scaleToZero)
        }
        let problems = s.problems()
        if let first = problems.first {
            throw .invalidField(type: "ServiceSpec", field: String(first.prefix(while: { $0 != ":" })),
                                reason: problems.joined(separator: "; "))
        }
        return s
    }
}

extension Wire.ServiceStatus {
    /// A service as the national scheduler keeps it, with its replica jobs (`jobs`: by id) and
    /// the gateways to use, nearest the origin first.
    public init(_ r: ServiceRecord, jobs: (JobID) -> JobRecord?, endpoints: [String], load: (rps: Double, p99: Double)) {
        self.init()
        spec = Wire.ServiceSpec(r.spec)
        state = r.phase.rawValue
        desired = UInt32(clamping: r.desired)
        servingVersion = r.servingVersion
        message = r.message
        restarts = UInt32(clamping: r.restarts)
        updatedUnixMs = r.updatedAt.unixMilliseconds
        self.endpoints = endpoints
        requestsPerSecond = load.rps
        p99Ms = load.p99
        var readyCount = 0
        replicas = r.replicas.compactMap { id in
            guard let j = jobs(id) else { return nil }
            var w = Wire.Replica()
            w.jobID = id.rawValue
            w.version = j.spec.replica?.version ?? ""
            w.state = j.state.rawValue
            w.regionID = j.region?.rawValue ?? ""
            w.nodeID = j.node?.rawValue ?? ""
            w.deviceIds = j.deviceIDs
            w.deviceModels = j.deviceModels
            w.deviceGrades = j.deviceGrades
            w.precision = j.precision?.rawValue ?? ""
            w.ready = j.state == .running && j.ready
            if w.ready { readyCount += 1 }
            w.endpoint = j.endpoint ?? ""
            w.message = j.message
            w.attempt = UInt32(clamping: j.attempts.count)
            return w
        }
        ready = UInt32(clamping: readyCount)
    }
}

import Foundation
import GridCore
import GridProtocol

/// The national scheduler's service controller (SERVICES.md, "How a service is kept").
///
/// A service's replicas are ordinary jobs built by `ServiceSpec.replicaSpec`: routed to a
/// region within the SLO's reach of the origin, placed by the region on the lowest grade and
/// precision that fit, fenced and requeued by the job machinery when a node is lost. This code
/// only decides how many replica jobs of which version should be live, and starts or stops
/// them: `reconcile` runs on every replica status change and once a second.
extension NationalInstance {
    /// How long a replica is kept out of the gateway's rotation before it is stopped.
    static let replicaDrainMs = 2000
    /// Replicas of a new version that fail before ever being ready, in a row, before a rollout
    /// is rolled back.
    static let rollbackAfterFailures = 2

    // MARK: requests

    public mutating func onDeploy(_ m: Wire.Deploy, origin: Origin, now: Moment) -> [ControllerDirective] {
        var spec: ServiceSpec
        do { spec = try m.spec.service() } catch {
            return [.error("bad_request", "deploy: \(error)", to: origin)]
        }
        // A tenant's key deploys for its own account (its replicas are charged to it).
        if let tenant = origin.tenant {
            if spec.template.account.isEmpty { spec.template.account = tenant }
            guard spec.template.account == tenant else {
                return [.error("forbidden", "deploy \(spec.name): account '\(spec.template.account)': this key deploys for tenant '\(tenant)' only", to: origin)]
            }
            if let other = services[spec.name], !origin.owns(account: other.spec.template.accountName) {
                return [.error("forbidden", "deploy \(spec.name): the name is taken by another account; choose another", to: origin)]
            }
        }
        var out: [ControllerDirective] = []
        if var svc = services[spec.name] {
            guard svc.phase != .undeploying else {
                return [.error("unavailable", "service \(spec.name) is being undeployed; deploy it again once it is gone", to: origin)]
            }
            if svc.spec != spec {
                let versionChanged = spec.model.version != svc.spec.model.version
                if svc.stableSpec == nil { svc.stableSpec = svc.spec }
                svc.spec = spec
                svc.desired = min(max(svc.desired, spec.replicas.min), spec.replicas.max)
                svc.failuresInRow = 0
                svc.backoffUntil = nil
                svc.phase = .rollingOut
                svc.message = versionChanged ? "rolling out \(spec.model.version)" : "rolling out a changed spec"
                svc.updatedAt = now.wall
                services[spec.name] = svc
                out.append(.persist(.service(svc)))
                out.append(.log(LogEvent(.info, "service rollout", ["service": spec.name, "version": spec.model.version])))
            }
        } else {
            let desired = spec.replicas.min
            var svc = ServiceRecord(spec: spec, desired: desired, now: now.wall)
            if desired == 0 { svc.message = "scaled to zero; the first request starts a replica" }
            services[spec.name] = svc
            out.append(.persist(.service(svc)))
            out.append(.log(LogEvent(.info, "service deployed", ["service": spec.name, "version": spec.model.version,
                                                                  "replicas": "\(desired)"])))
        }
        out += reconcile(spec.name, now: now)
        return out + [answer(spec.name, to: origin)]
    }

    public mutating func onServiceControl(_ m: Wire.ServiceControl, origin: Origin, now: Moment) -> [ControllerDirective] {
        guard var svc = services[m.name], origin.owns(account: svc.spec.template.accountName) else {
            return [.error("not_found", "service \(m.name) is not deployed (gridctl services lists them)", to: origin)]
        }
        var out: [ControllerDirective] = []
        switch m.action {
        case .scale:
            let r = svc.spec.replicas
            guard (r.min...r.max).contains(Int(m.replicas)) else {
                return [.error("bad_request", "scale \(m.name): replicas \(m.replicas) is outside \(r.min)…\(r.max) (replicas.min…max of its spec)", to: origin)]
            }
            guard svc.phase != .undeploying else { return [.error("unavailable", "service \(m.name) is being undeployed", to: origin)] }
            svc.desired = Int(m.replicas)
            svc.lastScaledAt = now.wall
            svc.message = "scaled to \(m.replicas) by an operator"
        case .rollout:
            if let p = IdentifierRules.problem(with: m.version) {
                return [.error("bad_request", "rollout \(m.name): version '\(m.version)' \(p)", to: origin)]
            }
            guard svc.phase != .undeploying else { return [.error("unavailable", "service \(m.name) is being undeployed", to: origin)] }
            guard m.version != svc.spec.model.version else { return [answer(m.name, to: origin)] }
            if svc.stableSpec == nil { svc.stableSpec = svc.spec }
            svc.spec = svc.spec.with(version: m.version)
            svc.failuresInRow = 0
            svc.backoffUntil = nil
            svc.phase = .rollingOut
            svc.message = "rolling out \(m.version)"
            out.append(.log(LogEvent(.info, "service rollout", ["service": m.name, "version": m.version])))
        case .undeploy:
            svc.phase = .undeploying
            svc.desired = 0
            svc.message = "undeploying: draining and stopping every replica"
            out.append(.log(LogEvent(.info, "service undeploy", ["service": m.name])))
        default:
            return [.error("bad_request", "service control: action \(m.action) is not scale, rollout or undeploy", to: origin)]
        }
        svc.updatedAt = now.wall
        services[m.name] = svc
        out.append(.persist(.service(svc)))
        out += reconcile(m.name, now: now)
        return out + [answer(m.name, to: origin)]
    }

    func answer(_ name: String, to origin: Origin) -> ControllerDirective {
        var reply = Wire.QueryReply()
        if let svc = services[name] { reply.services = [serviceStatus(svc)] }
        reply.total = UInt64(reply.services.count)
        return .reply(.queryReply(reply), to: origin)
    }

    /// A service with its replicas, the gateways to use (those of regions holding a ready
    /// replica, nearest the SLO's origin first) and the load the gateways measured.
    /// `origin`: the asker's region (QUERY SERVICES `region_id`); else the SLO's origin.
    func serviceStatus(_ svc: ServiceRecord, origin asker: String = "") -> Wire.ServiceStatus {
        let name = svc.spec.name
        var holding: Set<RegionID> = []
        for id in svc.replicas {
            if let j = jobs[id], j.state == .running, j.ready, let r = j.region { holding.insert(r) }
        }
        let origin = asker.isEmpty ? svc.spec.slo.origin?.rawValue : asker
        let ordered = holding.sorted { a, b in
            let ra = origin.flatMap { settings.rtt[$0]?[a.rawValue] } ?? .infinity
            let rb = origin.flatMap { settings.rtt[$0]?[b.rawValue] } ?? .infinity
            return ra != rb ? ra < rb : a < b
        }
        let endpoints = ordered.compactMap { r -> String? in
            guard let url = regions[r]?.gatewayURL, !url.isEmpty else { return nil }
            return url.hasSuffix("/") ? url + name : url + "/" + name
        }
        var rps = 0.0
        var p99 = 0.0
        for view in regions.values {
            if let l = view.loads[name] {
                rps += l.requestsPerSecond
                p99 = max(p99, l.p99Ms)
            }
        }
        return Wire.ServiceStatus(svc, jobs: { jobs[$0] }, endpoints: endpoints, load: (rps, p99))
    }

    // MARK: replicas

    /// A replica's job changed (a region's report): the service is reconciled now, so a
    /// failed replica is replaced and a rollout moves on without waiting for the next second.
    mutating func replicaChanged(_ job: JobRecord, of service: String, now: Moment) -> [ControllerDirective] {
        guard var svc = services[service], svc.replicas.contains(job.id) else { return [] }
        if job.state == .running, job.ready, !svc.everReady.contains(job.id) {
            svc.everReady.insert(job.id)
            if job.spec == svc.spec.replicaSpec(version: svc.spec.model.version, drainMs: Self.replicaDrainMs) {
                svc.failuresInRow = 0
                svc.backoffUntil = nil
            }
            services[service] = svc
        }
        return reconcile(service, now: now)
    }

    /// Brings one service's replicas toward what it wants; returns what to store and send.
    mutating func reconcile(_ name: String, now: Moment) -> [ControllerDirective] {
        guard var svc = services[name] else { return [] }
        let before = svc
        var out: [ControllerDirective] = []
        let wanted = svc.spec.replicaSpec(version: svc.spec.model.version, drainMs: Self.replicaDrainMs)

        // Replicas whose job ended leave the service; a failure is counted, and one of the
        // wanted version that never became ready counts toward backoff and rollback.
        var live: [JobID] = []
        for id in svc.replicas {
            guard let j = jobs[id] else { continue }
            if !j.state.isTerminal {
                live.append(id)
                continue
            }
            svc.everReady.remove(id)
            if j.state == .cancelled { continue }
            if svc.phase != .undeploying { svc.restarts += 1 }
            let everReady = before.everReady.contains(id) || j.ready
            if j.spec == wanted && !everReady {
                svc.failuresInRow += 1
                let backoffMs = min(60_000, 1000 << min(svc.failuresInRow - 1, 6))
                svc.backoffUntil = now.wall.addingTimeInterval(Double(backoffMs) / 1000)
            }
            svc.message = "replica \(id) \(j.state.rawValue): \(j.message)"
            out.append(.log(LogEvent(.warning, "service replica ended", ["service": name, "job": "\(id)", "state": j.state.rawValue,
                                                                          "message": j.message])))
        }
        svc.replicas = live

        // A new version whose replicas keep failing before they are ready is rolled back.
        if svc.phase == .rollingOut, svc.failuresInRow >= Self.rollbackAfterFailures, let stable = svc.stableSpec {
            let failed = svc.spec.model.version
            svc.spec = stable
            svc.stableSpec = nil
            svc.phase = .rollingBack
            svc.failuresInRow = 0
            svc.backoffUntil = nil
            svc.message = "rollout of \(failed) failed (\(Self.rollbackAfterFailures) replicas failed before they were ready: \(svc.message)); rolling back to \(stable.model.version)"
            out.append(.log(LogEvent(.error, "service rollout failed; rolling back", ["service": name, "failed": failed,
                                                                                       "back_to": stable.model.version])))
            return out + reconcileAgain(svc, now: now)
        }

        let desiredBefore = svc.desired
        if svc.spec.autoscale != nil, [.ready, .degraded, .deploying].contains(svc.phase) { autoscale(&svc, now: now) }
        let scaled = svc.desired != desiredBefore ? svc.message : nil

        let stopping = Set(live.filter { cancelling[$0] != nil })
        let active = live.filter { !stopping.contains($0) }
        let current = active.filter { jobs[$0]?.spec == wanted }
        let old = active.filter { jobs[$0]?.spec != wanted }
        func isReady(_ id: JobID) -> Bool { jobs[id].map { $0.state == .running && $0.ready } ?? false }
        let readyCurrent = current.filter(isReady).count
        let readyAll = active.filter(isReady).count

        if svc.phase == .undeploying {
            for id in active { out += stop(id, now: now) }
            if live.isEmpty {
                services[name] = nil
                return out + [.persist(.serviceRemoved(name)),
                              .log(LogEvent(.info, "service undeployed", ["service": name]))]
            }
            return out + store(svc, before: before, now: now)
        }

        // Start replicas of the wanted version: up to the count, and during a rollout up to
        // max_surge above it (counting the old ones still serving).
        let ceiling = old.isEmpty ? svc.desired : svc.desired + svc.spec.update.maxSurge
        var startable = min(svc.desired - current.count, ceiling - active.count)
        // With no surge allowed, an old replica makes room first (max_unavailable > 0).
        if startable < 0 { startable = 0 }
        if startable > 0, let until = svc.backoffUntil, until > now.wall {
            svc.message = "waiting \(Int(until.timeIntervalSince(now.wall).rounded(.up))) s before starting a replica again (\(svc.failuresInRow) failed before ready)"
            startable = 0
        }
        for _ in 0..<startable {
            let (started, directives) = startReplica(&svc, spec: wanted, now: now)
            out += directives
            if !started { break }
        }

        // Stop old replicas as readiness allows: never below desired − max_unavailable ready.
        let floor = svc.desired - svc.spec.update.maxUnavailable
        var ready = readyAll
        for id in old.sorted(by: { !isReady($0) && isReady($1) }) {
            let readyNow = isReady(id)
            if readyNow && ready - 1 < floor { continue }
            if readyNow { ready -= 1 }
            out += stop(id, now: now)
        }
        // Too many of the wanted version (scaled down): stop the surplus, not-ready and newest first.
        if current.count > svc.desired {
            func serial(_ id: JobID) -> Int { Int(id.rawValue.split(separator: "r").last ?? "") ?? 0 }
            let surplus = current.sorted { a, b in
                isReady(a) != isReady(b) ? !isReady(a) : serial(a) > serial(b)
            }.prefix(current.count - svc.desired)
            for id in surplus { out += stop(id, now: now) }
        }

        // Where it stands.
        let steady = old.isEmpty && stopping.isEmpty && readyCurrent >= svc.desired
        if steady {
            if svc.phase != .ready {
                out.append(.log(LogEvent(.info, "service ready", ["service": name, "version": svc.spec.model.version,
                                                                  "replicas": "\(readyCurrent)"])))
            }
            if svc.phase == .rollingOut || svc.phase == .rollingBack || svc.servingVersion != svc.spec.model.version {
                svc.message = svc.phase == .rollingBack
                    ? svc.message.replacingOccurrences(of: "; rolling back to", with: "; rolled back to")
                    : "serving \(svc.spec.model.version) on \(readyCurrent) replica(s)"
            } else if svc.phase != .ready {
                svc.message = "serving \(svc.spec.model.version) on \(readyCurrent) replica(s)"
            }
            svc.phase = .ready
            svc.servingVersion = svc.spec.model.version
            svc.stableSpec = nil
        } else if svc.phase == .ready {
            svc.phase = .degraded
            svc.message = "\(readyCurrent) of \(svc.desired) replica(s) ready" + (scaled.map { "; " + $0 } ?? "")
        }
        return out + store(svc, before: before, now: now)
    }

    /// Sets the count from the gateways' load (SERVICES.md, "Autoscaling"): requests per
    /// second over `target_rps` and requests in flight (waiting ones included) over
    /// `target_in_flight`, the larger, within min…max; a scale-up waits its cooldown after the
    /// last change, a scale-down its own.
    func autoscale(_ svc: inout ServiceRecord, now: Moment) {
        guard let a = svc.spec.autoscale else { return }
        var rps = 0.0
        var inFlight = 0.0
        for view in regions.values where now.monotonicMs - view.lastSeenMs <= staleAfterMs {
            if let l = view.loads[svc.spec.name] {
                rps += l.requestsPerSecond
                inFlight += l.inFlight
            }
        }
        var wanted = 0
        if let t = a.targetRequestsPerSecond { wanted = max(wanted, Int((rps / t).rounded(.up))) }
        if let t = a.targetInFlight { wanted = max(wanted, Int((inFlight / t).rounded(.up))) }
        // Requests waiting for a service at zero always start one.
        if inFlight > 0 { wanted = max(wanted, 1) }
        let floor = a.scaleToZero ? svc.spec.replicas.min : max(1, svc.spec.replicas.min)
        wanted = min(max(wanted, floor), svc.spec.replicas.max)
        guard wanted != svc.desired else { return }
        let since = svc.lastScaledAt.map { now.wall.timeIntervalSince($0) } ?? .infinity
        let cooldown = wanted > svc.desired ? a.scaleUpCooldownSeconds : a.scaleDownCooldownSeconds
        // The first replica of a service at zero is not held back by a cooldown.
        guard since >= cooldown || svc.desired == 0 else { return }
        if wanted > svc.desired && since < cooldown && svc.desired > 0 { return }
        svc.message = String(format: "autoscaled %d → %d (%.1f req/s, %.1f in flight)", svc.desired, wanted, rps, inFlight)
        svc.desired = wanted
        svc.lastScaledAt = now.wall
    }

    /// Reconciles once more after a change of course (a rollback), with the stored value updated.
    private mutating func reconcileAgain(_ svc: ServiceRecord, now: Moment) -> [ControllerDirective] {
        services[svc.spec.name] = svc
        return [.persist(.service(svc))] + reconcile(svc.spec.name, now: now)
    }

    private mutating func store(_ svc: ServiceRecord, before: ServiceRecord, now: Moment) -> [ControllerDirective] {
        var svc = svc
        guard svc != before else { return [] }
        svc.updatedAt = now.wall
        services[svc.spec.name] = svc
        return [.persist(.service(svc))]
    }

    /// A new replica job, routed like a submitted job. False when no region can ever take it
    /// (the service says why and tries again after a backoff).
    private mutating func startReplica(_ svc: inout ServiceRecord, spec: JobSpec, now: Moment) -> (Bool, [ControllerDirective]) {
        var id: JobID
        repeat {
            id = JobID("\(svc.spec.name).r\(svc.nextSerial)")
            svc.nextSerial += 1
        } while jobs[id] != nil
        var job = JobRecord(id: id, spec: spec, state: .pending, submittedAt: now.wall, updatedAt: now.wall)
        let (outcome, directives) = route(&job, now: now)
        if case .impossible(let why) = outcome {
            svc.message = "no region can run a replica: \(why)"
            svc.backoffUntil = now.wall.addingTimeInterval(10)
            return (false, [.log(LogEvent(.warning, "service replica cannot be placed", ["service": svc.spec.name, "reason": why]))])
        }
        if case .waiting = outcome { unrouted.append(id) }
        jobs[id] = job
        svc.replicas.append(id)
        counters.submissions += 1
        return (true, [.persist(.job(job)),
                       .log(LogEvent(.info, "service replica started", ["service": svc.spec.name, "job": "\(id)",
                                                                        "version": spec.replica?.version ?? "", "region": job.region?.rawValue ?? "-"]))]
                + directives)
    }

    /// Stops a replica: its region drains it from the gateway, then stops it (CANCEL).
    private mutating func stop(_ id: JobID, now: Moment) -> [ControllerDirective] {
        guard var job = jobs[id], !job.state.isTerminal, cancelling[id] == nil else { return [] }
        return cancelJob(&job, now: now)
    }
}

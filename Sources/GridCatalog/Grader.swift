import Foundation
import GridCore

/// The grade of one partition (MIG slice...) of a graded device.
public struct PartitionGrade: Sendable, Hashable, Codable {
    public var id: String
    public var profile: String?
    public var grade: DeviceGrade
    public var reason: String
    public var computeUnits: PartitionComputeUnits
}

/// What grading decided for one device, and why.
public struct GradeResult: Sendable, Hashable, Codable {
    public var grade: DeviceGrade
    /// One line an operator can read, e.g.
    /// "B: 312 GCU, 80 GiB, 2020 (A100 SXM4 80GB); below A (needs ≥400 GCU)".
    public var reason: String
    public var computeUnits: ComputeUnits
    /// The catalog row the device matched; nil for an unknown model.
    public var catalogModel: String?
    /// True when anything behind the grade is an estimate (unknown model, compute not from a
    /// dense FP16/BF16 figure, weak match).
    public var estimated: Bool
    /// Memory the grade used (reported, else catalog × package share).
    public var memoryGiB: Double?
    public var releaseYear: Int?
    /// Grades of the device's partitions, same order as `device.partitions`.
    public var partitions: [PartitionGrade]

    /// Writes grade, reason and effective GCU onto the inventory record.
    public func apply(to device: inout DeviceInventory) {
        device.grade = grade
        device.gradeReason = reason
        device.computeUnits = computeUnits.effective
        // A tool that does not report memory (xpu-smi discovery text, say): the catalog's figure
        // for the matched model stands in, so memory bounds and tables have a number, and the
        // reason says where it came from.
        if device.memoryTotalMiB == nil, let gib = memoryGiB, catalogModel != nil {
            device.memoryTotalMiB = Int((gib * 1024).rounded())
            device.gradeReason = (device.gradeReason ?? "") + "; memory \(Int(gib.rounded())) GiB from the catalog (the tool did not report it)"
        }
    }
}

/// Grades devices: pure; the current year is passed in.
public enum Grader {
    public static func grade(
        _ device: DeviceInventory, catalog: AcceleratorCatalog, policy: GradingPolicy = .default,
        currentYear: Int, history: HealthHistory? = nil
    ) -> GradeResult {
        let match = catalog.match(device)
        let cu = ComputeUnitCalculator.computeUnits(
            for: device, match: match, catalog: catalog, policy: policy.computeUnits)
        let memory = ComputeUnitCalculator.deviceMemoryGiB(device, match: match)
        let year = match?.spec.releaseYear
        let label = match.map { $0.spec.model } ?? "unknown model \"\(device.model)\""
        let summary = summaryText(gcu: cu.nominal, memoryGiB: memory, year: year, label: label)
        let estimated = cu.estimated

        // Retirement comes first: it does not depend on capability.
        if let why = retirement(device, cu: cu, year: year, currentYear: currentYear, policy: policy, history: history) {
            let partitions = device.partitions.indices.map { i in
                PartitionGrade(
                    id: device.partitions[i].id, profile: device.partitions[i].profile, grade: .r,
                    reason: "R: parent device retired (\(why))", computeUnits: cu.partitions[i])
            }
            return GradeResult(
                grade: .r, reason: "R: \(summary); retire: \(why)", computeUnits: cu,
                catalogModel: match?.spec.model, estimated: estimated, memoryGiB: memory,
                releaseYear: year, partitions: partitions)
        }

        let capability = capabilityGrade(
            gcu: cu.nominal, memoryGiB: memory, known: match != nil, estimated: estimated, policy: policy)
        let (final, healthNote) = applyHealth(capability.grade, device: device, policy: policy)

        var parts = ["\(final.rawValue): \(summary)"]
        if cu.healthFactor != 1 {
            parts.append("effective \(fmt(cu.effective)) GCU (\(device.health.state.rawValue) × \(fmt(cu.healthFactor)))")
        }
        if estimated {
            parts.append(match == nil
                ? "estimated: \(cu.note); graded on memory only"
                : "estimated: \(cu.note)")
        }
        if let missing = capability.missing { parts.append(missing) }
        if let healthNote { parts.append(healthNote) }

        let partitions = device.partitions.indices.map { i -> PartitionGrade in
            let p = cu.partitions[i]
            let cap = capabilityGrade(
                gcu: p.nominal, memoryGiB: p.memoryGiB, known: match != nil, estimated: estimated,
                policy: policy)
            let (g, note) = applyHealth(cap.grade, device: device, policy: policy)
            let share = p.fractionEstimated ? "~\(fmt(p.fraction))" : fmt(p.fraction)
            var text = [
                "\(g.rawValue): \(fmt(p.nominal)) GCU, \(p.memoryGiB.map { "\(fmt($0)) GiB" } ?? "memory unknown"), "
                    + "\(p.profile ?? p.id) (\(share) of \(label))"
            ]
            if let m = cap.missing { text.append(m) }
            if let note { text.append(note) }
            return PartitionGrade(
                id: p.id, profile: p.profile, grade: g, reason: text.joined(separator: "; "), computeUnits: p)
        }

        return GradeResult(
            grade: final, reason: parts.joined(separator: "; "), computeUnits: cu,
            catalogModel: match?.spec.model, estimated: estimated, memoryGiB: memory,
            releaseYear: year, partitions: partitions)
    }

    /// Grades every device and writes grade, reason and effective GCU onto a copy of each.
    /// `histories` is keyed by device id.
    public static func graded(
        _ devices: [DeviceInventory], catalog: AcceleratorCatalog, policy: GradingPolicy = .default,
        currentYear: Int, histories: [String: HealthHistory] = [:]
    ) -> [DeviceInventory] {
        devices.map { device in
            var d = device
            grade(device, catalog: catalog, policy: policy, currentYear: currentYear, history: histories[device.id])
                .apply(to: &d)
            return d
        }
    }

    // MARK: - Rules

    static func summaryText(gcu: Double, memoryGiB: Double?, year: Int?, label: String) -> String {
        var parts = ["\(fmt(gcu)) GCU", memoryGiB.map { "\(fmt($0)) GiB" } ?? "memory unknown"]
        if let year { parts.append(String(year)) }
        return parts.joined(separator: ", ") + " (\(label))"
    }

    /// Why the device should be retired, or nil.
    static func retirement(
        _ device: DeviceInventory, cu: ComputeUnits, year: Int?, currentYear: Int,
        policy: GradingPolicy, history: HealthHistory?
    ) -> String? {
        for reason in device.health.reasons where policy.retireOnReasons.contains(reason.kind) {
            return reason.detail.isEmpty ? reason.kind.rawValue : "\(reason.kind.rawValue): \(reason.detail)"
        }
        let s = device.signals
        if s.remappingFailed == true, policy.retireOnReasons.contains(.remappingFailed) {
            return "row remapping failed"
        }
        if let text = s.vendorHealthText, text.lowercased().contains("fallen off"),
            policy.retireOnReasons.contains(.fallenOffBus)
        {
            return "fallen off the bus (\"\(text)\")"
        }
        let uncorrectable = max(s.eccUncorrectableAggregate ?? 0, s.eccUncorrectableVolatile ?? 0)
        if uncorrectable > 0, let pages = s.retiredPagesCount, pages >= policy.retireRetiredPagesAtLeast {
            return "\(uncorrectable) uncorrectable ECC errors with \(pages) retired pages (≥\(policy.retireRetiredPagesAtLeast): page retirement exhausted)"
        }
        if let h = history, h.probesInWindow > 0, h.unhealthyProbesInWindow >= policy.retireUnhealthyProbes,
            Double(h.unhealthyProbesInWindow) / Double(h.probesInWindow) >= policy.retireUnhealthyShare
        {
            let window = h.windowSeconds.map { " in \(fmt(Double($0) / 3600)) h" } ?? ""
            return "unhealthy in \(h.unhealthyProbesInWindow) of \(h.probesInWindow) probes\(window) (≥\(policy.retireUnhealthyProbes) and ≥\(fmt(policy.retireUnhealthyShare * 100))%)"
        }
        if let year, currentYear - year >= policy.retireAgeYears, cu.nominal < policy.retireAgeMaxGCU {
            return "\(currentYear - year) years old (≥\(policy.retireAgeYears)) with \(fmt(cu.nominal)) GCU (<\(fmt(policy.retireAgeMaxGCU)))"
        }
        return nil
    }

    /// Grade from capability alone, and what the next better grade would have needed.
    static func capabilityGrade(
        gcu: Double, memoryGiB: Double?, known: Bool, estimated: Bool, policy: GradingPolicy
    ) -> (grade: DeviceGrade, missing: String?) {
        let mem = memoryGiB ?? 0
        let ladder: [DeviceGrade] = [.a, .b, .c]
        var reached = DeviceGrade.d
        for g in ladder {
            let t = policy.threshold(for: g)!
            let ok = known ? (gcu >= t.minGCU && mem >= t.minMemoryGiB) : mem >= t.minMemoryGiB
            if ok { reached = g; break }
        }
        // Caps: unknown models and estimated compute never reach A.
        let cap: DeviceGrade? =
            !known ? max(policy.unknownModelBestGrade, .b) : (estimated ? max(policy.estimatedBestGrade, .b) : nil)
        if let cap, reached < cap {
            let why = known ? "compute is an estimate" : "unknown model"
            return (cap, "capped at \(cap.rawValue) (\(why); capability reached \(reached.rawValue))")
        }
        guard reached != .a else { return (.a, nil) }
        // Explain the next better grade.
        let better = ladder[(ladder.firstIndex(of: reached) ?? ladder.count) - 1]
        let t = policy.threshold(for: better)!
        var needs: [String] = []
        if known && gcu < t.minGCU { needs.append("≥\(fmt(t.minGCU)) GCU") }
        if mem < t.minMemoryGiB { needs.append("≥\(fmt(t.minMemoryGiB)) GiB") }
        if memoryGiB == nil { needs.append("known memory") }
        return (reached, "below \(better.rawValue) (needs \(needs.joined(separator: " and ")))")
    }

    /// Lowers a grade for degraded / unhealthy / unknown health (never below D).
    static func applyHealth(
        _ grade: DeviceGrade, device: DeviceInventory, policy: GradingPolicy
    ) -> (DeviceGrade, String?) {
        let steps: Int
        switch device.health.state {
        case .healthy: steps = 0
        case .degraded: steps = policy.degradedGradeSteps
        case .unhealthy: steps = policy.unhealthyGradeSteps
        case .unknown: steps = policy.unknownHealthGradeSteps
        }
        guard steps > 0, grade < .d else { return (grade, nil) }
        let order: [DeviceGrade] = [.a, .b, .c, .d]
        let lowered = order[min(order.firstIndex(of: grade)! + steps, order.count - 1)]
        let why = device.health.reasons.map { $0.detail.isEmpty ? $0.kind.rawValue : "\($0.kind.rawValue): \($0.detail)" }
        let detail = why.isEmpty ? "" : " (\(why.joined(separator: ", ")))"
        return (lowered, "lowered from \(grade.rawValue): \(device.health.state.rawValue)\(detail)")
    }
}

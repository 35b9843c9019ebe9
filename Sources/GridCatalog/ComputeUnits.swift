import Foundation
import GridCore

/// Where a GCU figure comes from, best first.
public enum ComputeBasis: String, Sendable, Hashable, Codable {
    /// max(dense FP16, dense BF16) matrix/tensor peak from the catalog. Exact.
    case fp16Dense = "fp16_dense"
    /// 2 × FP32 vector peak (the row has no FP16/BF16 figure). Estimate.
    case fp32Doubled = "fp32_x2"
    /// INT8 dense TOPS / 2 (the row has no float figure). Estimate.
    case int8Halved = "int8_div2"
    /// The least capable catalog row of the same vendor with a dense FP16/BF16 figure and about
    /// the same memory (the row or model has no compute figure). Estimate.
    case peerEstimate = "peer_estimate"
    /// Memory (GiB) × `ComputeUnitPolicy.gcuPerGiBFallback`. Estimate.
    case memoryEstimate = "memory_estimate"
    /// Nothing to go on (no compute figure, no memory). GCU is 0.
    case none

    public var isEstimate: Bool { self != .fp16Dense }
}

/// How compute units are derated. Part of `GradingPolicy` (embedded in agent YAML config);
/// every key is optional when decoding.
public struct ComputeUnitPolicy: Codable, Sendable, Hashable {
    /// Multiplier for `HealthState.healthy`.
    public var healthyFactor: Double = 1.0
    /// Multiplier for `HealthState.degraded`.
    public var degradedFactor: Double = 0.5
    /// Multiplier for `HealthState.unknown` (nothing is promised on a device we cannot see).
    public var unknownFactor: Double = 0
    /// Multiplier for `HealthState.unhealthy`.
    public var unhealthyFactor: Double = 0
    /// GCU per GiB of memory when nothing better is known (no compute figure, no same-vendor
    /// peer of similar memory).
    public var gcuPerGiBFallback: Double = 1.0
    /// Compute slices of a whole GPU, for MIG profiles "<n>g.<mem>" without a computeFraction
    /// (7 on A100/H100/H200; A30 has 4).
    public var migSlicesPerGPU: Int = 7
    /// Peers for `ComputeBasis.peerEstimate` must have memory within this ratio of the device's.
    public var peerMemoryRatio: Double = 1.34

    public init() {}

    public func factor(for state: HealthState) -> Double {
        switch state {
        case .healthy: return healthyFactor
        case .degraded: return degradedFactor
        case .unknown: return unknownFactor
        case .unhealthy: return unhealthyFactor
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case healthyFactor = "healthy_factor"
        case degradedFactor = "degraded_factor"
        case unknownFactor = "unknown_factor"
        case unhealthyFactor = "unhealthy_factor"
        case gcuPerGiBFallback = "gcu_per_gib_fallback"
        case migSlicesPerGPU = "mig_slices_per_gpu"
        case peerMemoryRatio = "peer_memory_ratio"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ComputeUnitPolicy()
        healthyFactor = try c.value(.healthyFactor, default: d.healthyFactor)
        degradedFactor = try c.value(.degradedFactor, default: d.degradedFactor)
        unknownFactor = try c.value(.unknownFactor, default: d.unknownFactor)
        unhealthyFactor = try c.value(.unhealthyFactor, default: d.unhealthyFactor)
        gcuPerGiBFallback = try c.value(.gcuPerGiBFallback, default: d.gcuPerGiBFallback)
        migSlicesPerGPU = try c.value(.migSlicesPerGPU, default: d.migSlicesPerGPU)
        peerMemoryRatio = try c.value(.peerMemoryRatio, default: d.peerMemoryRatio)
        for (key, v) in [
            (CodingKeys.healthyFactor, healthyFactor), (.degradedFactor, degradedFactor),
            (.unknownFactor, unknownFactor), (.unhealthyFactor, unhealthyFactor),
        ] where !(0...1).contains(v) {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: c, debugDescription: "must be between 0 and 1, got \(v)")
        }
        guard gcuPerGiBFallback >= 0 else {
            throw DecodingError.dataCorruptedError(
                forKey: .gcuPerGiBFallback, in: c, debugDescription: "must not be negative")
        }
        guard migSlicesPerGPU > 0 else {
            throw DecodingError.dataCorruptedError(
                forKey: .migSlicesPerGPU, in: c, debugDescription: "must be at least 1")
        }
        guard peerMemoryRatio >= 1 else {
            throw DecodingError.dataCorruptedError(
                forKey: .peerMemoryRatio, in: c, debugDescription: "must be at least 1")
        }
    }
}

/// Compute units of one partition (MIG slice...).
public struct PartitionComputeUnits: Sendable, Hashable, Codable {
    public var id: String
    public var profile: String?
    /// Share of the parent's compute used (0...1).
    public var fraction: Double
    /// True when the fraction was derived (profile name or memory share), not reported.
    public var fractionEstimated: Bool
    public var nominal: Double
    public var effective: Double
    public var memoryGiB: Double?
}

/// Grid compute units (GCU) of one device. 1 GCU = 1 dense FP16/BF16 TFLOPS (see README).
public struct ComputeUnits: Sendable, Hashable, Codable {
    /// Peak GCU of what this device is (its share of a multi-die package), health not applied.
    public var nominal: Double
    /// `nominal` × health factor: what the scheduler may count on now.
    public var effective: Double
    public var healthFactor: Double
    public var basis: ComputeBasis
    /// True when `basis` is not a catalog dense FP16/BF16 figure, the model match is weak, or
    /// the model is unknown.
    public var estimated: Bool
    /// Share of the catalog product (1, or 1/dies for one die of a multi-die package).
    public var packageShare: Double
    public var partitions: [PartitionComputeUnits]
    /// How the figure was obtained, in words ("989.5 dense FP16/BF16 TFLOPS (H100 SXM5 80GB)").
    public var note: String
}

/// Turns catalog rows and device readings into GCU.
public enum ComputeUnitCalculator {
    /// Peak GCU of a catalog row from its own figures, or nil when the row has none.
    /// max(fp16, bf16) dense; else 2 × fp32; else int8 / 2.
    public static func peak(for spec: AcceleratorSpec) -> (gcu: Double, basis: ComputeBasis)? {
        let half = [spec.fp16DenseTFLOPS, spec.bf16DenseTFLOPS].compactMap { $0 }.max()
        if let half { return (half, .fp16Dense) }
        if let fp32 = spec.fp32TFLOPS { return (fp32 * 2, .fp32Doubled) }
        if let int8 = spec.int8DenseTOPS { return (int8 / 2, .int8Halved) }
        return nil
    }

    /// Conservative GCU for a device we have no compute figure for: the least capable row of
    /// the same vendor with a dense FP16/BF16 figure and memory (whole package or one die)
    /// within `ratio` of `memoryGiB`; nil when there is no such row.
    public static func peerEstimate(
        catalog: AcceleratorCatalog, vendor: AcceleratorVendor, memoryGiB: Double, ratio: Double
    ) -> (gcu: Double, peer: AcceleratorSpec)? {
        guard vendor != .unknown, memoryGiB > 0 else { return nil }
        var best: (gcu: Double, peer: AcceleratorSpec)?
        for spec in catalog.specs where spec.acceleratorVendor == vendor {
            guard let p = peak(for: spec), p.basis == .fp16Dense, let gb = spec.memoryGB else { continue }
            // Compare per die for multi-die packages.
            for (mem, share) in [(gb, 1.0), (gb / Double(spec.diesPerPackage), 1 / Double(spec.diesPerPackage))] {
                let r = mem / memoryGiB
                guard r <= ratio, r >= 1 / ratio else { continue }
                let gcu = p.gcu * share
                if best == nil || gcu < best!.gcu { best = (gcu, spec) }
            }
        }
        return best
    }

    /// GCU for a device: catalog peak × package share, derated by health, split per partition.
    /// Pass the match from `catalog.match(device)` (nil for an unknown model).
    public static func computeUnits(
        for device: DeviceInventory, match: CatalogMatch?, catalog: AcceleratorCatalog,
        policy: ComputeUnitPolicy = ComputeUnitPolicy()
    ) -> ComputeUnits {
        let share = match?.packageShare ?? 1
        let memoryGiB = deviceMemoryGiB(device, match: match)
        var nominal = 0.0
        var basis = ComputeBasis.none
        var note: String
        if let spec = match?.spec, let p = peak(for: spec) {
            nominal = p.gcu * share
            basis = p.basis
            switch p.basis {
            case .fp16Dense: note = "\(fmt(p.gcu)) dense FP16/BF16 TFLOPS (\(spec.model))"
            case .fp32Doubled: note = "2 × \(fmt(spec.fp32TFLOPS ?? 0)) FP32 TFLOPS (\(spec.model) has no FP16/BF16 figure)"
            default: note = "\(fmt(spec.int8DenseTOPS ?? 0)) INT8 TOPS / 2 (\(spec.model) has no float figure)"
            }
            if share < 1 { note += ", × \(fmt(share)) (one die of \(spec.diesPerPackage))" }
        } else if let memoryGiB,
            let peer = peerEstimate(
                catalog: catalog, vendor: match?.spec.acceleratorVendor ?? device.vendor,
                memoryGiB: memoryGiB, ratio: policy.peerMemoryRatio)
        {
            nominal = peer.gcu
            basis = .peerEstimate
            note = "\(fmt(peer.gcu)) from the least capable \(peer.peer.vendor) peer with similar memory (\(peer.peer.model))"
        } else if let memoryGiB {
            nominal = memoryGiB * policy.gcuPerGiBFallback
            basis = .memoryEstimate
            note = "from memory: \(fmt(memoryGiB)) GiB × \(fmt(policy.gcuPerGiBFallback)) GCU/GiB"
        } else {
            note = "no compute figure and no memory reported"
        }
        if match == nil { note = "unknown model; " + note }
        let factor = policy.factor(for: device.health.state)
        let partitions = device.partitions.map { part -> PartitionComputeUnits in
            let (fraction, estimated) = partitionFraction(part, device: device, policy: policy)
            return PartitionComputeUnits(
                id: part.id, profile: part.profile, fraction: fraction, fractionEstimated: estimated,
                nominal: nominal * fraction, effective: nominal * fraction * factor,
                memoryGiB: part.memoryTotalMiB.map { Double($0) / 1024 } ?? memoryGiB.map { $0 * fraction })
        }
        return ComputeUnits(
            nominal: nominal, effective: nominal * factor, healthFactor: factor, basis: basis,
            estimated: basis.isEstimate || match == nil || (match?.isWeak ?? false),
            packageShare: share, partitions: partitions, note: note)
    }

    /// Memory of the device in GiB: what it reports, else the catalog figure × package share.
    public static func deviceMemoryGiB(_ device: DeviceInventory, match: CatalogMatch?) -> Double? {
        if let mib = device.memoryTotalMiB, mib > 0 { return Double(mib) / 1024 }
        guard let spec = match?.spec, let gib = spec.memoryGiB else { return nil }
        return gib * (match?.packageShare ?? 1)
    }

    /// A partition's compute fraction: reported; else from a MIG profile "<n>g.<mem>" as
    /// n / migSlicesPerGPU; else its memory share of the device; else 0.
    public static func partitionFraction(
        _ part: DevicePartition, device: DeviceInventory, policy: ComputeUnitPolicy
    ) -> (fraction: Double, estimated: Bool) {
        if let f = part.computeFraction { return (min(max(f, 0), 1), false) }
        if let profile = part.profile?.lowercased(), let g = profile.firstIndex(of: "g"),
            let n = Int(profile[..<g]), n > 0, policy.migSlicesPerGPU > 0
        {
            return (min(Double(n) / Double(policy.migSlicesPerGPU), 1), true)
        }
        if let pm = part.memoryTotalMiB, let dm = device.memoryTotalMiB, dm > 0 {
            return (min(Double(pm) / Double(dm), 1), true)
        }
        return (0, true)
    }
}

/// Compact number formatting for reasons: integers without decimals; below 10 up to two
/// decimals, else one.
func fmt(_ v: Double) -> String {
    if v.rounded() == v, abs(v) < 1e15 { return String(Int(v)) }
    var s = String(format: abs(v) < 10 ? "%.2f" : "%.1f", v)
    while s.hasSuffix("0") { s.removeLast() }
    if s.hasSuffix(".") { s.removeLast() }
    return s
}

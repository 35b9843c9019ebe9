import Foundation
import GridCore

/// A transformer's shape, as given in the job or estimated from its parameter count.
public struct ModelArchitecture: Sendable, Hashable {
    public var layers: Int
    public var hiddenSize: Int
    public var attentionHeads: Int
    public var kvHeads: Int
    /// Whether any dimension was estimated rather than given.
    public var estimated: Bool
}

/// Memory a model needs at one precision, over all the job's devices, in bytes (the runtime
/// reserve is per device).
public struct MemoryEstimate: Sendable, Hashable {
    public var precision: Precision
    public var weights: Double
    /// Inference: the KV cache. Training: 0.
    public var kvCache: Double
    /// Inference: activations and buffers. Training: stored activations.
    public var activations: Double
    /// Training: gradients and optimizer state (Adam). Inference: 0.
    public var optimizerState: Double
    public var total: Double { weights + kvCache + activations + optimizerState }

    /// Memory each of `devices` devices needs, MiB: an even share (tensor parallelism for
    /// inference, ZeRO-3/FSDP sharding for training) plus the runtime reserve.
    public func perDeviceMiB(devices: Int) -> Int {
        let share = total / Double(max(1, devices)) / 1_048_576
        return Int(min(1e12, share.rounded(.up))) + ModelFit.runtimeReserveMiB
    }
}

/// Fits a `model` job to devices (issue "Regional scheduling", item 7; formulas and sources in
/// JOBS.md, "Model fit"): memory per precision from weights, KV cache, activations and
/// optimizer state; compute from FLOPs per token. The region places the job through the
/// options this returns, one per allowed precision, and keeps the precision of the option
/// that placed it.
public enum ModelFit {
    /// Per-device memory a framework takes before the model (CUDA context, allocator, comms).
    public static let runtimeReserveMiB = 1024
    /// Inference activations and buffers as a share of weights (Transformer Math 101: total
    /// inference memory ≈ 1.2 × weights, before the KV cache).
    public static let inferenceOverhead = 0.2
    /// Model FLOPs utilisation assumed when turning tokens/s into compute.
    public static let utilisation = 0.4

    /// The given shape, or one estimated from the parameter count: a transformer has about
    /// 12·L·d² parameters (Kaplan et al. 2020) and d/L ≈ 128 across common models; heads of 128.
    public static func architecture(_ m: ModelRequirement) -> ModelArchitecture {
        let p = max(1e6, m.parameters)
        let layers = m.layers ?? max(1, Int((cbrt(p / (12 * 128 * 128))).rounded()))
        let hidden = m.hiddenSize ?? max(128, Int((sqrt(p / (12 * Double(layers))) / 128).rounded()) * 128)
        let heads = m.attentionHeads ?? max(1, hidden / 128)
        return ModelArchitecture(layers: layers, hiddenSize: hidden, attentionHeads: heads, kvHeads: min(heads, m.kvHeads ?? heads),
                                 estimated: m.layers == nil || m.hiddenSize == nil || m.attentionHeads == nil)
    }

    public static func memory(_ m: ModelRequirement, at precision: Precision) -> MemoryEstimate {
        let a = architecture(m)
        let p = m.parameters
        let s = Double(m.contextTokens), b = Double(m.batchSize)
        let h = Double(a.hiddenSize), l = Double(a.layers), heads = Double(a.attentionHeads)
        switch m.workload {
        case .inference:
            let weights = p * precision.bytesPerParameter
            // K and V per layer per token, kept at 16 bits (32 for an fp32 model).
            let kvBytes: Double = precision == .fp32 ? 4 : 2
            let kv = 2 * l * (h * Double(a.kvHeads) / heads) * s * b * kvBytes
            return MemoryEstimate(precision: precision, weights: weights, kvCache: kv, activations: inferenceOverhead * weights, optimizerState: 0)
        case .training:
            // Mixed precision with Adam: 2 (weights) + 2 (gradients) + 12 (fp32 master, m, v)
            // bytes per parameter; fp32: 4 + 4 + 8 (ZeRO, Rajbhandari et al. 2020).
            let weights = p * precision.bytesPerParameter
            let state = p * 16 - weights
            // Stored activations per layer, 16-bit, no parallelism: s·b·h·(34 + 5·a·s/h)
            // (Korthikanti et al. 2022); full recomputation keeps each layer's input (2·s·b·h)
            // plus one layer's activations while it is recomputed.
            let perLayer = s * b * h * (34 + 5 * heads * s / h)
            let width: Double = precision == .fp32 ? 2 : 1
            let acts = (m.activationCheckpointing ? l * 2 * s * b * h + perLayer : l * perLayer) * width
            return MemoryEstimate(precision: precision, weights: weights, kvCache: 0, activations: acts, optimizerState: state)
        }
    }

    /// Compute the job needs over all its devices, GCU: FLOPs per token (2·N to serve, 6·N to
    /// train; Kaplan et al. 2020) × tokens/s ÷ 10¹² ÷ `utilisation`. nil without a throughput.
    public static func computeGCU(_ m: ModelRequirement) -> Double? {
        guard let tps = m.tokensPerSecond else { return nil }
        let flopsPerToken = (m.workload == .inference ? 2 : 6) * m.parameters
        return flopsPerToken * tps / 1e12 / utilisation
    }

    /// One way to run the job: at `precision`, on devices that each have `perDeviceMiB`.
    public struct Option: Sendable, Hashable {
        public var precision: Precision
        public var perDeviceMiB: Int
        public var request: AcceleratorRequest
    }

    /// The job's ways to run, most precise first; one option (precision nil) for a job without
    /// a model.
    public static func options(for spec: JobSpec) -> [Option] {
        guard let m = spec.model else { return [] }
        let count = max(1, spec.accelerators.count)
        let compute = computeGCU(m)
        return Set(m.precisions).sorted().map { p in
            let mib = memory(m, at: p).perDeviceMiB(devices: count)
            var r = spec.accelerators
            r.minMemoryMiB = max(r.minMemoryMiB ?? 0, mib)
            if let compute { r.minTotalGCU = max(r.minTotalGCU ?? 0, compute) }
            return Option(precision: p, perDeviceMiB: mib, request: r)
        }
    }

    /// What placement tries for the job: one request per option, or the job's own request.
    public static func requests(for spec: JobSpec) -> [AcceleratorRequest] {
        spec.model == nil ? [spec.accelerators] : options(for: spec).map(\.request)
    }

    /// The precisions the job does not allow, most precise first, with what each would need
    /// per device: for "fits only at int4 (7,410 MiB per device), which the job does not allow".
    public static func disallowedOptions(for spec: JobSpec) -> [Option] {
        guard var m = spec.model else { return [] }
        let allowed = Set(m.precisions)
        m.precisions = Precision.allCases.filter { !allowed.contains($0) && (m.workload == .inference || $0.trainable) }
        var other = spec
        other.model = m
        return m.precisions.isEmpty ? [] : options(for: other)
    }
}

import Foundation

/// A numeric format the job's model may run in, most precise first.
public enum Precision: String, Codable, Sendable, Hashable, CaseIterable, Comparable {
    case fp32, bf16, fp16, int8, int4

    /// Bytes one parameter takes in this format. int4 counts the per-group scales of common
    /// 4-bit formats (GPTQ/AWQ with groups of 128 and an fp16 scale and zero point: 4.25 bits).
    public var bytesPerParameter: Double {
        switch self {
        case .fp32: return 4
        case .bf16, .fp16: return 2
        case .int8: return 1
        case .int4: return 4.25 / 8
        }
    }

    /// Whether weights in this format can be trained (int8/int4 are for inference).
    public var trainable: Bool { self == .fp32 || self == .bf16 || self == .fp16 }

    var rank: Int { Self.allCases.firstIndex(of: self)! }
    /// More precise first: fp32 < bf16 < fp16 < int8 < int4.
    public static func < (a: Precision, b: Precision) -> Bool { a.rank < b.rank }
}

/// What the model is used for: serving (weights, KV cache, activations) or training (weights,
/// gradients, optimizer state, activations).
public enum ModelWorkload: String, Codable, Sendable, Hashable, CaseIterable {
    case inference, training
}

/// The model a job runs, for fitting it to devices: the scheduler estimates memory per device
/// for each allowed precision and places the job at the precision and grade that fit while
/// using the least frontier capacity (ModelFit in GridScheduler; the formulas are in JOBS.md).
public struct ModelRequirement: Codable, Sendable, Hashable {
    /// Informational ("llama-2-13b"); shown, not used for fitting.
    public var name: String?
    /// Parameter count (13e9 for a 13B model).
    public var parameters: Double
    /// Precisions the job can run at; the scheduler picks among them. Default: bf16 only.
    public var precisions: [Precision]
    public var workload: ModelWorkload
    /// Tokens per sequence (prompt + generated for inference, sequence length for training).
    public var contextTokens: Int
    /// Sequences at once (concurrent requests for inference, micro-batch for training).
    public var batchSize: Int
    /// Architecture; estimated from the parameter count when absent (JOBS.md, "Model fit").
    public var layers: Int?
    public var hiddenSize: Int?
    public var attentionHeads: Int?
    /// Key/value heads (grouped-query attention); default = attention heads.
    public var kvHeads: Int?
    /// Training only: activations recomputed in the backward pass (keeps one layer's input each).
    public var activationCheckpointing: Bool
    /// Throughput the job needs, tokens/s over all its devices; sets a compute need in GCU.
    public var tokensPerSecond: Double?

    public init(name: String? = nil, parameters: Double, precisions: [Precision] = [.bf16], workload: ModelWorkload = .inference,
                contextTokens: Int = 4096, batchSize: Int = 1, layers: Int? = nil, hiddenSize: Int? = nil,
                attentionHeads: Int? = nil, kvHeads: Int? = nil, activationCheckpointing: Bool = false,
                tokensPerSecond: Double? = nil) {
        self.name = name
        self.parameters = parameters
        self.precisions = precisions
        self.workload = workload
        self.contextTokens = contextTokens
        self.batchSize = batchSize
        self.layers = layers
        self.hiddenSize = hiddenSize
        self.attentionHeads = attentionHeads
        self.kvHeads = kvHeads
        self.activationCheckpointing = activationCheckpointing
        self.tokensPerSecond = tokensPerSecond
    }

    public static let parameterRange = 1e6...1e13
    public static let contextRange = 1...10_000_000
    public static let batchRange = 1...1_000_000

    /// Every problem, each naming its key under `model.`.
    public func problems() -> [String] {
        var out: [String] = []
        if !parameters.isFinite || !Self.parameterRange.contains(parameters) {
            out.append("model.parameters: 1M…10T parameters (e.g. 13B or 13e9), got \(parameters)")
        }
        if precisions.isEmpty { out.append("model.precisions: at least one of \(Precision.allCases.map(\.rawValue).joined(separator: ", "))") }
        if workload == .training, let bad = precisions.first(where: { !$0.trainable }) {
            out.append("model.precisions: \(bad.rawValue) is for inference; training runs at fp32, bf16 or fp16")
        }
        if !Self.contextRange.contains(contextTokens) { out.append("model.context: 1…10,000,000 tokens, got \(contextTokens)") }
        if !Self.batchRange.contains(batchSize) { out.append("model.batch: 1…1,000,000, got \(batchSize)") }
        for (key, v, range) in [("layers", layers, 1...10_000), ("hidden", hiddenSize, 1...1_000_000),
                                ("heads", attentionHeads, 1...100_000), ("kv_heads", kvHeads, 1...100_000)] {
            if let v, !range.contains(v) { out.append("model.\(key): \(range.lowerBound)…\(range.upperBound), got \(v)") }
        }
        if let h = attentionHeads, let kv = kvHeads, kv > h { out.append("model.kv_heads: at most heads (\(h)), got \(kv)") }
        if let h = hiddenSize, let a = attentionHeads, a > 0, h % a != 0 { out.append("model.hidden: \(h) is not a multiple of heads (\(a))") }
        if let t = tokensPerSecond, !(t.isFinite && t > 0 && t <= 1e9) { out.append("model.tokens_per_second: > 0 and at most 1e9, got \(t)") }
        return out
    }
}

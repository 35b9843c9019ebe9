import Foundation
import GridCore
import Yams

/// A job file as users write it (YAML). Keys:
///
///     name: matmul                # default: the file name without extension
///     command: python3            # required; looked up on the node's PATH
///     args: ["train.py", "--epochs", "1"]
///     env: {BATCH: "64"}
///     accelerators:               # default: count 1, any vendor/model/memory
///       count: 2
///       vendor: nvidia            # nvidia|amd|hygon|huawei|intel|habana|iluvatar
///       model: A100               # case-insensitive substring of the device model
///       min_memory: 40GiB         # MiB if a bare number; KiB/MiB/GiB/TiB and KB/MB/GB/TB accepted
///       min_grade: C              # least capable grade accepted (A frontier … D edge); default any
///       max_grade: B              # most capable grade allowed (B: keep off frontier A parts)
///       partition: 1g.10gb        # a MIG slice of that profile (or any) instead of whole devices
///       min_gcu: 100              # least compute per device, GCU (1 GCU = 1 dense FP16 TFLOPS)
///       min_total_gcu: 400        # least compute over all the job's devices, GCU
///       interconnect: same_numa   # any (default) | same_numa: all devices on one NUMA node | nvlink / xgmi: all NVLink / xGMI peers
///     nodes: 4                    # gang: 4 distinct nodes at once, `accelerators` on each (1…1024, default 1)
///     model:                      # fit a model to devices and choose its precision (JOBS.md)
///       parameters: 13B
///       precisions: [bf16, int8]  # allowed; the scheduler sets GRID_PRECISION to its choice
///       workload: inference       # inference | training
///       context: 4096             # tokens per sequence
///       batch: 8                  # sequences at once
///     timeout_seconds: 3600
///     allowed_regions: [guizhou, ningxia]
///     max_attempts: 3             # runs in all when runs are lost to faults (1...100)
///     retry_backoff_seconds: 5    # wait before the first retry; doubles, at most 300 s
///     requeue: never              # always (default) | never: a lost run ends the job `lost`
///     on_lease_loss: keep         # stop (default) | keep: safe to run twice, not fenced
///     priority: high              # −1000…1000 or low (−100) | normal (0) | high (100) | critical (1000)
///     account: ml-research        # charged account: quotas and fair share (default: default)
///
/// What the national scheduler weighs when it chooses a region and an hour (all optional):
///
///     origin: yrd                 # region holding the data and users (transfer, latency)
///     data_gb: 120                # data moved to the region that runs the job
///     jurisdictions: [CN-SH]      # where the data may be processed (data residency)
///     latency_slo_ms: 20          # most RTT from origin
///     objective: cost             # cost | carbon | latency | balanced, or weights:
///                                 #   {energy: 1, carbon: 10, transfer: 1, wait: 1}
///     deadline: +12h              # RFC 3339 time, or +N[smhd] from submission
///     run_time: 4h                # run-time estimate: N[smhd] or seconds (default: timeout, else 1h)
///     kw_per_device: 0.7          # power per device (default: the scheduler's)
extension KeyedDecodingContainer {
    /// A value written as a number or as text with a unit (`4h`, `40GiB`, `13B`, `high`), as text.
    func numberOrText(_ key: Key) throws -> String? {
        if let n = try? decodeIfPresent(Int.self, forKey: key) { return String(n) }
        if let d = try? decodeIfPresent(Double.self, forKey: key) { return String(d) }
        return try tolerant(String.self, forKey: key)
    }
}

public enum JobFile {
    /// Keys a service file adds to a job file's (ServiceFile), at the top level and under `model`.
    @TaskLocal static var extraKeys: (top: [String], model: [String]) = ([], [])

    struct Raw: Decodable {
        var name: String?
        var command: String?
        var args: [String]?
        var env: [String: String]?
        var accelerators: RawAccelerators?
        var timeoutSeconds: Int?
        var allowedRegions: [String]?
        var count: Int?
        var maxAttempts: Int?
        var retryBackoffSeconds: Int?
        var requeue: String?
        var onLeaseLoss: String?
        var origin: String?
        var dataGB: Double?
        var jurisdictions: [String]?
        var latencySLOMs: Double?
        var objective: String?
        var objectiveWeights: [String: Double]?
        var deadline: String?
        var runTime: String?
        var kwPerDevice: Double?
        var priority: String?
        var model: RawModel?
        var account: String?
        var nodes: Int?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, command, args, env, accelerators, count, requeue, origin, jurisdictions, objective, deadline, priority, model, account, nodes
            case dataGB = "data_gb"
            case latencySLOMs = "latency_slo_ms"
            case runTime = "run_time"
            case kwPerDevice = "kw_per_device"
            case timeoutSeconds = "timeout_seconds"
            case allowedRegions = "allowed_regions"
            case maxAttempts = "max_attempts"
            case retryBackoffSeconds = "retry_backoff_seconds"
            case onLeaseLoss = "on_lease_loss"
        }

        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue) + JobFile.extraKeys.top)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.tolerant(String.self, forKey: .name)
            command = try c.tolerant(String.self, forKey: .command)
            args = try c.tolerant([String].self, forKey: .args)
            env = try c.tolerant([String: String].self, forKey: .env)
            accelerators = try c.tolerant(RawAccelerators.self, forKey: .accelerators)
            timeoutSeconds = try c.tolerant(Int.self, forKey: .timeoutSeconds)
            allowedRegions = try c.tolerant([String].self, forKey: .allowedRegions)
            count = try c.tolerant(Int.self, forKey: .count)
            maxAttempts = try c.tolerant(Int.self, forKey: .maxAttempts)
            retryBackoffSeconds = try c.tolerant(Int.self, forKey: .retryBackoffSeconds)
            requeue = try c.tolerant(String.self, forKey: .requeue)
            onLeaseLoss = try c.tolerant(String.self, forKey: .onLeaseLoss)
            origin = try c.tolerant(String.self, forKey: .origin)
            dataGB = try c.tolerant(Double.self, forKey: .dataGB)
            jurisdictions = try c.tolerant([String].self, forKey: .jurisdictions)
            latencySLOMs = try c.tolerant(Double.self, forKey: .latencySLOMs)
            if let w = try? c.decodeIfPresent([String: Double].self, forKey: .objective) {
                objectiveWeights = w
            } else {
                objective = try c.tolerant(String.self, forKey: .objective)
            }
            deadline = try c.tolerant(String.self, forKey: .deadline)
            runTime = try c.numberOrText(.runTime)
            kwPerDevice = try c.tolerant(Double.self, forKey: .kwPerDevice)
            priority = try c.numberOrText(.priority)
            model = try c.tolerant(RawModel.self, forKey: .model)
            account = try c.tolerant(String.self, forKey: .account)
            nodes = try c.tolerant(Int.self, forKey: .nodes)
        }
    }

    struct RawModel: Decodable {
        var name: String?
        var parameters: String?
        var precisions: [String]?
        var workload: String?
        var context: Int?
        var batch: Int?
        var layers: Int?
        var hidden: Int?
        var heads: Int?
        var kvHeads: Int?
        var activationCheckpointing: Bool?
        var tokensPerSecond: Double?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, parameters, precisions, workload, context, batch, layers, hidden, heads
            case kvHeads = "kv_heads"
            case activationCheckpointing = "activation_checkpointing"
            case tokensPerSecond = "tokens_per_second"
        }

        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue) + JobFile.extraKeys.model)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.tolerant(String.self, forKey: .name)
            parameters = try c.numberOrText(.parameters)
            if let one = try? c.decodeIfPresent(String.self, forKey: .precisions) {
                precisions = [one]
            } else {
                precisions = try c.tolerant([String].self, forKey: .precisions)
            }
            workload = try c.tolerant(String.self, forKey: .workload)
            context = try c.tolerant(Int.self, forKey: .context)
            batch = try c.tolerant(Int.self, forKey: .batch)
            layers = try c.tolerant(Int.self, forKey: .layers)
            hidden = try c.tolerant(Int.self, forKey: .hidden)
            heads = try c.tolerant(Int.self, forKey: .heads)
            kvHeads = try c.tolerant(Int.self, forKey: .kvHeads)
            activationCheckpointing = try c.tolerant(Bool.self, forKey: .activationCheckpointing)
            tokensPerSecond = try c.tolerant(Double.self, forKey: .tokensPerSecond)
        }
    }

    struct RawAccelerators: Decodable {
        var count: Int?
        var vendor: String?
        var model: String?
        var minMemory: String?
        var minGrade: String?
        var maxGrade: String?
        var partition: String?
        var minGCU: Double?
        var minTotalGCU: Double?
        var interconnect: String?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case count, vendor, model, partition, interconnect
            case minGCU = "min_gcu"
            case minTotalGCU = "min_total_gcu"
            case minMemory = "min_memory"
            case minGrade = "min_grade"
            case maxGrade = "max_grade"
        }

        init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            count = try c.tolerant(Int.self, forKey: .count)
            vendor = try c.tolerant(String.self, forKey: .vendor)
            model = try c.tolerant(String.self, forKey: .model)
            minMemory = try c.numberOrText(.minMemory)
            minGrade = try c.tolerant(String.self, forKey: .minGrade)
            maxGrade = try c.tolerant(String.self, forKey: .maxGrade)
            partition = try c.tolerant(String.self, forKey: .partition)
            minGCU = try c.tolerant(Double.self, forKey: .minGCU)
            minTotalGCU = try c.tolerant(Double.self, forKey: .minTotalGCU)
            interconnect = try c.tolerant(String.self, forKey: .interconnect)
        }
    }

    /// Parses and validates a job file; errors name the file and every problem found.
    /// Most jobs one file may ask for with `count:` (a job array).
    public static let maxArray = 100_000

    public static func parse(_ text: String, source: String, now: Date = Date()) throws -> JobSpec {
        try parseEntry(text, source: source, now: now).spec
    }

    /// The spec and how many copies the file asks for (`count:`, default 1): a job array whose
    /// members get ids `<id>-0` … `<id>-<count-1>`.
    public static func parseEntry(_ text: String, source: String, now: Date = Date()) throws -> (spec: JobSpec, count: Int) {
        // Every syntax, key and type problem at once, each with its line and column.
        let decoded = try ConfigFile.decode(Raw.self, from: text, source: source)
        let (raw, node) = (decoded.value, decoded.node)
        let (spec, built) = build(raw, source: source, now: now)
        var problems = built
        if let n = raw.count, !(1...maxArray).contains(n) {
            problems.append("count: must be 1...\(maxArray) (jobs in the array), got \(n)")
        }
        let all = ConfigFile.inFileOrder(decoded.problems + ConfigFile.locate(problems, in: node))
        if !all.isEmpty { throw ConfigError(source: source, problems: all) }
        return (spec, raw.count ?? 1)
    }

    /// The spec a decoded job file describes, and every problem with it (each starting with
    /// its key path, for `ConfigFile.locate`).
    static func build(_ raw: Raw, source: String, now: Date) -> (JobSpec, [String]) {
        var problems: [String] = []
        var request = AcceleratorRequest(count: raw.accelerators?.count ?? 1)
        if let v = raw.accelerators?.vendor {
            if let vendor = AcceleratorVendor(loose: v) { request.vendor = vendor } else {
                problems.append("accelerators.vendor: '\(v)' is not one of \(AcceleratorVendor.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        request.model = raw.accelerators?.model
        request.partition = raw.accelerators?.partition
        request.minGCU = raw.accelerators?.minGCU
        request.minTotalGCU = raw.accelerators?.minTotalGCU
        if let i = raw.accelerators?.interconnect {
            if let v = InterconnectRequirement(rawValue: i.lowercased()) { request.interconnect = v } else {
                problems.append("accelerators.interconnect: '\(i)' is not one of any, same_numa, nvlink, xgmi")
            }
        }
        if let m = raw.accelerators?.minMemory {
            if let mib = parseMemoryMiB(m) { request.minMemoryMiB = mib } else {
                problems.append("accelerators.min_memory: '\(m)' is not a size (e.g. 40GiB, 16000MiB, or a number of MiB)")
            }
        }
        for (key, text, set) in [("min_grade", raw.accelerators?.minGrade, { (r: inout AcceleratorRequest, g: DeviceGrade) in r.minGrade = g }),
                                 ("max_grade", raw.accelerators?.maxGrade, { (r: inout AcceleratorRequest, g: DeviceGrade) in r.maxGrade = g })] {
            guard let text else { continue }
            if let g = DeviceGrade(rawValue: text.uppercased()), g != .r { set(&request, g) } else {
                problems.append("accelerators.\(key): '\(text)' is not one of A, B, C, D")
            }
        }
        var retry = RetryPolicy()
        if let n = raw.maxAttempts { retry.maxAttempts = n }
        if let n = raw.retryBackoffSeconds { retry.backoffSeconds = n }
        switch raw.requeue {
        case nil, "always": break
        case "never": retry.requeueNever = true
        case let other?: problems.append("requeue: '\(other)' is not one of always, never")
        }
        switch raw.onLeaseLoss {
        case nil, "stop": break
        case "keep": retry.keepOnLeaseLoss = true
        case let other?: problems.append("on_lease_loss: '\(other)' is not one of stop, keep")
        }
        var routing = RoutingRequest()
        routing.origin = raw.origin.map(RegionID.init)
        routing.dataGB = raw.dataGB ?? 0
        routing.jurisdictions = raw.jurisdictions ?? []
        routing.latencySLOMs = raw.latencySLOMs
        routing.kwPerDevice = raw.kwPerDevice
        if let w = raw.objectiveWeights {
            let keys = ["energy", "carbon", "transfer", "wait"]
            for k in w.keys where !keys.contains(k) { problems.append("objective.\(k): not one of \(keys.joined(separator: ", "))") }
            routing.objective = .weights(energy: w["energy"] ?? 0, carbon: w["carbon"] ?? 0, transfer: w["transfer"] ?? 0, wait: w["wait"] ?? 0)
        } else if let o = raw.objective {
            if let v = RoutingObjective(name: o) { routing.objective = v } else {
                problems.append("objective: '\(o)' is not one of \(RoutingObjective.names.joined(separator: ", ")), or weights {energy, carbon, transfer, wait}")
            }
        }
        if let d = raw.deadline {
            if d.hasPrefix("+"), let secs = parseDuration(String(d.dropFirst())) {
                routing.deadline = now.addingTimeInterval(Double(secs))
            } else if let date = ISO8601DateFormatter().date(from: d) {
                routing.deadline = date
            } else {
                problems.append("deadline: '\(d)' is neither an RFC 3339 time (2026-12-03T06:00:00Z) nor +N[smhd] from now (+12h)")
            }
        }
        if let r = raw.runTime {
            if let secs = parseDuration(r) { routing.runSeconds = secs } else {
                problems.append("run_time: '\(r)' is not a duration (4h, 90m, 3600s, or seconds)")
            }
        }
        var priority = 0
        if let p = raw.priority {
            let named = ["low": -100, "normal": 0, "high": 100, "critical": 1000]
            if let n = Int(p) ?? named[p.lowercased()] { priority = n } else {
                problems.append("priority: '\(p)' is not a number (−1000…1000) or one of low, normal, high, critical")
            }
        }
        var model: ModelRequirement?
        if let rm = raw.model {
            var m = ModelRequirement(name: rm.name, parameters: 0)
            if let text = rm.parameters {
                if let n = parseCount(text) { m.parameters = n } else {
                    problems.append("model.parameters: '\(text)' is not a count (13B, 350M, 1.5T or 13e9)")
                }
            } else {
                problems.append("model.parameters: required (the parameter count, e.g. 13B)")
            }
            if let list = rm.precisions {
                var ps: [Precision] = []
                for t in list {
                    if let p = Precision(rawValue: t.lowercased()) { ps.append(p) } else {
                        problems.append("model.precisions: '\(t)' is not one of \(Precision.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                }
                m.precisions = ps
            }
            if let w = rm.workload {
                if let v = ModelWorkload(rawValue: w.lowercased()) { m.workload = v } else {
                    problems.append("model.workload: '\(w)' is not one of inference, training")
                }
            }
            if let v = rm.context { m.contextTokens = v }
            if let v = rm.batch { m.batchSize = v }
            m.layers = rm.layers
            m.hiddenSize = rm.hidden
            m.attentionHeads = rm.heads
            m.kvHeads = rm.kvHeads
            m.activationCheckpointing = rm.activationCheckpointing ?? false
            m.tokensPerSecond = rm.tokensPerSecond
            model = m
        }
        let defaultName = URL(fileURLWithPath: source).deletingPathExtension().lastPathComponent
        var spec = JobSpec(
            name: raw.name ?? defaultName, command: raw.command ?? "", args: raw.args ?? [], env: raw.env ?? [:],
            accelerators: request, timeoutSeconds: raw.timeoutSeconds,
            allowedRegions: (raw.allowedRegions ?? []).map(RegionID.init), retry: retry, routing: routing, priority: priority, model: model,
            account: raw.account ?? "")
        spec.nodes = raw.nodes ?? 1
        if raw.command == nil { problems.append("command: required (the program to run, e.g. python3)") }
        problems += spec.problems().filter {
            !($0.hasPrefix("command:") && raw.command == nil) && !($0.hasPrefix("model.parameters:") && (model?.parameters ?? 1) == 0)
        }
        return (spec, problems)
    }

    /// "13B" → 1.3e10, "350M" → 3.5e8, "1.5T", "7e9" or "7000000000"; nil for anything else.
    public static func parseCount(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let scale: Double
        var digits = Substring(t)
        switch t.last {
        case "K": scale = 1e3
        case "M": scale = 1e6
        case "B", "G": scale = 1e9
        case "T": scale = 1e12
        default: scale = 1
        }
        if scale != 1 { digits = digits.dropLast() }
        guard let v = Double(digits), v.isFinite, v > 0 else { return nil }
        return v * scale
    }

    /// "4h" → 14400, "90m" → 5400, "30s" / "30" → 30, "2d" → 172800; nil for anything else.
    public static func parseDuration(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = t.prefix { $0.isNumber || $0 == "." }
        guard let value = Double(digits), value.isFinite, value >= 0 else { return nil }
        let unit: Double
        switch t.dropFirst(digits.count) {
        case "", "s": unit = 1
        case "m": unit = 60
        case "h": unit = 3600
        case "d": unit = 86_400
        default: return nil
        }
        let secs = (value * unit).rounded(.up)
        return secs < 1e9 ? Int(secs) : nil
    }

    /// "40GiB" → 40960; "16000" → 16000 (MiB); decimal units are converted exactly and rounded up.
    public static func parseMemoryMiB(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let digits = t.prefix { $0.isNumber || $0 == "." }
        guard let value = Double(digits), value >= 0, value.isFinite else { return nil }
        let unit = t.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        let bytes: Double
        switch unit {
        case "", "mib", "mi", "m": bytes = value * 1_048_576
        case "kib", "ki", "k": bytes = value * 1024
        case "gib", "gi", "g": bytes = value * 1_073_741_824
        case "tib", "ti", "t": bytes = value * 1_099_511_627_776
        case "kb": bytes = value * 1e3
        case "mb": bytes = value * 1e6
        case "gb": bytes = value * 1e9
        case "tb": bytes = value * 1e12
        default: return nil
        }
        let mib = (bytes / 1_048_576).rounded(.up)
        return mib < 1e12 ? Int(mib) : nil
    }
}

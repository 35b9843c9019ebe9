import GridCore

/// Thresholds and rules for device grades. Embedded in the agent's YAML config: every key is
/// optional and falls back to the default documented on it (and in README.md).
public struct GradingPolicy: Codable, Sendable, Hashable {
    /// What a device (or slice) needs for a grade: nominal GCU and memory, both inclusive.
    public struct Threshold: Codable, Sendable, Hashable {
        public var minGCU: Double
        public var minMemoryGiB: Double
        public init(minGCU: Double, minMemoryGiB: Double) {
            self.minGCU = minGCU
            self.minMemoryGiB = minMemoryGiB
        }
        enum CodingKeys: String, CodingKey, CaseIterable {
            case minGCU = "min_gcu"
            case minMemoryGiB = "min_memory_gib"
        }
        /// Decodes over `base`: a missing key keeps the base value.
        init(from decoder: any Decoder, base: Threshold) throws {
            try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            minGCU = try c.value(.minGCU, default: base.minGCU)
            minMemoryGiB = try c.value(.minMemoryGiB, default: base.minMemoryGiB)
            guard minGCU >= 0 else {
                throw DecodingError.dataCorruptedError(forKey: .minGCU, in: c, debugDescription: "must not be negative")
            }
            guard minMemoryGiB >= 0 else {
                throw DecodingError.dataCorruptedError(
                    forKey: .minMemoryGiB, in: c, debugDescription: "must not be negative")
            }
        }
        public init(from decoder: any Decoder) throws {
            try self.init(from: decoder, base: Threshold(minGCU: 0, minMemoryGiB: 0))
        }
    }

    /// A, frontier training. Default ≥ 400 GCU and ≥ 60 GiB (an 80 GB card reports ~79.6 GiB).
    public var gradeA = Threshold(minGCU: 400, minMemoryGiB: 60)
    /// B, training and fine-tuning. Default ≥ 100 GCU and ≥ 20 GiB (a 24 GB card reports
    /// 22.5–24 GiB).
    public var gradeB = Threshold(minGCU: 100, minMemoryGiB: 20)
    /// C, inference. Default ≥ 20 GCU and ≥ 6 GiB (an 8 GB card reports ~7.5–8 GiB).
    public var gradeC = Threshold(minGCU: 20, minMemoryGiB: 6)
    // D, edge/quantized inference: anything not retired that does not reach C.

    /// Grade steps lost while `health.state == .degraded` (never below D). Default 1.
    public var degradedGradeSteps: Int = 1
    /// Grade steps lost while unhealthy for a reason that is not fatal (never below D). Default 1.
    public var unhealthyGradeSteps: Int = 1
    /// Grade steps lost while health is unknown. Default 0 (not knowing is not evidence).
    public var unknownHealthGradeSteps: Int = 0

    /// Health reasons that retire a device outright. Default: remapping failed, fallen off the bus.
    public var retireOnReasons: [HealthReasonKind] = [.remappingFailed, .fallenOffBus]
    /// Uncorrectable ECC errors with at least this many retired pages retire the device
    /// (page retirement exhausted). Default 60.
    public var retireRetiredPagesAtLeast: Int = 60
    /// Devices at least this many years past release are retired when their nominal GCU is
    /// below `retireAgeMaxGCU`. Default 10.
    public var retireAgeYears: Int = 10
    /// "Tiny capability" for the age rule: nominal GCU below this. Default 10 (half of grade C's
    /// compute floor: a 2017 Quadro P400 at 1.3 GCU, not a 2016 P100 at 18.7).
    public var retireAgeMaxGCU: Double = 10
    /// Retire when a health history shows at least this many unhealthy probes in its window...
    /// Default 20.
    public var retireUnhealthyProbes: Int = 20
    /// ...and they are at least this share of the window's probes. Default 0.5.
    public var retireUnhealthyShare: Double = 0.5

    /// Best grade for a model the catalog does not know (graded on memory alone). Default C;
    /// never better than B whatever is configured.
    public var unknownModelBestGrade: DeviceGrade = .c
    /// Best grade when a known model's compute is an estimate (no dense FP16/BF16 figure, weak
    /// or ambiguous match). Default B; never better than B whatever is configured.
    public var estimatedBestGrade: DeviceGrade = .b

    /// How GCU are derated and estimated.
    public var computeUnits = ComputeUnitPolicy()

    public init() {}

    public static let `default` = GradingPolicy()

    /// The threshold for A, B or C (nil for D and R).
    public func threshold(for grade: DeviceGrade) -> Threshold? {
        switch grade {
        case .a: return gradeA
        case .b: return gradeB
        case .c: return gradeC
        case .d, .r: return nil
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case gradeA = "grade_a"
        case gradeB = "grade_b"
        case gradeC = "grade_c"
        case degradedGradeSteps = "degraded_grade_steps"
        case unhealthyGradeSteps = "unhealthy_grade_steps"
        case unknownHealthGradeSteps = "unknown_health_grade_steps"
        case retireOnReasons = "retire_on_reasons"
        case retireRetiredPagesAtLeast = "retire_retired_pages_at_least"
        case retireAgeYears = "retire_age_years"
        case retireAgeMaxGCU = "retire_age_max_gcu"
        case retireUnhealthyProbes = "retire_unhealthy_probes"
        case retireUnhealthyShare = "retire_unhealthy_share"
        case unknownModelBestGrade = "unknown_model_best_grade"
        case estimatedBestGrade = "estimated_best_grade"
        case computeUnits = "compute_units"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = GradingPolicy()
        func threshold(_ key: CodingKeys, _ base: Threshold) throws -> Threshold {
            guard c.contains(key), try !c.decodeNil(forKey: key) else { return base }
            return try Threshold(from: c.superDecoder(forKey: key), base: base)
        }
        gradeA = try threshold(.gradeA, d.gradeA)
        gradeB = try threshold(.gradeB, d.gradeB)
        gradeC = try threshold(.gradeC, d.gradeC)
        degradedGradeSteps = try c.value(.degradedGradeSteps, default: d.degradedGradeSteps)
        unhealthyGradeSteps = try c.value(.unhealthyGradeSteps, default: d.unhealthyGradeSteps)
        unknownHealthGradeSteps = try c.value(.unknownHealthGradeSteps, default: d.unknownHealthGradeSteps)
        retireOnReasons = try c.value(.retireOnReasons, default: d.retireOnReasons)
        retireRetiredPagesAtLeast = try c.value(.retireRetiredPagesAtLeast, default: d.retireRetiredPagesAtLeast)
        retireAgeYears = try c.value(.retireAgeYears, default: d.retireAgeYears)
        retireAgeMaxGCU = try c.value(.retireAgeMaxGCU, default: d.retireAgeMaxGCU)
        retireUnhealthyProbes = try c.value(.retireUnhealthyProbes, default: d.retireUnhealthyProbes)
        retireUnhealthyShare = try c.value(.retireUnhealthyShare, default: d.retireUnhealthyShare)
        unknownModelBestGrade = try c.value(.unknownModelBestGrade, default: d.unknownModelBestGrade)
        estimatedBestGrade = try c.value(.estimatedBestGrade, default: d.estimatedBestGrade)
        computeUnits = try c.value(.computeUnits, default: d.computeUnits)

        for (key, v) in [
            (CodingKeys.degradedGradeSteps, degradedGradeSteps), (.unhealthyGradeSteps, unhealthyGradeSteps),
            (.unknownHealthGradeSteps, unknownHealthGradeSteps), (.retireAgeYears, retireAgeYears),
            (.retireRetiredPagesAtLeast, retireRetiredPagesAtLeast), (.retireUnhealthyProbes, retireUnhealthyProbes),
        ] where v < 0 {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "must not be negative, got \(v)")
        }
        guard (0...1).contains(retireUnhealthyShare) else {
            throw DecodingError.dataCorruptedError(
                forKey: .retireUnhealthyShare, in: c, debugDescription: "must be between 0 and 1")
        }
        guard gradeA.minGCU >= gradeB.minGCU, gradeB.minGCU >= gradeC.minGCU,
            gradeA.minMemoryGiB >= gradeB.minMemoryGiB, gradeB.minMemoryGiB >= gradeC.minMemoryGiB
        else {
            throw DecodingError.dataCorruptedError(
                forKey: .gradeA, in: c,
                debugDescription: "grade thresholds must not increase from A to C (grade_a >= grade_b >= grade_c)")
        }
        for (key, g) in [(CodingKeys.unknownModelBestGrade, unknownModelBestGrade), (.estimatedBestGrade, estimatedBestGrade)]
        where g == .r {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "R is not a best grade; use A to D")
        }
    }
}

/// Health over a recent window, from the agent's probe log. Optional input to grading.
public struct HealthHistory: Codable, Sendable, Hashable {
    /// Probes run in the window.
    public var probesInWindow: Int
    /// Probes in the window that found the device unhealthy.
    public var unhealthyProbesInWindow: Int
    /// Window length, for reasons only.
    public var windowSeconds: Int?

    enum CodingKeys: String, CodingKey {
        case probesInWindow = "probes_in_window"
        case unhealthyProbesInWindow = "unhealthy_probes_in_window"
        case windowSeconds = "window_seconds"
    }

    public init(probesInWindow: Int, unhealthyProbesInWindow: Int, windowSeconds: Int? = nil) {
        self.probesInWindow = probesInWindow
        self.unhealthyProbesInWindow = unhealthyProbesInWindow
        self.windowSeconds = windowSeconds
    }
}

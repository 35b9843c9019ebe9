import Foundation
import GridCore

/// Thresholds that turn raw `HealthSignals` into a `DeviceHealth`. Embedded in the agent
/// config (YAML key `health:` under the probe settings); every key is optional and falls back
/// to the default documented on it, so `{}` is a valid policy.
public struct HealthPolicy: Codable, Sendable, Hashable {
    /// Volatile (since last driver load) uncorrectable ECC errors tolerated. Above → unhealthy.
    /// Default 0: any uncorrectable error since the last reset makes the device unhealthy.
    public var eccUncorrectableVolatileMax: Int
    /// Lifetime (aggregate) uncorrectable ECC errors tolerated before the device is marked
    /// degraded. Default nil: aggregate counts are history and are not judged.
    public var eccUncorrectableAggregateMax: Int?
    /// Volatile correctable ECC errors tolerated before the device is marked degraded.
    /// Default nil: correctable errors are not judged.
    public var eccCorrectableVolatileMax: Int?
    /// State for "pages are waiting to be retired" (NVIDIA pre-Ampere; AMD pending bad pages).
    /// The retirement takes effect at the next reset. Default `.degraded`.
    public var retiredPagesPendingState: HealthState
    /// State for "rows are waiting to be remapped" (NVIDIA Ampere+, needs a GPU reset).
    /// Default `.degraded`.
    public var remappedRowsPendingState: HealthState
    /// Retired page count at which the device is unhealthy (NVIDIA recommends RMA near the
    /// 64-page limit). Default 60; nil disables.
    public var retiredPagesUnhealthyAt: Int?
    /// A failed row remapping means the memory can no longer be repaired: unhealthy. Default
    /// `.unhealthy`.
    public var remappingFailedState: HealthState
    /// Degraded when the temperature is within this many °C of the vendor slowdown threshold
    /// (only when the tool reports one). Default 5.
    public var temperatureSlowdownMarginC: Double
    /// Degraded at or above this absolute temperature, whatever the tool says. Default nil
    /// (only the slowdown margin applies).
    public var temperatureDegradedC: Double?
    /// Unhealthy at or above this absolute temperature. Default 100 °C. The device is also
    /// unhealthy at or above its own shutdown threshold when the tool reports one.
    public var temperatureUnhealthyC: Double?
    /// State while the device throttles for heat. Default `.degraded`.
    public var thermalThrottleState: HealthState
    /// State while the device throttles for power. Default `.degraded`. Note that some tools
    /// report a software power cap as throttling whenever a device runs at its limit; set
    /// `.healthy` to ignore it.
    public var powerThrottleState: HealthState
    /// Vendor fault codes (NVIDIA Xid) that make a device unhealthy until reset. Default
    /// 48 (double-bit ECC), 62 (internal micro-controller halt), 64 (page retirement / row
    /// remap failure), 74 (NVLink error), 79 (fallen off the bus), 95 (uncontained ECC),
    /// 119/120 (GSP timeout / error), 140 (unrecovered ECC).
    public var fatalFaultCodes: [Int]
    /// Fault codes that mark the device degraded (works, but should be reset soon). Default
    /// 63 (page retirement / row remap event recorded), 92 (high single-bit ECC rate),
    /// 94 (contained ECC error). Codes in neither list are ignored (application errors such
    /// as Xid 13, 31, 43).
    public var degradingFaultCodes: [Int]
    /// Vendor health text (lowercased, trimmed) → state. Default: ok/normal/healthy →
    /// healthy, warning → degraded, alarm/critical/error/fault → unhealthy. Texts containing
    /// "fallen off" or "lost" always mean unhealthy (fallen off the bus).
    public var vendorHealthText: [String: HealthState]
    /// State for vendor health text not in the table ("N/A", "-" and "" count as not
    /// reported). Default `.unknown`: we never call healthy what we do not understand.
    public var unrecognizedVendorHealthState: HealthState
    /// Consecutive better probes a device needs before a better state is published (flap
    /// damping). Worse states are always published at once. Default 3; 1 disables damping.
    public var cleanProbesToRecover: Int

    public static let defaultFatalFaultCodes = [48, 62, 64, 74, 79, 95, 119, 120, 140]
    public static let defaultDegradingFaultCodes = [63, 92, 94]
    public static let defaultVendorHealthText: [String: HealthState] = [
        "ok": .healthy, "normal": .healthy, "healthy": .healthy, "pass": .healthy,
        "warning": .degraded, "warn": .degraded,
        "alarm": .unhealthy, "critical": .unhealthy, "error": .unhealthy, "fault": .unhealthy,
        "unhealthy": .unhealthy, "fail": .unhealthy,
    ]

    public init(
        eccUncorrectableVolatileMax: Int = 0,
        eccUncorrectableAggregateMax: Int? = nil,
        eccCorrectableVolatileMax: Int? = nil,
        retiredPagesPendingState: HealthState = .degraded,
        remappedRowsPendingState: HealthState = .degraded,
        retiredPagesUnhealthyAt: Int? = 60,
        remappingFailedState: HealthState = .unhealthy,
        temperatureSlowdownMarginC: Double = 5,
        temperatureDegradedC: Double? = nil,
        temperatureUnhealthyC: Double? = 100,
        thermalThrottleState: HealthState = .degraded,
        powerThrottleState: HealthState = .degraded,
        fatalFaultCodes: [Int] = HealthPolicy.defaultFatalFaultCodes,
        degradingFaultCodes: [Int] = HealthPolicy.defaultDegradingFaultCodes,
        vendorHealthText: [String: HealthState] = HealthPolicy.defaultVendorHealthText,
        unrecognizedVendorHealthState: HealthState = .unknown,
        cleanProbesToRecover: Int = 3
    ) {
        self.eccUncorrectableVolatileMax = eccUncorrectableVolatileMax
        self.eccUncorrectableAggregateMax = eccUncorrectableAggregateMax
        self.eccCorrectableVolatileMax = eccCorrectableVolatileMax
        self.retiredPagesPendingState = retiredPagesPendingState
        self.remappedRowsPendingState = remappedRowsPendingState
        self.retiredPagesUnhealthyAt = retiredPagesUnhealthyAt
        self.remappingFailedState = remappingFailedState
        self.temperatureSlowdownMarginC = temperatureSlowdownMarginC
        self.temperatureDegradedC = temperatureDegradedC
        self.temperatureUnhealthyC = temperatureUnhealthyC
        self.thermalThrottleState = thermalThrottleState
        self.powerThrottleState = powerThrottleState
        self.fatalFaultCodes = fatalFaultCodes
        self.degradingFaultCodes = degradingFaultCodes
        self.vendorHealthText = vendorHealthText
        self.unrecognizedVendorHealthState = unrecognizedVendorHealthState
        self.cleanProbesToRecover = cleanProbesToRecover
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case eccUncorrectableVolatileMax = "ecc_uncorrectable_volatile_max"
        case eccUncorrectableAggregateMax = "ecc_uncorrectable_aggregate_max"
        case eccCorrectableVolatileMax = "ecc_correctable_volatile_max"
        case retiredPagesPendingState = "retired_pages_pending_state"
        case remappedRowsPendingState = "remapped_rows_pending_state"
        case retiredPagesUnhealthyAt = "retired_pages_unhealthy_at"
        case remappingFailedState = "remapping_failed_state"
        case temperatureSlowdownMarginC = "temperature_slowdown_margin_c"
        case temperatureDegradedC = "temperature_degraded_c"
        case temperatureUnhealthyC = "temperature_unhealthy_c"
        case thermalThrottleState = "thermal_throttle_state"
        case powerThrottleState = "power_throttle_state"
        case fatalFaultCodes = "fatal_fault_codes"
        case degradingFaultCodes = "degrading_fault_codes"
        case vendorHealthText = "vendor_health_text"
        case unrecognizedVendorHealthState = "unrecognized_vendor_health_state"
        case cleanProbesToRecover = "clean_probes_to_recover"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = HealthPolicy()
        eccUncorrectableVolatileMax = try c.decodeIfPresent(Int.self, forKey: .eccUncorrectableVolatileMax) ?? d.eccUncorrectableVolatileMax
        eccUncorrectableAggregateMax = try c.decodeIfPresent(Int.self, forKey: .eccUncorrectableAggregateMax) ?? d.eccUncorrectableAggregateMax
        eccCorrectableVolatileMax = try c.decodeIfPresent(Int.self, forKey: .eccCorrectableVolatileMax) ?? d.eccCorrectableVolatileMax
        retiredPagesPendingState = try c.decodeIfPresent(HealthState.self, forKey: .retiredPagesPendingState) ?? d.retiredPagesPendingState
        remappedRowsPendingState = try c.decodeIfPresent(HealthState.self, forKey: .remappedRowsPendingState) ?? d.remappedRowsPendingState
        retiredPagesUnhealthyAt = try c.decodeIfPresent(Int.self, forKey: .retiredPagesUnhealthyAt) ?? d.retiredPagesUnhealthyAt
        remappingFailedState = try c.decodeIfPresent(HealthState.self, forKey: .remappingFailedState) ?? d.remappingFailedState
        temperatureSlowdownMarginC = try c.decodeIfPresent(Double.self, forKey: .temperatureSlowdownMarginC) ?? d.temperatureSlowdownMarginC
        temperatureDegradedC = try c.decodeIfPresent(Double.self, forKey: .temperatureDegradedC) ?? d.temperatureDegradedC
        temperatureUnhealthyC = try c.decodeIfPresent(Double.self, forKey: .temperatureUnhealthyC) ?? d.temperatureUnhealthyC
        thermalThrottleState = try c.decodeIfPresent(HealthState.self, forKey: .thermalThrottleState) ?? d.thermalThrottleState
        powerThrottleState = try c.decodeIfPresent(HealthState.self, forKey: .powerThrottleState) ?? d.powerThrottleState
        fatalFaultCodes = try c.decodeIfPresent([Int].self, forKey: .fatalFaultCodes) ?? d.fatalFaultCodes
        degradingFaultCodes = try c.decodeIfPresent([Int].self, forKey: .degradingFaultCodes) ?? d.degradingFaultCodes
        if let table = try c.decodeIfPresent([String: HealthState].self, forKey: .vendorHealthText) {
            // Keys are matched lowercased and trimmed; normalise what the operator wrote.
            var normalised: [String: HealthState] = [:]
            for (k, v) in table { normalised[k.lowercased().trimmingSpaces()] = v }
            vendorHealthText = normalised
        } else {
            vendorHealthText = d.vendorHealthText
        }
        unrecognizedVendorHealthState = try c.decodeIfPresent(HealthState.self, forKey: .unrecognizedVendorHealthState) ?? d.unrecognizedVendorHealthState
        cleanProbesToRecover = max(1, try c.decodeIfPresent(Int.self, forKey: .cleanProbesToRecover) ?? d.cleanProbesToRecover)
    }
}

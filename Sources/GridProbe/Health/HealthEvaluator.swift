import Foundation
import GridCore

/// Applies a `HealthPolicy` to raw `HealthSignals`. Pure: same input, same output.
///
/// Every rule that fires adds a typed reason with the value and the threshold in its detail;
/// the state is the worst of the rules' states. Signals the tool did not report (nil) are
/// not judged. A device whose signals say nothing bad is healthy: the tool answered for it.
public enum HealthEvaluator {
    public static func evaluate(signals s: HealthSignals, policy p: HealthPolicy = HealthPolicy()) -> DeviceHealth {
        var found: [(HealthState, HealthReason)] = []
        func add(_ state: HealthState, _ kind: HealthReasonKind, _ detail: String) {
            guard state > .healthy else { return }
            found.append((state, HealthReason(kind, detail)))
        }

        // Memory errors.
        if let v = s.eccUncorrectableVolatile, v > p.eccUncorrectableVolatileMax {
            add(.unhealthy, .eccUncorrectable,
                "\(v) uncorrectable ECC error(s) since the last reset (tolerated: \(p.eccUncorrectableVolatileMax))")
        }
        if let v = s.eccUncorrectableAggregate, let max = p.eccUncorrectableAggregateMax, v > max {
            add(.degraded, .eccUncorrectable, "\(v) uncorrectable ECC error(s) over the device's lifetime (tolerated: \(max))")
        }
        if let v = s.eccCorrectableVolatile, let max = p.eccCorrectableVolatileMax, v > max {
            add(.degraded, .other, "\(v) correctable ECC error(s) since the last reset (tolerated: \(max))")
        }
        if s.retiredPagesPending == true {
            add(p.retiredPagesPendingState, .retiredPagesPending, "retired memory pages pending; takes effect at the next GPU reset")
        }
        if let n = s.retiredPagesCount, let limit = p.retiredPagesUnhealthyAt, n >= limit {
            add(.unhealthy, .retiredPagesPending, "\(n) memory pages retired (limit \(limit)); replace the device")
        }
        if s.remappedRowsPending == true {
            add(p.remappedRowsPendingState, .remappedRowsPending, "memory row remapping pending; reset the GPU")
        }
        if s.remappingFailed == true {
            add(p.remappingFailedState, .remappingFailed, "memory row remapping failed")
        }

        // Faults (Xid and friends). Report each distinct code once, in the order seen.
        var seen = Set<Int>()
        for code in s.faultCodes where seen.insert(code).inserted {
            if p.fatalFaultCodes.contains(code) {
                if code == 79 {
                    add(.unhealthy, .fallenOffBus, "fault code 79: the GPU has fallen off the bus")
                } else {
                    add(.unhealthy, .xid, "fault code \(code) (fatal per policy)")
                }
            } else if p.degradingFaultCodes.contains(code) {
                add(.degraded, .xid, "fault code \(code) (reset recommended per policy)")
            }
        }

        // Throttling.
        if s.thermalThrottleActive == true {
            add(p.thermalThrottleState, .thermalThrottle, "thermal throttling active")
        }
        if s.powerThrottleActive == true {
            add(p.powerThrottleState, .powerThrottle, "power throttling active")
        }

        // Temperature.
        if let t = s.temperatureC {
            let shown = format(t)
            if let shutdown = s.temperatureShutdownC, t >= shutdown {
                add(.unhealthy, .temperatureOverLimit, "temperature \(shown) °C at or above shutdown threshold \(format(shutdown)) °C")
            } else if let limit = p.temperatureUnhealthyC, t >= limit {
                add(.unhealthy, .temperatureOverLimit, "temperature \(shown) °C at or above \(format(limit)) °C (policy)")
            } else if let slowdown = s.temperatureSlowdownC, t >= slowdown - p.temperatureSlowdownMarginC {
                add(.degraded, .temperatureOverLimit,
                    "temperature \(shown) °C within \(format(p.temperatureSlowdownMarginC)) °C of slowdown threshold \(format(slowdown)) °C")
            } else if let limit = p.temperatureDegradedC, t >= limit {
                add(.degraded, .temperatureOverLimit, "temperature \(shown) °C at or above \(format(limit)) °C (policy)")
            }
        }

        // Free-text vendor state.
        if let raw = s.vendorHealthText {
            let text = raw.trimmingSpacesAndNewlines()
            let key = text.lowercased()
            if key.contains("fallen off") || key.contains("off the bus") || key.contains("gpu is lost") || key == "lost" {
                add(.unhealthy, .fallenOffBus, "vendor tool reports \"\(text)\"")
            } else if key.isEmpty || key == "n/a" || key == "na" || key == "-" || key == "[n/a]" {
                // Not reported.
            } else if let state = p.vendorHealthText[key] {
                add(state, .other, "vendor tool reports health \"\(text)\"")
            } else {
                add(p.unrecognizedVendorHealthState, .other, "vendor tool reports unrecognised health \"\(text)\"")
            }
        }

        guard !found.isEmpty else { return .healthy }
        // Worst first; stable within a state.
        let ordered = found.enumerated().sorted { a, b in
            a.element.0 != b.element.0 ? a.element.0 > b.element.0 : a.offset < b.offset
        }.map(\.element)
        return DeviceHealth(state: ordered[0].0, reasons: ordered.map(\.1))
    }

    /// Combines several verdicts on one device: worst state, reasons of all, deduplicated.
    public static func combine(_ parts: [DeviceHealth]) -> DeviceHealth {
        guard let worst = parts.map(\.state).max() else { return .healthy }
        var reasons: [HealthReason] = []
        for part in parts.sorted(by: { $0.state > $1.state }) {
            for r in part.reasons where !reasons.contains(r) { reasons.append(r) }
        }
        return DeviceHealth(state: worst, reasons: reasons)
    }

    static func format(_ v: Double) -> String {
        v == v.rounded() ? String(Int(v)) : String(format: "%.1f", v)
    }
}

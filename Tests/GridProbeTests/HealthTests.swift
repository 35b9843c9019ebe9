import Foundation
import GridCore
import Testing
@testable import GridProbe

@Suite("Health evaluation")
struct HealthEvaluatorTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var signals: HealthSignals
        var state: HealthState
        var kinds: [HealthReasonKind]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "nothing reported", signals: HealthSignals(), state: .healthy, kinds: []),
        Case(name: "all clean", signals: HealthSignals(
            eccUncorrectableVolatile: 0, eccUncorrectableAggregate: 3, retiredPagesPending: false,
            remappedRowsPending: false, remappingFailed: false, thermalThrottleActive: false,
            powerThrottleActive: false, temperatureC: 40, temperatureSlowdownC: 87, temperatureShutdownC: 92,
            faultCodes: [13, 31], vendorHealthText: "OK"), state: .healthy, kinds: []),
        Case(name: "volatile DBE", signals: HealthSignals(eccUncorrectableVolatile: 1), state: .unhealthy, kinds: [.eccUncorrectable]),
        Case(name: "pending retirement", signals: HealthSignals(retiredPagesPending: true), state: .degraded, kinds: [.retiredPagesPending]),
        Case(name: "many retired pages", signals: HealthSignals(retiredPagesCount: 61), state: .unhealthy, kinds: [.retiredPagesPending]),
        Case(name: "remap pending", signals: HealthSignals(remappedRowsPending: true), state: .degraded, kinds: [.remappedRowsPending]),
        Case(name: "remap failed", signals: HealthSignals(remappingFailed: true), state: .unhealthy, kinds: [.remappingFailed]),
        Case(name: "xid 79", signals: HealthSignals(faultCodes: [79]), state: .unhealthy, kinds: [.fallenOffBus]),
        Case(name: "xid 48 twice", signals: HealthSignals(faultCodes: [48, 48]), state: .unhealthy, kinds: [.xid]),
        Case(name: "xid 92", signals: HealthSignals(faultCodes: [92]), state: .degraded, kinds: [.xid]),
        Case(name: "app xid 13", signals: HealthSignals(faultCodes: [13]), state: .healthy, kinds: []),
        Case(name: "thermal throttle", signals: HealthSignals(thermalThrottleActive: true), state: .degraded, kinds: [.thermalThrottle]),
        Case(name: "power throttle", signals: HealthSignals(powerThrottleActive: true), state: .degraded, kinds: [.powerThrottle]),
        Case(name: "near slowdown", signals: HealthSignals(temperatureC: 83, temperatureSlowdownC: 87), state: .degraded, kinds: [.temperatureOverLimit]),
        Case(name: "below margin", signals: HealthSignals(temperatureC: 81.9, temperatureSlowdownC: 87), state: .healthy, kinds: []),
        Case(name: "at shutdown", signals: HealthSignals(temperatureC: 92, temperatureSlowdownC: 87, temperatureShutdownC: 92), state: .unhealthy, kinds: [.temperatureOverLimit]),
        Case(name: "absolute limit", signals: HealthSignals(temperatureC: 101), state: .unhealthy, kinds: [.temperatureOverLimit]),
        Case(name: "npu Warning", signals: HealthSignals(vendorHealthText: "Warning"), state: .degraded, kinds: [.other]),
        Case(name: "npu Alarm", signals: HealthSignals(vendorHealthText: " Alarm "), state: .unhealthy, kinds: [.other]),
        Case(name: "npu Critical", signals: HealthSignals(vendorHealthText: "Critical"), state: .unhealthy, kinds: [.other]),
        Case(name: "health N/A", signals: HealthSignals(vendorHealthText: "N/A"), state: .healthy, kinds: []),
        Case(name: "unrecognised text", signals: HealthSignals(vendorHealthText: "Bizarre"), state: .unknown, kinds: [.other]),
        Case(name: "fallen off text", signals: HealthSignals(vendorHealthText: "GPU has fallen off the bus"), state: .unhealthy, kinds: [.fallenOffBus]),
        Case(name: "worst first", signals: HealthSignals(eccUncorrectableVolatile: 2, thermalThrottleActive: true),
             state: .unhealthy, kinds: [.eccUncorrectable, .thermalThrottle]),
    ]

    @Test(arguments: cases)
    func table(_ c: Case) {
        let h = HealthEvaluator.evaluate(signals: c.signals, policy: HealthPolicy())
        #expect(h.state == c.state)
        #expect(h.reasons.map(\.kind) == c.kinds)
    }

    @Test func detailsCarryValuesAndThresholds() {
        let h = HealthEvaluator.evaluate(signals: HealthSignals(temperatureC: 84, temperatureSlowdownC: 87))
        #expect(h.reasons.first?.detail == "temperature 84 °C within 5 °C of slowdown threshold 87 °C")
    }

    @Test func policyChangesVerdicts() {
        var p = HealthPolicy()
        p.eccUncorrectableVolatileMax = 5
        p.powerThrottleState = .healthy
        p.fatalFaultCodes = [13]
        p.temperatureDegradedC = 70
        #expect(HealthEvaluator.evaluate(signals: HealthSignals(eccUncorrectableVolatile: 5), policy: p) == .healthy)
        #expect(HealthEvaluator.evaluate(signals: HealthSignals(powerThrottleActive: true), policy: p) == .healthy)
        #expect(HealthEvaluator.evaluate(signals: HealthSignals(faultCodes: [13]), policy: p).state == .unhealthy)
        #expect(HealthEvaluator.evaluate(signals: HealthSignals(faultCodes: [48]), policy: p).state == .healthy)
        #expect(HealthEvaluator.evaluate(signals: HealthSignals(temperatureC: 75), policy: p).state == .degraded)
    }

    @Test func policyDecodesWithDefaultsForMissingKeys() throws {
        let empty = try JSONDecoder().decode(HealthPolicy.self, from: Data("{}".utf8))
        #expect(empty == HealthPolicy())
        let partial = try JSONDecoder().decode(
            HealthPolicy.self,
            from: Data(#"{"clean_probes_to_recover": 5, "power_throttle_state": "healthy", "vendor_health_text": {" OK ": "healthy", "Minor": "degraded"}}"#.utf8))
        #expect(partial.cleanProbesToRecover == 5)
        #expect(partial.powerThrottleState == .healthy)
        #expect(partial.vendorHealthText == ["ok": .healthy, "minor": .degraded])
        #expect(partial.fatalFaultCodes == HealthPolicy.defaultFatalFaultCodes)
        #expect(partial.temperatureUnhealthyC == 100)
        // Round trip.
        let again = try JSONDecoder().decode(HealthPolicy.self, from: JSONEncoder().encode(partial))
        #expect(again == partial)
    }

    @Test func probeSettingsDecodeWithDefaultsAndToolOverrides() throws {
        let s = try JSONDecoder().decode(
            ProbeSettings.self,
            from: Data(#"""
            {"tool_timeout_seconds": 4,
             "tools": {"nvidia-smi": {"executable": "/opt/nv/nvidia-smi"},
                       "hl-smi": {"enabled": false},
                       "hy-smi": {"executable": "hy-smi", "arguments": ["--json"], "format": "rocm-smi-json"}},
             "health": {"clean_probes_to_recover": 2}}
            """#.utf8))
        #expect(s.toolTimeoutSeconds == 4)
        #expect(s.sysfsRoot == "/sys")
        #expect(s.maxOutputBytes == 8 << 20)
        #expect(s.tools["nvidia-smi"]?.executable == "/opt/nv/nvidia-smi")
        #expect(s.tools["nvidia-smi"]?.arguments == ["-q", "-x"])
        #expect(s.tools["hl-smi"]?.enabled == false)
        #expect(s.tools["hy-smi"]?.vendors == [.amd])
        #expect(s.tools["npu-smi"] == ProbeSettings.defaultTools["npu-smi"])
        #expect(s.health.cleanProbesToRecover == 2)
        #expect(try JSONDecoder().decode(ProbeSettings.self, from: Data("{}".utf8)) == ProbeSettings())
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(ProbeSettings.self, from: Data(#"{"tools": {"mystery": {}}}"#.utf8))
        }
        // A typo is an error that names the key, not a silently ignored setting.
        do {
            _ = try JSONDecoder().decode(ProbeSettings.self, from: Data(#"{"tool_timeout_secs": 4}"#.utf8))
            Issue.record("unknown key accepted")
        } catch {
            #expect(describeDecodingError(error).contains("tool_timeout_secs"))
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(HealthPolicy.self, from: Data(#"{"cleanProbesToRecover": 2}"#.utf8))
        }
    }
}

@Suite("Health damping")
struct HealthDamperTests {
    static let ecc = DeviceHealth(state: .unhealthy, reasons: [HealthReason(.eccUncorrectable, "1 DBE")])
    static let hot = DeviceHealth(state: .degraded, reasons: [HealthReason(.thermalThrottle, "thermal")])
    static let timeout = DeviceHealth.unknown(HealthReason(.toolTimeout, "nvidia-smi hung"))

    @Test func firstObservationIsPublished() {
        var d = HealthDamper(cleanProbesToRecover: 3)
        let r = d.observe(deviceID: "gpu0", health: .healthy)
        #expect(r.health == .healthy)
        #expect(r.changed)
        #expect(!d.observe(deviceID: "gpu0", health: .healthy).changed)
    }

    @Test func worseIsImmediateBetterNeedsNCleanProbes() {
        var d = HealthDamper(cleanProbesToRecover: 3)
        _ = d.observe(deviceID: "gpu0", health: .healthy)
        let bad = d.observe(deviceID: "gpu0", health: Self.ecc)
        #expect(bad.health == Self.ecc)
        #expect(bad.changed)
        let h1 = d.observe(deviceID: "gpu0", health: .healthy)
        #expect(h1.health == Self.ecc)
        #expect(!h1.changed)
        #expect(h1.recoveryProgress == 1)
        #expect(d.observe(deviceID: "gpu0", health: .healthy).health.state == .unhealthy)
        let h3 = d.observe(deviceID: "gpu0", health: .healthy)
        #expect(h3.health == .healthy)
        #expect(h3.changed)
    }

    @Test func flappingNeverReachesHealthy() {
        var d = HealthDamper(cleanProbesToRecover: 3)
        _ = d.observe(deviceID: "gpu0", health: Self.ecc)
        var published: [HealthState] = []
        for i in 0..<12 {
            published.append(d.observe(deviceID: "gpu0", health: i % 3 == 2 ? Self.ecc : .healthy).health.state)
        }
        #expect(published.allSatisfy { $0 == .unhealthy })
    }

    @Test func recoveryIsGraded() {
        var d = HealthDamper(cleanProbesToRecover: 2)
        _ = d.observe(deviceID: "gpu0", health: Self.ecc)
        #expect(d.observe(deviceID: "gpu0", health: Self.hot).health.state == .unhealthy)
        #expect(d.observe(deviceID: "gpu0", health: .healthy).health == Self.hot)  // 2 probes at ≤ degraded
        #expect(d.observe(deviceID: "gpu0", health: .healthy).health == .healthy)  // 2 probes healthy
    }

    @Test func unknownFromTimeoutIsImmediateAndSticky() {
        var d = HealthDamper(cleanProbesToRecover: 3)
        _ = d.observe(deviceID: "gpu0", health: .healthy)
        #expect(d.observe(deviceID: "gpu0", health: Self.timeout).health == Self.timeout)
        #expect(d.observe(deviceID: "gpu0", health: .healthy).health == Self.timeout)
    }

    @Test func sameStateNewReasonKindIsAChange() {
        var d = HealthDamper(cleanProbesToRecover: 3)
        _ = d.observe(deviceID: "gpu0", health: Self.hot)
        let power = DeviceHealth(state: .degraded, reasons: [HealthReason(.powerThrottle, "power")])
        let r = d.observe(deviceID: "gpu0", health: power)
        #expect(r.changed)
        #expect(r.health == power)
        // Detail text moving is not a change.
        let hotter = DeviceHealth(state: .degraded, reasons: [HealthReason(.powerThrottle, "power 2")])
        #expect(!d.observe(deviceID: "gpu0", health: hotter).changed)
    }

    @Test func devicesAreIndependentAndForgettable() {
        var d = HealthDamper(cleanProbesToRecover: 3)
        _ = d.observe(deviceID: "a", health: Self.ecc)
        _ = d.observe(deviceID: "b", health: .healthy)
        #expect(d.published(deviceID: "b") == .healthy)
        d.retain(deviceIDs: ["b"])
        #expect(d.deviceIDs == ["b"])
        #expect(d.observe(deviceID: "a", health: .healthy).health == .healthy)
    }
}

import Foundation
import GridCore
import Testing

@Suite struct CoreTests {
    @Test(arguments: ["node-1", "j-mwt79h0f-1", "cn-gz-guian", "a.b:c_d"])
    func acceptableIdentifiers(_ id: String) {
        #expect(IdentifierRules.problem(with: id) == nil)
    }

    @Test(arguments: ["", "two words", "semi;colon", "slash/path", "ünïcode", String(repeating: "x", count: 129)])
    func rejectedIdentifiers(_ id: String) {
        #expect(IdentifierRules.problem(with: id) != nil)
    }

    @Test func worstHealthIsTheMaximum() {
        #expect([HealthState.healthy, .degraded, .unhealthy, .unknown].max() == .unhealthy)
        #expect([HealthState.healthy, .degraded].max() == .degraded)
        #expect(HealthState.unknown > .degraded, "not knowing is worse than knowing it is slow")
    }

    @Test func gradesOrderFromMostCapable() {
        #expect(DeviceGrade.a < .b && .b < .c && .c < .d && .d < .r)
    }

    @Test(arguments: [("NVIDIA", AcceleratorVendor.nvidia), ("cuda", .nvidia), ("ROCm", .amd), ("dcu", .hygon),
                      ("Ascend", .huawei), ("gaudi", .habana), ("xpu", .intel), ("corex", .iluvatar)])
    func looseVendorNames(_ text: String, _ vendor: AcceleratorVendor) {
        #expect(AcceleratorVendor(loose: text) == vendor)
    }

    @Test func everyKnownVendorHasAVisibleDevicesVariable() {
        for v in AcceleratorVendor.allCases where v != .unknown {
            #expect(!v.visibleDevicesVariables.isEmpty, "\(v)")
        }
        #expect(AcceleratorVendor.amd.visibleDevicesVariables == ["ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"])
    }

    @Test func jobSpecProblemsNameTheField() {
        let bad = JobSpec(name: "", command: "", env: ["A=B": "x"], accelerators: AcceleratorRequest(count: 65, minMemoryMiB: -1), timeoutSeconds: 0)
        let problems = bad.problems()
        for field in ["name:", "command:", "accelerators.count:", "accelerators.min_memory:", "timeout_seconds:", "env:"] {
            #expect(problems.contains { $0.hasPrefix(field) }, "\(field) missing from \(problems)")
        }
        #expect(JobSpec(name: "ok", command: "true").problems().isEmpty)
    }

    @Test func jobStatesOnlyMoveForward() {
        #expect(JobState.queued.progress < JobState.assigned.progress)
        #expect(JobState.assigned.progress < JobState.running.progress)
        #expect(JobState.running.progress < JobState.succeeded.progress)
        #expect(JobState.allCases.filter(\.isTerminal) == [.succeeded, .failed, .cancelled, .lost])
    }
}

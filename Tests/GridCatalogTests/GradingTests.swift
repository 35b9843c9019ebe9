import Foundation
import GridCore
import Testing
@testable import GridCatalog

struct GradeCase: Sendable, CustomTestStringConvertible {
    var name: String
    var device: DeviceInventory
    var grade: DeviceGrade
    var estimated: Bool = false
    var reasonContains: [String] = []
    var testDescription: String { name }
}

let testYear = 2026

let gradeCases: [GradeCase] = [
    .init(name: "H100 SXM is A", device: device("NVIDIA H100 80GB HBM3", memoryMiB: 81559, pci: "0x233010DE"),
          grade: .a, reasonContains: ["A: 989.5 GCU, 79.6 GiB, 2022 (H100 SXM5 80GB)"]),
    .init(name: "MI300X is A", device: device("AMD Instinct MI300X", .amd, memoryMiB: 196592), grade: .a),
    .init(name: "Gaudi2 is A", device: device("HL-225", .habana, memoryMiB: 98304), grade: .a),
    .init(name: "A100 80GB is B, below A on compute",
          device: device("NVIDIA A100-SXM4-80GB", memoryMiB: 81920),
          grade: .b, reasonContains: ["B: 312 GCU, 80 GiB, 2020 (A100 SXM4 80GB); below A (needs ≥400 GCU)"]),
    .init(name: "H20 is B (96 GB but 148 GCU)", device: device("NVIDIA H20", memoryMiB: 97871), grade: .b),
    .init(name: "V100S is B", device: device("Tesla V100S-PCIE-32GB", memoryMiB: 32510), grade: .b),
    .init(name: "910B4 (peer estimate) is B", device: device("910B4", .huawei, memoryMiB: 32768), grade: .b,
          estimated: true, reasonContains: ["estimated"]),
    .init(name: "910B2C estimate never reaches A", device: device("910B2C", .huawei, memoryMiB: 65536), grade: .b,
          estimated: true),
    .init(name: "T4 is C", device: device("Tesla T4", memoryMiB: 15360), grade: .c,
          reasonContains: ["below B (needs ≥100 GCU and ≥20 GiB)"]),
    .init(name: "RTX 3090-class A5000 is B", device: device("NVIDIA RTX A5000", memoryMiB: 24564), grade: .b),
    .init(name: "RTX 2080 is C", device: device("NVIDIA GeForce RTX 2080", memoryMiB: 8192), grade: .c),
    .init(name: "A10G (no public figure) is C", device: device("NVIDIA A10G", memoryMiB: 23028), grade: .c,
          estimated: true),
    .init(name: "P100 is D (18.7 GCU)", device: device("Tesla P100-PCIE-16GB", memoryMiB: 16384), grade: .d,
          reasonContains: ["below C (needs ≥20 GCU)"]),
    .init(name: "Ascend 310 is D", device: device("310", .huawei, memoryMiB: 8192), grade: .d),
    .init(name: "310B4 board is D", device: device("310B4", .huawei, memoryMiB: 15609), grade: .d),
    .init(name: "Quadro P400 (2017) is D before its tenth year",
          device: device("Quadro P400", memoryMiB: 1998), grade: .d, estimated: true),
    .init(name: "unknown 32 GiB NPU is capped at C", device: device("xxx", .huawei, memoryMiB: 32768), grade: .c,
          estimated: true, reasonContains: ["unknown model \"xxx\"", "estimated", "capped at C"]),
    .init(name: "unknown 4 GiB device is D", device: device("Mystery NPU", .unknown, memoryMiB: 4096), grade: .d,
          estimated: true),
    .init(name: "unknown device without memory is D, not R", device: device("Mystery", .unknown), grade: .d,
          estimated: true, reasonContains: ["memory unknown"]),
    .init(name: "degraded H100 drops to B",
          device: device("NVIDIA H100 80GB HBM3", memoryMiB: 81559,
                         health: DeviceHealth(state: .degraded, reasons: [HealthReason(.thermalThrottle, "HW thermal slowdown active")])),
          grade: .b, reasonContains: ["effective 494.8 GCU (degraded × 0.5)", "lowered from A: degraded (thermal_throttle: HW thermal slowdown active)"]),
    .init(name: "degraded P100 stays D", device: device("Tesla P100-PCIE-16GB", memoryMiB: 16384, health: DeviceHealth(state: .degraded)),
          grade: .d),
    .init(name: "unhealthy but not fatal: one step down",
          device: device("NVIDIA A100-SXM4-80GB", memoryMiB: 81920,
                         health: DeviceHealth(state: .unhealthy, reasons: [HealthReason(.xid, "Xid 13")])),
          grade: .c),
    .init(name: "unknown health keeps its grade",
          device: device("NVIDIA A100-SXM4-80GB", memoryMiB: 81920, health: .unknown(HealthReason(.toolTimeout, "nvidia-smi timed out"))),
          grade: .b, reasonContains: ["effective 0 GCU"]),
    .init(name: "remapping failed retires",
          device: device("NVIDIA H100 80GB HBM3", memoryMiB: 81559,
                         health: DeviceHealth(state: .unhealthy, reasons: [HealthReason(.remappingFailed, "remapped_rows.failure = Yes")])),
          grade: .r, reasonContains: ["R: 989.5 GCU", "retire: remapping_failed: remapped_rows.failure = Yes"]),
    .init(name: "fallen off the bus retires",
          device: device("Tesla V100S-PCIE-32GB", memoryMiB: 32510,
                         health: DeviceHealth(state: .unhealthy, reasons: [HealthReason(.fallenOffBus, "GPU has fallen off the bus")])),
          grade: .r),
    .init(name: "raw signal: remapping failed retires even before health evaluation",
          device: device("NVIDIA A100-SXM4-40GB", memoryMiB: 40960, signals: HealthSignals(remappingFailed: true)),
          grade: .r, reasonContains: ["row remapping failed"]),
    .init(name: "uncorrectable ECC with page retirement exhausted retires",
          device: device("Tesla V100S-PCIE-32GB", memoryMiB: 32510,
                         signals: HealthSignals(eccUncorrectableAggregate: 3, retiredPagesCount: 64)),
          grade: .r, reasonContains: ["64 retired pages"]),
    .init(name: "uncorrectable ECC with few retired pages does not retire",
          device: device("Tesla V100S-PCIE-32GB", memoryMiB: 32510,
                         signals: HealthSignals(eccUncorrectableAggregate: 1, retiredPagesCount: 2)),
          grade: .b),
]

@Suite("Grading")
struct GradingTests {
    let catalog = AcceleratorCatalog.bundled

    @Test(arguments: gradeCases)
    func gradeTable(_ c: GradeCase) {
        let r = Grader.grade(c.device, catalog: catalog, policy: .default, currentYear: testYear)
        #expect(r.grade == c.grade, "\(r.reason)")
        #expect(r.estimated == c.estimated, "\(r.reason)")
        for s in c.reasonContains { #expect(r.reason.contains(s), "\(r.reason)") }
        #expect(r.reason.hasPrefix(r.grade.rawValue + ":"))
    }

    @Test func unknownModelIsNeverA() {
        var policy = GradingPolicy()
        policy.unknownModelBestGrade = .a
        let r = Grader.grade(device("Future XPU 9000", .unknown, memoryMiB: 262_144), catalog: catalog, policy: policy, currentYear: testYear)
        #expect(r.grade == .b)
        #expect(r.catalogModel == nil && r.estimated)
    }

    @Test func ageRetiresTinyOldParts() {
        let p400 = device("Quadro P400", memoryMiB: 1998)
        let r = Grader.grade(p400, catalog: catalog, currentYear: 2027)
        #expect(r.grade == .r)
        #expect(r.reason.contains("10 years old (≥10) with 1.28 GCU (<10)"))
        // Old but not tiny: a 2016 P100 (18.7 GCU) in 2030 stays D...
        let p100 = device("Tesla P100-PCIE-16GB", memoryMiB: 16384)
        #expect(Grader.grade(p100, catalog: catalog, currentYear: 2030).grade == .d)
        // ...unless the policy calls 20 GCU tiny.
        var policy = GradingPolicy()
        policy.retireAgeMaxGCU = 20
        #expect(Grader.grade(p100, catalog: catalog, policy: policy, currentYear: 2030).grade == .r)
        // Age alone never retires a capable part: a 2017 V100 (112 GCU) in 2030 keeps C.
        #expect(Grader.grade(device("Tesla V100-PCIE-16GB", memoryMiB: 16384), catalog: catalog, currentYear: 2030).grade == .c)
        // No release year, no age rule.
        #expect(Grader.grade(device("910B4", .huawei, memoryMiB: 32768), catalog: catalog, currentYear: 2060).grade == .b)
    }

    @Test func healthHistoryRetires() {
        let d = device("NVIDIA A100-SXM4-40GB", memoryMiB: 40960)
        let flaky = HealthHistory(probesInWindow: 30, unhealthyProbesInWindow: 24, windowSeconds: 86_400)
        let r = Grader.grade(d, catalog: catalog, currentYear: testYear, history: flaky)
        #expect(r.grade == .r)
        #expect(r.reason.contains("unhealthy in 24 of 30 probes in 24 h"))
        // Many probes in a long window, but a small share: not retired.
        let mostlyFine = HealthHistory(probesInWindow: 1000, unhealthyProbesInWindow: 25)
        #expect(Grader.grade(d, catalog: catalog, currentYear: testYear, history: mostlyFine).grade == .b)
    }

    @Test func migSlicesAreGradedOnTheirShare() throws {
        let parts = [
            DevicePartition(id: "MIG-0", profile: "3g.40gb", memoryTotalMiB: 40448, computeFraction: 3.0 / 7),
            DevicePartition(id: "MIG-2", profile: "1g.10gb", memoryTotalMiB: 9856, computeFraction: 1.0 / 7),
        ]
        let r = Grader.grade(
            device("NVIDIA H100 80GB HBM3", memoryMiB: 81559, partitions: parts), catalog: catalog, currentYear: testYear)
        #expect(r.grade == .a)
        #expect(r.partitions.map(\.grade) == [.b, .c])
        #expect(r.partitions[0].reason.contains("424.1 GCU, 39.5 GiB, 3g.40gb (0.43 of H100 SXM5 80GB)"))
        #expect(r.partitions[1].reason.hasPrefix("C: 141.4 GCU, 9.62 GiB, 1g.10gb"))
        // A retired parent retires its slices.
        var bad = device("NVIDIA H100 80GB HBM3", memoryMiB: 81559, partitions: parts)
        bad.health = DeviceHealth(state: .unhealthy, reasons: [HealthReason(.remappingFailed, "")])
        #expect(Grader.grade(bad, catalog: catalog, currentYear: testYear).partitions.allSatisfy { $0.grade == .r })
    }

    @Test func dieOfA3IsGradedOnItsShare() {
        let r = Grader.grade(device("Ascend910", .huawei, memoryMiB: 65536), catalog: catalog, currentYear: testYear)
        #expect(r.catalogModel == "Ascend 910C")
        #expect(r.computeUnits.nominal == 400)
        #expect(r.grade == .a)
    }

    @Test func applyAndGradedFillTheInventory() {
        let devices = [
            device("NVIDIA A100-SXM4-80GB", memoryMiB: 81920, health: DeviceHealth(state: .degraded)),
            device("Tesla T4", memoryMiB: 15360),
        ]
        let out = Grader.graded(devices, catalog: catalog, currentYear: testYear)
        #expect(out.map(\.grade) == [.c, .c])
        #expect(out[0].computeUnits == 156)
        #expect(out[1].computeUnits == 65)
        #expect(out[0].gradeReason?.contains("lowered from B: degraded") == true)
        var d = devices[1]
        Grader.grade(d, catalog: catalog, currentYear: testYear).apply(to: &d)
        #expect(d == out[1])
    }

    @Test func thresholdsAreConfigurable() {
        var policy = GradingPolicy()
        policy.gradeA = .init(minGCU: 300, minMemoryGiB: 60)
        let r = Grader.grade(device("NVIDIA A100-SXM4-80GB", memoryMiB: 81920), catalog: catalog, policy: policy, currentYear: testYear)
        #expect(r.grade == .a)
        policy.degradedGradeSteps = 2
        let d = device("NVIDIA H100 80GB HBM3", memoryMiB: 81559, health: DeviceHealth(state: .degraded))
        #expect(Grader.grade(d, catalog: catalog, policy: policy, currentYear: testYear).grade == .c)
    }
}

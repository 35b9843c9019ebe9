import GridCore
import Testing
@testable import GridCatalog

func device(
    _ model: String, _ vendor: AcceleratorVendor = .nvidia, memoryMiB: Int? = nil, pci: String? = nil,
    health: DeviceHealth = .healthy, partitions: [DevicePartition] = [], signals: HealthSignals = HealthSignals()
) -> DeviceInventory {
    DeviceInventory(
        id: "dev-\(model)", index: 0, vendor: vendor, model: model, memoryTotalMiB: memoryMiB,
        pciDeviceID: pci, partitions: partitions, signals: signals, health: health)
}

@Suite("Compute units")
struct ComputeUnitTests {
    let catalog = AcceleratorCatalog.bundled

    func gcu(_ d: DeviceInventory, policy: ComputeUnitPolicy = ComputeUnitPolicy()) -> ComputeUnits {
        ComputeUnitCalculator.computeUnits(for: d, match: catalog.match(d), catalog: catalog, policy: policy)
    }

    @Test(arguments: [
        ("NVIDIA H100 80GB HBM3", 81559, 989.5),  // datasheet 1979 with sparsity, halved
        ("NVIDIA A100-SXM4-80GB", 81920, 312),
        ("Tesla V100S-PCIE-32GB", 32510, 130),
        ("Tesla T4", 15360, 65),
        ("NVIDIA GeForce RTX 3080", 10240, 59.5),
        ("Tesla P100-PCIE-16GB", 16384, 18.7),
    ])
    func nvidiaDenseFigures(model: String, memoryMiB: Int, expected: Double) {
        let cu = gcu(device(model, memoryMiB: memoryMiB))
        #expect(cu.nominal == expected)
        #expect(cu.effective == expected)
        #expect(cu.basis == .fp16Dense && !cu.estimated)
    }

    @Test func otherVendors() {
        // MI100: FP16 184.6 beats BF16 92.3; GCU takes the better of the two.
        #expect(gcu(device("AMD Instinct MI100", .amd, memoryMiB: 32752)).nominal == 184.6)
        #expect(gcu(device("MI300X", .amd)).nominal == 1307.4)
        // Gaudi2 publishes BF16 only.
        #expect(gcu(device("HL-225", .habana, memoryMiB: 98304)).nominal == 432)
        #expect(gcu(device("Intel(R) Data Center GPU Max 1550", .intel)).nominal == 838.9)
        #expect(gcu(device("910A", .huawei, memoryMiB: 32768)).nominal == 256)
    }

    @Test func fallbacksAreFlagged() {
        // Quadro P400: FP32 only -> 2 × 0.641.
        let p400 = gcu(device("Quadro P400", memoryMiB: 1998))
        #expect(p400.basis == .fp32Doubled && p400.estimated)
        #expect(abs(p400.nominal - 1.282) < 1e-9)
        // Ascend 310P: INT8 only -> 140 / 2.
        let p310 = gcu(device("310P3", .huawei, memoryMiB: 24576))
        #expect(p310.basis == .int8Halved && p310.nominal == 70 && p310.estimated)
    }

    @Test func rowsWithoutComputeUseTheLeastCapablePeer() {
        // A10G has no public figure: the weakest NVIDIA part with ~24 GB and a dense FP16
        // figure is the RTX 3090 (71).
        let a10g = gcu(device("NVIDIA A10G", memoryMiB: 23028))
        #expect(a10g.basis == .peerEstimate && a10g.estimated)
        #expect(a10g.nominal == 71)
        #expect(a10g.note.contains("GeForce RTX 3090"))
        // 910B2C: per-variant compute is unpublished; the 64 GB peer is the generic 910B (320).
        let b2 = gcu(device("910B2C", .huawei, memoryMiB: 65536))
        #expect(b2.basis == .peerEstimate && b2.nominal == 320)
    }

    @Test func unknownModelsUseVendorPeersThenMemory() {
        let npu = gcu(device("xxx", .huawei, memoryMiB: 32768))
        #expect(npu.basis == .peerEstimate && npu.estimated && npu.nominal == 256)
        let intel = gcu(device("Intel(R) Graphics [0x020a]", .intel, memoryMiB: 32768))
        #expect(intel.basis == .memoryEstimate && intel.nominal == 32)
        let nothing = gcu(device("mystery", .unknown))
        #expect(nothing.basis == .none && nothing.nominal == 0 && nothing.estimated)
    }

    @Test(arguments: [
        (HealthState.healthy, 989.5), (.degraded, 494.75), (.unknown, 0), (.unhealthy, 0),
    ])
    func healthDerating(state: HealthState, expected: Double) {
        let cu = gcu(device("NVIDIA H100 80GB HBM3", memoryMiB: 81559, health: DeviceHealth(state: state)))
        #expect(cu.nominal == 989.5)
        #expect(cu.effective == expected)
    }

    @Test func degradedFactorIsConfigurable() {
        var policy = ComputeUnitPolicy()
        policy.degradedFactor = 0.8
        let cu = gcu(device("NVIDIA A100-SXM4-40GB", memoryMiB: 40960, health: DeviceHealth(state: .degraded)), policy: policy)
        #expect(abs(cu.effective - 249.6) < 1e-9)
    }

    @Test func migSlicesGetTheirFraction() throws {
        // The H100 MIG fixture: 3g.40gb, 2g.20gb and two 1g.10gb.
        let parts = [
            DevicePartition(id: "MIG-0", profile: "3g.40gb", memoryTotalMiB: 40448, computeFraction: 3.0 / 7),
            DevicePartition(id: "MIG-1", profile: "2g.20gb", memoryTotalMiB: 20096),
            DevicePartition(id: "MIG-2", profile: "1g.10gb", memoryTotalMiB: 9856),
            DevicePartition(id: "MIG-3", profile: nil, memoryTotalMiB: 9856),
        ]
        let cu = gcu(device("NVIDIA H100 80GB HBM3", memoryMiB: 81559, partitions: parts))
        #expect(cu.partitions.count == 4)
        #expect(abs(cu.partitions[0].nominal - 989.5 * 3 / 7) < 1e-9)
        #expect(!cu.partitions[0].fractionEstimated)
        #expect(abs(cu.partitions[1].fraction - 2.0 / 7) < 1e-9 && cu.partitions[1].fractionEstimated)
        #expect(abs(cu.partitions[2].nominal - 989.5 / 7) < 1e-9)
        // No profile, no fraction: memory share.
        #expect(abs(cu.partitions[3].fraction - 9856.0 / 81559) < 1e-9)
        #expect(cu.partitions[2].memoryGiB == 9856.0 / 1024)
    }

    @Test func dieShareScalesComputeAndCarbon() throws {
        let die = device("Ascend910", .huawei, memoryMiB: 65536)
        let cu = gcu(die)
        #expect(cu.nominal == 400 && cu.packageShare == 0.5)
        // Embodied carbon: only rows with a published figure.
        #expect(catalog.embodiedCarbonKgCO2e(for: device("NVIDIA H100 80GB HBM3", memoryMiB: 81559)) == 164)
        #expect(catalog.embodiedCarbonKgCO2e(for: device("NVIDIA A100-SXM4-40GB", memoryMiB: 40960)) == 127.6)
        #expect(catalog.embodiedCarbonKgCO2e(for: die) == nil)
    }
}

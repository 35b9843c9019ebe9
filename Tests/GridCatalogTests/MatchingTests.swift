import GridCore
import Testing
@testable import GridCatalog

/// One device as a vendor tool reports it, with the catalog row it must match.
struct FixtureDevice: Sendable, CustomTestStringConvertible {
    var fixture: String
    var model: String
    var vendor: AcceleratorVendor?
    var pci: String?
    var memoryMiB: Int?
    var expected: String?
    var share: Double = 1

    var testDescription: String { "\(fixture): \"\(model)\"" }
}

/// Model strings, PCI ids and memory read by hand from Tests/Fixtures/vendor/.
let fixtureDevices: [FixtureDevice] = [
    .init(fixture: "nvidia-smi-q-x_tesla-p100_v11.xml", model: "Tesla P100-PCIE-16GB", vendor: .nvidia,
          pci: "15F810DE", memoryMiB: 16384, expected: "Tesla P100 PCIe 16GB"),
    .init(fixture: "nvidia-smi-query-gpu_csv-nounits_tesla-p100.csv", model: "Tesla P100-PCIE-16GB", vendor: .nvidia,
          expected: "Tesla P100 PCIe 16GB"),
    .init(fixture: "nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml", model: "Tesla V100S-PCIE-32GB", vendor: .nvidia,
          pci: "1DF610DE", memoryMiB: 32510, expected: "Tesla V100S PCIe 32GB"),
    .init(fixture: "nvidia-smi-q-x_tesla-t4_v11.xml", model: "Tesla T4", vendor: .nvidia, pci: "1EB810DE",
          memoryMiB: 15360, expected: "Tesla T4"),
    .init(fixture: "nvidia-smi-q-x_a10g_v11.xml", model: "NVIDIA A10G", vendor: .nvidia, pci: "000000DE",
          memoryMiB: 23028, expected: "A10G"),
    .init(fixture: "nvidia-smi-q-x_a100-sxm4-40gb-mig_v11.xml", model: "NVIDIA A100-SXM4-40GB", vendor: .nvidia,
          pci: "20B010DE", memoryMiB: 40960, expected: "A100 SXM4 40GB"),
    .init(fixture: "nvidia-smi-query-gpu_csv-noheader_a100-sxm4-40gb-multi_555.42.06.csv",
          model: "NVIDIA A100-SXM4-40GB", vendor: .nvidia, memoryMiB: 40960, expected: "A100 SXM4 40GB"),
    .init(fixture: "nvidia-smi-q-x_a100-sxm4-80gb-mig_v12.xml", model: "NVIDIA A100-SXM4-80GB", vendor: .nvidia,
          pci: "20B210DE", memoryMiB: 81920, expected: "A100 SXM4 80GB"),
    .init(fixture: "nvidia-smi-query-gpu_csv_h100-80gb-hbm3_590.48.01.csv", model: "NVIDIA H100 80GB HBM3",
          vendor: .nvidia, pci: "0x233010DE", memoryMiB: 81559, expected: "H100 SXM5 80GB"),
    .init(fixture: "nvidia-smi-L_h100-mig_590.48.01.txt", model: "NVIDIA H100 80GB HBM3", vendor: .nvidia,
          expected: "H100 SXM5 80GB"),
    .init(fixture: "nvidia-smi-q-x_h200_580.159.04.xml", model: "NVIDIA H200", vendor: .nvidia, pci: "233510DE",
          memoryMiB: 143771, expected: "H200 SXM 141GB"),
    .init(fixture: "nvidia-smi-query-gpu_csv_h200_580.159.04.csv", model: "NVIDIA H200", vendor: .nvidia,
          pci: "0x233510DE", memoryMiB: 143771, expected: "H200 SXM 141GB"),
    .init(fixture: "nvidia-smi-query-gpu_csv-noheader-nounits_h100l-vgpu-mig_prmon-pr318.csv",
          model: "NVIDIA H100L-2-24C", vendor: .nvidia, memoryMiB: 24576, expected: "H100 NVL 94GB"),
    .init(fixture: "nvidia-smi-q-x_rtx-2080-windows_v11.xml", model: "NVIDIA GeForce RTX 2080", vendor: .nvidia,
          pci: "1E8710DE", memoryMiB: 8192, expected: "GeForce RTX 2080"),
    .init(fixture: "nvidia-smi-query-gpu_csv_rtx2080super-windows_591.86.csv", model: "NVIDIA GeForce RTX 2080 SUPER",
          vendor: .nvidia, pci: "0x1E8110DE", memoryMiB: 8192, expected: "GeForce RTX 2080 SUPER"),
    .init(fixture: "nvidia-smi-q-x_rtx-3080_v13.xml", model: "NVIDIA GeForce RTX 3080", vendor: .nvidia,
          pci: "221610DE", memoryMiB: 10240, expected: "GeForce RTX 3080 10GB"),
    .init(fixture: "nvidia-smi-q-x_dual-rtx-a5000_v13.xml", model: "NVIDIA RTX A5000", vendor: .nvidia,
          pci: "223110DE", memoryMiB: 24564, expected: "RTX A5000"),
    .init(fixture: "nvidia-smi-q-x_quadro-p400_418-nodtd.xml", model: "Quadro P400", vendor: .nvidia,
          pci: "1CB310DE", memoryMiB: 1998, expected: "Quadro P400"),
    .init(fixture: "rocm-smi-json_mi100_rocm571.json", model: "Arcturus GL-XL [Instinct MI100]", vendor: .amd,
          memoryMiB: 32752, expected: "Instinct MI100"),
    .init(fixture: "rocm-smi-json_mi100_rocm602.json", model: "Arcturus GL-XL [Instinct MI100]", vendor: .amd,
          pci: "0x738c", memoryMiB: 32752, expected: "Instinct MI100"),
    .init(fixture: "amd-smi-static_mi300a-4apu_amdsmi-readme.txt", model: "MI300A", vendor: .amd, pci: "0x74a0",
          memoryMiB: 64289, expected: "Instinct MI300A"),
    .init(fixture: "amd-smi-static_mi300a-4apu_amdsmi-readme.txt (product name)",
          model: "Aqua Vanjaram [Instinct MI300A]", vendor: .amd, expected: "Instinct MI300A"),
    .init(fixture: "rocm-smi-json_vega20-radeon-pro-vii_rocm4x.json", model: "Radeon Instinct MI50 32GB",
          vendor: .amd, memoryMiB: 32752, expected: "Radeon Instinct MI50 32GB"),
    .init(fixture: "rocm-smi-json_rx6700xt_rocm612.json", model: "Navi 22 [Radeon RX 6700/6700 XT / 6800M]",
          vendor: .amd, pci: "0x73df", memoryMiB: 12272, expected: "Radeon RX 6700 XT"),
    .init(fixture: "rocm-smi-json_rx7800xt_rocm624.json", model: "Navi 32 [Radeon RX 7700 XT / 7800 XT]",
          vendor: .amd, pci: "0x747e", memoryMiB: 16368, expected: "Radeon RX 7800 XT"),
    .init(fixture: "sysfs-kfd-topology-node1-properties_vega10-mi25.txt", model: "", vendor: .amd, pci: "0x6860",
          memoryMiB: 16368, expected: "Radeon Instinct MI25"),
    .init(fixture: "sysfs-kfd-topology-node2-properties_mi210-xgmi.txt", model: "", vendor: .amd, pci: "0x740f",
          expected: "Instinct MI210"),
    .init(fixture: "rocm-smi-json_hygon-dcu_dtk24.04.3.json", model: "DCU xxxx", vendor: .hygon, pci: "0x6210",
          memoryMiB: 65520, expected: "DCU K100_AI"),
    .init(fixture: "rocm-smi-json_hygon-dcu_dtk24.04.3.json (parsed as AMD)", model: "DCU xxxx", vendor: .amd,
          pci: "0x6210", memoryMiB: 65520, expected: "DCU K100_AI"),
    .init(fixture: "npu-smi-info_310-4chip_21.0.4_huawei-doc.txt", model: "310", vendor: .huawei, memoryMiB: 8192,
          expected: "Ascend 310"),
    .init(fixture: "npu-smi-info_310b4-nohbm_23.0.0.txt", model: "310B4", vendor: .huawei, memoryMiB: 15609,
          expected: "Ascend 310B4"),
    .init(fixture: "npu-smi-info_910a-8npu_22.0.3.1_huawei-doc.txt", model: "910A", vendor: .huawei,
          memoryMiB: 32768, expected: "Ascend 910 (910A)"),
    .init(fixture: "npu-smi-info_910b2c-2npu_23.0.2.1.txt", model: "910B2C", vendor: .huawei, memoryMiB: 65536,
          expected: "Ascend 910B2"),
    .init(fixture: "npu-smi-info_910b4-1npu_24.1.rc1.txt", model: "910B4", vendor: .huawei, memoryMiB: 32768,
          expected: "Ascend 910B4"),
    .init(fixture: "npu-smi-info_a3-ascend910-dualdie_25.2.0.txt", model: "Ascend910", vendor: .huawei,
          memoryMiB: 65536, expected: "Ascend 910C", share: 0.5),
    .init(fixture: "npu-smi-info_910a-8npu-procs_24.1.RC2_huawei-doc.txt (name redacted)", model: "xxx",
          vendor: .huawei, memoryMiB: 32768, expected: nil),
    .init(fixture: "xpu-smi-discovery_max1550-6gpu_aurora.txt", model: "Intel(R) Data Center GPU Max 1550",
          vendor: .intel, expected: "Data Center GPU Max 1550"),
    .init(fixture: "xpu-smi-discovery-j_pvc-0x020a_xpumanager-doc.json", model: "Intel(R) Graphics [0x020a]",
          vendor: .intel, pci: "0x20a", memoryMiB: 32768, expected: nil),
    .init(fixture: "hl-smi-L_gaudi2-hl225_1.12.1.txt", model: "HL-225", vendor: .habana, pci: "0x1da31020",
          expected: "Gaudi2 HL-225"),
    .init(fixture: "hl-smi_gaudi2-hl225-8aip_1.21.1.txt", model: "HL-225", vendor: .habana, memoryMiB: 98304,
          expected: "Gaudi2 HL-225"),
    .init(fixture: "ixsmi-session_iluvatar-bi-v100.txt", model: "Iluvatar BI-V100", vendor: .iluvatar,
          memoryMiB: 32768, expected: "BI-V100"),
]

@Suite("Model matching")
struct MatchingTests {
    let catalog = AcceleratorCatalog.bundled

    @Test(arguments: fixtureDevices)
    func fixtureModelStrings(_ d: FixtureDevice) {
        let m = catalog.match(model: d.model, vendor: d.vendor, pciDeviceID: d.pci, memoryMiB: d.memoryMiB)
        #expect(m?.spec.model == d.expected)
        if let m {
            #expect(m.packageShare == d.share)
            #expect(!m.isAmbiguous, "ambiguous with \(m.ambiguousWith)")
        }
    }

    @Test(arguments: [
        ("NVIDIA A100-SXM4-40GB", "A100 SXM4 40GB"),
        ("Tesla V100S-PCIE-32GB", "Tesla V100S PCIe 32GB"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM5 80GB"),
        ("Ascend910B2C", "Ascend 910B2"),
        ("910B4", "Ascend 910B4"),
        ("Ascend910B4-1", "Ascend 910B4"),
        ("HL-225", "Gaudi2 HL-225"),
        ("Intel(R) Data Center GPU Max 1550", "Data Center GPU Max 1550"),
        ("Iluvatar BI-V100", "BI-V100"),
        ("AMD Instinct MI100", "Instinct MI100"),
        ("AMD Instinct MI300X", "Instinct MI300X"),
        ("NVIDIA H200", "H200 SXM 141GB"),
        ("NVIDIA H20", "H20"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA A800-SXM4-80GB", "A800 SXM4 80GB"),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
        ("Radeon Pro VII", "Radeon Pro VII"),
        ("Habana Gaudi HL-225", "Gaudi2 HL-225"),
        ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "H100 SXM5 80GB"),
    ])
    func brieflyNamedModels(model: String, expected: String) {
        #expect(catalog.match(model: model, vendor: nil, pciDeviceID: nil)?.spec.model == expected)
    }

    @Test func rocmDeviceIDAlone() throws {
        let m = try #require(catalog.match(model: "", vendor: .amd, pciDeviceID: "0x738c"))
        #expect(m.spec.model == "Instinct MI100")
        #expect(m.method == .pciDeviceID && m.pciDeviceIDMatched)
    }

    @Test func sysfsFallbackNamesMatchByPCIID() {
        // GridProbe's sysfs discovery names unknown devices "<Vendor> device 0x<id>".
        #expect(catalog.match(model: "AMD device 0x6860", vendor: .amd, pciDeviceID: "0x6860", memoryMiB: 16368)?
            .spec.model == "Radeon Instinct MI25")
        #expect(catalog.match(model: "Habana GAUDI2", vendor: .habana, pciDeviceID: "0x1020")?.spec.model == "Gaudi2 HL-225")
        #expect(catalog.match(model: "NVIDIA device 0x2330", vendor: .nvidia, pciDeviceID: "0x2330")?.spec.model == "H100 SXM5 80GB")
    }

    @Test func memoryPicksTheVariant() {
        // PCI id 0x66a1 is shared by MI50 16GB, MI50 32GB and Radeon Pro VII.
        let big = catalog.match(model: "", vendor: .amd, pciDeviceID: "0x66a1", memoryMiB: 32752)
        #expect(big?.spec.model == "Radeon Instinct MI50 32GB")
        let small = catalog.match(model: "", vendor: .amd, pciDeviceID: "0x66a1", memoryMiB: 16368)
        #expect(small?.isAmbiguous == true)
        #expect(Set([small?.spec.model] + (small?.ambiguousWith ?? [])) == ["Radeon Instinct MI50", "Radeon Pro VII"])
        // "Ascend910" names both the 910A and a 910C die; memory decides.
        let a = catalog.match(model: "Ascend910", vendor: .huawei, pciDeviceID: nil, memoryMiB: 32768)
        #expect(a?.spec.model == "Ascend 910 (910A)")
        #expect(a?.packageShare == 1)
    }

    @Test func nameAgreesWithPCIForExtraScore() throws {
        let m = try #require(catalog.match(model: "NVIDIA A100-SXM4-40GB", vendor: .nvidia, pciDeviceID: "0x20B010DE"))
        #expect(m.method == .exactName && m.pciDeviceIDMatched)
        #expect(m.score > 1300)
    }

    @Test func vendorRestrictsTheSearch() {
        #expect(catalog.match(model: "NVIDIA A100-SXM4-40GB", vendor: .amd, pciDeviceID: nil) == nil)
        #expect(catalog.match(model: "HL-225", vendor: .intel, pciDeviceID: nil)?.spec.model == "Gaudi2 HL-225")
    }

    @Test func tokenBoundariesKeepA10AwayFromA100() {
        #expect(catalog.match(model: "NVIDIA A10", vendor: .nvidia, pciDeviceID: nil)?.spec.model == "A10")
        // "a10" must not be found inside "a100"; "A100 40GB" is a partial of several rows.
        let m = catalog.match(model: "NVIDIA A100 40GB", vendor: .nvidia, pciDeviceID: nil)
        #expect(m?.spec.model.hasPrefix("A100") == true)
    }

    @Test func genericNameIsAWeakAmbiguousMatch() throws {
        let m = try #require(catalog.match(model: "NVIDIA H100", vendor: .nvidia, pciDeviceID: nil))
        #expect(m.method == .partialName)
        #expect(m.isWeak)
        // With memory the 94 GB NVL is preferred over the 80 GB parts.
        let nvl = catalog.match(model: "NVIDIA H100", vendor: .nvidia, pciDeviceID: nil, memoryMiB: 95830)
        #expect(nvl?.spec.model == "H100 NVL 94GB")
    }

    @Test func unknownStringsDoNotMatch() {
        #expect(catalog.match(model: "Some Future Accelerator 9000", vendor: nil, pciDeviceID: nil) == nil)
        #expect(catalog.match(model: "", vendor: nil, pciDeviceID: nil) == nil)
        #expect(catalog.match(model: "GPU", vendor: nil, pciDeviceID: "N/A") == nil)
    }

    @Test func normalisation() {
        #expect(ModelNormalizer.normalize("NVIDIA A100-SXM4-40GB") == "a100sxm440gb")
        #expect(ModelNormalizer.normalize("Ascend910B2C") == "910b2c")
        #expect(ModelNormalizer.normalize("Intel(R) Data Center GPU Max 1550") == "datacentergpumax1550")
        #expect(ModelNormalizer.normalize("AMD Instinct™ MI300X") == "mi300x")
    }

    @Test func dieOfAMultiDiePackage() throws {
        // An MI250X GCD reports 64 GB: half the package.
        let m = try #require(catalog.match(model: "AMD Instinct MI250X", vendor: .amd, pciDeviceID: "0x740c", memoryMiB: 65520))
        #expect(m.spec.model == "Instinct MI250X")
        #expect(m.packageShare == 0.5)
        // Gaudi3 has two dies but enumerates as one device with all of its memory.
        let g = try #require(catalog.match(model: "HL-325L", vendor: .habana, pciDeviceID: nil, memoryMiB: 131072))
        #expect(g.packageShare == 1)
    }
}

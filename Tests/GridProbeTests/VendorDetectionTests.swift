import Foundation
import Testing
import GridCore
@testable import GridProbe

/// `detect` on every fixture file: the format it is, or nil for files that are not device
/// inventories in a supported format.
@Suite struct VendorDetectionTests {
    static let expected: [String: VendorTool?] = [
        "amd-smi-static_mi300a-4apu_amdsmi-readme.txt": nil,
        "hl-smi-L_gaudi2-hl225_1.12.1.txt": .hlSMIList,
        "hl-smi_gaudi2-hl225-8aip_1.21.1.txt": .hlSMI,
        "intel_gpu_top-J_igpu-sample.json": nil,
        "ixsmi-session_iluvatar-bi-v100.txt": .ixSMI,
        "npu-smi-info-m_310-4chip_21.0.4_huawei-doc.txt": .npuSMI,
        "npu-smi-info_310-4chip_21.0.4_huawei-doc.txt": .npuSMI,
        "npu-smi-info_310b4-nohbm_23.0.0.txt": .npuSMI,
        "npu-smi-info_910a-8npu-procs_24.1.RC2_huawei-doc.txt": .npuSMI,
        "npu-smi-info_910a-8npu_22.0.3.1_huawei-doc.txt": .npuSMI,
        "npu-smi-info_910b2c-2npu_23.0.2.1.txt": .npuSMI,
        "npu-smi-info_910b4-1npu_24.1.rc1.txt": .npuSMI,
        "npu-smi-info_a3-ascend910-dualdie_25.2.0.txt": .npuSMI,
        "nvidia-gpu-exporter-capture_h100-mig_590.48.01.txt": nil,
        "nvidia-smi-L_h100-mig_590.48.01.txt": nil,
        "nvidia-smi-L_h200_580.159.04.txt": nil,
        "nvidia-smi-help-query-gpu.txt": nil,
        "nvidia-smi-q-x_a100-sxm4-40gb-mig_v11.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_a100-sxm4-80gb-mig_v12.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_a10g_v11.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_dual-rtx-a5000_v13.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_h200_580.159.04.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_h200-load_580.159.04.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_quadro-p400_418-nodtd.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_rtx-2080-windows_v11.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_rtx-3080_v13.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_tesla-p100_v11.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_tesla-t4_v11.xml": .nvidiaSMIXML,
        "nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml": .nvidiaSMIXML,
        "nvidia-smi-q_h100-mig_590.48.01.txt": nil,
        "nvidia-smi-q_h200_580.159.04.txt": nil,
        "nvidia-smi-topo-m_a100-sxm4-80gb-4gpu-numa-id.txt": .nvidiaSMITopo,
        "nvidia-smi-topo-m_dgx-a100-8gpu.txt": .nvidiaSMITopo,
        "nvidia-smi-topo-m_h200-1gpu_580.159.04.txt": .nvidiaSMITopo,
        "nvidia-smi-topo-mp_dgx1-8gpu.txt": .nvidiaSMITopo,
        "nvidia-smi-query-gpu_csv-noheader-nounits_2gb-geforce-NA_i3pystatus-pr776.csv": .nvidiaSMICSV,
        "nvidia-smi-query-gpu_csv-noheader-nounits_2gb-geforce-NotSupported-olddriver_i3pystatus-pr776.csv": .nvidiaSMICSV,
        "nvidia-smi-query-gpu_csv-noheader-nounits_h100l-vgpu-mig_prmon-pr318.csv": .nvidiaSMICSV,
        "nvidia-smi-query-gpu_csv-noheader_a100-sxm4-40gb-multi_555.42.06.csv": .nvidiaSMICSV,
        "nvidia-smi-query-gpu_csv-nounits_tesla-p100.csv": .nvidiaSMICSV,
        "nvidia-smi-query-gpu_csv_h100-80gb-hbm3_590.48.01.csv": .nvidiaSMICSV,
        "nvidia-smi-query-gpu_csv_h100-mig_590.48.01.csv": .nvidiaSMICSV,
        "nvidia-smi-query-gpu_csv_h200_580.159.04.csv": .nvidiaSMICSV,
        "nvidia-smi-query-gpu_csv_rtx2080super-windows_591.86.csv": .nvidiaSMICSV,
        "rocm-smi-json_hygon-dcu_dtk24.04.3.json": .rocmSMIJSON,
        "rocm-smi-json_mi100_rocm571.json": .rocmSMIJSON,
        "rocm-smi-json_mi100_rocm602.json": .rocmSMIJSON,
        "rocm-smi-json_mi100-xgmi-derived_rocm602.json": .rocmSMIJSON,
        "rocm-smi-json_rx6700xt_rocm612.json": .rocmSMIJSON,
        "rocm-smi-json_rx7800xt_rocm624.json": .rocmSMIJSON,
        "rocm-smi-json_vega20-radeon-pro-vii_rocm4x.json": .rocmSMIJSON,
        "sysfs-kfd-topology-node1-properties_vega10-mi25.txt": nil,
        "sysfs-kfd-topology-node2-properties_mi210-xgmi.txt": nil,
        "xpu-smi-discovery-d_pvc-0x020a_xpumanager-doc.txt": .xpuSMIDiscovery,
        "xpu-smi-discovery-j_pvc-0x020a_xpumanager-doc.json": .xpuSMIDiscovery,
        "xpu-smi-discovery_max1550-6gpu_aurora.txt": .xpuSMIDiscovery,
        "xpu-smi-dump_max1550-6gpu_aurora.csv": .xpuSMIDump,
    ]

    /// Headerless CSVs whose columns only their source documents; `parse` without columns refuses them.
    static let needColumns: Set<String> = [
        "nvidia-smi-query-gpu_csv-noheader-nounits_2gb-geforce-NA_i3pystatus-pr776.csv",
        "nvidia-smi-query-gpu_csv-noheader-nounits_2gb-geforce-NotSupported-olddriver_i3pystatus-pr776.csv",
        "nvidia-smi-query-gpu_csv-noheader-nounits_h100l-vgpu-mig_prmon-pr318.csv",
        "nvidia-smi-query-gpu_csv-noheader_a100-sxm4-40gb-multi_555.42.06.csv",
    ]

    @Test func everyFixtureIsListed() throws {
        #expect(try Fixture.allNames() == Self.expected.keys.sorted())
        #expect(Self.expected.count == 57)  // 56 captures, 1 derived (SOURCES.md says how) + SOURCES.md
    }

    @Test(arguments: expected.keys.sorted())
    func detectsFixture(_ name: String) throws {
        let text = try Fixture.text(name)
        let want = try #require(Self.expected[name])
        #expect(VendorOutputParser.detect(text) == want)
        if let want {
            if Self.needColumns.contains(name) {
                #expect(throws: VendorParseError.self) { try VendorOutputParser.parse(text) }
            } else {
                let result = try VendorOutputParser.parse(text)
                #expect(result.tool == want)
                // A topology matrix describes links between devices other tools list.
                #expect(want == .nvidiaSMITopo ? !result.links.isEmpty && result.devices.isEmpty : !result.devices.isEmpty)
                #expect(result.devices.allSatisfy { $0.vendor == want.vendor || (want == .rocmSMIJSON && $0.vendor == .hygon) })
                #expect(result.devices.allSatisfy { $0.health == ParseSupport.notEvaluated })
                #expect(Set(result.devices.map(\.id)).count == result.devices.count)
            }
        } else {
            do {
                _ = try VendorOutputParser.parse(text)
                Issue.record("\(name) parsed although it is not an inventory")
            } catch let error as VendorParseError {
                guard case .unrecognizedFormat(let hint) = error else {
                    Issue.record("expected unrecognizedFormat, got \(error)")
                    return
                }
                #expect(!hint.isEmpty && hint.count <= 81)
            }
        }
    }

    @Test func hintQuotesFirstNonEmptyLineTruncated() {
        let long = "\n\n   " + String(repeating: "x", count: 200) + "\nsecond"
        guard case .unrecognizedFormat(let hint)? = Self.error(long) else {
            Issue.record("expected unrecognizedFormat")
            return
        }
        #expect(hint.hasPrefix("xxxx"))
        #expect(hint.count == 81)
        #expect(Self.error("") == .unrecognizedFormat(hint: ""))
        #expect(Self.error("hello world") == .unrecognizedFormat(hint: "hello world"))
    }

    static func error(_ text: String, as tool: VendorTool? = nil) -> VendorParseError? {
        do {
            _ = try VendorOutputParser.parse(text, as: tool)
            return nil
        } catch let error as VendorParseError {
            return error
        } catch {
            return nil
        }
    }

    static let garbage: [String] = [
        "", " \n\t\n", "\u{0}\u{1}\u{2}\u{FFFD}\u{FFFD}binary\u{0}", "{", "[]", "{}", "<", "<?xml version=\"1.0\"?>",
        "<nvidia_smi_log>", "<nvidia_smi_log><gpu>", "{\"card0\": ", "{\"card0\": 5}", "{\"device_list\": 7}",
        "| NPU Name | Health |", "npu-smi 1.0 Health NPU", "HL-SMI LOG", "| HL-SMI Version: 1 |\n|===|\n| 0",
        "| Device ID | Device Information |\n| 0 |", "Timestamp, DeviceId\n", "Timestamp, DeviceId\n0,",
        "IX-ML: \n<ixsmi_log>", "a, b\nc", "index, name\n99999999999999999999999, X",
        "name, memory.total [MiB]\nX, -5 MiB", "| 0 |\n|---|", String(repeating: "9", count: 10_000),
        "NPU ID   Chip ID   Chip Logic ID   Chip Name\n-1 x y", "\u{FEFF}<nvidia_smi_log></nvidia_smi_log>",
    ]

    /// Every garbage input either parses to something or throws VendorParseError, for every tool.
    @Test(arguments: garbage)
    func garbageNeverTraps(_ text: String) {
        for tool in [nil] + VendorTool.allCases.map(Optional.some) {
            do {
                _ = try VendorOutputParser.parse(text, as: tool)
            } catch is VendorParseError {
            } catch {
                Issue.record("unexpected error type \(error) for tool \(String(describing: tool))")
            }
        }
    }

    /// Every fixture truncated at several points, parsed as every tool: never a trap.
    @Test(arguments: expected.keys.sorted())
    func truncatedFixturesNeverTrap(_ name: String) throws {
        let text = try Fixture.text(name)
        let tool = Self.expected[name] ?? nil
        for fraction in [0.1, 0.33, 0.5, 0.9] {
            let cut = String(text.prefix(Int(Double(text.count) * fraction)))
            for candidate in [nil, tool] {
                do {
                    _ = try VendorOutputParser.parse(cut, as: candidate)
                } catch is VendorParseError {
                } catch {
                    Issue.record("unexpected error type \(error)")
                }
            }
        }
    }

    @Test func wrongExplicitToolIsMalformedNotACrash() throws {
        let xml = try Fixture.text("nvidia-smi-q-x_tesla-t4_v11.xml")
        for tool in VendorTool.allCases where tool != .nvidiaSMIXML {
            do {
                _ = try VendorOutputParser.parse(xml, as: tool)
            } catch is VendorParseError {}
        }
        let json = try Fixture.text("rocm-smi-json_mi100_rocm602.json")
        #expect(throws: VendorParseError.self) { try VendorOutputParser.parse(json, as: .nvidiaSMIXML) }
    }
}

import Foundation
import GridCore
import GridProbe
import Testing

/// The process lists vendor tools print, per device: what lets an agent see that a device is
/// held by someone else.
@Suite struct DeviceProcessTests {
    @Test func nvidiaXMLListsComputeAndGraphicsProcessesPerGPU() throws {
        let result = try NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_tesla-t4_v11.xml"))
        let procs = try #require(result.devices.first?.processes)
        #expect(procs == [DeviceProcess(pid: 675, name: "/usr/lib/xorg/Xorg", kind: .graphics),
                          DeviceProcess(pid: 5762, name: "python", kind: .compute)])
        let v100 = try NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"))
        #expect(v100.devices.compactMap(\.processes).reduce(0) { $0 + $1.count } == 8)
        // The H200 captured under a PyTorch matrix-product loop, and idle.
        let h200 = try NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_h200-load_580.159.04.xml"))
        #expect(h200.devices.first?.processes == [DeviceProcess(pid: 613, name: "python3", kind: .compute)])
        #expect(h200.devices.first?.utilizationPercent == 100)
        let idle = try NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_h200_580.159.04.xml"))
        #expect(idle.devices.first?.processes == [])
        let noList = try NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_tesla-p100_v11.xml"))
        #expect(noList.devices.allSatisfy { $0.processes == nil || $0.processes == [] })
    }

    @Test func npuSMIProcessTableIsAttributedToItsChip() throws {
        let r = try NpuSMIParser.parse(Fixture.text("npu-smi-info_910a-8npu-procs_24.1.RC2_huawei-doc.txt"))
        #expect(r.devices.count == 8)
        let first = try #require(r.devices.first { $0.pciBusID?.lowercased().hasSuffix("c1:00.0") == true })
        #expect(first.processes?.map(\.pid).sorted() == [37640, 37648, 37656, 37664])
        #expect(first.processes?.allSatisfy { $0.name == "hlt_host_devmm_" && $0.kind == .compute } == true)
        let none = try NpuSMIParser.parse(Fixture.text("npu-smi-info_910b4-1npu_24.1.rc1.txt"))
        #expect(none.devices.map(\.processes) == [[]], "\"No running processes found\" is an empty list, not unknown")
        let one = try NpuSMIParser.parse(Fixture.text("npu-smi-info_910b2c-2npu_23.0.2.1.txt"))
        #expect(one.devices.first?.processes == [DeviceProcess(pid: 124528, name: "python3.8")])
    }

    @Test func hlSMIComputeProcessesWithNoneRunning() throws {
        let r = try HabanaSMITableParser.parse(Fixture.text("hl-smi_gaudi2-hl225-8aip_1.21.1.txt"))
        #expect(r.devices.count == 8 && r.devices.allSatisfy { $0.processes == [] })
        let text = try Fixture.text("hl-smi_gaudi2-hl225-8aip_1.21.1.txt")
            .replacingOccurrences(of: "|   3        N/A   N/A    N/A                                      N/A        |",
                                  with: "|   3        4242  C      python3                                  1024MiB    |")
        let busy = try HabanaSMITableParser.parse(text)
        #expect(busy.devices.first { $0.index == 3 }?.processes == [DeviceProcess(pid: 4242, name: "python3")])
    }
}

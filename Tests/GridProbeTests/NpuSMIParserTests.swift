import Foundation
import Testing
import GridCore
@testable import GridProbe

@Suite struct NpuSMIParserTests {
    @Test func ascend910B2CTwoNPUsWithProcessTable() throws {
        let result = try NpuSMIParser.parse(Fixture.text("npu-smi-info_910b2c-2npu_23.0.2.1.txt"))
        #expect(result.tool == .npuSMI)
        #expect(result.toolVersion == "23.0.2.1")
        #expect(result.driverVersion == "23.0.2.1")
        #expect(result.devices.count == 2)  // the process row is not a device
        let npu = try #require(result.devices.first)
        #expect(npu.vendor == .huawei)
        #expect(npu.index == 0)
        #expect(npu.model == "Ascend 910B2C")
        #expect(npu.id == "0000:5a:00.0")
        #expect(npu.memoryTotalMiB == 65536)  // HBM, not the 0 / 0 Memory-Usage
        #expect(npu.memoryUsedMiB == 20701)
        #expect(npu.powerDrawW == 88.6)
        #expect(npu.temperatureC == 51)
        #expect(npu.utilizationPercent == 0)
        #expect(npu.signals.vendorHealthText == "OK")
        #expect(npu.health == ParseSupport.notEvaluated)
        #expect(result.devices[1].pciBusID == "0000:19:00.0")
        #expect(result.devices[1].memoryUsedMiB == 20687)
    }

    @Test func ascend910B4CRLF() throws {
        let result = try NpuSMIParser.parse(Fixture.text("npu-smi-info_910b4-1npu_24.1.rc1.txt"))
        let npu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(npu.model == "Ascend 910B4")
        #expect(npu.memoryTotalMiB == 32768)
        #expect(npu.memoryUsedMiB == 2773)
        #expect(npu.powerDrawW == 81.1)
        #expect(npu.temperatureC == 37)
        #expect(npu.pciBusID == "0000:82:00.0")
        #expect(result.toolVersion == "24.1.rc1")
    }

    @Test func ascend310B4WithoutHBM() throws {
        let result = try NpuSMIParser.parse(Fixture.text("npu-smi-info_310b4-nohbm_23.0.0.txt"))
        let npu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(npu.model == "Ascend 310B4")
        #expect(npu.pciBusID == nil)  // "NA"
        #expect(npu.id == "npu-smi:0")
        #expect(npu.memoryTotalMiB == 15609)
        #expect(npu.memoryUsedMiB == 3628)
        #expect(npu.powerDrawW == 0)
        #expect(npu.temperatureC == 65)
        #expect(npu.signals.vendorHealthText == "Alarm")
    }

    @Test func ascend910AEightNPUs() throws {
        let result = try NpuSMIParser.parse(Fixture.text("npu-smi-info_910a-8npu_22.0.3.1_huawei-doc.txt"))
        #expect(result.devices.count == 8)
        #expect(result.devices.map(\.index) == Array(0..<8))
        #expect(result.devices.map(\.pciBusID) == [
            "0000:61:00.0", "0000:db:00.0", "0000:b2:00.0", "0000:3e:00.0",
            "0000:60:00.0", "0000:da:00.0", "0000:b1:00.0", "0000:3d:00.0",
        ])
        #expect(result.devices.allSatisfy { $0.model == "Ascend 910A" && $0.memoryTotalMiB == 32768 })
        #expect(result.devices.map(\.powerDrawW) == [67.2, 63.3, 64.8, 191.7, 66.4, 62.7, 64.5, 191.4])
        #expect(result.devices.map(\.temperatureC) == [43, 38, 34, 42, 44, 33, 35, 40])
        #expect(result.devices.allSatisfy { $0.signals.vendorHealthText == "OK" })
    }

    @Test func ascend910AWithProcessesAndWarnings() throws {
        let result = try NpuSMIParser.parse(Fixture.text("npu-smi-info_910a-8npu-procs_24.1.RC2_huawei-doc.txt"))
        #expect(result.devices.count == 8)  // 32 process rows ignored
        #expect(result.devices.compactMap(\.signals.vendorHealthText) == [
            "OK", "OK", "OK", "Warning", "OK", "OK", "OK", "Warning",
        ])
        #expect(result.devices[3].powerDrawW == 206.9)
        #expect(result.devices[0].model == "Ascend xxx")
        #expect(result.devices[0].memoryTotalMiB == 32768)
        #expect(result.devices[0].memoryUsedMiB == 0)
    }

    @Test func ascend310FourChipsUseDeviceColumnAsIndex() throws {
        let result = try NpuSMIParser.parse(Fixture.text("npu-smi-info_310-4chip_21.0.4_huawei-doc.txt"))
        #expect(result.devices.count == 4)
        #expect(result.devices.map(\.index) == [3, 4, 5, 6])
        #expect(result.devices.map(\.pciBusID) == ["0000:89:00.0", "0000:8a:00.0", "0000:8b:00.0", "0000:8c:00.0"])
        #expect(result.devices.map(\.memoryUsedMiB) == [2703, 2867, 2867, 2867])
        #expect(result.devices.allSatisfy { $0.memoryTotalMiB == 8192 && $0.model == "Ascend 310" && $0.powerDrawW == 12.8 })
        #expect(result.devices.map(\.temperatureC) == [73, 74, 70, 65])
        #expect(result.driverVersion == "21.0.4.B030")
    }

    /// Atlas A3: every die is its own device (own Bus-Id, HBM, logical id).
    @Test func atlasA3DualDieIsOneDevicePerDie() throws {
        let result = try NpuSMIParser.parse(Fixture.text("npu-smi-info_a3-ascend910-dualdie_25.2.0.txt"))
        #expect(result.devices.count == 4)
        #expect(result.devices.map(\.index) == [0, 1, 2, 3])
        #expect(result.devices.map(\.pciBusID) == ["0000:9c:00.0", "0000:9e:00.0", "0000:37:00.0", "0000:39:00.0"])
        #expect(result.devices.map(\.memoryUsedMiB) == [3133, 2876, 3116, 10568])
        #expect(result.devices.allSatisfy { $0.memoryTotalMiB == 65536 && $0.model == "Ascend910" })
        // The second die prints "-" for power.
        #expect(result.devices.map(\.powerDrawW) == [162.8, nil, 167.1, nil])
        #expect(result.devices.map(\.temperatureC) == [37, 37, 38, 38])
        #expect(result.toolVersion == "25.2.0")
    }

    @Test func chipMappingTable() throws {
        let result = try NpuSMIParser.parse(Fixture.text("npu-smi-info-m_310-4chip_21.0.4_huawei-doc.txt"))
        #expect(result.devices.count == 4)  // the Mcu row has logic id "-"
        #expect(result.devices.map(\.index) == [0, 1, 2, 3])
        #expect(result.devices.allSatisfy { $0.model == "MiniD" && $0.vendor == .huawei })
    }

    @Test func brokenTables() {
        #expect(throws: VendorParseError.self) { try NpuSMIParser.parse("npu-smi 23.0.0\nnothing here") }
        let header = """
        | NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
        | Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
        +===========================+===============+====================================================+
        """
        #expect(throws: VendorParseError.self) {
            try NpuSMIParser.parse(header + "\n| x 910B | OK | 1 2 3 |\n| y | 0000:01:00.0 | 0 1/2 |")
        }
        let truncated = try? NpuSMIParser.parse(header + "\n| 0     910B4               | OK            | 81.1        37                0    / 0             |")
        #expect(truncated?.devices.isEmpty == true)
        #expect(truncated?.warnings.isEmpty == false)
    }
}

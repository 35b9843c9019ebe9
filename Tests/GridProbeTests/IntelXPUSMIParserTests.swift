import Foundation
import Testing
import GridCore
@testable import GridProbe

@Suite struct IntelXPUSMIParserTests {
    @Test func auroraDiscoveryTable() throws {
        let result = try XPUSMIDiscoveryParser.parse(Fixture.text("xpu-smi-discovery_max1550-6gpu_aurora.txt"))
        #expect(result.tool == .xpuSMIDiscovery)
        #expect(result.devices.count == 6)
        #expect(result.devices.map(\.index) == Array(0..<6))
        #expect(result.devices.map(\.pciBusID) == [
            "0000:18:00.0", "0000:42:00.0", "0000:6c:00.0", "0001:18:00.0", "0001:42:00.0", "0001:6c:00.0",
        ])
        let gpu = try #require(result.devices.first)
        #expect(gpu.vendor == .intel)
        #expect(gpu.model == "Intel(R) Data Center GPU Max 1550")
        #expect(gpu.id == "00000000-0000-0000-926a-83c28645e226")  // SOC UUID
        #expect(gpu.memoryTotalMiB == nil)
        #expect(result.devices.last?.id == "00000000-0000-0000-cec2-eaa8508708c5")
    }

    @Test func detailTableWithTiles() throws {
        let result = try XPUSMIDiscoveryParser.parse(Fixture.text("xpu-smi-discovery-d_pvc-0x020a_xpumanager-doc.txt"))
        let gpu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(gpu.model == "Intel(R) Graphics [0x020a]")
        #expect(gpu.id == "00000000-0000-0000-0000-020a00008086")
        #expect(gpu.pciBusID == "0000:4d:00.0")
        #expect(gpu.memoryTotalMiB == 32768)
        #expect(gpu.driverVersion == "16929133")
        #expect(gpu.firmwareVersion == "ATS0_1.1")
        #expect(gpu.serial == nil)  // "unknown"
        #expect(gpu.partitions.map(\.id) == [
            "00000000-0000-0000-0000-020a00008086/tile0", "00000000-0000-0000-0000-020a00008086/tile1",
        ])
        #expect(gpu.partitions.map(\.memoryTotalMiB) == [16384, 16384])
        #expect(gpu.partitions.map(\.computeFraction) == [0.5, 0.5])
        #expect(result.driverVersion == "16929133")
    }

    @Test func discoveryJSON() throws {
        let result = try XPUSMIDiscoveryParser.parse(Fixture.text("xpu-smi-discovery-j_pvc-0x020a_xpumanager-doc.json"))
        let gpu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(gpu.index == 0)
        #expect(gpu.model == "Intel(R) Graphics [0x020a]")
        #expect(gpu.pciBusID == "0000:4d:00.0")
        #expect(gpu.pciDeviceID == "0x020a")
        #expect(gpu.id == "00000000-0000-0000-0000-020a00008086")
    }

    @Test func dumpKeepsNewestReadingPerDevice() throws {
        let result = try XPUSMIDumpParser.parse(Fixture.text("xpu-smi-dump_max1550-6gpu_aurora.csv"))
        #expect(result.tool == .xpuSMIDump)
        #expect(result.devices.count == 6)
        #expect(result.devices.map(\.index) == Array(0..<6))
        // Last samples (23:48:35.043) in the capture.
        #expect(result.devices[0].powerDrawW == 280.21)
        #expect(result.devices[4].powerDrawW == 280.40)
        #expect(result.devices[5].powerDrawW == 285.54)
        #expect(result.devices.allSatisfy { $0.utilizationPercent == nil })  // always N/A
        #expect(result.devices[0].id == "xpu-smi-dump:0")
        #expect(result.warnings.count == 1)  // the trailing ^C line
    }

    @Test func brokenInput() {
        #expect(throws: VendorParseError.self) { try XPUSMIDiscoveryParser.parse("{\"devices\": []}") }
        #expect(throws: VendorParseError.self) { try XPUSMIDiscoveryParser.parse("| nothing | here |") }
        #expect(throws: VendorParseError.self) { try XPUSMIDumpParser.parse("Timestamp, Foo\n1, 2") }
        #expect(throws: VendorParseError.self) {
            try XPUSMIDiscoveryParser.parse("| Device ID | Device Information |\n| zero | Device Name: X |")
        }
    }
}

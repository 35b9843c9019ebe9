import Foundation
import Testing
import GridCore
@testable import GridProbe

@Suite struct HabanaSMIParserTests {
    @Test func gaudi2EightAIPTable() throws {
        let result = try HabanaSMITableParser.parse(Fixture.text("hl-smi_gaudi2-hl225-8aip_1.21.1.txt"))
        #expect(result.tool == .hlSMI)
        #expect(result.toolVersion == "hl-1.21.1-fw-59.2.3.0")
        #expect(result.driverVersion == "1.21.1-bfcec49")
        #expect(result.devices.count == 8)  // process rows are not devices
        #expect(result.devices.map(\.index) == Array(0..<8))
        #expect(result.devices.map(\.pciBusID) == [
            "0000:33:00.0", "0000:34:00.0", "0000:4e:00.0", "0000:9a:00.0",
            "0000:9b:00.0", "0000:b3:00.0", "0000:b4:00.0", "0000:4d:00.0",
        ])
        #expect(result.devices.map(\.memoryUsedMiB) == [94963, 768, 90351, 90356, 90353, 90352, 82507, 85926])
        #expect(result.devices.map(\.temperatureC) == [35, 34, 25, 23, 28, 29, 23, 27])
        #expect(result.devices.map(\.powerDrawW) == [525, 80, 81, 83, 91, 82, 85, 92])
        #expect(result.devices.map(\.signals.eccUncorrectableVolatile) == [21, 0, 0, 0, 0, 0, 176, 0])
        let aip = try #require(result.devices.first)
        #expect(aip.vendor == .habana)
        #expect(aip.model == "HL-225")
        #expect(aip.id == "0000:33:00.0")
        #expect(aip.memoryTotalMiB == 98304)
        #expect(aip.powerLimitW == 600)
        #expect(aip.utilizationPercent == 88)
        #expect(aip.firmwareVersion == "59.2.3.0")
        #expect(aip.health == ParseSupport.notEvaluated)
    }

    @Test func gaudi2DetailedLog() throws {
        let result = try HabanaSMIListParser.parse(Fixture.text("hl-smi-L_gaudi2-hl225_1.12.1.txt"))
        #expect(result.tool == .hlSMIList)
        #expect(result.driverVersion == "1.12.1-cb7a7bc")
        #expect(result.devices.count == 1)  // "-i 0000:43:00.0" limits the log to one AIP
        let aip = try #require(result.devices.first)
        #expect(aip.index == 0)  // Module ID
        #expect(aip.id == "01P0-HL2080A0-15-TF8A81-09-07-06")
        #expect(aip.model == "HL-225")
        #expect(aip.serial == "AM50016138")
        #expect(aip.pciBusID == "0000:43:00.0")
        #expect(aip.pciDeviceID == "0x1020")  // 0x1da31020: vendor 1da3, device 1020
        #expect(aip.memoryTotalMiB == 98304)
        #expect(aip.memoryUsedMiB == 768)
        #expect(aip.powerDrawW == 50)  // 54V rail
        #expect(aip.powerLimitW == 550)
        #expect(aip.temperatureC == 30)  // hottest "On Chip N" sensor
        #expect(aip.firmwareVersion == "46.0.5.0")
        #expect(aip.signals.thermalThrottleActive == false)
        #expect(aip.signals.powerThrottleActive == false)
        #expect(aip.signals.remappedRowsPending == false)
        #expect(aip.signals.vendorHealthText == "Operational")
    }

    @Test func brokenInput() {
        #expect(throws: VendorParseError.self) { try HabanaSMIListParser.parse("================ HL-SMI LOG ================\n") }
        #expect(throws: VendorParseError.self) { try HabanaSMITableParser.parse("| HL-SMI Version: x |") }
        let text = "| HL-SMI Version: hl-1 |\n| AIP Name |\n|====|\n| x HL-225 N/A | 0000:33:00.0 N/A | 0 |\n| N/A 1C P0 1W / 2W | 1MiB / 2MiB | 0% 0% |\n"
        #expect(throws: VendorParseError.self) { try HabanaSMITableParser.parse(text) }
    }
}

import Foundation
import Testing
import GridCore
@testable import GridProbe

@Suite struct IluvatarSMIParserTests {
    @Test func sessionCapturePrefersEmbeddedXML() throws {
        let result = try IluvatarSMIParser.parse(Fixture.text("ixsmi-session_iluvatar-bi-v100.txt"))
        #expect(result.tool == .ixSMI)
        #expect(result.toolVersion == "IX-ML 2.3.1")
        #expect(result.driverVersion == "2.3.0")
        let gpu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(gpu.vendor == .iluvatar)
        #expect(gpu.index == 0)
        #expect(gpu.model == "Iluvatar BI-V100")
        #expect(gpu.id == "GPU-e970e785-80c9-4d97-8bca-bc74f3b701df")
        #expect(gpu.pciBusID == "0000:65:00.0")
        #expect(gpu.memoryTotalMiB == 32768)  // <memory_usage>, not fb_memory_usage
        #expect(gpu.memoryUsedMiB == 513)
        #expect(gpu.temperatureC == 35)
        #expect(gpu.signals.temperatureSlowdownC == 95)
        #expect(gpu.signals.temperatureShutdownC == 100)
        #expect(gpu.powerDrawW == 53)  // the XML sample, taken after the table's 52 W
        #expect(gpu.powerLimitW == 250)
        #expect(gpu.serial == nil)
    }

    @Test func tableOnlyFallback() throws {
        // The `ixsmi` table part of the session, without the -q / -q -x output.
        let text = try Fixture.text("ixsmi-session_iluvatar-bi-v100.txt")
        let tableOnly = String(text[..<(try #require(text.range(of: "root@iluvatar-ae-server-3:~# ixsmi -q")).lowerBound)])
        let result = try IluvatarSMIParser.parse(tableOnly)
        let gpu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(gpu.model == "Iluvatar BI-V100")
        #expect(gpu.id == "0000:65:00.0")
        #expect(gpu.memoryUsedMiB == 513)
        #expect(gpu.memoryTotalMiB == 32768)
        #expect(gpu.powerDrawW == 52)
        #expect(gpu.powerLimitW == 250)
        #expect(gpu.temperatureC == 35)
        #expect(gpu.utilizationPercent == 0)
        #expect(result.driverVersion == "2.3.0")
        #expect(VendorOutputParser.detect(tableOnly) == .ixSMI)
    }

    @Test func truncatedXMLIsMalformed() throws {
        let text = try Fixture.text("ixsmi-session_iluvatar-bi-v100.txt")
        let cut = String(text[..<(try #require(text.range(of: "<temperature>")).lowerBound)])
        #expect(throws: VendorParseError.self) { try IluvatarSMIParser.parse(cut) }
    }
}

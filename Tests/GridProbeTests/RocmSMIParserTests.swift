import Foundation
import Testing
import GridCore
@testable import GridProbe

@Suite struct RocmSMIParserTests {
    @Test func mi100Rocm602FourCards() throws {
        let result = try RocmSMIJSONParser.parse(Fixture.text("rocm-smi-json_mi100_rocm602.json"))
        #expect(result.tool == .rocmSMIJSON)
        #expect(result.driverVersion == "6.3.6")
        #expect(result.devices.count == 4)
        #expect(result.devices.map(\.index) == [0, 1, 2, 3])
        #expect(result.devices.map(\.pciBusID) == ["0000:83:00.0", "0000:a3:00.0", "0000:c3:00.0", "0000:e3:00.0"])
        #expect(result.devices.map(\.id) == [
            "0x79ccd55167a2124a", "0x4edfb117a17a07d", "0xd4a9ec48d03d261d", "0x1b9dd972253c3736",
        ])
        let card = try #require(result.devices.first)
        #expect(card.vendor == .amd)
        #expect(card.model == "Arcturus GL-XL [Instinct MI100]")
        #expect(card.pciDeviceID == "0x738c")
        #expect(card.memoryTotalMiB == 34342961152 / 1048576)  // "VRAM Total Memory (B)"
        #expect(card.memoryTotalMiB == 32752)
        #expect(card.memoryUsedMiB == 6)  // 6750208 B
        #expect(card.temperatureC == 55)  // junction
        #expect(card.signals.temperatureC == 55)
        #expect(card.powerDrawW == 36)
        #expect(card.powerLimitW == 290)
        #expect(card.utilizationPercent == 0)
        #expect(card.serial == nil)  // "N/A"
        #expect(card.firmwareVersion == "113-D3431401-101")
        #expect(card.numaNode == 1)
        #expect(card.interconnects.isEmpty)  // all links PCIE
        #expect(card.health == ParseSupport.notEvaluated)
    }

    @Test func mi100Rocm571OldKeysAndLeadingBlankLine() throws {
        let result = try RocmSMIJSONParser.parse(Fixture.text("rocm-smi-json_mi100_rocm571.json"))
        #expect(result.devices.count == 6)
        #expect(result.driverVersion == "6.2.4")
        let card = try #require(result.devices.first)
        #expect(card.pciDeviceID == "0x738c")  // "GPU ID"
        #expect(card.id == "0000:1e:00.0")  // Unique ID N/A → bus id
        #expect(card.serial == nil)  // "0"
        #expect(card.temperatureC == 34)
        #expect(card.powerDrawW == 39)
        #expect(result.devices.map(\.pciBusID).last == "0000:49:00.0")
        #expect(result.devices.last?.powerDrawW == 40)
    }

    @Test func vega20Rocm4() throws {
        let result = try RocmSMIJSONParser.parse(Fixture.text("rocm-smi-json_vega20-radeon-pro-vii_rocm4x.json"))
        #expect(result.devices.count == 1)  // topology lists 8, only card0 present
        let card = try #require(result.devices.first)
        #expect(card.model == "Radeon Instinct MI50 32GB")
        #expect(card.id == "0x2f048617326b1ea")
        #expect(card.serial == "692024000810")
        #expect(card.pciDeviceID == "0x66a1")
        #expect(card.memoryTotalMiB == 32752)
        #expect(card.memoryUsedMiB == 10)  // 10850304 B
        #expect(card.temperatureC == 38)
        #expect(card.powerDrawW == 26)
        #expect(card.powerLimitW == 225)
        #expect(result.driverVersion == "5.9.17")
    }

    @Test func rx6700xtRocm612() throws {
        let card = try #require(RocmSMIJSONParser.parse(Fixture.text("rocm-smi-json_rx6700xt_rocm612.json")).devices.first)
        #expect(card.model == "Navi 22 [Radeon RX 6700/6700 XT / 6800M]")
        #expect(card.id == "0000:07:00.0")
        #expect(card.memoryTotalMiB == 12868124672 / 1048576)
        #expect(card.memoryUsedMiB == 1572745216 / 1048576)
        #expect(card.architecture == "gfx1031")
        #expect(card.temperatureC == 47)
        #expect(card.powerDrawW == 6)
        #expect(card.powerLimitW == 211)
    }

    @Test func rx7800xtRocm624MinimalFlags() throws {
        let result = try RocmSMIJSONParser.parse(Fixture.text("rocm-smi-json_rx7800xt_rocm624.json"))
        let card = try #require(result.devices.first)
        #expect(result.driverVersion == nil)
        #expect(card.vendor == .amd)
        #expect(card.id == "0x5c88007d760374f3")
        #expect(card.pciBusID == nil)
        #expect(card.memoryTotalMiB == 16368)  // 17163091968 B
        #expect(card.memoryUsedMiB == 11077)  // 11615076352 B
        #expect(card.utilizationPercent == 100)
        #expect(card.temperatureC == 51)
        #expect(card.architecture == "gfx11001")
    }

    @Test func hygonDCU() throws {
        let result = try RocmSMIJSONParser.parse(Fixture.text("rocm-smi-json_hygon-dcu_dtk24.04.3.json"))
        let card = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(card.vendor == .hygon)
        #expect(card.model == "DCU xxxx")
        #expect(card.id == "7100fa8866904061")
        #expect(card.pciDeviceID == "0x6210")
        #expect(card.memoryTotalMiB == 65520)  // "vram Total Memory (MiB)"
        #expect(card.memoryUsedMiB == 2)
        #expect(card.utilizationPercent == 0)  // "DCU use (%)"
        #expect(card.temperatureC == 39)  // junction
        #expect(card.powerDrawW == 80)
        #expect(card.serial == "TPXxxxx")
    }

    @Test func xgmiLinksBecomeInterconnects() throws {
        let json = """
        {"card0": {"Card Series": "MI210"}, "card1": {"Card Series": "MI210"}, "card2": {"Card Series": "MI210"},
         "system": {"(Topology) Link type between DRM devices 0 and 1": "XGMI",
                    "(Topology) Link type between DRM devices 0 and 2": "PCIE"}}
        """
        let result = try RocmSMIJSONParser.parse(json)
        #expect(result.devices.map(\.interconnects) == [["xGMI"], ["xGMI"], []])
        #expect(result.devices.map(\.id) == ["rocm-smi-json:card0", "rocm-smi-json:card1", "rocm-smi-json:card2"])
    }

    @Test func malformedJSON() {
        #expect(throws: VendorParseError.self) { try RocmSMIJSONParser.parse("{\"card0\": {") }
        #expect(throws: VendorParseError.self) { try RocmSMIJSONParser.parse("[1, 2]") }
        #expect(throws: VendorParseError.self) { try RocmSMIJSONParser.parse("{\"system\": {}}") }
        let odd = try? RocmSMIJSONParser.parse("{\"card0\": {\"VRAM Total Memory (B)\": \"1e400\", \"GPU use (%)\": 7}}")
        #expect(odd?.devices.first?.memoryTotalMiB == nil)
        #expect(odd?.devices.first?.utilizationPercent == 7)
    }
}

import Foundation
import Testing
import GridCore
@testable import GridProbe

@Suite struct NvidiaCSVParserTests {
    /// Columns of the i3pystatus PR #776 query (SOURCES.md).
    static let i3Columns = [
        "memory.total", "memory.free", "memory.used", "temperature.gpu", "fan.speed", "utilization.gpu",
        "utilization.memory",
    ]
    /// OmniOpt's documented header for its `csv,noheader` log.
    static let omniOptColumns = [
        "timestamp", "name", "pci.bus_id", "driver_version", "pstate", "pcie.link.gen.max",
        "pcie.link.gen.current", "temperature.gpu", "utilization.gpu [%]", "utilization.memory [%]",
        "memory.total [MiB]", "memory.free [MiB]", "memory.used [MiB]",
    ]

    @Test func h100HeaderWithUnits() throws {
        let result = try NvidiaSMICSVParser.parse(Fixture.text("nvidia-smi-query-gpu_csv_h100-80gb-hbm3_590.48.01.csv"))
        #expect(result.tool == .nvidiaSMICSV)
        #expect(result.driverVersion == "590.48.01")
        #expect(result.warnings.isEmpty)
        let gpu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(gpu.index == 0)
        #expect(gpu.model == "NVIDIA H100 80GB HBM3")
        // The masked all-zero UUID is not an identity; the bus id is used instead.
        #expect(gpu.id == "0000:00:09.0")
        #expect(gpu.pciBusID == "0000:00:09.0")
        #expect(gpu.pciDeviceID == "0x2330")
        #expect(gpu.serial == nil)
        #expect(gpu.memoryTotalMiB == 81559)
        #expect(gpu.memoryUsedMiB == 0)
        #expect(gpu.computeCapability == "9.0")
        #expect(gpu.firmwareVersion == "96.00.A5.00.01")
        #expect(gpu.powerDrawW == 69.85)
        #expect(gpu.powerLimitW == 700)
        #expect(gpu.temperatureC == 41)
        #expect(gpu.utilizationPercent == 0)
        #expect(gpu.signals.eccUncorrectableVolatile == 0)
        #expect(gpu.signals.eccUncorrectableAggregate == 0)
        #expect(gpu.signals.eccCorrectableVolatile == 0)
        #expect(gpu.signals.retiredPagesPending == nil)  // [N/A]
        #expect(gpu.signals.remappedRowsPending == false)
        #expect(gpu.signals.thermalThrottleActive == false)
        #expect(gpu.signals.powerThrottleActive == false)
        #expect(gpu.health == ParseSupport.notEvaluated)
    }

    /// Every field `--help-query-gpu` lists on driver 580 (214 columns), from the lent H200.
    @Test func h200EveryFieldTheDriverOffers() throws {
        let result = try NvidiaSMICSVParser.parse(Fixture.text("nvidia-smi-query-gpu_csv_h200_580.159.04.csv"))
        #expect(result.driverVersion == "580.159.04")
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        let gpu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(gpu.model == "NVIDIA H200")
        #expect(gpu.id == "0000:00:06.0", "masked UUID: the bus id stands in")
        #expect(gpu.pciDeviceID == "0x2335")
        #expect(gpu.memoryTotalMiB == 143771 && gpu.memoryUsedMiB == 0)
        #expect(gpu.computeCapability == "9.0")
        #expect(gpu.powerDrawW == 79.02 && gpu.powerLimitW == 700)
        #expect(gpu.temperatureC == 35)
        #expect(gpu.signals.eccUncorrectableVolatile == 0 && gpu.signals.remappedRowsPending == false)
    }

    @Test func h100MIGHasNoUtilization() throws {
        let gpu = try #require(NvidiaSMICSVParser.parse(Fixture.text("nvidia-smi-query-gpu_csv_h100-mig_590.48.01.csv")).devices.first)
        #expect(gpu.utilizationPercent == nil)
        #expect(gpu.memoryUsedMiB == 59)
        #expect(gpu.powerDrawW == 71.15)
        #expect(gpu.temperatureC == 42)
        #expect(gpu.signals.remappedRowsPending == nil)  // [N/A] under MIG
    }

    @Test func windowsMixesBracketedAndBareNA() throws {
        let gpu = try #require(NvidiaSMICSVParser.parse(Fixture.text("nvidia-smi-query-gpu_csv_rtx2080super-windows_591.86.csv")).devices.first)
        #expect(gpu.model == "NVIDIA GeForce RTX 2080 SUPER")
        #expect(gpu.pciBusID == "0000:0c:00.0")
        #expect(gpu.pciDeviceID == "0x1e81")
        #expect(gpu.memoryTotalMiB == 8192)
        #expect(gpu.memoryUsedMiB == 702)
        #expect(gpu.serial == nil)
        #expect(gpu.temperatureC == 40)
        #expect(gpu.powerDrawW == 38.92)
        #expect(gpu.powerLimitW == 250)
        #expect(gpu.computeCapability == "7.5")
        #expect(gpu.signals.eccUncorrectableVolatile == nil)
    }

    @Test func teslaP100NoUnitsHeaderWithoutIndex() throws {
        let result = try NvidiaSMICSVParser.parse(Fixture.text("nvidia-smi-query-gpu_csv-nounits_tesla-p100.csv"))
        let gpu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(gpu.id == "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6")
        #expect(gpu.model == "Tesla P100-PCIE-16GB")
        #expect(gpu.memoryTotalMiB == nil)  // not queried
        #expect(gpu.memoryUsedMiB == 0)
        #expect(gpu.temperatureC == 37)
        #expect(gpu.powerDrawW == 28.16)
        #expect(gpu.index == 0)
        #expect(result.warnings.contains { $0.contains("no index column") })
    }

    @Test func noHeaderWithoutColumnsIsRefused() throws {
        for name in [
            "nvidia-smi-query-gpu_csv-noheader-nounits_2gb-geforce-NA_i3pystatus-pr776.csv",
            "nvidia-smi-query-gpu_csv-noheader-nounits_h100l-vgpu-mig_prmon-pr318.csv",
            "nvidia-smi-query-gpu_csv-noheader_a100-sxm4-40gb-multi_555.42.06.csv",
        ] {
            #expect(throws: VendorParseError.self) { try NvidiaSMICSVParser.parse(Fixture.text(name)) }
            #expect(throws: VendorParseError.self) { try VendorOutputParser.parse(Fixture.text(name)) }
        }
    }

    @Test(arguments: [
        "nvidia-smi-query-gpu_csv-noheader-nounits_2gb-geforce-NA_i3pystatus-pr776.csv",
        "nvidia-smi-query-gpu_csv-noheader-nounits_2gb-geforce-NotSupported-olddriver_i3pystatus-pr776.csv",
    ])
    func i3pystatusWithExplicitColumns(_ name: String) throws {
        let result = try NvidiaSMICSVParser.parse(Fixture.text(name), columns: Self.i3Columns)
        let gpu = try #require(result.devices.first)
        #expect(result.devices.count == 1)
        #expect(gpu.model == "NVIDIA GPU")
        #expect(gpu.memoryTotalMiB == 2004)
        #expect(gpu.memoryUsedMiB == 0)
        #expect(gpu.temperatureC == 44)
        #expect(gpu.utilizationPercent == 0)
        #expect(gpu.id == "nvidia-smi-csv:0")
    }

    @Test func prmonVGPUWithExplicitColumns() throws {
        let result = try NvidiaSMICSVParser.parse(
            Fixture.text("nvidia-smi-query-gpu_csv-noheader-nounits_h100l-vgpu-mig_prmon-pr318.csv"),
            columns: ["clocks.max.sm", "memory.total", "gpu_name"])
        let gpu = try #require(result.devices.first)
        #expect(gpu.model == "NVIDIA H100L-2-24C")
        #expect(gpu.memoryTotalMiB == 24576)
    }

    @Test func omniOptPeriodicLogCollapsesToFiveGPUs() throws {
        let result = try NvidiaSMICSVParser.parse(
            Fixture.text("nvidia-smi-query-gpu_csv-noheader_a100-sxm4-40gb-multi_555.42.06.csv"),
            columns: Self.omniOptColumns)
        #expect(result.devices.count == 5)
        #expect(result.devices.map(\.pciBusID) == [
            "0000:40:00.0", "0000:8b:00.0", "0000:90:00.0", "0000:bb:00.0", "0000:c1:00.0",
        ])
        #expect(result.devices.map(\.index) == [0, 1, 2, 3, 4])
        #expect(result.devices.allSatisfy { $0.model == "NVIDIA A100-SXM4-40GB" && $0.memoryTotalMiB == 40960 && $0.memoryUsedMiB == 1 })
        #expect(result.devices.map(\.temperatureC) == [42, 43, 44, 44, 42])
        #expect(result.driverVersion == "555.42.06")
    }

    @Test func defaultQueryRoundTrips() throws {
        let header = ProbeQuery.nvidiaCSVFields.count
        #expect(header == 24)
        let row = [
            "1", "GPU-abc", "NVIDIA H100", "123", "00000000:1B:00.0", "0x233010DE", "550.1", "96.0",
            "81559", "100", "70", "300.5", "700.00", "50", "2", "5", "7", "1", "0", "Yes",
            "Active", "Not Active", "Not Active", "Active",
        ].joined(separator: ", ")
        let gpu = try #require(NvidiaSMICSVParser.parse(row).devices.first)
        #expect(gpu.index == 1)
        #expect(gpu.id == "GPU-abc")
        #expect(gpu.pciBusID == "0000:1b:00.0")
        #expect(gpu.signals.eccUncorrectableVolatile == 2)
        #expect(gpu.signals.eccUncorrectableAggregate == 5)
        #expect(gpu.signals.eccCorrectableVolatile == 7)
        #expect(gpu.signals.retiredPagesCount == 1)
        #expect(gpu.signals.retiredPagesPending == true)
        #expect(gpu.signals.thermalThrottleActive == true)
        #expect(gpu.signals.powerThrottleActive == true)
        #expect(ProbeQuery.nvidiaCSVArguments.last == "--format=csv,noheader,nounits")
    }

    @Test func brokenRowsAreMalformed() {
        #expect(throws: VendorParseError.self) { try NvidiaSMICSVParser.parse("name, uuid\nA100") }
        #expect(throws: VendorParseError.self) { try NvidiaSMICSVParser.parse("") }
        let ok = try? NvidiaSMICSVParser.parse("name, memory.total [MiB]\nX, 99999999999999999999999999 MiB")
        #expect(ok?.devices.first?.memoryTotalMiB == nil)
    }
}

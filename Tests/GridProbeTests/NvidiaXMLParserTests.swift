import Foundation
import Testing
import GridCore
@testable import GridProbe

/// Expected values read by hand from each `nvidia-smi -q -x` fixture (first `<gpu>` element).
struct NvidiaXMLCase: Sendable, CustomTestStringConvertible {
    var file: String
    var count: Int
    var model: String
    var uuid: String
    var busID: String
    var memoryTotal: Int
    var memoryUsed: Int
    var temperature: Double
    var slowdown: Double?
    var shutdown: Double?
    var powerDraw: Double?
    var powerLimit: Double?
    var driver: String
    var testDescription: String { file }
}

@Suite struct NvidiaXMLParserTests {
    static let cases: [NvidiaXMLCase] = [
        .init(file: "nvidia-smi-q-x_a100-sxm4-40gb-mig_v11.xml", count: 1, model: "NVIDIA A100-SXM4-40GB",
              uuid: "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a", busID: "0000:00:04.0", memoryTotal: 40960,
              memoryUsed: 38, temperature: 36, slowdown: 89, shutdown: 92, powerDraw: 66.92, powerLimit: 400,
              driver: "510.47.03"),
        .init(file: "nvidia-smi-q-x_a100-sxm4-80gb-mig_v12.xml", count: 1, model: "NVIDIA A100-SXM4-80GB",
              uuid: "GPU-513536b6-7d19-9063-b049-1e69664bb298", busID: "0000:01:00.0", memoryTotal: 81920,
              memoryUsed: 50, temperature: 27, slowdown: 89, shutdown: 92, powerDraw: 67.03, powerLimit: 500,
              driver: "535.54.03"),
        .init(file: "nvidia-smi-q-x_a10g_v11.xml", count: 1, model: "NVIDIA A10G",
              uuid: "GPU-9a9a6c50-2a47-2f51-a902-b82c3b127e94", busID: "0000:00:1e.0", memoryTotal: 23028,
              memoryUsed: 22, temperature: 17, slowdown: 95, shutdown: 98, powerDraw: 25.58, powerLimit: 300,
              driver: "515.105.01"),
        .init(file: "nvidia-smi-q-x_dual-rtx-a5000_v13.xml", count: 2, model: "NVIDIA RTX A5000",
              uuid: "GPU-12345678-aaaa-bbbb-cccc-0123456789ab", busID: "0000:81:00.0", memoryTotal: 24564,
              memoryUsed: 22437, temperature: 13, slowdown: 95, shutdown: 98, powerDraw: 6.52, powerLimit: 230,
              driver: "590.44.01"),
        .init(file: "nvidia-smi-q-x_quadro-p400_418-nodtd.xml", count: 1, model: "Quadro P400",
              uuid: "GPU-8f750be4-dfbc-23b9-b33f-da729a536494", busID: "0000:43:00.0", memoryTotal: 1998,
              memoryUsed: 0, temperature: 33, slowdown: 100, shutdown: 103, powerDraw: nil, powerLimit: nil,
              driver: "418.43"),
        .init(file: "nvidia-smi-q-x_rtx-2080-windows_v11.xml", count: 1, model: "NVIDIA GeForce RTX 2080",
              uuid: "GPU-fbd55ed4-1eec-4423-0a47-ad594b4333e3", busID: "0000:0a:00.0", memoryTotal: 8192,
              memoryUsed: 862, temperature: 29, slowdown: 97, shutdown: 100, powerDraw: 14.50, powerLimit: 275,
              driver: "516.59"),
        .init(file: "nvidia-smi-q-x_rtx-3080_v13.xml", count: 1, model: "NVIDIA GeForce RTX 3080",
              uuid: "GPU-19d6d965-2acc-f646-00f8-4c76979aabb4", busID: "0000:0c:00.0", memoryTotal: 10240,
              memoryUsed: 9184, temperature: 27, slowdown: 95, shutdown: 98, powerDraw: 142.33, powerLimit: 320,
              driver: "595.58.03"),
        // Captured by this project on a lent H200 (scripts/capture-nvidia.sh); no absolute
        // thresholds on this driver: slowdown and shutdown come from T.Limit (35 + 52 + 2, + 8).
        // The masked all-zero UUID is no identity: the bus id stands in.
        .init(file: "nvidia-smi-q-x_h200_580.159.04.xml", count: 1, model: "NVIDIA H200",
              uuid: "0000:00:06.0", busID: "0000:00:06.0", memoryTotal: 143771,
              memoryUsed: 0, temperature: 35, slowdown: 89, shutdown: 95, powerDraw: 78.61, powerLimit: 700,
              driver: "580.159.04"),
        .init(file: "nvidia-smi-q-x_h200-load_580.159.04.xml", count: 1, model: "NVIDIA H200",
              uuid: "0000:00:06.0", busID: "0000:00:06.0", memoryTotal: 143771,
              memoryUsed: 883, temperature: 57, slowdown: 88, shutdown: 94, powerDraw: 683.05, powerLimit: 700,
              driver: "580.159.04"),
        .init(file: "nvidia-smi-q-x_tesla-p100_v11.xml", count: 1, model: "Tesla P100-PCIE-16GB",
              uuid: "GPU-d3da8716-eaab-75db-efc1-60e88e1cd55e", busID: "0000:00:04.0", memoryTotal: 16384,
              memoryUsed: 0, temperature: 38, slowdown: 82, shutdown: 85, powerDraw: 26.16, powerLimit: 250,
              driver: "510.47.03"),
        .init(file: "nvidia-smi-q-x_tesla-t4_v11.xml", count: 1, model: "Tesla T4",
              uuid: "GPU-d37e67a5-91dd-3774-a5cb-99096249601a", busID: "0000:00:1e.0", memoryTotal: 15360,
              memoryUsed: 1032, temperature: 40, slowdown: 93, shutdown: 96, powerDraw: 26.78, powerLimit: 70,
              driver: "515.105.01"),
        .init(file: "nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml", count: 8, model: "Tesla V100S-PCIE-32GB",
              uuid: "GPU-76098dc1-d3bc-9a1b-7ea6-f7b48837829e", busID: "0000:00:0d.0", memoryTotal: 32510,
              memoryUsed: 31689, temperature: 66, slowdown: 87, shutdown: 90, powerDraw: 232.80, powerLimit: 250,
              driver: "460.73.01"),
    ]

    @Test(arguments: cases)
    func parsesFirstGPU(_ c: NvidiaXMLCase) throws {
        let result = try NvidiaSMIXMLParser.parse(Fixture.text(c.file))
        #expect(result.tool == .nvidiaSMIXML)
        #expect(result.devices.count == c.count)
        #expect(result.driverVersion == c.driver)
        let gpu = try #require(result.devices.first)
        #expect(gpu.index == 0)
        #expect(gpu.vendor == .nvidia)
        #expect(gpu.model == c.model)
        #expect(gpu.id == c.uuid)
        #expect(gpu.pciBusID == c.busID)
        #expect(gpu.memoryTotalMiB == c.memoryTotal)
        #expect(gpu.memoryUsedMiB == c.memoryUsed)
        #expect(gpu.temperatureC == c.temperature)
        #expect(gpu.signals.temperatureC == c.temperature)
        #expect(gpu.signals.temperatureSlowdownC == c.slowdown)
        #expect(gpu.signals.temperatureShutdownC == c.shutdown)
        #expect(gpu.powerDrawW == c.powerDraw)
        #expect(gpu.powerLimitW == c.powerLimit)
        #expect(gpu.driverVersion == c.driver)
        #expect(gpu.health == ParseSupport.notEvaluated)
        #expect(result.devices.map(\.index) == Array(0..<c.count))
    }

    /// Foundation's XMLParser on Linux dies (SIGSEGV) on a processing instruction without data
    /// (`<?name?>`); the fuzzer found it. Any processing instruction but the XML declaration is
    /// refused with its line before the parser sees the text; the declaration still parses.
    @Test func processingInstructionsAreRefusedBeforeTheParserSeesThem() throws {
        for text in ["<?xml version=\"1.0\" ?>\n<?pi?>\n<nvidia_smi_log></nvidia_smi_log>",
                     "<?xLegend?><nvidia_smi_log></nvidia_smi_log>",
                     "<nvidia_smi_log><!-- <?x?> --></nvidia_smi_log>"] {
            do {
                _ = try VendorOutputParser.parse(text, as: .nvidiaSMIXML)
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".contains("processing instruction"), "\(error)")
            }
        }
        #expect(XMLTreeBuilder.processingInstructionLine("<?xml version=\"1.0\" ?>\n\n<a><?b?></a>") == 3)
        #expect(XMLTreeBuilder.processingInstructionLine("\u{FEFF}\n <?xml version=\"1.0\"?><a/>") == nil)
        #expect(XMLTreeBuilder.processingInstructionLine("<?xmlfoo?><a/>") == 1, "only `<?xml ` opens the declaration")
        for name in try Fixture.allNames() where name.hasPrefix("nvidia-smi-q-x") {
            #expect(XMLTreeBuilder.processingInstructionLine(try Fixture.text(name)) == nil, "\(name): real captures carry only the declaration")
        }
    }

    @Test func a100v11MIGPartitionsFallBackToInstanceIDs() throws {
        let gpu = try #require(NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_a100-sxm4-40gb-mig_v11.xml")).devices.first)
        let parent = "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a"
        #expect(gpu.partitions.map(\.id) == ["\(parent)/gi1ci0", "\(parent)/gi2ci0"])
        #expect(gpu.partitions.map(\.memoryTotalMiB) == [19968, 19968])
        #expect(gpu.partitions.allSatisfy { $0.profile == nil })
        #expect(gpu.pciDeviceID == "0x20b0")
        #expect(gpu.serial == "1324321002473")
        #expect(gpu.firmwareVersion == "92.00.45.00.03")
        #expect(gpu.architecture == "Ampere")
        // MIG mode: utilisation is N/A; volatile ECC N/A, aggregate 0.
        #expect(gpu.utilizationPercent == nil)
        #expect(gpu.signals.eccUncorrectableVolatile == nil)
        #expect(gpu.signals.eccUncorrectableAggregate == 0)
        #expect(gpu.signals.remappedRowsPending == nil)
        #expect(gpu.signals.retiredPagesPending == nil)
    }

    /// On a driver that prints only T.Limit headroom, a hot H200 is judged as one that prints
    /// absolute thresholds is: within the margin of slowdown it is degraded, past shutdown
    /// unhealthy; an idle one is healthy, and the other fields of the capture are read.
    @Test func h200TLimitHeadroomJudgesTemperature() throws {
        let text = try Fixture.text("nvidia-smi-q-x_h200_580.159.04.xml")
        func judged(headroom: String) throws -> DeviceHealth {
            let hot = text.replacingOccurrences(of: "<gpu_temp_tlimit>52 C</gpu_temp_tlimit>", with: "<gpu_temp_tlimit>\(headroom)</gpu_temp_tlimit>")
            let gpu = try #require(NvidiaSMIXMLParser.parse(hot).devices.first)
            return HealthEvaluator.evaluate(signals: gpu.signals, policy: HealthPolicy())
        }
        #expect(try judged(headroom: "52 C").state == .healthy)
        let warm = try judged(headroom: "1 C")  // 35 + 1 = 36 = limit; slowdown at 38
        #expect(warm.state == .degraded && warm.reasons.map(\.kind) == [.temperatureOverLimit], "\(warm)")
        let over = try judged(headroom: "-9 C")  // past the -8 C shutdown headroom
        #expect(over.state == .unhealthy, "\(over)")
        // Without T.Limit fields (older drivers) nothing is made up.
        let bare = text.replacingOccurrences(of: "<gpu_temp_tlimit>52 C</gpu_temp_tlimit>", with: "")
        let gpu = try #require(NvidiaSMIXMLParser.parse(bare).devices.first)
        #expect(gpu.signals.temperatureSlowdownC == nil && gpu.signals.temperatureShutdownC == nil)

        // At 683 of 700 W under a matrix-product loop, sw_power_cap Active: healthy.
        let loaded = try #require(NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_h200-load_580.159.04.xml")).devices.first)
        #expect(HealthEvaluator.evaluate(signals: loaded.signals, policy: HealthPolicy()) == .healthy)

        let h200 = try #require(NvidiaSMIXMLParser.parse(text).devices.first)
        #expect(h200.architecture == "Hopper")
        #expect(h200.pciDeviceID == "0x2335")
        #expect(h200.serial == nil, "the masked all-zero serial is no identity")
        #expect(h200.firmwareVersion == "96.00.A5.00.1A")
        #expect(h200.partitions.isEmpty)
        #expect(h200.signals.eccUncorrectableVolatile == 0 && h200.signals.remappedRowsPending == false)
        #expect(h200.signals.thermalThrottleActive == false && h200.signals.powerThrottleActive == false)
    }

    @Test func a100v12FourMIGDevicesAndTrimmedCapture() throws {
        let result = try NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_a100-sxm4-80gb-mig_v12.xml"))
        let gpu = try #require(result.devices.first)
        let parent = "GPU-513536b6-7d19-9063-b049-1e69664bb298"
        #expect(gpu.partitions.map(\.id) == (3...6).map { "\(parent)/gi\($0)ci0" })
        #expect(gpu.partitions.allSatisfy { $0.memoryTotalMiB == 19968 })
        #expect(result.toolVersion == "CUDA 12.2")
        // attached_gpus 4, one <gpu> element present.
        #expect(result.warnings.contains { $0.contains("attached_gpus") })
        #expect(gpu.signals.eccUncorrectableVolatile == 0)
        #expect(gpu.signals.eccUncorrectableAggregate == 0)
        #expect(gpu.signals.eccCorrectableVolatile == 0)
        #expect(gpu.signals.thermalThrottleActive == false)
        #expect(gpu.signals.powerThrottleActive == false)
        #expect(gpu.pciDeviceID == "0x20b2")
    }

    /// GPUs 3 and 6 of the V100S box run at their power cap (`sw_power_cap` Active, 232 W of
    /// 250): the driver holding a loaded GPU at its own limit, which is no fault.
    @Test func v100sAtTheirPowerCapAreNotThrottledForHealth() throws {
        let text = try Fixture.text("nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml")
        #expect(text.components(separatedBy: "<clocks_throttle_reason_sw_power_cap>Active<").count - 1 == 2)
        let result = try NvidiaSMIXMLParser.parse(text)
        #expect(result.devices.allSatisfy { $0.signals.powerThrottleActive == false })
        // The platform's power brake is one.
        let braked = try NvidiaSMIXMLParser.parse(text.replacingOccurrences(
            of: "<clocks_throttle_reason_hw_power_brake_slowdown>Not Active<",
            with: "<clocks_throttle_reason_hw_power_brake_slowdown>Active<"))
        #expect(braked.devices.allSatisfy { $0.signals.powerThrottleActive == true })
        #expect(result.devices.allSatisfy { $0.signals.thermalThrottleActive == false })
        #expect(result.devices.map(\.pciBusID) == [
            "0000:00:0d.0", "0000:00:0e.0", "0000:00:0f.0", "0000:00:10.0",
            "0000:00:11.0", "0000:00:12.0", "0000:00:13.0", "0000:00:14.0",
        ])
        let first = try #require(result.devices.first)
        // The first <gpu_util> of the device, not one from accounted processes.
        #expect(first.utilizationPercent == 97)
        #expect(first.signals.retiredPagesPending == false)
        #expect(first.signals.retiredPagesCount == 0)
        #expect(first.signals.eccUncorrectableVolatile == 0)
        #expect(first.architecture == nil)
    }

    @Test func p100PreAmpereECCBlocks() throws {
        let gpu = try #require(NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_tesla-p100_v11.xml")).devices.first)
        #expect(gpu.signals.eccUncorrectableVolatile == 0)
        #expect(gpu.signals.eccUncorrectableAggregate == 0)
        #expect(gpu.signals.eccCorrectableVolatile == 0)
        #expect(gpu.signals.retiredPagesPending == false)
        #expect(gpu.signals.retiredPagesCount == 0)
        #expect(gpu.signals.thermalThrottleActive == false)
        #expect(gpu.pciDeviceID == "0x15f8")
    }

    @Test func a10gRemappedRowsAndZeroSerial() throws {
        let gpu = try #require(NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_a10g_v11.xml")).devices.first)
        #expect(gpu.signals.remappedRowsPending == false)
        #expect(gpu.signals.remappingFailed == false)
        #expect(gpu.serial == nil)  // 0000000000000
        #expect(gpu.pciDeviceID == nil)  // 000000DE
        #expect(gpu.utilizationPercent == 0)
    }

    @Test func v13DualA5000() throws {
        let result = try NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_dual-rtx-a5000_v13.xml"))
        #expect(result.devices.map(\.id) == [
            "GPU-12345678-aaaa-bbbb-cccc-0123456789ab", "GPU-12345678-aaaa-bbbb-cccc-0123456789cd",
        ])
        #expect(result.devices.map(\.pciBusID) == ["0000:81:00.0", "0000:c1:00.0"])
        #expect(result.devices.map(\.memoryUsedMiB) == [22437, 17253])
        #expect(result.devices.map(\.powerDrawW) == [6.52, 13.59])
        #expect(result.toolVersion == "CUDA 13.1")
        let gpu = try #require(result.devices.first)
        // ECC disabled: v13 parity/secded keys are N/A.
        #expect(gpu.signals.eccUncorrectableVolatile == nil)
        #expect(gpu.signals.remappedRowsPending == false)
        #expect(gpu.serial == "0123456789012")
        #expect(gpu.partitions.isEmpty)  // <mig_devices>None</mig_devices>
    }

    @Test func windowsCaptureHasNoSerialOrMinorNumber() throws {
        let gpu = try #require(NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_rtx-2080-windows_v11.xml")).devices.first)
        #expect(gpu.serial == nil)
        #expect(gpu.utilizationPercent == 2)
        #expect(gpu.firmwareVersion == "90.04.23.00.db")
        #expect(gpu.architecture == "Turing")
    }

    @Test func quadroWithoutDoctype() throws {
        let gpu = try #require(NvidiaSMIXMLParser.parse(Fixture.text("nvidia-smi-q-x_quadro-p400_418-nodtd.xml")).devices.first)
        #expect(gpu.architecture == nil)
        #expect(gpu.signals.eccUncorrectableVolatile == nil)  // every ECC total N/A
        #expect(gpu.signals.retiredPagesPending == nil)
        #expect(gpu.pciDeviceID == "0x1cb3")
    }

    @Test func rejectsOtherRootsAndBrokenXML() {
        #expect(throws: VendorParseError.self) { try NvidiaSMIXMLParser.parse("<foo><gpu/></foo>") }
        #expect(throws: VendorParseError.self) { try NvidiaSMIXMLParser.parse("<nvidia_smi_log><gpu id=\"x\"><product_name>A") }
        #expect(throws: VendorParseError.self) { try NvidiaSMIXMLParser.parse("") }
        let empty = try? NvidiaSMIXMLParser.parse("<nvidia_smi_log><attached_gpus>0</attached_gpus></nvidia_smi_log>")
        #expect(empty?.devices.isEmpty == true)
    }

    @Test func truncatedFixtureIsMalformedWithPosition() throws {
        let text = try Fixture.text("nvidia-smi-q-x_tesla-t4_v11.xml")
        let cut = String(text.prefix(text.count / 2))
        do {
            _ = try NvidiaSMIXMLParser.parse(cut)
            Issue.record("truncated XML parsed")
        } catch let error as VendorParseError {
            guard case .malformed(let tool, let detail) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(tool == .nvidiaSMIXML)
            #expect(detail.contains("line"))
        }
    }

    @Test func hostileXMLDoesNotTrap() {
        let deep = String(repeating: "<a>", count: 5000) + String(repeating: "</a>", count: 5000)
        #expect(throws: VendorParseError.self) { try NvidiaSMIXMLParser.parse("<nvidia_smi_log>" + deep + "</nvidia_smi_log>") }
        let huge = "<nvidia_smi_log><gpu><fb_memory_usage><total>99999999999999999999999999 MiB</total></fb_memory_usage><temperature><gpu_temp>1e999 C</gpu_temp></temperature><minor_number>-5</minor_number></gpu></nvidia_smi_log>"
        let gpu = try? NvidiaSMIXMLParser.parse(huge).devices.first
        #expect(gpu?.memoryTotalMiB == nil)
        #expect(gpu?.id == "nvidia-smi-xml:0")
    }
}

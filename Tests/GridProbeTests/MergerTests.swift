import Foundation
import GridCore
import Testing
@testable import GridProbe

@Suite("Inventory merge")
struct MergerTests {
    static let h100Sysfs = SysfsDevice(
        busID: "0000:3b:00.0", vendorID: 0x10de, deviceID: 0x2330, classCode: 0x030200, vendor: .nvidia, numaNode: 1,
        maxLink: SysfsPCIeLink(speedGTs: 32, generation: 5, width: 16))
    static let secondSysfs = SysfsDevice(
        busID: "0000:5e:00.0", vendorID: 0x10de, deviceID: 0x2330, classCode: 0x030200, vendor: .nvidia, numaNode: 0)

    static func nvidiaResult(_ devices: [DeviceInventory]) -> VendorParseResult {
        VendorParseResult(tool: .nvidiaSMIXML, devices: devices, driverVersion: "595.84")
    }

    static func gpu(_ id: String, bus: String?, index: Int = 0, signals: HealthSignals = HealthSignals()) -> DeviceInventory {
        DeviceInventory(
            id: id, index: index, vendor: .nvidia, model: "NVIDIA H100 80GB HBM3", memoryTotalMiB: 81559, pciBusID: bus,
            interconnects: ["NVLink"], signals: signals, health: .unknown(HealthReason(.notReported, "parser")))
    }

    @Test(arguments: [
        ("00000000:3B:00.0", "0000:3b:00.0"), ("0000:3b:00.0", "0000:3b:00.0"), ("3B:00.0", "0000:3b:00.0"),
        ("10000:e1:00.1", "10000:e1:00.1"), (" 0000:1E:00.0\n", "0000:1e:00.0"),
    ])
    func normalisesBusIDs(_ raw: String, _ expected: String) {
        #expect(InventoryMerger.normalizePCIBusID(raw) == expected)
    }

    @Test(arguments: ["", "N/A", "0000:3b:00", "0000:3b:00.8", "0000:zz:00.0", "card0", "0000:3b:20.0"])
    func rejectsNonBusIDs(_ raw: String) {
        #expect(InventoryMerger.normalizePCIBusID(raw) == nil)
    }

    @Test func findsBusIDsInErrorText() {
        let text = "Unable to determine the device handle for GPU 00000000:3B:00.0: GPU is lost.\nalso 0000:5e:00.0, not 12:34:56"
        #expect(InventoryMerger.busIDs(in: text) == ["0000:3b:00.0", "0000:5e:00.0"])
    }

    @Test func vendorDeviceGetsNumaAndLinkFromSysfs() {
        let merged = InventoryMerger.merge(
            sysfs: [Self.h100Sysfs], vendor: [Self.nvidiaResult([Self.gpu("GPU-a", bus: "00000000:3B:00.0")])], failures: [])
        #expect(merged.count == 1)
        let d = merged[0]
        #expect(d.id == "GPU-a")
        #expect(d.pciBusID == "0000:3b:00.0")
        #expect(d.numaNode == 1)
        #expect(d.pciDeviceID == "0x2330")
        #expect(d.driverVersion == "595.84")
        #expect(d.interconnects == ["NVLink", "PCIe Gen5 x16"])
        #expect(d.health == .healthy)  // the evaluator replaced the parser's placeholder
    }

    @Test func signalsAreJudgedByPolicy() {
        var policy = HealthPolicy()
        let dev = Self.gpu("GPU-a", bus: "0000:3b:00.0", signals: HealthSignals(eccUncorrectableVolatile: 2))
        #expect(InventoryMerger.merge(sysfs: [], vendor: [Self.nvidiaResult([dev])], failures: [])[0].health.state == .unhealthy)
        policy.eccUncorrectableVolatileMax = 2
        #expect(InventoryMerger.merge(sysfs: [], vendor: [Self.nvidiaResult([dev])], failures: [], policy: policy)[0].health == .healthy)
    }

    @Test func timedOutToolMakesSysfsDevicesUnknown() {
        let failure = ToolFailure(tool: "nvidia-smi", vendors: [.nvidia], reason: HealthReason(.toolTimeout, "hung"))
        let merged = InventoryMerger.merge(sysfs: [Self.h100Sysfs, Self.secondSysfs], vendor: [], failures: [failure])
        #expect(merged.map(\.pciBusID) == ["0000:3b:00.0", "0000:5e:00.0"])
        #expect(merged.map(\.index) == [0, 1])
        for d in merged {
            #expect(d.health == DeviceHealth(state: .unknown, reasons: [HealthReason(.toolTimeout, "hung")]))
            #expect(d.model == "NVIDIA device 0x2330")
        }
    }

    @Test func failureOfAnotherVendorDoesNotTouchDevices() {
        let failure = ToolFailure(tool: "rocm-smi", vendors: [.amd, .hygon], reason: HealthReason(.toolFailed, "exit 1"))
        let merged = InventoryMerger.merge(sysfs: [Self.h100Sysfs], vendor: [], failures: [failure])
        #expect(merged[0].health.reasons.map(\.kind) == [.notReported])
    }

    @Test func partialOutputKeepsListedDevicesAndCondemnsTheLostOne() {
        let lost = ToolFailure(
            tool: "nvidia-smi", vendors: [.nvidia], busIDs: ["00000000:5E:00.0"],
            reason: HealthReason(.fallenOffBus, "GPU is lost"))
        let exit = ToolFailure(tool: "nvidia-smi", vendors: [.nvidia], reason: HealthReason(.toolFailed, "exit 15"))
        let merged = InventoryMerger.merge(
            sysfs: [Self.h100Sysfs, Self.secondSysfs],
            vendor: [Self.nvidiaResult([Self.gpu("GPU-a", bus: "00000000:3B:00.0")])], failures: [lost, exit])
        #expect(merged.count == 2)
        #expect(merged[0].id == "GPU-a")
        #expect(merged[0].health == .healthy)
        #expect(merged[1].pciBusID == "0000:5e:00.0")
        #expect(merged[1].index == 1)
        #expect(merged[1].health.state == .unhealthy)
        #expect(merged[1].health.reasons.map(\.kind) == [.fallenOffBus, .toolFailed])
    }

    @Test func fallenOffBusNamedDeviceListedByToolIsUnhealthy() {
        let lost = ToolFailure(tool: "nvidia-smi", vendors: [.nvidia], busIDs: ["0000:3b:00.0"], reason: HealthReason(.fallenOffBus, "lost"))
        let merged = InventoryMerger.merge(
            sysfs: [Self.h100Sysfs], vendor: [Self.nvidiaResult([Self.gpu("GPU-a", bus: "0000:3b:00.0")])], failures: [lost])
        #expect(merged[0].health.state == .unhealthy)
        #expect(merged[0].health.reasons.map(\.kind) == [.fallenOffBus])
    }

    @Test func vendorOnlyDevicesAreKeptAndDuplicatesDropped() {
        let merged = InventoryMerger.merge(
            sysfs: [],
            vendor: [
                Self.nvidiaResult([Self.gpu("GPU-a", bus: nil), Self.gpu("GPU-b", bus: "0000:3b:00.0", index: 1)]),
                VendorParseResult(tool: .nvidiaSMICSV, devices: [Self.gpu("GPU-b2", bus: "00000000:3B:00.0", index: 1)]),
            ],
            failures: [])
        #expect(merged.map(\.id) == ["GPU-a", "GPU-b"])
        #expect(merged.allSatisfy { $0.health == .healthy })
    }

    @Test func excludedGPUIsUnhealthy() {
        var s = Self.h100Sysfs
        s.nvidia = SysfsNvidiaProcInfo(model: "NVIDIA H100", uuid: "GPU-x", excluded: true)
        let merged = InventoryMerger.merge(sysfs: [s], vendor: [], failures: [])
        #expect(merged[0].id == "GPU-x")
        #expect(merged[0].health.state == .unhealthy)
    }

    @Test func vendorsSortInDeclarationOrder() {
        let amd = SysfsDevice(busID: "0000:01:00.0", vendorID: 0x1002, deviceID: 0x740f, classCode: 0x038000, vendor: .amd)
        let merged = InventoryMerger.merge(sysfs: [amd, Self.h100Sysfs], vendor: [], failures: [])
        #expect(merged.map(\.vendor) == [.nvidia, .amd])
    }
}

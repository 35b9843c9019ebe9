import Foundation
import GridCore
import Testing
@testable import GridProbe

#if canImport(Glibc)
import Glibc
#endif

@Suite("Sysfs discovery")
struct SysfsScannerTests {
    @Test func nvidiaTreeWithProcfs() throws {
        let r = try FakeRoot("nvidia")
        try makeNvidiaTree(r)
        // Not accelerators: an NVSwitch (bridge class) and the BMC's VGA.
        try r.pci("0000:c1:00.0", vendor: "0x10de", device: "0x22a3", cls: "0x068000")
        try r.pci("0000:02:00.0", vendor: "0x1a03", device: "0x2000", cls: "0x030000")
        let scan = r.scanner.scan()
        #expect(scan.problems == [])
        #expect(scan.pciBusListed)
        #expect(scan.devices.count == 1)
        let d = try #require(scan.devices.first)
        #expect(d.busID == "0000:3b:00.0")
        #expect(d.vendor == .nvidia)
        #expect(d.deviceID == 0x2330)
        #expect(d.numaNode == 1)
        #expect(d.maxLink == SysfsPCIeLink(speedGTs: 32, generation: 5, width: 16))
        #expect(d.currentLink.generation == 1)
        #expect(d.nvidia?.model == "NVIDIA H100 80GB HBM3")
        #expect(d.nvidia?.uuid == "GPU-11111111-2222-3333-4444-555555555555")
        #expect(d.nvidia?.excluded == false)
        #expect(d.driverVersion == "595.84")

        let inv = scan.inventory()
        #expect(inv.count == 1)
        #expect(inv[0].id == "GPU-11111111-2222-3333-4444-555555555555")
        #expect(inv[0].model == "NVIDIA H100 80GB HBM3")
        #expect(inv[0].numaNode == 1)
        #expect(inv[0].pciBusID == "0000:3b:00.0")
        #expect(inv[0].pciDeviceID == "0x2330")
        #expect(inv[0].interconnects == ["PCIe Gen5 x16"])
        #expect(inv[0].health.state == .unknown)
        #expect(inv[0].health.reasons.map(\.kind) == [.notReported])
    }

    /// The sysfs and procfs files of a real H200 (a VM lent to this project; captured with
    /// scripts/capture-nvidia.sh): no NUMA node (-1), Gen5 x16, the nvidia driver, the open
    /// kernel module's version line.
    @Test func capturedH200VM() throws {
        let root = Fixture.vendorDirectory.deletingLastPathComponent().appendingPathComponent("sysfs/h200-vm")
        let scan = SysfsScanner(root: root).scan()
        #expect(scan.problems == [])
        #expect(scan.devices.count == 1)
        let d = try #require(scan.devices.first)
        #expect(d.busID == "0000:00:06.0")
        #expect(d.vendor == .nvidia)
        #expect(d.deviceID == 0x2335)
        #expect(d.subsystemDeviceID == 0x18bf)
        #expect(d.numaNode == nil, "-1 is no NUMA node")
        #expect(d.maxLink == SysfsPCIeLink(speedGTs: 32, generation: 5, width: 16))
        #expect(d.currentLink == SysfsPCIeLink(speedGTs: 32, generation: 5, width: 16))
        #expect(d.driver == "nvidia")
        #expect(d.nvidia?.model == "NVIDIA H200")
        #expect(d.nvidia?.excluded == false)
        #expect(d.driverVersion == "580.159.04")
        let inv = try #require(scan.inventory().first)
        #expect(inv.model == "NVIDIA H200" && inv.pciDeviceID == "0x2335")
        #expect(inv.interconnects == ["PCIe Gen5 x16"])
    }

    @Test func amdTreeWithVramAndHwmon() throws {
        let r = try FakeRoot("amd")
        let dev = try r.pci(
            "0000:1e:00.0", vendor: "0x1002", device: "0x740f", cls: "0x038000",
            attrs: [
                "numa_node": "-1", "max_link_speed": "16 GT/s", "max_link_width": "16",
                "mem_info_vram_total": "68702699520", "mem_info_vram_used": "10485760",
                "gpu_busy_percent": "37",
            ])
        let hw = dev + "/hwmon/hwmon3"
        try r.file(hw + "/name", "amdgpu\n")
        try r.file(hw + "/temp1_input", "45000\n")
        try r.file(hw + "/temp1_label", "edge\n")
        try r.file(hw + "/temp2_input", "61000\n")
        try r.file(hw + "/temp2_label", "junction\n")
        try r.file(hw + "/power1_average", "95000000\n")
        try r.file(hw + "/power1_cap", "300000000\n")
        try r.classNode("drm", "card1", bus: "0000:1e:00.0")
        try r.classNode("drm", "renderD128", bus: "0000:1e:00.0")

        let scan = r.scanner.scan()
        #expect(scan.problems == [])
        let d = try #require(scan.devices.first)
        #expect(scan.devices.count == 1)
        #expect(d.vendor == .amd)
        #expect(d.numaNode == nil)  // -1 is NUMA_NO_NODE
        #expect(d.maxLink.generation == 4)
        #expect(d.drmCard == "card1")
        #expect(d.vramTotalBytes == 68_702_699_520)
        #expect(d.busyPercent == 37)
        #expect(d.temperatureC == 45)
        #expect(d.temperaturesC["junction"] == 61)
        #expect(d.powerDrawW == 95)
        #expect(d.powerCapW == 300)

        let inv = try #require(scan.inventory().first)
        #expect(inv.model == "AMD device 0x740f")
        #expect(inv.memoryTotalMiB == 65520)
        #expect(inv.memoryUsedMiB == 10)
        #expect(inv.utilizationPercent == 37)
        #expect(inv.health.state == .unknown)
        #expect(inv.health.reasons == [HealthReason(.notReported, "no vendor tool output")])
    }

    @Test func ascendLikeProcessingAccelerator() throws {
        let r = try FakeRoot("ascend")
        try r.pci("0000:c1:00.0", vendor: "0x19e5", device: "0xd802", cls: "0x120000", attrs: ["numa_node": "3"])
        try r.pci("0000:01:00.0", vendor: "0x19e5", device: "0xd802", cls: "0x120000", attrs: ["numa_node": "0"])
        // A Huawei NIC is not an accelerator.
        try r.pci("0000:7d:00.0", vendor: "0x19e5", device: "0xa222", cls: "0x020000")
        try r.classNode("accel", "accel0", bus: "0000:01:00.0")
        let scan = r.scanner.scan()
        #expect(scan.problems == [])
        #expect(scan.devices.map(\.busID) == ["0000:01:00.0", "0000:c1:00.0"])
        #expect(scan.devices.allSatisfy { $0.vendor == .huawei })
        #expect(scan.devices[0].accelNode == "accel0")
        let inv = scan.inventory()
        #expect(inv.map(\.index) == [0, 1])
        #expect(inv.map(\.numaNode) == [0, 3])
        #expect(inv[0].model == "Huawei device 0xd802")
        #expect(inv[0].id == "0000:01:00.0")
    }

    @Test func habanaAccelNodeGivesDeviceType() throws {
        let r = try FakeRoot("habana")
        try r.pci("0000:43:00.0", vendor: "0x1da3", device: "0x1020", cls: "0x120000", attrs: ["max_power": "600000"])
        try r.classNode("accel", "accel0", bus: "0000:43:00.0")
        try r.file("sys/class/accel/accel0/device_type", "GAUDI2\n")
        let scan = r.scanner.scan()
        let d = try #require(scan.devices.first)
        #expect(d.vendor == .habana)
        #expect(d.accelDeviceType == "GAUDI2")
        #expect(d.powerCapW == 600)
        #expect(scan.inventory().first?.model == "Habana GAUDI2")
    }

    @Test func noAcceleratorAtAll() throws {
        let r = try FakeRoot("none")
        try r.pci("0000:00:00.0", vendor: "0x8086", device: "0x09a2", cls: "0x060000")
        try r.pci("0000:00:02.0", vendor: "0x8086", device: "0x46a6", cls: "0x030000")  // iGPU
        try r.pci("0000:03:00.0", vendor: "0x15b3", device: "0x101b", cls: "0x020700")  // InfiniBand
        let scan = r.scanner.scan()
        #expect(scan.devices.isEmpty)
        #expect(scan.problems.isEmpty)
        #expect(scan.pciBusListed)
        #expect(scan.inventory().isEmpty)
    }

    @Test func missingSysfsIsAProblemNotACrash() throws {
        let r = try FakeRoot("empty")
        let scan = r.scanner.scan()
        #expect(scan.devices.isEmpty)
        #expect(!scan.pciBusListed)
        #expect(scan.problems.count == 1)
        #expect(scan.problems[0].contains("bus/pci/devices"))
    }

    @Test func unreadableFilesBecomeProblems() throws {
        let r = try FakeRoot("unreadable")
        // numa_node is a directory; max_link_width is a dangling symlink.
        let dev = try r.pci("0000:3b:00.0", vendor: "0x10de", device: "0x2330", cls: "0x030200")
        try r.dir(dev + "/numa_node")
        try r.symlink(dev + "/max_link_width", to: r.path + "/nowhere/max_link_width")
        try r.file(dev + "/current_link_speed", "fast\n")
        // A device whose class cannot be read is skipped, with a problem naming the file.
        let bad = try r.pci("0000:5e:00.0", vendor: "0x10de", device: "0x2330", cls: "0x030200")
        try FileManager.default.removeItem(atPath: r.path + "/" + bad + "/class")
        try r.symlink(bad + "/class", to: r.path + "/gone")
        // procfs information is a directory.
        try r.dir("proc/driver/nvidia/gpus/0000:3b:00.0/information")

        let scan = r.scanner.scan()
        #expect(scan.devices.map(\.busID) == ["0000:3b:00.0"])
        let d = scan.devices[0]
        #expect(d.numaNode == nil)
        #expect(d.maxLink.width == nil)
        #expect(d.nvidia == nil)
        let problems = scan.problems.joined(separator: "\n")
        #expect(problems.contains("numa_node: expected a file, found a directory"))
        #expect(problems.contains("max_link_width: dangling symlink"))
        #expect(problems.contains("current_link_speed: expected e.g."))
        #expect(problems.contains("0000:5e:00.0/class: dangling symlink"))
        #expect(problems.contains("information: expected a file, found a directory"))
        // Still inventory: unknown, never healthy.
        #expect(scan.inventory().map(\.health.state) == [.unknown])
    }

    @Test(.enabled(if: !runningAsRoot, "root reads mode-000 files; covered by the directory/symlink cases"))
    func permissionDeniedIsAProblem() throws {
        let r = try FakeRoot("perm")
        let dev = try r.pci("0000:3b:00.0", vendor: "0x10de", device: "0x2330", cls: "0x030200", attrs: ["numa_node": "0"])
        chmod(r.path + "/" + dev + "/numa_node", 0)
        let scan = r.scanner.scan()
        #expect(scan.devices.count == 1)
        #expect(scan.devices.first?.numaNode == nil)
        #expect(scan.problems.contains { $0.contains("numa_node: cannot open") })
    }

    @Test func linkSpeedSpellings() {
        #expect(SysfsScanner.parseLinkSpeed("8 GT/s") == .rate(8, 3))
        #expect(SysfsScanner.parseLinkSpeed("16.0 GT/s PCIe") == .rate(16, 4))
        #expect(SysfsScanner.parseLinkSpeed("2.5 GT/s PCIe") == .rate(2.5, 1))
        #expect(SysfsScanner.parseLinkSpeed("Unknown speed") == .unknown)
        #expect(SysfsScanner.parseLinkSpeed("Unknown") == .unknown)
        #expect(SysfsScanner.parseLinkSpeed("garbage") == .garbage)
    }

    @Test func nvidiaInformationOldDriver() {
        let info = SysfsScanner.parseNvidiaInformation(
            "Model: \t\t Tesla V100-SXM2-16GB\nVideo BIOS: \t ??.??.??.??.??\nBlacklisted:\t Yes\n")
        #expect(info?.model == "Tesla V100-SXM2-16GB")
        #expect(info?.videoBIOS == nil)
        #expect(info?.excluded == true)
        #expect(SysfsScanner.parseNvidiaInformation("garbage") == nil)
    }
}

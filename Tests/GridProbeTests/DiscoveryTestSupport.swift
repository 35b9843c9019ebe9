import Foundation
import GridCore
@testable import GridProbe

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fake `/` (sys/ and proc/) in a temporary directory, removed on deinit.
final class FakeRoot {
    let root: URL
    var path: String { root.path }

    init(_ label: String = "root") throws {
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("gridprobe-\(label)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    deinit {
        // Restore permissions so removal works when a test chmod-ed something.
        if let e = FileManager.default.enumerator(atPath: root.path) {
            for case let rel as String in e { chmod(root.path + "/" + rel, 0o755) }
        }
        try? FileManager.default.removeItem(at: root)
    }

    func dir(_ rel: String) throws {
        try FileManager.default.createDirectory(atPath: path + "/" + rel, withIntermediateDirectories: true)
    }

    func file(_ rel: String, _ content: String) throws {
        let full = path + "/" + rel
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try content.write(toFile: full, atomically: false, encoding: .utf8)
    }

    func symlink(_ rel: String, to target: String) throws {
        let full = path + "/" + rel
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: full, withDestinationPath: target)
    }

    /// An executable shell script; returns its absolute path.
    @discardableResult
    func script(_ name: String, _ body: String) throws -> String {
        try dir("bin")
        let full = path + "/bin/" + name
        // O_CLOEXEC so a tool spawned by a concurrent test cannot inherit the writer (ETXTBSY).
        let fd = open(full, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown) }
        let bytes = Array(("#!/bin/sh\n" + body + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else { throw CocoaError(.fileWriteUnknown) }
        return full
    }

    /// A PCI function the way the kernel lays it out: the real directory under
    /// sys/devices/pci0000:00/, a symlink from sys/bus/pci/devices/. Attribute values get the
    /// trailing newline sysfs always prints.
    @discardableResult
    func pci(_ bus: String, vendor: String, device: String, cls: String, attrs: [String: String] = [:]) throws -> String {
        let devDir = "sys/devices/pci0000:00/\(bus)"
        try dir(devDir)
        try file(devDir + "/vendor", vendor + "\n")
        try file(devDir + "/device", device + "\n")
        try file(devDir + "/class", cls + "\n")
        for (k, v) in attrs { try file(devDir + "/" + k, v + "\n") }
        try symlink("sys/bus/pci/devices/\(bus)", to: path + "/" + devDir)
        return devDir
    }

    /// `sys/class/<cls>/<node>/device` → the PCI device.
    func classNode(_ cls: String, _ node: String, bus: String) throws {
        try dir("sys/class/\(cls)/\(node)")
        try symlink("sys/class/\(cls)/\(node)/device", to: path + "/sys/devices/pci0000:00/\(bus)")
    }

    var scanner: SysfsScanner { SysfsScanner(root: root) }
}

var runningAsRoot: Bool { geteuid() == 0 }

/// A tiny stand-in for the vendor parsers, so these tests do not depend on them.
/// Accepts lines `GPU <bus> <uuid> <model words...> [temp=N] [xid=N] [health=TEXT]` after a
/// first line `FAKE-SMI`; anything else is unrecognised.
let fakeParse: VendorParse = { text, tool in
    let lines = text.split(whereSeparator: \.isNewline).map(String.init)
    guard lines.first?.trimmingCharacters(in: .whitespaces) == "FAKE-SMI" else {
        throw VendorParseError.unrecognizedFormat(hint: String(lines.first?.prefix(40) ?? ""))
    }
    var devices: [DeviceInventory] = []
    for line in lines.dropFirst() where line.hasPrefix("GPU ") {
        let words = line.split(separator: " ").map(String.init)
        guard words.count >= 4 else { throw VendorParseError.malformed(tool: tool ?? .nvidiaSMIXML, detail: line) }
        var signals = HealthSignals()
        var model: [String] = []
        for w in words.dropFirst(3) {
            if w.hasPrefix("temp=") { signals.temperatureC = Double(w.dropFirst(5)) }
            else if w.hasPrefix("xid=") { signals.faultCodes.append(Int(w.dropFirst(4)) ?? 0) }
            else if w.hasPrefix("health=") { signals.vendorHealthText = String(w.dropFirst(7)) }
            else { model.append(w) }
        }
        devices.append(DeviceInventory(
            id: words[2], index: devices.count, vendor: tool?.vendor ?? .nvidia, model: model.joined(separator: " "),
            memoryTotalMiB: 81559, pciBusID: words[1], signals: signals,
            health: .unknown(HealthReason(.notReported, "parser leaves health to the evaluator"))))
    }
    return VendorParseResult(tool: tool ?? .nvidiaSMIXML, devices: devices, driverVersion: "595.84")
}

/// An NVIDIA H100 at 0000:3b:00.0 on NUMA node 1 with its procfs entry.
func makeNvidiaTree(_ r: FakeRoot) throws {
    try r.pci(
        "0000:3b:00.0", vendor: "0x10de", device: "0x2330", cls: "0x030200",
        attrs: [
            "numa_node": "1", "max_link_speed": "32.0 GT/s PCIe", "max_link_width": "16",
            "current_link_speed": "2.5 GT/s PCIe", "current_link_width": "16",
            "subsystem_vendor": "0x10de", "subsystem_device": "0x16c1",
        ])
    try r.file(
        "proc/driver/nvidia/gpus/0000:3b:00.0/information",
        "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 10\nGPU UUID: \t GPU-11111111-2222-3333-4444-555555555555\nVideo BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t 0000:3b:00.0\nDevice Minor: \t 5\nGPU Firmware: \t 595.84\nGPU Excluded:\t No\n")
    try r.file("proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  595.84  Release Build\nGCC version:  gcc 12\n")
}

/// Settings that read `r` and run one fake tool as "nvidia-smi".
func fakeSettings(_ r: FakeRoot, tool: String, timeout: Double = 1, cleanProbes: Int = 3) -> ProbeSettings {
    var policy = HealthPolicy()
    policy.cleanProbesToRecover = cleanProbes
    var s = ProbeSettings(
        sysfsRoot: r.path + "/sys", procRoot: r.path + "/proc", toolTimeoutSeconds: timeout,
        tools: ["nvidia-smi": ToolSettings(executable: tool, format: .nvidiaSMIXML, vendors: [.nvidia])],
        health: policy)
    s.kernelLog = ""  // hermetic: not this host's kernel log
    return s
}

func secondsElapsed(since start: Date) -> Double { Date().timeIntervalSince(start) }

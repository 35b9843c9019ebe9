import GridCore

extension AcceleratorVendor {
    /// How operators write the vendor's name ("NVIDIA", "AMD"...), for models we cannot name.
    var probeDisplayName: String {
        switch self {
        case .nvidia: return "NVIDIA"
        case .amd: return "AMD"
        case .hygon: return "Hygon"
        case .huawei: return "Huawei"
        case .intel: return "Intel"
        case .habana: return "Habana"
        case .iluvatar: return "Iluvatar"
        case .unknown: return "Unknown vendor"
        }
    }
}

extension SysfsPCIeLink {
    /// "PCIe Gen4 x16", "PCIe 16.0 GT/s x8", "PCIe x16", or nil when nothing is known.
    public var interconnectName: String? {
        if isEmpty { return nil }
        var parts = ["PCIe"]
        if let generation { parts.append("Gen\(generation)") } else if let speedGTs {
            parts.append("\(speedGTs) GT/s")
        }
        if let width { parts.append("x\(width)") }
        return parts.joined(separator: " ")
    }
}

extension SysfsDevice {
    /// The reason used for a device the kernel shows but no vendor tool described.
    public static let notReportedReason = HealthReason(.notReported, "no vendor tool output")

    /// A model name from what the kernel knows: NVIDIA procfs `Model:`, habanalabs
    /// `device_type`, else "<Vendor> device 0x<device id>".
    public var fallbackModel: String {
        if let model = nvidia?.model, !model.isEmpty { return model }
        if let type = accelDeviceType, !type.isEmpty { return "\(vendor.probeDisplayName) \(type)" }
        let id = deviceID.map { "0x" + String(format4: $0) } ?? "(unknown id)"
        return "\(vendor.probeDisplayName) device \(id)"
    }

    /// Stable id: NVIDIA GPU UUID from procfs when known, else the PCI bus id.
    public var stableID: String {
        if let uuid = nvidia?.uuid, !uuid.isEmpty { return uuid }
        return busID
    }

    /// Inventory for this device as seen by the kernel alone. Health is `unknown` with
    /// `reason` (default: not reported by any vendor tool) — never healthy, since nothing
    /// vouched for the device.
    public func inventory(index: Int, reason: HealthReason = SysfsDevice.notReportedReason) -> DeviceInventory {
        var d = DeviceInventory(id: stableID, index: index, vendor: vendor, model: fallbackModel)
        d.pciBusID = busID
        if let deviceID { d.pciDeviceID = "0x" + String(format4: deviceID) }
        d.numaNode = numaNode
        if let vram = vramTotalBytes { d.memoryTotalMiB = Int(vram / (1024 * 1024)) }
        if let used = vramUsedBytes { d.memoryUsedMiB = Int(used / (1024 * 1024)) }
        d.driverVersion = driverVersion
        d.firmwareVersion = nvidia?.gpuFirmware ?? nvidia?.videoBIOS
        if let link = maxLink.interconnectName { d.interconnects = [link] }
        d.powerLimitW = powerCapW
        d.powerDrawW = powerDrawW
        d.temperatureC = temperatureC
        d.utilizationPercent = busyPercent
        d.signals.temperatureC = temperatureC
        d.health = .unknown(reason)
        if nvidia?.excluded == true {
            d.health = DeviceHealth(
                state: .unhealthy,
                reasons: [HealthReason(.other, "the NVIDIA driver excludes this GPU (GPU Excluded: Yes in /proc/driver/nvidia)"), reason])
        }
        return d
    }
}

extension SysfsScanResult {
    /// Every device as kernel-only inventory, indexed per vendor in bus order (the order vendor
    /// runtimes use by default when enumerating by PCI bus id).
    public func inventory() -> [DeviceInventory] {
        var perVendor: [AcceleratorVendor: Int] = [:]
        return devices.sorted { $0.busID < $1.busID }.map { dev in
            let index = perVendor[dev.vendor, default: 0]
            perVendor[dev.vendor] = index + 1
            return dev.inventory(index: index)
        }
    }
}

extension String {
    /// Four lowercase hex digits.
    init(format4 value: UInt16) {
        let hex = String(value, radix: 16)
        self = String(repeating: "0", count: Swift.max(0, 4 - hex.count)) + hex
    }
}

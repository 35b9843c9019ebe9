import Foundation
import GridCore

/// `nvidia-smi -q -x` (DTD v11, v12, v13, 418-era files without a DOCTYPE, Windows captures).
///
/// Fields are looked up by element path, never by position or indentation, and every version's
/// spelling is tried (`clocks_throttle_reasons` vs `clocks_event_reasons`, `power_readings` vs
/// `gpu_power_readings`, SRAM/DRAM vs single/double-bit ECC). `index` is the `<gpu>` element's
/// position in the file, which is nvidia-smi's enumeration order and what CUDA_VISIBLE_DEVICES
/// counts (with CUDA_DEVICE_ORDER=PCI_BUS_ID, as the agent sets it).
public enum NvidiaSMIXMLParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        try parse(text, tool: .nvidiaSMIXML, vendor: .nvidia, rootName: "nvidia_smi_log")
    }

    /// Shared with `ixsmi -q -x`, whose schema is a subset of nvidia-smi's under `<ixsmi_log>`.
    static func parse(
        _ text: String, tool: VendorTool, vendor: AcceleratorVendor, rootName: String
    ) throws -> VendorParseResult {
        let root: XMLNode
        do {
            root = try XMLTreeBuilder.parse(text)
        } catch .syntax(let line, let column, let reason) {
            throw VendorParseError.malformed(
                tool: tool, detail: "XML syntax error at line \(line), column \(column): \(reason)")
        } catch .tooDeep(let line) {
            throw VendorParseError.malformed(
                tool: tool, detail: "XML nested deeper than \(XMLTreeBuilder.maxDepth) levels at line \(line)")
        } catch {
            throw VendorParseError.malformed(tool: tool, detail: "no XML root element")
        }
        guard root.name == rootName else {
            throw VendorParseError.malformed(
                tool: tool, detail: "root element is <\(root.name)>, expected <\(rootName)>")
        }

        var result = VendorParseResult(tool: tool)
        result.driverVersion = ParseSupport.clean(root.value("driver_version"))
        if let cuda = ParseSupport.clean(root.value("cuda_version")) {
            // The XML carries no nvidia-smi version; the CUDA version the driver supports is
            // what job placement matches on, so it is reported here, labelled.
            result.toolVersion = "CUDA " + cuda
        }
        let gpus = root.children(named: "gpu")
        if let attached = ParseSupport.count(root.value("attached_gpus")), attached != gpus.count {
            result.warnings.append(
                "attached_gpus says \(attached) but the file holds \(gpus.count) <gpu> element(s); parsed those present")
        }
        for (position, gpu) in gpus.enumerated() {
            result.devices.append(
                device(gpu, index: position, vendor: vendor, tool: tool, driver: result.driverVersion))
        }
        return result
    }

    private static func device(
        _ gpu: XMLNode, index: Int, vendor: AcceleratorVendor, tool: VendorTool, driver: String?
    ) -> DeviceInventory {
        let busID = ParseSupport.pciBusID(gpu.value("pci/pci_bus_id"))
            ?? ParseSupport.pciBusID(gpu.attributes["id"])
        let uuid = ParseSupport.uuid(gpu.value("uuid"))
        let id = uuid ?? busID ?? "\(tool.rawValue):\(index)"
        let power = gpu.child("gpu_power_readings") ?? gpu.child("power_readings")
        let memory = gpu.child("fb_memory_usage") ?? gpu.child("memory_usage")

        var device = DeviceInventory(
            id: id, index: index, vendor: vendor,
            model: ParseSupport.clean(gpu.value("product_name")) ?? "\(vendor.rawValue) GPU")
        device.memoryTotalMiB = ParseSupport.mebibytes(memory?.value("total"))
        device.memoryUsedMiB = ParseSupport.mebibytes(memory?.value("used"))
        device.pciBusID = busID
        device.pciDeviceID = ParseSupport.pciDeviceID(gpu.value("pci/pci_device_id"), packing: .deviceHigh)
        device.architecture = ParseSupport.clean(gpu.value("product_architecture"))
        device.serial = ParseSupport.serial(gpu.value("serial"))
        device.driverVersion = driver
        device.firmwareVersion = ParseSupport.clean(gpu.value("vbios_version"))
        device.numaNode = ParseSupport.count(gpu.value("numa_node"))
        device.powerLimitW = power?.firstValue(
            ["current_power_limit", "power_limit", "enforced_power_limit"]).flatMap(ParseSupport.double)
        device.powerDrawW = power?.firstValue(
            ["power_draw", "instant_power_draw", "average_power_draw"]).flatMap(ParseSupport.double)
        device.temperatureC = ParseSupport.double(gpu.value("temperature/gpu_temp"))
        device.utilizationPercent = ParseSupport.double(gpu.value("utilization/gpu_util"))
        device.partitions = migPartitions(gpu, parentID: id)
        device.processes = processes(gpu)
        device.signals = signals(gpu)
        device.health = ParseSupport.notEvaluated
        return device
    }

    /// `<processes><process_info>`: pid, type ("C" compute, "G" graphics, "C+G"), name. nil when
    /// the element is absent (old drivers, or not supported); [] when it lists none.
    private static func processes(_ gpu: XMLNode) -> [DeviceProcess]? {
        guard let list = gpu.child("processes") else { return nil }
        return list.children(named: "process_info").compactMap { p in
            guard let pid = ParseSupport.count(p.value("pid")) else { return nil }
            let type = (p.value("type") ?? "C").trimmingSpaces()
            return DeviceProcess(pid: pid, name: ParseSupport.clean(p.value("process_name")) ?? "?",
                                 kind: type == "G" ? .graphics : .compute)
        }
    }

    /// MIG instances. The XML names no profile ("3g.40gb") and, before v13, no MIG UUID, so
    /// the id falls back to "<parent>/gi<g>ci<c>" (stable across reboots when the layout is).
    private static func migPartitions(_ gpu: XMLNode, parentID: String) -> [DevicePartition] {
        guard let migs = gpu.child("mig_devices") else { return [] }
        var partitions: [DevicePartition] = []
        for (position, mig) in migs.children(named: "mig_device").enumerated() {
            let gi = ParseSupport.count(mig.value("gpu_instance_id"))
            let ci = ParseSupport.count(mig.value("compute_instance_id"))
            let fallback: String
            if let gi, let ci {
                fallback = "\(parentID)/gi\(gi)ci\(ci)"
            } else {
                fallback = "\(parentID)/mig\(ParseSupport.count(mig.value("index")) ?? position)"
            }
            partitions.append(
                DevicePartition(
                    id: ParseSupport.uuid(mig.value("uuid")) ?? fallback,
                    profile: ParseSupport.clean(mig.firstValue(["profile", "profile_name", "name"])),
                    memoryTotalMiB: ParseSupport.mebibytes(mig.value("fb_memory_usage/total"))))
        }
        return partitions
    }

    private static func signals(_ gpu: XMLNode) -> HealthSignals {
        var s = HealthSignals()
        if let ecc = gpu.child("ecc_errors") {
            s.eccUncorrectableVolatile = uncorrectable(ecc.child("volatile"))
            s.eccUncorrectableAggregate = uncorrectable(ecc.child("aggregate"))
            s.eccCorrectableVolatile = correctable(ecc.child("volatile"))
        }
        if let retired = gpu.child("retired_pages") {
            s.retiredPagesPending = ParseSupport.any([
                ParseSupport.yesNo(retired.value("pending_retirement")),
                ParseSupport.yesNo(retired.value("pending_blacklist")),
            ])
            s.retiredPagesCount = ParseSupport.sum([
                ParseSupport.count(retired.value("multiple_single_bit_retirement/retired_count")),
                ParseSupport.count(retired.value("double_bit_retirement/retired_count")),
            ])
        }
        if let remapped = gpu.child("remapped_rows") {
            s.remappedRowsPending = ParseSupport.yesNo(remapped.value("remapped_row_pending"))
            s.remappingFailed = ParseSupport.yesNo(remapped.value("remapped_row_failure"))
        }
        if let reasons = gpu.child("clocks_event_reasons") ?? gpu.child("clocks_throttle_reasons") {
            var flags: [String: Bool] = [:]
            for child in reasons.children {
                // clocks_event_reason_hw_thermal_slowdown / clocks_throttle_reason_hw_thermal_slowdown
                guard let range = child.name.range(of: "_reason_") else { continue }
                flags[String(child.name[range.upperBound...])] = ParseSupport.active(child.text)
            }
            s.thermalThrottleActive = ParseSupport.any([flags["hw_thermal_slowdown"], flags["sw_thermal_slowdown"]])
            // Not `sw_power_cap`: that is the driver holding the GPU at its own power limit, which
            // every GPU at full load does (the H200 capture under a matrix-product loop shows it).
            // The power brake (asserted by the platform) and HW slowdown are faults.
            s.powerThrottleActive = ParseSupport.any([flags["hw_power_brake_slowdown"], flags["hw_slowdown"]])
        }
        s.temperatureC = ParseSupport.double(gpu.value("temperature/gpu_temp"))
        s.temperatureSlowdownC = ParseSupport.double(gpu.value("temperature/gpu_temp_slow_threshold"))
        s.temperatureShutdownC = ParseSupport.double(gpu.value("temperature/gpu_temp_max_threshold"))
        // Drivers from the 580 series on Hopper print no absolute thresholds, only T.Limit: the
        // headroom left to the GPU's limit (`gpu_temp_tlimit`, 52 C on an idle H200) and the
        // headroom at which it slows down (-2 C) and shuts down (-8 C). The absolute figures
        // are the current temperature plus the headroom, less the threshold's.
        if let t = s.temperatureC, let headroom = ParseSupport.double(gpu.value("temperature/gpu_temp_tlimit")) {
            let limit = t + headroom
            if s.temperatureSlowdownC == nil, let slow = ParseSupport.double(gpu.value("temperature/gpu_temp_slow_tlimit_threshold")) {
                s.temperatureSlowdownC = limit - slow
            }
            if s.temperatureShutdownC == nil, let max = ParseSupport.double(gpu.value("temperature/gpu_temp_max_tlimit_threshold")) {
                s.temperatureShutdownC = limit - max
            }
        }
        return s
    }

    /// Uncorrectable ECC in one scope: SRAM + DRAM (v11 Ampere and later; v13 splits SRAM into
    /// parity and SEC-DED), or the double-bit total of pre-Ampere schemas.
    private static func uncorrectable(_ scope: XMLNode?) -> Int? {
        guard let scope else { return nil }
        let sram = ParseSupport.count(scope.value("sram_uncorrectable"))
            ?? ParseSupport.sum([
                ParseSupport.count(scope.value("sram_uncorrectable_parity")),
                ParseSupport.count(scope.value("sram_uncorrectable_secded")),
            ])
        let dram = ParseSupport.count(scope.value("dram_uncorrectable"))
        if let modern = ParseSupport.sum([sram, dram]) { return modern }
        return ParseSupport.count(scope.value("double_bit/total"))
            ?? ParseSupport.sum(components(scope.child("double_bit")))
    }

    /// Per-unit counts of a pre-Ampere ECC block when its `<total>` is N/A.
    private static func components(_ block: XMLNode?) -> [Int?] {
        (block?.children ?? []).filter { $0.name != "total" }.map { ParseSupport.count($0.text) }
    }

    private static func correctable(_ scope: XMLNode?) -> Int? {
        guard let scope else { return nil }
        let modern = ParseSupport.sum([
            ParseSupport.count(scope.value("sram_correctable")),
            ParseSupport.count(scope.value("dram_correctable")),
        ])
        if let modern { return modern }
        return ParseSupport.count(scope.value("single_bit/total"))
            ?? ParseSupport.sum(components(scope.child("single_bit")))
    }
}

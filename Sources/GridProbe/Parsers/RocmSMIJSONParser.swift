import Foundation
import GridCore

/// `rocm-smi ... --json` from ROCm 4.x to 6.x and Hygon DTK's fork.
///
/// Every value is a string and units live in the key (`"VRAM Total Memory (B)"`,
/// `"vram Total Memory (MiB)"`), spellings drift between releases (`"GPU ID"` → `"Device ID"`,
/// `"Card series"` → `"Card Series"`), so keys are matched case-insensitively and by family.
/// One device per `cardN` object; `index` is N, the order rocm-smi and the HIP/ROCr runtimes
/// enumerate GPUs in on a node without hidden devices.
public enum RocmSMIJSONParser {
    public static func parse(_ text: String) throws -> VendorParseResult {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [])
        } catch {
            throw VendorParseError.malformed(tool: .rocmSMIJSON, detail: "invalid JSON: \(JSONErrorText.describe(error))")
        }
        guard let top = object as? [String: Any] else {
            throw VendorParseError.malformed(tool: .rocmSMIJSON, detail: "top level is not a JSON object")
        }
        var result = VendorParseResult(tool: .rocmSMIJSON)
        let system = Fields(top["system"])
        result.driverVersion = system.value("driver version")

        var cards: [(number: Int, key: String)] = []
        for key in top.keys {
            guard let number = cardNumber(key) else { continue }
            cards.append((number, key))
        }
        cards.sort { $0.number < $1.number }
        if cards.isEmpty {
            throw VendorParseError.malformed(tool: .rocmSMIJSON, detail: "no \"cardN\" objects at the top level")
        }
        let xgmi = xgmiPeers(system)
        for card in cards {
            guard top[card.key] is [String: Any] else {
                result.warnings.append("\(card.key) is not a JSON object; skipped")
                continue
            }
            var device = device(Fields(top[card.key]), index: card.number, driver: result.driverVersion)
            if let peers = xgmi[card.number], !peers.isEmpty {
                device.interconnects = ["xGMI"]
                // Direct fabric peers by device index, as `nvidia-smi topo -m` gives NVLink's.
                device.nvlinkPeers = peers.sorted()
            }
            result.devices.append(device)
        }
        return result
    }

    /// "card12" → 12.
    static func cardNumber(_ key: String) -> Int? {
        guard key.hasPrefix("card") else { return nil }
        let digits = key.dropFirst(4)
        guard !digits.isEmpty, digits.count <= 6, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    private static func device(_ f: Fields, index: Int, driver: String?) -> DeviceInventory {
        let vendorText = f.value("card vendor") ?? ""
        let isHygon = vendorText.lowercased().contains("haiguang") || vendorText.lowercased().contains("hygon")
            || f.value("dcu use (%)") != nil
        let vendor: AcceleratorVendor = isHygon ? .hygon : .amd
        let busID = ParseSupport.pciBusID(f.value("pci bus"))
        let uniqueID = f.value("unique id")
        let deviceID = ParseSupport.pciDeviceID(f.value("device id") ?? f.value("gpu id"))
        let model = f.value("card series") ?? f.value("device name") ?? f.value("card model")
            ?? (isHygon ? "Hygon DCU" : "AMD GPU") + (deviceID.map { " " + $0 } ?? "")

        var d = DeviceInventory(
            id: uniqueID ?? busID ?? "\(VendorTool.rocmSMIJSON.rawValue):card\(index)",
            index: index, vendor: vendor, model: model)
        d.memoryTotalMiB = memory(f, "vram total memory")
        d.memoryUsedMiB = memory(f, "vram total used memory")
        d.pciBusID = busID
        d.pciDeviceID = deviceID
        d.architecture = f.value("gfx version")
        d.serial = ParseSupport.serial(f.value("serial number"))
        d.driverVersion = driver
        d.firmwareVersion = f.value("vbios version")
        d.numaNode = ParseSupport.count(f.value("(topology) numa node"))
        d.powerDrawW = ParseSupport.double(
            f.value("average graphics package power (w)") ?? f.value("current socket graphics package power (w)"))
        d.powerLimitW = ParseSupport.double(f.value("max graphics package power (w)"))
        // Junction (hotspot) is what the firmware throttles on; edge is the fallback.
        let temperature = ParseSupport.double(
            f.value("temperature (sensor junction) (c)") ?? f.value("temperature (sensor edge) (c)"))
        d.temperatureC = temperature
        d.utilizationPercent = ParseSupport.double(f.value("gpu use (%)") ?? f.value("dcu use (%)"))
        var signals = HealthSignals()
        signals.temperatureC = temperature
        d.signals = signals
        d.health = ParseSupport.notEvaluated
        return d
    }

    /// VRAM in MiB from whichever unit the key carries: "(B)" (ROCm) or "(MiB)" (Hygon DTK).
    private static func memory(_ f: Fields, _ stem: String) -> Int? {
        if let bytes = f.value(stem + " (b)") { return ParseSupport.mebibytes(fromBytes: bytes) }
        if let mib = f.value(stem + " (mib)") { return ParseSupport.mebibytes(mib, defaultUnit: "MiB") }
        if let mb = f.value(stem + " (mb)") { return ParseSupport.mebibytes(mb, defaultUnit: "MiB") }
        return nil
    }

    /// Each card's xGMI peers according to `system` "(Topology) Link type between DRM devices
    /// i and j" (`XGMI`; `PCIE` is not a peer link). Card numbers are the DRM indexes.
    private static func xgmiPeers(_ system: Fields) -> [Int: Set<Int>] {
        var peers: [Int: Set<Int>] = [:]
        for (key, value) in system.all where value.uppercased() == "XGMI" {
            guard key.hasPrefix("(topology) link type between drm devices ") else { continue }
            let numbers = key.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            guard numbers.count == 2, numbers[0] != numbers[1], numbers.allSatisfy({ (0...4095).contains($0) }) else { continue }
            peers[numbers[0], default: []].insert(numbers[1])
            peers[numbers[1], default: []].insert(numbers[0])
        }
        return peers
    }

    /// A JSON object's string values under lowercased keys, N/A spellings removed.
    struct Fields {
        private(set) var all: [String: String] = [:]
        init(_ object: Any?) {
            guard let dictionary = object as? [String: Any] else { return }
            for (key, value) in dictionary {
                let text: String?
                switch value {
                case let string as String: text = string
                case let number as NSNumber: text = number.stringValue
                default: text = nil
                }
                if let cleaned = ParseSupport.clean(text) {
                    all[key.lowercased().trimmingSpaces()] = cleaned
                }
            }
        }
        func value(_ key: String) -> String? { all[key] }
    }
}

/// Short JSON error text without Foundation's multi-line userInfo dumps.
enum JSONErrorText {
    static func describe(_ error: Error) -> String {
        let ns = error as NSError
        if let debug = ns.userInfo["NSDebugDescription"] as? String { return debug }
        return ns.localizedDescription
    }
}

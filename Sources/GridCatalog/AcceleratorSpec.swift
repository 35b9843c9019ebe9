import Foundation
import GridCore

/// One row of the accelerator catalog (`Resources/accelerators.csv`), typed. Empty cells are nil
/// (or empty lists). Units follow the CSV column names: GB decimal, GB/s, TFLOPS/TOPS, W.
public struct AcceleratorSpec: Sendable, Hashable, Codable {
    /// Vendor as written in the catalog ("NVIDIA", "Habana (Intel)", "Iluvatar CoreX"...).
    public var vendor: String
    /// Catalog model name, unique within the catalog (e.g. "A100 SXM4 80GB").
    public var model: String
    /// Other spellings vendor tools print ("A100-SXM4-80GB", "Ascend910B2C").
    public var aliases: [String]
    public var architecture: String?
    public var formFactor: String?
    public var releaseYear: Int?
    /// Marketed memory of one product (card, module or package), decimal GB.
    public var memoryGB: Double?
    public var memoryType: String?
    public var memoryBandwidthGBs: Double?
    /// Peak non-tensor (vector) FP32.
    public var fp32TFLOPS: Double?
    /// Peak dense (no structured sparsity) matrix/tensor FP16.
    public var fp16DenseTFLOPS: Double?
    /// Peak dense matrix/tensor BF16.
    public var bf16DenseTFLOPS: Double?
    /// Peak dense INT8 (tensor/matrix or packed dot product, see the row note).
    public var int8DenseTOPS: Double?
    public var tdpW: Double?
    public var interconnect: String?
    /// PCI vendor id, lowercase "0x" + 4 hex digits.
    public var pciVendorID: String?
    /// PCI device ids, lowercase "0x" + 4 hex digits.
    public var pciDeviceIDs: [String]
    /// Published embodied (manufacturing) carbon, kgCO2e; scope in `source`.
    public var embodiedKgCO2e: Double?
    /// Where the figures come from; a `note:` part flags derived or estimated cells.
    public var source: String

    public init(
        vendor: String, model: String, aliases: [String] = [], architecture: String? = nil,
        formFactor: String? = nil, releaseYear: Int? = nil, memoryGB: Double? = nil,
        memoryType: String? = nil, memoryBandwidthGBs: Double? = nil, fp32TFLOPS: Double? = nil,
        fp16DenseTFLOPS: Double? = nil, bf16DenseTFLOPS: Double? = nil, int8DenseTOPS: Double? = nil,
        tdpW: Double? = nil, interconnect: String? = nil, pciVendorID: String? = nil,
        pciDeviceIDs: [String] = [], embodiedKgCO2e: Double? = nil, source: String = ""
    ) {
        self.vendor = vendor
        self.model = model
        self.aliases = aliases
        self.architecture = architecture
        self.formFactor = formFactor
        self.releaseYear = releaseYear
        self.memoryGB = memoryGB
        self.memoryType = memoryType
        self.memoryBandwidthGBs = memoryBandwidthGBs
        self.fp32TFLOPS = fp32TFLOPS
        self.fp16DenseTFLOPS = fp16DenseTFLOPS
        self.bf16DenseTFLOPS = bf16DenseTFLOPS
        self.int8DenseTOPS = int8DenseTOPS
        self.tdpW = tdpW
        self.interconnect = interconnect
        self.pciVendorID = pciVendorID
        self.pciDeviceIDs = pciDeviceIDs
        self.embodiedKgCO2e = embodiedKgCO2e
        self.source = source
    }

    /// The catalog vendor mapped onto the network's vendor enum (`.unknown` for vendors the
    /// network has no case for, e.g. Cambricon).
    public var acceleratorVendor: AcceleratorVendor {
        let v = vendor.lowercased()
        if v.hasPrefix("habana") { return .habana }
        if v.hasPrefix("nvidia") { return .nvidia }
        if v.hasPrefix("amd") { return .amd }
        if v.hasPrefix("hygon") { return .hygon }
        if v.hasPrefix("huawei") { return .huawei }
        if v.hasPrefix("intel") { return .intel }
        if v.hasPrefix("iluvatar") { return .iluvatar }
        return .unknown
    }

    /// Whether the row's `source` marks any cell as an estimate or a derivation.
    public var hasEstimatedFigures: Bool {
        let s = source.lowercased()
        return s.contains("estimate") || s.contains("derived") || s.contains("uncertain")
    }

    /// How many dies a package of this model presents to software as separate devices when
    /// split (MI250X GCDs, Max 1550 stacks, Ascend 910C dies). Read from the architecture and
    /// form-factor text; 1 when nothing says otherwise.
    public var diesPerPackage: Int {
        let text = ((architecture ?? "") + " " + (formFactor ?? "")).lowercased()
        let patterns = ["2 gcds", "2 stacks", "2 dies", "2x 910b-class dies", "dual-die"]
        return patterns.contains(where: { text.contains($0) }) ? 2 : 1
    }

    /// Embodied carbon for a share of the product (a die of a multi-die package gets its
    /// share), kgCO2e; nil when the catalog has no published figure.
    public func embodiedCarbonKgCO2e(share: Double = 1) -> Double? {
        embodiedKgCO2e.map { $0 * share }
    }

    /// Marketed memory in GiB (decimal GB converted), for comparisons with what tools report.
    public var memoryGiB: Double? {
        memoryGB.map { $0 * 1_000_000_000 / 1_073_741_824 }
    }
}

/// CSV columns of the catalog, in file order.
public enum CatalogColumn: String, CaseIterable, Sendable {
    case vendor, model, aliases, architecture
    case formFactor = "form_factor"
    case releaseYear = "release_year"
    case memoryGB = "memory_gb"
    case memoryType = "memory_type"
    case memoryBandwidthGBs = "memory_bandwidth_gbs"
    case fp32TFLOPS = "fp32_tflops"
    case fp16DenseTFLOPS = "fp16_dense_tflops"
    case bf16DenseTFLOPS = "bf16_dense_tflops"
    case int8DenseTOPS = "int8_dense_tops"
    case tdpW = "tdp_w"
    case interconnect
    case pciVendorID = "pci_vendor_id"
    case pciDeviceIDs = "pci_device_ids"
    case embodiedKgCO2e = "embodied_kgco2e"
    case source
}

/// Normalises a PCI id ("0x233010DE", "10de:2330", "2330", "0x1da31020") to the device part
/// as lowercase "0x" + 4 hex digits. Packed 8-digit forms are split using the known vendor ids:
/// nvidia-smi packs device then vendor, hl-smi packs vendor then device.
public enum PCIID {
    static let knownVendorIDs: Set<String> = [
        "10de", "1002", "1d94", "19e5", "8086", "1da3", "1e3e", "cabc",
    ]

    /// Device part of a PCI id, or nil when the text is not hexadecimal.
    public static func deviceID(_ raw: String) -> String? {
        split(raw)?.device
    }

    /// (vendor?, device) parts of a PCI id.
    public static func split(_ raw: String) -> (vendor: String?, device: String)? {
        var s = raw.trimmingSpacesAndNewlines().lowercased()
        if let colon = s.lastIndex(of: ":") {
            let vendorPart = hex(String(s[..<colon]))
            guard let device = hex(String(s[s.index(after: colon)...])) else { return nil }
            return (vendorPart.map(pad), pad(device))
        }
        guard let h = hex(s) else { return nil }
        s = h
        if s.count <= 4 { return (nil, pad(s)) }
        if s.count == 8 {
            let hi = String(s.prefix(4)), lo = String(s.suffix(4))
            if knownVendorIDs.contains(lo) { return (pad(lo), pad(hi)) }
            if knownVendorIDs.contains(hi) { return (pad(hi), pad(lo)) }
            return (pad(lo), pad(hi))  // nvidia-smi layout by default
        }
        return nil
    }

    private static func hex(_ s: String) -> String? {
        var t = s.trimmingSpaces().lowercased()
        if t.hasPrefix("0x") { t.removeFirst(2) }
        guard !t.isEmpty, t.allSatisfy({ $0.isHexDigit }) else { return nil }
        while t.count > 4, t.hasPrefix("0"), t.count != 8 { t.removeFirst() }
        return t
    }

    private static func pad(_ s: String) -> String {
        "0x" + String(repeating: "0", count: max(0, 4 - s.count)) + s
    }
}

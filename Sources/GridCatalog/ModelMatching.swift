import Foundation
import GridCore

/// How a device was tied to a catalog row.
public enum MatchMethod: String, Sendable, Hashable, Codable {
    /// The normalised model string equals the row's model or an alias.
    case exactName = "exact_name"
    /// The row's model or alias appears in the device string as whole tokens
    /// ("Tesla V100S-PCIE-32GB" contains "V100S").
    case containedName = "contained_name"
    /// The device string is a whole-token prefix/part of a row's name ("H100" in "H100 SXM").
    /// Weak: usually ambiguous.
    case partialName = "partial_name"
    /// Only the PCI device id matched.
    case pciDeviceID = "pci_device_id"
}

/// The result of matching a vendor model string (and PCI id / memory) to the catalog.
public struct CatalogMatch: Sendable, Hashable {
    public var spec: AcceleratorSpec
    public var method: MatchMethod
    /// The catalog model or alias that matched, as written in the catalog (nil for PCI-only).
    public var matchedName: String?
    /// Whether the PCI device id agreed with the row.
    public var pciDeviceIDMatched: Bool
    /// Match strength (higher is better); exact names score above 1000.
    public var score: Int
    /// Share of the catalog product this device is: 1, or 1/dies when the device reports
    /// the memory of one die of a multi-die package (MI250X GCD, Max 1550 stack, 910C die).
    public var packageShare: Double
    /// Other catalog models that matched equally well and could not be told apart.
    public var ambiguousWith: [String]

    public var isAmbiguous: Bool { !ambiguousWith.isEmpty }
    /// Weak matches (partial names, PCI-only ids shared by several models, ties) make the
    /// figures an estimate for grading purposes.
    public var isWeak: Bool { method == .partialName || isAmbiguous }
}

/// A normalised name: tokens joined without separators, with the token boundaries.
struct ModelKey: Sendable, Hashable {
    var original: String
    var compact: [UInt8]
    var boundaries: Set<Int>
    var hasDigit: Bool
}

/// Normalisation for vendor model strings: lowercase; drop "(R)", "(TM)", vendor and brand
/// words (nvidia, tesla, amd, ati, instinct, radeon, geforce, quadro, intel, huawei, ascend,
/// hygon, iluvatar, habana); every non-alphanumeric character separates tokens. Brand words
/// glued to a number ("Ascend910B2C", "TeslaT4") are split off first.
public enum ModelNormalizer {
    static let noiseWords: Set<String> = [
        "nvidia", "tesla", "amd", "ati", "instinct", "radeon", "geforce", "quadro", "intel", "r", "tm",
        "huawei", "ascend", "hygon", "iluvatar", "habana",
    ]
    static let gluedPrefixes = ["ascend", "tesla", "nvidia", "iluvatar"]

    /// Normalised tokens of a model string.
    public static func tokens(_ s: String) -> [String] {
        var text = s.lowercased()
        for mark in ["(r)", "(tm)", "®", "™"] {
            text = text.replacingOccurrences(of: mark, with: " ")
        }
        var tokens: [String] = []
        var current = ""
        for ch in text.unicodeScalars {
            if ch.isASCII, ch.properties.isAlphabetic || ("0"..."9").contains(ch) {
                current.unicodeScalars.append(ch)
            } else if !current.isEmpty {
                tokens.append(current)
                current = ""
            }
        }
        if !current.isEmpty { tokens.append(current) }
        return tokens.compactMap { token -> String? in
            if noiseWords.contains(token) { return nil }
            for prefix in gluedPrefixes where token.hasPrefix(prefix) && token.count > prefix.count {
                let rest = token.dropFirst(prefix.count)
                if let first = rest.first, first.isNumber { return String(rest) }
            }
            return token
        }
    }

    /// The compact normalised form ("NVIDIA A100-SXM4-40GB" -> "a100sxm440gb").
    public static func normalize(_ s: String) -> String { tokens(s).joined() }

    static func key(_ s: String) -> ModelKey {
        let toks = tokens(s)
        var boundaries: Set<Int> = [0]
        var n = 0
        for t in toks {
            n += t.utf8.count
            boundaries.insert(n)
        }
        let compact = Array(toks.joined().utf8)
        return ModelKey(
            original: s, compact: compact, boundaries: boundaries,
            hasDigit: compact.contains { $0 >= 48 && $0 <= 57 })
    }

    static func keys(for spec: AcceleratorSpec) -> [ModelKey] {
        var out: [ModelKey] = []
        var seen: Set<[UInt8]> = []
        for name in [spec.model] + spec.aliases {
            let k = key(name)
            if !k.compact.isEmpty, seen.insert(k.compact).inserted { out.append(k) }
        }
        return out
    }
}

extension AcceleratorCatalog {
    /// Matches a device to a catalog row.
    ///
    /// - Parameters:
    ///   - model: the model string a vendor tool printed ("NVIDIA A100-SXM4-40GB", "910B2C").
    ///   - vendor: restricts the search to that vendor's rows (AMD and Hygon, Intel and Habana
    ///     count as one family); nil or `.unknown` searches every row.
    ///   - pciDeviceID: "0x738c", "0x233010DE", "10de:2330" or "0x1da31020"; used alone when the
    ///     name says nothing, and as a bonus when it agrees with the name.
    ///   - memoryMiB: total memory the device reports; breaks ties between variants (40GB vs
    ///     80GB, 910A vs one 910C die) and detects one die of a multi-die package.
    /// - Returns: the most specific row, or nil when nothing matches.
    public func match(
        model: String, vendor: AcceleratorVendor? = nil, pciDeviceID: String? = nil,
        memoryMiB: Int? = nil
    ) -> CatalogMatch? {
        let query = ModelNormalizer.key(model)
        let pci = pciDeviceID.flatMap(PCIID.split)
        let reportedGiB = memoryMiB.flatMap { $0 > 0 ? Double($0) / 1024 : nil }

        struct Candidate {
            var index: Int
            var nameScore: Int
            var method: MatchMethod
            var matchedName: String?
            var pci: Bool
            var total: Int { nameScore + (pci ? 300 : 0) }
        }
        var candidates: [Candidate] = []
        for (i, spec) in specs.enumerated() where Self.vendorCompatible(vendor, spec.acceleratorVendor) {
            var best = (score: 0, method: MatchMethod.pciDeviceID, name: String?.none)
            for key in keys[i] {
                if let s = Self.score(query: query, key: key), s.score > best.score {
                    best = (s.score, s.method, key.original)
                }
            }
            var pciHit = false
            if let pci, spec.pciDeviceIDs.contains(pci.device) {
                pciHit = pci.vendor == nil || spec.pciVendorID == nil || pci.vendor == spec.pciVendorID
            }
            if best.score > 0 || pciHit {
                candidates.append(Candidate(
                    index: i, nameScore: best.score, method: best.score > 0 ? best.method : .pciDeviceID,
                    matchedName: best.name, pci: pciHit))
            }
        }
        guard let top = candidates.map(\.total).max() else { return nil }
        var tied = candidates.filter { $0.total == top }

        // Memory breaks ties between variants.
        if tied.count > 1, let reportedGiB {
            let fits = tied.map { memoryFit(specs[$0.index], reportedGiB: reportedGiB) }
            let bestFit = fits.min()!
            tied = zip(tied, fits).filter { $0.1 <= bestFit + 0.05 }.map(\.0)
        }
        // Still tied: take the least capable row (conservative), then file order.
        let ordered = tied.sorted {
            let a = ComputeUnitCalculator.peak(for: specs[$0.index])?.gcu ?? 0
            let b = ComputeUnitCalculator.peak(for: specs[$1.index])?.gcu ?? 0
            return a != b ? a < b : $0.index < $1.index
        }
        let chosen = ordered[0]
        let spec = specs[chosen.index]
        return CatalogMatch(
            spec: spec, method: chosen.method, matchedName: chosen.matchedName,
            pciDeviceIDMatched: chosen.pci, score: chosen.total,
            packageShare: packageShare(spec, reportedGiB: reportedGiB),
            ambiguousWith: ordered.dropFirst().map { specs[$0.index].model })
    }

    /// Matches a device by its model, vendor, PCI device id and memory.
    public func match(_ device: DeviceInventory) -> CatalogMatch? {
        match(
            model: device.model, vendor: device.vendor, pciDeviceID: device.pciDeviceID,
            memoryMiB: device.memoryTotalMiB)
    }

    static func vendorCompatible(_ query: AcceleratorVendor?, _ row: AcceleratorVendor) -> Bool {
        guard let query, query != .unknown else { return true }
        if query == row { return true }
        let families: [Set<AcceleratorVendor>] = [[.amd, .hygon], [.intel, .habana]]
        return families.contains { $0.contains(query) && $0.contains(row) }
    }

    /// Name score of one key against the query: exact 1000+len; key found inside the query on
    /// token boundaries 500+len (+50 when the key has a digit: model numbers beat brand words);
    /// query found inside the key on token boundaries 100+len.
    static func score(query: ModelKey, key: ModelKey) -> (score: Int, method: MatchMethod)? {
        let q = query.compact, k = key.compact
        guard !q.isEmpty, !k.isEmpty else { return nil }
        if q == k { return (1000 + k.count, .exactName) }
        if k.count >= 3, k.count < q.count,
            occurs(k, in: q, boundaries: query.boundaries)
        {
            return (500 + k.count + (key.hasDigit ? 50 : 0), .containedName)
        }
        if q.count >= 3, query.hasDigit, q.count < k.count,
            occurs(q, in: k, boundaries: key.boundaries)
        {
            return (100 + q.count, .partialName)
        }
        return nil
    }

    /// Whether `needle` occurs in `hay` starting and ending on token boundaries of `hay`.
    static func occurs(_ needle: [UInt8], in hay: [UInt8], boundaries: Set<Int>) -> Bool {
        guard needle.count <= hay.count else { return false }
        for start in boundaries.sorted() where start + needle.count <= hay.count {
            guard boundaries.contains(start + needle.count) else { continue }
            if hay[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }

    /// Distance between reported memory and the row's memory (whole package or one die),
    /// as |ln(ratio)|; 0.5 when the row has no memory figure.
    func memoryFit(_ spec: AcceleratorSpec, reportedGiB: Double) -> Double {
        guard let gb = spec.memoryGB else { return 0.5 }
        let dies = Double(spec.diesPerPackage)
        return [gb, gb / dies].map { abs(log(reportedGiB / $0)) }.min()!
    }

    /// 1/dies when the device reports about one die's memory of a multi-die package, else 1.
    func packageShare(_ spec: AcceleratorSpec, reportedGiB: Double?) -> Double {
        let dies = spec.diesPerPackage
        guard dies > 1, let reportedGiB, let gb = spec.memoryGB else { return 1 }
        return reportedGiB <= gb / Double(dies) * 1.15 ? 1 / Double(dies) : 1
    }
}

/// A model name as a job asks for it ("A100", "910B", "MI250X"), matched against the model a
/// device reports with the catalog's normalisation. The request must start at a token of the
/// device's name, and a request that ends in a digit must end where the device's number ends:
/// "A10" does not match "A100-SXM4-40GB", "A100" does, "910B" matches "Ascend910B2C" and
/// "Gaudi" matches "HL-225 Gaudi2".
public struct ModelPattern: Sendable, Hashable {
    public let original: String
    let compact: [UInt8]

    public init(_ request: String) {
        original = request
        compact = Array(ModelNormalizer.normalize(request).utf8)
    }

    /// True when the pattern says nothing (empty or only brand words).
    public var isEmpty: Bool { compact.isEmpty }

    public func matches(_ deviceModel: String) -> Bool {
        if compact.isEmpty { return true }
        let key = ModelNormalizer.key(deviceModel)
        return matches(key)
    }

    func matches(_ key: ModelKey) -> Bool {
        let hay = key.compact, n = compact.count
        guard hay.count >= n else { return false }
        let endsInDigit = Self.isDigit(compact[n - 1])
        for start in key.boundaries.sorted() where start + n <= hay.count {
            guard hay[start..<(start + n)].elementsEqual(compact) else { continue }
            let end = start + n
            // "A10" must not match "A100": a request ending in a digit ends where the device's
            // number ends (at a token boundary or before a letter).
            if endsInDigit, end < hay.count, !key.boundaries.contains(end), Self.isDigit(hay[end]) { continue }
            return true
        }
        return false
    }

    static func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }
}

import Foundation
import GridCore

/// The accelerator catalog: typed rows of `accelerators.csv` plus model matching.
/// Pure value; load once and share.
public struct AcceleratorCatalog: Sendable {
    /// Rows in file order.
    public let specs: [AcceleratorSpec]
    /// Match keys per row, precomputed (same order as `specs`).
    let keys: [[ModelKey]]

    public init(specs: [AcceleratorSpec]) {
        self.specs = specs
        self.keys = specs.map(ModelNormalizer.keys(for:))
    }

    /// Parses catalog CSV text (header row with the `CatalogColumn` names, any order; extra
    /// columns ignored). Errors name the physical line and the column.
    public init(csv: String) throws(CatalogError) {
        let records = try CSVReader.parse(csv)
        guard let header = records.first else {
            throw CatalogError(line: 1, message: "catalog is empty (expected a header row)")
        }
        let names = header.fields.map { $0.trimmingSpaces().lowercased() }
        var index: [CatalogColumn: Int] = [:]
        for column in CatalogColumn.allCases {
            guard let i = names.firstIndex(of: column.rawValue) else {
                throw CatalogError(line: header.line, message: "header lacks column \"\(column.rawValue)\"")
            }
            index[column] = i
        }

        var specs: [AcceleratorSpec] = []
        var seen: [String: Int] = [:]
        for record in records.dropFirst() {
            guard record.fields.count == names.count else {
                throw CatalogError(
                    line: record.line,
                    message: "expected \(names.count) fields, found \(record.fields.count)")
            }
            let row = RowReader(record: record, index: index)
            let vendor = try row.required(.vendor)
            let model = try row.required(.model)
            let key = model.lowercased()
            if let first = seen[key] {
                throw CatalogError(
                    line: record.line, column: row.number(.model), columnName: CatalogColumn.model.rawValue,
                    message: "model \"\(model)\" already defined on line \(first)")
            }
            seen[key] = record.line
            var pciIDs: [String] = []
            for raw in row.list(.pciDeviceIDs) {
                guard let id = PCIID.deviceID(raw) else {
                    throw row.error(.pciDeviceIDs, "\"\(raw)\" is not a hexadecimal PCI device id")
                }
                pciIDs.append(id)
            }
            var pciVendor: String?
            if let raw = row.text(.pciVendorID) {
                guard let id = PCIID.deviceID(raw) else {
                    throw row.error(.pciVendorID, "\"\(raw)\" is not a hexadecimal PCI vendor id")
                }
                pciVendor = id
            }
            let year = try row.int(.releaseYear)
            if let year, !(1990...2100).contains(year) {
                throw row.error(.releaseYear, "\(year) is not a plausible release year")
            }
            specs.append(AcceleratorSpec(
                vendor: vendor, model: model, aliases: row.list(.aliases),
                architecture: row.text(.architecture), formFactor: row.text(.formFactor),
                releaseYear: year, memoryGB: try row.number(.memoryGB),
                memoryType: row.text(.memoryType),
                memoryBandwidthGBs: try row.number(.memoryBandwidthGBs),
                fp32TFLOPS: try row.number(.fp32TFLOPS),
                fp16DenseTFLOPS: try row.number(.fp16DenseTFLOPS),
                bf16DenseTFLOPS: try row.number(.bf16DenseTFLOPS),
                int8DenseTOPS: try row.number(.int8DenseTOPS),
                tdpW: try row.number(.tdpW), interconnect: row.text(.interconnect),
                pciVendorID: pciVendor, pciDeviceIDs: pciIDs,
                embodiedKgCO2e: try row.number(.embodiedKgCO2e),
                source: row.text(.source) ?? ""))
        }
        self.init(specs: specs)
    }

    /// Loads the catalog shipped in this module's bundle.
    public static func loadBundled() throws -> AcceleratorCatalog {
        let bundle = Bundle.module
        guard let url = bundle.url(forResource: "accelerators", withExtension: "csv")
            ?? bundle.url(forResource: "accelerators", withExtension: "csv", subdirectory: "Resources")
        else {
            throw CatalogError(line: 0, message: "accelerators.csv is missing from the GridCatalog bundle")
        }
        let text = try String(contentsOf: url, encoding: .utf8)
        return try AcceleratorCatalog(csv: text)
    }

    /// The bundled catalog. Traps only if the shipped file is broken, which the test suite
    /// guards (`loadBundled()` is the throwing form).
    public static let bundled: AcceleratorCatalog = {
        do {
            return try loadBundled()
        } catch {
            fatalError("GridCatalog: bundled accelerators.csv is broken: \(error)")
        }
    }()

    /// The row with this exact catalog model name (case-insensitive).
    public func spec(model: String) -> AcceleratorSpec? {
        let m = model.lowercased()
        return specs.first { $0.model.lowercased() == m }
    }

    /// Embodied (manufacturing) carbon for a device, kgCO2e: the catalog's published figure,
    /// scaled to the device's share of a multi-die package. Nil when the model is unknown or
    /// the catalog has no figure.
    public func embodiedCarbonKgCO2e(for device: DeviceInventory) -> Double? {
        guard let m = match(device) else { return nil }
        return m.spec.embodiedCarbonKgCO2e(share: m.packageShare)
    }
}

/// Reads typed cells from one CSV record.
private struct RowReader {
    let record: CSVRecord
    let index: [CatalogColumn: Int]

    func number(_ c: CatalogColumn) -> Int { index[c]! + 1 }

    func error(_ c: CatalogColumn, _ message: String) -> CatalogError {
        CatalogError(line: record.line, column: number(c), columnName: c.rawValue, message: message)
    }

    func text(_ c: CatalogColumn) -> String? {
        let t = record.fields[index[c]!].trimmingSpacesAndNewlines()
        return t.isEmpty ? nil : t
    }

    func required(_ c: CatalogColumn) throws(CatalogError) -> String {
        guard let t = text(c) else { throw error(c, "must not be empty") }
        return t
    }

    func list(_ c: CatalogColumn) -> [String] {
        (text(c) ?? "").split(separator: "|").map { $0.trimmingSpaces() }
            .filter { !$0.isEmpty }
    }

    func number(_ c: CatalogColumn) throws(CatalogError) -> Double? {
        guard let t = text(c) else { return nil }
        guard let v = Double(t), v.isFinite else { throw error(c, "\"\(t)\" is not a number") }
        guard v > 0 else { throw error(c, "\(t) must be positive (leave the cell empty when unknown)") }
        return v
    }

    func int(_ c: CatalogColumn) throws(CatalogError) -> Int? {
        guard let t = text(c) else { return nil }
        guard let v = Int(t) else { throw error(c, "\"\(t)\" is not a whole number") }
        return v
    }
}

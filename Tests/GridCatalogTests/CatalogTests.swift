import GridCore
import Testing
@testable import GridCatalog

let catalogHeader =
    "vendor,model,aliases,architecture,form_factor,release_year,memory_gb,memory_type,memory_bandwidth_gbs,fp32_tflops,fp16_dense_tflops,bf16_dense_tflops,int8_dense_tops,tdp_w,interconnect,pci_vendor_id,pci_device_ids,embodied_kgco2e,source"

@Suite("Catalog loading")
struct CatalogLoadingTests {
    @Test func bundledCatalogLoads() throws {
        let catalog = try AcceleratorCatalog.loadBundled()
        #expect(catalog.specs.count >= 76)
        // The trapping accessor reads the same file.
        #expect(AcceleratorCatalog.bundled.specs.count == catalog.specs.count)
    }

    @Test func everyBundledRowIsSane() throws {
        let catalog = try AcceleratorCatalog.loadBundled()
        var models: Set<String> = []
        for spec in catalog.specs {
            #expect(!spec.vendor.isEmpty && !spec.model.isEmpty)
            #expect(models.insert(spec.model.lowercased()).inserted, "duplicate model \(spec.model)")
            if let year = spec.releaseYear { #expect((2010...2026).contains(year), "\(spec.model) year \(year)") }
            for v in [
                spec.memoryGB, spec.memoryBandwidthGBs, spec.fp32TFLOPS, spec.fp16DenseTFLOPS,
                spec.bf16DenseTFLOPS, spec.int8DenseTOPS, spec.tdpW, spec.embodiedKgCO2e,
            ] {
                if let v { #expect(v > 0 && v < 100_000, "\(spec.model): \(v)") }
            }
            if let m = spec.memoryGB { #expect(m >= 1 && m <= 512, "\(spec.model) memory \(m)") }
            if let t = spec.tdpW { #expect(t >= 5 && t <= 2000, "\(spec.model) tdp \(t)") }
            // Dense FP16 never exceeds dense INT8 by more than rounding on parts that have both.
            if let h = spec.fp16DenseTFLOPS, let i = spec.int8DenseTOPS {
                #expect(i >= h * 0.99, "\(spec.model): int8 \(i) < fp16 \(h)")
            }
            for id in spec.pciDeviceIDs { #expect(id.hasPrefix("0x") && id.count == 6, "\(spec.model) \(id)") }
            #expect(!spec.source.isEmpty, "\(spec.model) has no source")
            // Every row names a vendor the network knows, except Cambricon (no enum case yet).
            if spec.vendor != "Cambricon" { #expect(spec.acceleratorVendor != .unknown, "\(spec.vendor)") }
        }
    }

    @Test func currentDataCenterPartsArePresentWithCompute() throws {
        let catalog = try AcceleratorCatalog.loadBundled()
        for model in [
            "H100 SXM5 80GB", "H200 SXM 141GB", "H20", "A800 SXM4 80GB", "L40S", "Instinct MI300X",
            "Ascend 910B", "Gaudi2 HL-225", "Ascend 310B4", "Radeon Instinct MI50 32GB",
        ] {
            let spec = try #require(catalog.spec(model: model), "\(model) missing")
            #expect(ComputeUnitCalculator.peak(for: spec) != nil, "\(model) has no compute figure")
        }
    }

    @Test func addedRowsAreMarkedAsEstimates() throws {
        let catalog = try AcceleratorCatalog.loadBundled()
        for model in ["Ascend 310B4", "Radeon Instinct MI50 32GB"] {
            let spec = try #require(catalog.spec(model: model))
            #expect(spec.source.contains("http"))
            #expect(spec.source.contains("note: estimate"))
        }
    }

    @Test func parsesTypedFields() throws {
        let csv = catalogHeader + "\n"
            + "NVIDIA,X100 PCIe,X100|X-100,Arch,PCIe,2024,48,HBM3,2000.5,50,400,410,800,350,PCIe 5.0,0x10DE,0x1234|ABCD,99.5,\"https://example.com/x; note: estimate, by hand\"\n"
        let catalog = try AcceleratorCatalog(csv: csv)
        let s = try #require(catalog.specs.first)
        #expect(s.aliases == ["X100", "X-100"])
        #expect(s.releaseYear == 2024 && s.memoryGB == 48 && s.memoryBandwidthGBs == 2000.5)
        #expect(s.bf16DenseTFLOPS == 410 && s.int8DenseTOPS == 800 && s.embodiedKgCO2e == 99.5)
        #expect(s.pciVendorID == "0x10de" && s.pciDeviceIDs == ["0x1234", "0xabcd"])
        #expect(s.source == "https://example.com/x; note: estimate, by hand")
        #expect(s.hasEstimatedFigures)
        #expect(s.acceleratorVendor == .nvidia)
        #expect(s.embodiedCarbonKgCO2e(share: 0.5) == 49.75)
    }

    @Test(arguments: [
        ("NVIDIA,X,,,,20x4,,,,,,,,,,,,,s", 2, 6, "release_year"),
        ("NVIDIA,X,,,,,lots,,,,,,,,,,,,s", 2, 7, "memory_gb"),
        ("NVIDIA,X,,,,,,,,,-5,,,,,,,,s", 2, 11, "fp16_dense_tflops"),
        ("NVIDIA,X,,,,,,,,,,,,,,,zz,,s", 2, 17, "pci_device_ids"),
        (",X,,,,,,,,,,,,,,,,,s", 2, 1, "vendor"),
        ("NVIDIA,X,,,,1950,,,,,,,,,,,,,s", 2, 6, "release_year"),
    ])
    func badCellsNameLineAndColumn(row: String, line: Int, column: Int, name: String) {
        #expect {
            try AcceleratorCatalog(csv: catalogHeader + "\n" + row + "\n")
        } throws: { error in
            guard let e = error as? CatalogError else { return false }
            return e.line == line && e.column == column && e.columnName == name
                && e.description.contains("line \(line), column \(column) (\(name))")
        }
    }

    @Test func wrongFieldCountNamesTheLine() {
        let csv = catalogHeader + "\nNVIDIA,A,,,,,,,,,,,,,,,,,s\n\nNVIDIA,B,too,few\n"
        #expect {
            try AcceleratorCatalog(csv: csv)
        } throws: { error in
            guard let e = error as? CatalogError else { return false }
            return e.line == 4 && e.message.contains("expected 19 fields, found 4")
        }
    }

    @Test func duplicateModelAndMissingColumn() {
        let dup = catalogHeader + "\nNVIDIA,A,,,,,,,,,,,,,,,,,s\nNVIDIA,a,,,,,,,,,,,,,,,,,s\n"
        #expect(throws: CatalogError.self) { try AcceleratorCatalog(csv: dup) }
        let noSource = catalogHeader.replacingOccurrences(of: ",source", with: "") + "\n"
        #expect {
            try AcceleratorCatalog(csv: noSource)
        } throws: { error in
            (error as? CatalogError)?.message.contains("\"source\"") == true
        }
    }
}

@Suite("PCI ids")
struct PCIIDTests {
    @Test(arguments: [
        ("0x233010DE", "0x2330"), ("1DF610DE", "0x1df6"), ("0x738c", "0x738c"), ("10de:2330", "0x2330"),
        ("0x1da31020", "0x1020"), ("0x20a", "0x020a"), ("6210", "0x6210"),
    ])
    func deviceParts(raw: String, device: String) {
        #expect(PCIID.deviceID(raw) == device)
    }

    @Test func rejectsNonHex() {
        #expect(PCIID.deviceID("N/A") == nil)
        #expect(PCIID.deviceID("") == nil)
    }
}

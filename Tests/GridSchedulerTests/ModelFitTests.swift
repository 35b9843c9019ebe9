import GridCatalog
import GridCore
import PropertyBased
import Testing

@testable import GridScheduler

@Suite struct ModelFitTests {
    /// Llama-2-13B's published shape: 40 layers, hidden 5120, 40 heads, no GQA.
    static let llama13B = ModelRequirement(name: "llama-2-13b", parameters: 13e9, precisions: [.bf16, .int8],
                                           contextTokens: 4096, batchSize: 1, layers: 40, hiddenSize: 5120, attentionHeads: 40)

    @Test func inferenceMemoryIsWeightsKVCacheAndOverhead() {
        let bf16 = ModelFit.memory(Self.llama13B, at: .bf16)
        #expect(bf16.weights == 26e9)
        // K and V, 40 layers, 5120 wide, 4096 tokens, 2 bytes: 3.36 GB (0.8 MiB per token).
        #expect(bf16.kvCache == 2 * 40 * 5120 * 4096 * 2)
        #expect(bf16.activations == 0.2 * 26e9)
        #expect(bf16.optimizerState == 0)
        let int8 = ModelFit.memory(Self.llama13B, at: .int8)
        #expect(int8.weights == 13e9)
        #expect(int8.kvCache == bf16.kvCache, "the KV cache stays 16-bit when the weights are quantized")
        let int4 = ModelFit.memory(Self.llama13B, at: .int4)
        #expect(abs(int4.weights - 13e9 * 4.25 / 8) < 1)
        // 34.55 GB over one device, + 1 GiB runtime: fits a 40 GB part, not a 24 GB one.
        #expect(bf16.perDeviceMiB(devices: 1) == Int((34.555_443_2e9 / 1_048_576).rounded(.up)) + 1024)
        #expect(bf16.perDeviceMiB(devices: 2) < bf16.perDeviceMiB(devices: 1) / 2 + 1025)
    }

    @Test func groupedQueryAttentionShrinksTheKVCache() {
        var m = ModelRequirement(parameters: 70e9, layers: 80, hiddenSize: 8192, attentionHeads: 64)
        let full = ModelFit.memory(m, at: .bf16).kvCache
        m.kvHeads = 8
        #expect(ModelFit.memory(m, at: .bf16).kvCache == full / 8)
    }

    /// ZeRO (Rajbhandari et al. 2020, section 3.1): a 7.5B model trained with mixed precision
    /// and Adam holds 16 bytes per parameter, 120 GB, before activations.
    @Test func trainingStateIsSixteenBytesPerParameter() {
        let m = ModelRequirement(parameters: 7.5e9, precisions: [.bf16], workload: .training, contextTokens: 1, batchSize: 1)
        let e = ModelFit.memory(m, at: .bf16)
        #expect(e.weights + e.optimizerState == 120e9)
        #expect(e.kvCache == 0)
        var checkpointed = m
        checkpointed.contextTokens = 4096
        let full = ModelFit.memory(checkpointed, at: .bf16).activations
        checkpointed.activationCheckpointing = true
        #expect(ModelFit.memory(checkpointed, at: .bf16).activations < full / 10)
    }

    @Test(arguments: [(7e9, 32, 4096), (13e9, 40, 5120), (70e9, 80, 8192), (175e9, 96, 12288)])
    func estimatedShapeIsNearPublishedOnes(params: Double, layers: Int, hidden: Int) {
        let a = ModelFit.architecture(ModelRequirement(parameters: params))
        #expect(a.estimated)
        // 12·L·d² stays within 15 % of the parameter count, and each dimension near the real one.
        #expect(abs(12 * Double(a.layers) * Double(a.hiddenSize * a.hiddenSize) / params - 1) < 0.15)
        #expect(abs(Double(a.layers) / Double(layers) - 1) < 0.3, "\(a.layers) layers")
        #expect(abs(Double(a.hiddenSize) / Double(hidden) - 1) < 0.3, "hidden \(a.hiddenSize)")
    }

    @Test func computeNeedIsFlopsPerTokenTimesThroughput() {
        var m = Self.llama13B
        #expect(ModelFit.computeGCU(m) == nil)
        m.tokensPerSecond = 1000
        // 2 × 13e9 × 1000 = 26 TFLOPS at 40 % utilisation: 65 GCU.
        #expect(abs(ModelFit.computeGCU(m)! - 65) < 1e-9)
        m.workload = .training
        #expect(abs(ModelFit.computeGCU(m)! - 195) < 1e-9)
    }

    @Test func optionsAreMostPreciseFirstWithTheirMemory() {
        let spec = JobSpec(name: "serve", command: "serve", accelerators: AcceleratorRequest(count: 1, minMemoryMiB: 20_000),
                           model: ModelRequirement(parameters: 13e9, precisions: [.int4, .bf16, .int8]))
        let options = ModelFit.options(for: spec)
        #expect(options.map(\.precision) == [.bf16, .int8, .int4])
        #expect(options.map(\.perDeviceMiB) == options.map(\.perDeviceMiB).sorted(by: >))
        #expect(options.allSatisfy { $0.request.minMemoryMiB == max(20_000, $0.perDeviceMiB) }, "the job's own bound still holds")
        #expect(ModelFit.disallowedOptions(for: spec).map(\.precision) == [.fp32, .fp16])
        #expect(ModelFit.requests(for: JobSpec(name: "x", command: "x")) == [AcceleratorRequest()])
    }

    @Test func problemsNameTheKey() {
        var m = ModelRequirement(parameters: 5, precisions: [.int8], workload: .training, contextTokens: 0)
        m.kvHeads = 50
        m.attentionHeads = 40
        let p = m.problems()
        #expect(p.contains { $0.hasPrefix("model.parameters:") })
        #expect(p.contains { $0.hasPrefix("model.precisions:") && $0.contains("int8") })
        #expect(p.contains { $0.hasPrefix("model.context:") })
        #expect(p.contains { $0.hasPrefix("model.kv_heads:") })
        #expect(Self.llama13B.problems().isEmpty)
    }

    // MARK: placement across precisions

    func device(_ id: String, _ model: String, _ mem: Int, _ grade: DeviceGrade, gcu: Double, health: HealthState = .healthy) -> DeviceInventory {
        DeviceInventory(id: id, index: 0, vendor: .nvidia, model: model, memoryTotalMiB: mem, health: DeviceHealth(state: health),
                        grade: grade, computeUnits: gcu)
    }

    func index(_ nodes: [(String, DeviceInventory)]) -> PlacementIndex {
        var index = PlacementIndex()
        for (n, d) in nodes { index.upsert(node: NodeID(n), devices: [d], busy: [], schedulable: true) }
        return index
    }

    var fleet: [(String, DeviceInventory)] {
        [("a100", device("a100-0", "NVIDIA A100-SXM4-80GB", 81920, .b, gcu: 312)),
         ("a10g", device("a10g-0", "NVIDIA A10G", 23028, .c, gcu: 70)),
         ("t4", device("t4-0", "Tesla T4", 15360, .c, gcu: 65))]
    }

    @Test func aModelThatFitsALowerGradeAtInt8GoesThereAtInt8() {
        var index = index(fleet)
        let spec = JobSpec(name: "serve", command: "serve", model: Self.llama13B)
        let options = ModelFit.options(for: spec)
        let (option, choice) = index.place(among: options.map(\.request))
        #expect(choice == .placed(node: "a10g", deviceIDs: ["a10g-0"]))
        #expect(options[option].precision == .int8)
        // With the A10G taken, the next job runs at bf16 on the A100 (T4 is too small for either).
        let (second, next) = index.place(among: options.map(\.request))
        #expect(next == .placed(node: "a100", deviceIDs: ["a100-0"]))
        #expect(options[second].precision == .bf16)
        let (_, third) = index.place(among: options.map(\.request))
        guard case .busy = third else { Issue.record("expected busy, got \(third)"); return }
    }

    @Test func withoutQuantizationTheJobTakesTheFrontierPart() {
        var index = index(fleet)
        var m = Self.llama13B
        m.precisions = [.bf16]
        let options = ModelFit.options(for: JobSpec(name: "serve", command: "serve", model: m))
        #expect(index.place(among: options.map(\.request)).choice == .placed(node: "a100", deviceIDs: ["a100-0"]))
    }

    @Test func aClassSeveralPrecisionsFitGetsTheMostPreciseOne() {
        var index = index([("a100", device("a100-0", "NVIDIA A100-SXM4-80GB", 81920, .b, gcu: 312))])
        let options = ModelFit.options(for: JobSpec(name: "serve", command: "serve", model: Self.llama13B))
        let (option, choice) = index.place(among: options.map(\.request))
        #expect(choice == .placed(node: "a100", deviceIDs: ["a100-0"]))
        #expect(options[option].precision == .bf16)
    }

    @Test func computeNeedRulesOutWeakDevices() {
        var index = index(fleet)
        var m = Self.llama13B
        m.tokensPerSecond = 2000 // 130 GCU: neither the A10G (70) nor the T4 (65)
        let options = ModelFit.options(for: JobSpec(name: "serve", command: "serve", model: m))
        #expect(index.place(among: options.map(\.request)).choice == .placed(node: "a100", deviceIDs: ["a100-0"]))
        let per = AcceleratorRequest(count: 1, minGCU: 66)
        #expect(index.choose(per) == .placed(node: "a10g", deviceIDs: ["a10g-0"]))
        let causes = index.diagnose(per)
        #expect(causes.contains { $0.cause == "compute below 66 GCU per device" && $0.nodes == 1 }, "\(causes)")
    }

    /// Over random fleets and model jobs: choosing among precisions lands on the most
    /// preferred class any precision can use alone (least capable grade first), at the most
    /// precise option that class admits, with enough memory for that precision.
    @Test func choiceAmongPrecisionsIsTheBestOfEachAlone() async {
        await propertyCheck(count: 60, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SeededRandom(seed: UInt64(seed))
            let fleet = RandomFleet(nodes: Int.random(in: 1...40, using: &rng), rng: &rng)
            var index = PlacementIndex()
            for (id, devices) in fleet.nodes { index.upsert(node: id, devices: devices, busy: [], schedulable: true) }
            let memoryOf = Dictionary(fleet.nodes.flatMap { $0.1 }.map { ($0.id, $0.memoryTotalMiB ?? 0) }, uniquingKeysWith: { a, _ in a })
            let classOf = { (id: String) -> Int32 in
                index.nodes.compactMap { $0 }.flatMap(\.units).first { $0.deviceID == id }!.classID
            }
            for _ in 0..<40 {
                let params = [1e9, 3e9, 7e9, 13e9, 34e9, 70e9][Int.random(in: 0..<6, using: &rng)]
                let allowed = Precision.allCases.filter { _ in Bool.random(using: &rng) }
                let m = ModelRequirement(parameters: params, precisions: allowed.isEmpty ? [.bf16] : allowed,
                                         contextTokens: [512, 4096, 32768][Int.random(in: 0..<3, using: &rng)],
                                         batchSize: [1, 4, 16][Int.random(in: 0..<3, using: &rng)])
                let spec = JobSpec(name: "m", command: "m", accelerators: AcceleratorRequest(count: [1, 2, 4, 8][Int.random(in: 0..<4, using: &rng)]),
                                   model: m)
                let options = ModelFit.options(for: spec)
                let wants = options.map(\.request)
                let (option, choice) = index.choose(among: wants)
                // Each option alone; only single-class placements are comparable by class rank.
                var alone: [(rank: Int32, option: Int)] = []
                var anyAlone = false
                for (i, w) in wants.enumerated() {
                    if case .placed(_, let ids) = index.choose(w) {
                        anyAlone = true
                        let classes = Set(ids.map(classOf))
                        if classes.count == 1 { alone.append((index.classRank[Int(classes.first!)], i)) }
                    }
                }
                guard case .placed(let node, let ids) = choice else {
                    #expect(!anyAlone, "seed \(seed): \(choice) but an option alone placed")
                    continue
                }
                #expect(ids.count == spec.accelerators.count)
                #expect(ids.allSatisfy { (memoryOf[$0] ?? 0) >= options[option].perDeviceMiB }, "seed \(seed): too little memory for \(options[option].precision)")
                let chosen = Set(ids.map(classOf))
                if chosen.count == 1 {
                    let best = alone.min { $0.rank != $1.rank ? $0.rank < $1.rank : $0.option < $1.option }
                    #expect(index.classRank[Int(chosen.first!)] == best?.rank, "seed \(seed): best alone \(String(describing: best))")
                    #expect(option == best?.option, "seed \(seed): option \(option), best alone \(String(describing: best))")
                }
                if Bool.random(using: &rng) { index.allocate(node: node, deviceIDs: ids) }
            }
        }
    }
}

/// Issue 9, item 6: `interconnect: same_numa` and `nvlink`.
@Suite struct NUMAPlacementTests {
    func gpu(_ node: String, _ k: Int, numa: Int?, grade: DeviceGrade = .b) -> DeviceInventory {
        DeviceInventory(id: "\(node)-\(k)", index: k, vendor: .nvidia, model: "Tesla V100S-PCIE-32GB", memoryTotalMiB: 32768,
                        numaNode: numa, health: .healthy, grade: grade, computeUnits: 130)
    }

    @Test func devicesComeFromOneNUMANode() {
        var index = PlacementIndex()
        // split: 2 + 2 on NUMA 0 and 1; whole: 4 on NUMA 0.
        index.upsert(node: "split", devices: (0..<4).map { gpu("split", $0, numa: $0 / 2) }, busy: [], schedulable: true)
        let want = AcceleratorRequest(count: 2, interconnect: .sameNUMA)
        guard case .placed(let node, let ids) = index.place(want) else { Issue.record("not placed"); return }
        #expect(node == "split" && (ids == ["split-0", "split-1"] || ids == ["split-2", "split-3"]), "\(ids)")
        // 3 on one NUMA node: the split node never can.
        let three = AcceleratorRequest(count: 3, interconnect: .sameNUMA)
        guard case .impossible = index.choose(three) else { Issue.record("3 on one NUMA node placed on a 2+2 host"); return }
        #expect(index.diagnose(three).contains { $0.cause == "not 3 matching devices on one NUMA node" })
        // Without the constraint 3 fit across both NUMA nodes... once 2 are free again.
        index.upsert(node: "whole", devices: (0..<4).map { gpu("whole", $0, numa: 0) }, busy: [], schedulable: true)
        #expect(index.choose(three) == .placed(node: "whole", deviceIDs: ["whole-0", "whole-1", "whole-2"]))
        index.allocate(node: "whole", deviceIDs: ["whole-0", "whole-1"])
        guard case .busy = index.choose(three) else { Issue.record("3 on one NUMA node exist, busy"); return }
    }

    @Test func unknownNUMANodesCountAsOne() {
        var index = PlacementIndex()
        index.upsert(node: "flat", devices: (0..<4).map { gpu("flat", $0, numa: nil) }, busy: [], schedulable: true)
        #expect(index.choose(AcceleratorRequest(count: 4, interconnect: .sameNUMA)) == .placed(node: "flat", deviceIDs: ["flat-0", "flat-1", "flat-2", "flat-3"]))
    }

    @Test func theLeastCapableGroupIsPreferred() {
        var index = PlacementIndex()
        let devices = (0..<2).map { gpu("mixed", $0, numa: 0, grade: .a) } + (2..<4).map { gpu("mixed", $0, numa: 1, grade: .c) }
        index.upsert(node: "mixed", devices: devices, busy: [], schedulable: true)
        #expect(index.choose(AcceleratorRequest(count: 2, interconnect: .sameNUMA)) == .placed(node: "mixed", deviceIDs: ["mixed-2", "mixed-3"]))
    }

    /// `interconnect: nvlink` (issue 9, item 6): every chosen device lists every other as an
    /// NVLink peer (nvidia-smi topo -m); a hybrid cube-mesh host has two groups of four.
    func meshed(_ node: String, groups: [[Int]], grade: DeviceGrade = .b) -> [DeviceInventory] {
        groups.flatMap { g in g.map { k in
            var d = gpu(node, k, numa: nil, grade: grade)
            d.nvlinkPeers = g.filter { $0 != k }
            return d
        } }.sorted { $0.index < $1.index }
    }

    @Test func nvlinkTakesDevicesThatAreAllPeersOfEachOther() {
        var index = PlacementIndex()
        index.upsert(node: "mesh", devices: meshed("mesh", groups: [[0, 2, 4, 6], [1, 3, 5, 7]]), busy: [], schedulable: true)
        let four = AcceleratorRequest(count: 4, interconnect: .nvlink)
        #expect(index.choose(four) == .placed(node: "mesh", deviceIDs: ["mesh-0", "mesh-2", "mesh-4", "mesh-6"]))
        // Any 4 would have been mesh-0…3: two of them are not peers.
        #expect(index.choose(AcceleratorRequest(count: 4)) == .placed(node: "mesh", deviceIDs: ["mesh-0", "mesh-1", "mesh-2", "mesh-3"]))
        // 5 peers of each other do not exist here, ever.
        let five = AcceleratorRequest(count: 5, interconnect: .nvlink)
        guard case .impossible(let why) = index.choose(five) else { Issue.record("5 NVLink peers on a 4+4 mesh"); return }
        #expect(why.contains("NVLink peers of each other"))
        #expect(index.diagnose(five).contains { $0.cause == "no 5 devices that are NVLink peers of each other" })
        // One group taken and one of the other busy: the rest waits.
        index.allocate(node: "mesh", deviceIDs: ["mesh-0", "mesh-2", "mesh-4", "mesh-6", "mesh-7"])
        guard case .busy = index.choose(four) else { Issue.record("4 NVLink peers exist, busy"); return }
        #expect(index.choose(AcceleratorRequest(count: 3, interconnect: .nvlink)) == .placed(node: "mesh", deviceIDs: ["mesh-1", "mesh-3", "mesh-5"]))
    }

    @Test func devicesWithoutKnownLinksNeverQualifyButOneDeviceNeedsNone() {
        var index = PlacementIndex()
        index.upsert(node: "pcie", devices: (0..<4).map { gpu("pcie", $0, numa: 0) }, busy: [], schedulable: true)
        guard case .impossible = index.choose(AcceleratorRequest(count: 2, interconnect: .nvlink)) else {
            Issue.record("placed without NVLink"); return
        }
        #expect(index.choose(AcceleratorRequest(count: 1, interconnect: .nvlink)) == .placed(node: "pcie", deviceIDs: ["pcie-0"]))
        let spec = JobSpec(name: "x", command: "x", accelerators: AcceleratorRequest(count: 2, interconnect: .nvlink))
        #expect(spec.problems().isEmpty, "accepted at submit now that agents report peers")
    }

    @Test func theLeastCapableNVLinkGroupIsPreferred() {
        var index = PlacementIndex()
        var devices = meshed("two", groups: [[0, 1], [2, 3]])
        for i in 0..<2 { devices[i].grade = .a }
        index.upsert(node: "two", devices: devices, busy: [], schedulable: true)
        #expect(index.choose(AcceleratorRequest(count: 2, interconnect: .nvlink)) == .placed(node: "two", deviceIDs: ["two-2", "two-3"]))
    }
}

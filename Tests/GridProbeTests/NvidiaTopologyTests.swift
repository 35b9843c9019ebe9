import Foundation
import GridCore
import Testing
@testable import GridProbe

/// `nvidia-smi topo -m` (issue 9, item 6): NVLink peers and NUMA affinity by GPU index, merged
/// into the devices nvidia-smi lists.
@Suite struct NvidiaTopologyTests {
    @Test func dgxA100IsEightGPUsAllNVLinkPeersOnFourNUMANodes() throws {
        let r = try NvidiaTopologyParser.parse(try Fixture.text("nvidia-smi-topo-m_dgx-a100-8gpu.txt"))
        #expect(r.links.keys.sorted() == Array(0..<8), "the NICs' rows are not GPUs")
        for g in 0..<8 { #expect(r.links[g]?.nvlinkPeers == (0..<8).filter { $0 != g }) }
        #expect((0..<8).map { r.links[$0]?.numaNode } == [3, 3, 1, 1, 7, 7, 5, 5])
    }

    @Test func aPCIeOnlyMatrixHasNoPeersButItsNUMANodes() throws {
        let r = try NvidiaTopologyParser.parse(try Fixture.text("nvidia-smi-topo-mp_dgx1-8gpu.txt"))
        #expect(r.links.count == 8 && r.links.values.allSatisfy { $0.nvlinkPeers.isEmpty })
        #expect((0..<8).map { r.links[$0]?.numaNode } == [0, 0, 0, 0, 1, 1, 1, 1])
    }

    @Test func theNewerGPUNUMAIDColumnIsNotTakenForTheNUMAAffinity() throws {
        let r = try NvidiaTopologyParser.parse(try Fixture.text("nvidia-smi-topo-m_a100-sxm4-80gb-4gpu-numa-id.txt"))
        #expect((0..<4).map { r.links[$0]?.numaNode } == [0, 1, 1, 1])
        #expect(r.links[2]?.nvlinkPeers == [0, 1, 3])
    }

    /// One H200 in a VM (captured here): no peers, NUMA node 0 and the GPU NUMA ID column's N/A.
    /// Its header is underlined with terminal escapes, which the entry point drops for every tool.
    @Test func aSingleGPUMatrixHasItsNUMANodeAndNoPeers() throws {
        let r = try VendorOutputParser.parse(try Fixture.text("nvidia-smi-topo-m_h200-1gpu_580.159.04.txt"), as: .nvidiaSMITopo)
        #expect(r.links.keys.sorted() == [0])
        #expect(r.links[0]?.nvlinkPeers == [])
        #expect(r.links[0]?.numaNode == 0)
    }

    @Test func withoutAHeaderItIsMalformedNotEmpty() {
        #expect(throws: VendorParseError.self) { try NvidiaTopologyParser.parse("GPU0\t X \tNV12\n") }
    }

    /// The probe pipeline on captures: nvidia-smi's devices get the matrix's links and NUMA
    /// nodes by index; a topology tool's failure never touches a device's health.
    @Test func linksMergeIntoTheDevicesByIndex() throws {
        let prober = Prober(settings: ProbeSettings())
        let report = prober.simulate(captures: [
            ("nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml", try Fixture.text("nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml")),
            ("topo.txt", try Fixture.text("nvidia-smi-topo-m_dgx-a100-8gpu.txt")),
        ])
        #expect(report.devices.count == 8)
        for d in report.devices {
            #expect(d.nvlinkPeers == (0..<8).filter { $0 != d.index }, "\(d.id)")
            #expect(d.interconnects.contains("NVLink"))
        }
        #expect(report.sources.map(\.outcome) == [.ok, .ok])
    }
}

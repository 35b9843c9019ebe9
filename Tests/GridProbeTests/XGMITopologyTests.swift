import Foundation
import GridCore
import GridScheduler
import Testing
@testable import GridProbe

/// Issue 9, item 6 for AMD: rocm-smi's "(Topology) Link type between DRM devices i and j"
/// gives each card its xGMI peers; `interconnect: xgmi` takes AMD devices that are all peers.
@Suite struct XGMITopologyTests {
    @Test func pcieOnlyCapturesHaveNoPeers() throws {
        for name in ["rocm-smi-json_mi100_rocm602.json", "rocm-smi-json_mi100_rocm571.json"] {
            let r = try RocmSMIJSONParser.parse(try Fixture.text(name))
            #expect(r.devices.allSatisfy { $0.nvlinkPeers == nil && !$0.interconnects.contains("xGMI") }, "\(name)")
        }
    }

    @Test func xgmiPairsBecomePeersByCardNumber() throws {
        let r = try RocmSMIJSONParser.parse(try Fixture.text("rocm-smi-json_mi100-xgmi-derived_rocm602.json"))
        #expect(r.devices.map(\.index) == [0, 1, 2, 3])
        #expect(r.devices.map(\.nvlinkPeers) == [[1, 2], [0, 2], [0, 1], nil])
        #expect(r.devices.map { $0.interconnects.contains("xGMI") } == [true, true, true, false])
    }

    /// The parsed devices, graded by the probe, in the placement index: three xGMI peers fit,
    /// four do not ever; an `nvlink` request never takes AMD devices; and `xgmi` never NVIDIA ones.
    @Test func xgmiJobsGetAHiveAndNothingElse() throws {
        let amd = Prober(settings: ProbeSettings()).simulate(captures: [
            ("rocm.json", try Fixture.text("rocm-smi-json_mi100-xgmi-derived_rocm602.json")),
        ]).devices
        #expect(amd.count == 4)
        var index = PlacementIndex()
        index.upsert(node: "hive", devices: amd, busy: [], schedulable: true)
        guard case .placed(_, let ids) = index.choose(AcceleratorRequest(count: 3, interconnect: .xgmi)) else {
            Issue.record("three xGMI peers exist"); return
        }
        let peers = Set(amd.filter { $0.nvlinkPeers != nil }.map(\.id))
        #expect(Set(ids) == peers)
        guard case .impossible(let why) = index.choose(AcceleratorRequest(count: 4, interconnect: .xgmi)) else {
            Issue.record("four xGMI peers do not exist"); return
        }
        #expect(why.contains("xGMI peers of each other"), "\(why)")
        guard case .impossible = index.choose(AcceleratorRequest(count: 2, interconnect: .nvlink)) else {
            Issue.record("nvlink took AMD devices"); return
        }
        // Any two devices, without the constraint, are the first two.
        if case .placed = index.choose(AcceleratorRequest(count: 4)) {} else { Issue.record("four devices exist") }
        let spec = JobSpec(name: "x", command: "x", accelerators: AcceleratorRequest(count: 2, interconnect: .xgmi))
        #expect(spec.problems().isEmpty)
        #expect(InterconnectRequirement(rawValue: "xgmi") == .xgmi)
    }
}

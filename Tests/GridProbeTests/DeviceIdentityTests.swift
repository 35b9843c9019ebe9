import Foundation
import GridCore
import Testing
@testable import GridProbe

/// Device ids are the device segment of resource names (PROTOCOL.md, "Resource names"): every
/// captured output must give identifiers, unique on the node, that name each unit exactly once.
@Suite("Device identity")
struct DeviceIdentityTests {
    @Test(arguments: try Fixture.allNames())
    func everyCaptureGivesNameableUniqueDevices(_ fixture: String) throws {
        let report = Prober(settings: ProbeSettings()).simulate(captures: [(fixture, try Fixture.text(fixture))])
        var names = Set<ResourceName>()
        for d in report.devices {
            #expect(IdentifierRules.problem(with: d.id) == nil, "\(fixture): device id '\(d.id)'")
            #expect(names.insert(ResourceName(region: "r", node: "n", device: d.id)).inserted, "\(fixture): '\(d.id)' twice")
            for p in d.partitions {
                let name = ResourceName(region: "r", node: "n", device: d.id, partition: p.id)
                #expect(name.level == .partition)
                #expect(try ResourceName(parsing: name.description) == name, "\(fixture): partition '\(p.id)' → \(name)")
                #expect(names.insert(name).inserted, "\(fixture): partition '\(p.id)' twice")
            }
        }
    }

    /// Where the tool gave a UUID it is kept; where it gave only a bus id or an index, a board
    /// serial no other device shares is preferred, as it follows the card; an id that is not an
    /// identifier is replaced.
    @Test func uuidThenSerialThenBusThenIndex() {
        func d(_ id: String, bus: String?, serial: String?, index: Int) -> DeviceInventory {
            var x = DeviceInventory(id: id, index: index, vendor: .huawei, model: "Ascend 910B", pciBusID: bus)
            x.serial = serial
            return x
        }
        var partitioned = d("0000:02:00.0", bus: "0000:02:00.0", serial: "SN-B", index: 3)
        partitioned.partitions = [DevicePartition(id: "0000:02:00.0/vnpu0", profile: "vir02")]
        let out = InventoryMerger.stableIdentities([
            d("GPU-1111", bus: "0000:01:00.0", serial: "SN-A", index: 0),   // a UUID stays
            d("0000:03:00.0", bus: "0000:03:00.0", serial: "SN-C", index: 1), // bus id → serial
            d("npu-smi:2", bus: nil, serial: nil, index: 2),                // nothing better: stays
            partitioned,                                                    // serial; slices follow
            d("0000:05:00.0", bus: "0000:05:00.0", serial: "DUP", index: 4), // a shared serial is no identity
            d("0000:06:00.0", bus: "0000:06:00.0", serial: "DUP", index: 5),
            d("bad id", bus: "0000:07:00.0", serial: nil, index: 6),         // not an identifier: bus id
            d("0000:08:00.0", bus: "0000:08:00.0", serial: "has space", index: 7), // serial unusable: bus id stays
        ])
        #expect(out.map(\.id) == ["GPU-1111", "sn:SN-C", "npu-smi:2", "sn:SN-B", "0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0"])
        #expect(out[3].partitions.map(\.id) == ["sn:SN-B/vnpu0"])
    }
}

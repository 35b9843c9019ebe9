import Foundation
import GridController
import GridCore
import GridProtocol
import Testing

/// `Query.resource` (PROTOCOL.md, "Resource names") at a region and at the national scheduler.
@Suite struct ResourceQueryTests {
    static let gpu = "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a"

    static func devices() -> [DeviceInventory] {
        var mig = DeviceInventory(id: gpu, index: 0, vendor: .nvidia, model: "NVIDIA A100-SXM4-40GB", memoryTotalMiB: 40960,
                                  health: .healthy)
        mig.partitions = [DevicePartition(id: gpu + "/gi1ci0", profile: "3g.20gb", memoryTotalMiB: 20096),
                          DevicePartition(id: "MIG-9f2d4e1a-0c1b-5e6f-8a7b-1c2d3e4f5a6b", profile: "3g.20gb", memoryTotalMiB: 20096)]
        let whole = DeviceInventory(id: "0000:81:00.0", index: 1, vendor: .nvidia, model: "NVIDIA A10", memoryTotalMiB: 23028,
                                    health: .healthy)
        return [mig, whole]
    }

    static func ask(_ h: inout RegionHarness, _ resource: String) -> Body? {
        var q = Wire.Query()
        q.kind = .nodes
        q.resource = resource
        return h.send(.query(q)).bodies.first
    }

    @Test func aRegionAnswersANameWithTheNodeAndTheUnitsUnderIt() {
        var h = RegionHarness()
        _ = h.register("n1", devices: Self.devices())
        guard case .queryReply(let node) = Self.ask(&h, "cg://r1/n1") else { Issue.record("no reply"); return }
        #expect(node.nodes.first?.resource == "cg://r1/n1")
        #expect(node.nodes.first?.units.map(\.resource) == [
            "cg://r1/n1/\(Self.gpu)/gi1ci0", "cg://r1/n1/\(Self.gpu)/MIG-9f2d4e1a-0c1b-5e6f-8a7b-1c2d3e4f5a6b", "cg://r1/n1/0000:81:00.0",
        ])
        // A partitioned device's name: its slices.
        guard case .queryReply(let device) = Self.ask(&h, "cg://r1/n1/\(Self.gpu)") else { Issue.record("no reply"); return }
        #expect(device.nodes.first?.units.map(\.deviceID) == [Self.gpu + "/gi1ci0", "MIG-9f2d4e1a-0c1b-5e6f-8a7b-1c2d3e4f5a6b"])
        // One slice, named by its own id under its device.
        guard case .queryReply(let slice) = Self.ask(&h, "cg://r1/n1/\(Self.gpu)/MIG-9f2d4e1a-0c1b-5e6f-8a7b-1c2d3e4f5a6b") else {
            Issue.record("no reply"); return
        }
        #expect(slice.nodes.first?.units.map(\.deviceID) == ["MIG-9f2d4e1a-0c1b-5e6f-8a7b-1c2d3e4f5a6b"])
        guard case .queryReply(let whole) = Self.ask(&h, "cg://r1/n1/0000:81:00.0") else { Issue.record("no reply"); return }
        #expect(whole.nodes.first?.units.map(\.model) == ["NVIDIA A10"])
    }

    @Test(arguments: [
        ("cg://r1/n2", "cg://r1/n2 is not known in region r1"),
        ("cg://r1/n1/GPU-nope", "cg://r1/n1/GPU-nope is not a unit of node n1"),
        ("cg://west/n1", "cg://west/n1 is not in region r1"),
    ])
    func namesARegionDoesNotHoldAreNotFound(_ resource: String, _ message: String) {
        var h = RegionHarness()
        _ = h.register("n1", devices: Self.devices())
        guard case .errorReply(let e) = Self.ask(&h, resource) else { Issue.record("expected an error"); return }
        #expect(e.code == "not_found" && e.message.contains(message), "\(e.message)")
    }

    @Test func theNationalSchedulerRelaysANameToItsRegion() {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        _ = h.summary("west", free: 4, total: 4)
        var q = Wire.Query()
        q.kind = .nodes
        q.resource = "cg://west/n7/GPU-1"
        guard case .send(.query(let asked), let peer, _, _) = h.send(.query(q), from: h.client).first else { Issue.record("not relayed"); return }
        #expect(peer == NationalHarness.regionOrigin("west").peer && asked.resource == "cg://west/n7/GPU-1" && asked.regionID == "west")
        // A name and a region_id that disagree.
        q.regionID = "east"
        guard case .errorReply(let e) = h.send(.query(q), from: h.client).bodies.first else { Issue.record("expected an error"); return }
        #expect(e.code == "bad_request" && e.message.contains("is in region west"))
        // REGIONS with a region's name answers that region alone.
        var r = Wire.Query()
        r.kind = .regions
        r.resource = "cg://east"
        guard case .queryReply(let one) = h.send(.query(r), from: h.client).bodies.first else { Issue.record("no reply"); return }
        #expect(one.regions.map(\.regionID) == ["east"])
        r.resource = "cg://north"
        guard case .errorReply(let missing) = h.send(.query(r), from: h.client).bodies.first else { Issue.record("expected an error"); return }
        #expect(missing.code == "not_found")
    }
}

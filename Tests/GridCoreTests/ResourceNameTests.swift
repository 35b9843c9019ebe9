import Foundation
import GridCore
import Testing

@Suite struct ResourceNameTests {
    @Test(arguments: [
        ("cg://", ResourceName.Level.network),
        ("cg://east", .region),
        ("cg://east/", .region),
        ("cg://east/gpu-017", .node),
        ("cg://east/gpu-017/GPU-27b94a00-ed54-5c24-b1fd-1054085de32a", .device),
        ("cg://east/gpu-017/0000:17:00.0", .device),
        ("cg://east/gpu-017/sn:1562920006088", .device),
        ("cg://east/gpu-017/GPU-27b94a00-ed54-5c24-b1fd-1054085de32a/gi1ci0", .partition),
    ])
    func parsesEveryLevel(_ text: String, _ level: ResourceName.Level) throws {
        let name = try ResourceName(parsing: text)
        #expect(name.level == level)
        // Printing gives the canonical form (no trailing slash) and parses back to the same name.
        let printed = name.description
        #expect(!printed.dropFirst(ResourceName.scheme.count).hasSuffix("/"))
        #expect(try ResourceName(parsing: printed) == name)
    }

    @Test(arguments: [
        ("east/n1", "does not start with 'cg://'"),
        ("cg:/east", "does not start with 'cg://'"),
        ("cg://east//dev", "node '' is empty"),
        ("cg://east/a b", "node 'a b' contains ' '"),
        ("cg://east/n1/dev/part/extra", "has 5 segments; at most 4"),
        ("cg://ea;st", "region 'ea;st' contains ';'"),
        ("cg://east/n1/" + String(repeating: "x", count: 129), "device '" + String(repeating: "x", count: 129) + "' is longer than 128 bytes"),
        ("cg://" + String(repeating: "a/", count: 300), "is longer than 520 bytes"),
    ])
    func badNamesSayWhichSegmentAndWhy(_ text: String, _ problem: String) {
        #expect {
            _ = try ResourceName(parsing: text)
        } throws: { error in
            guard let e = error as? ResourceNameError else { return false }
            return e.description.contains(problem)
        }
    }

    @Test func aSliceNamesItsDeviceThenItself() {
        let device = "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a"
        let prefixed = ResourceName(region: "east", node: "n1", device: device, partition: device + "/gi1ci0")
        #expect(prefixed.description == "cg://east/n1/\(device)/gi1ci0")
        let own = ResourceName(region: "east", node: "n1", device: device, partition: "MIG-9f2d4e1a-0c1b-5e6f-8a7b-1c2d3e4f5a6b")
        #expect(own.description == "cg://east/n1/\(device)/MIG-9f2d4e1a-0c1b-5e6f-8a7b-1c2d3e4f5a6b")
        #expect(own.parent == ResourceName(region: "east", node: "n1", device: device))
        #expect(own.parent.parent == ResourceName(region: "east", node: "n1"))
        #expect(own.parent.parent.parent == ResourceName(region: "east"))
        #expect(own.parent.parent.parent.parent == .network)
    }

    @Test func containmentFollowsTheHierarchy() throws {
        let node = try ResourceName(parsing: "cg://east/n1")
        #expect(node.contains(try ResourceName(parsing: "cg://east/n1/d0/p1")))
        #expect(node.contains(node))
        #expect(!node.contains(try ResourceName(parsing: "cg://east/n10/d0")))
        #expect(!node.contains(try ResourceName(parsing: "cg://west/n1")))
        #expect(ResourceName.network.contains(node))
        #expect(!node.contains(.network))
    }

    /// Any identifiers as segments, at any depth: printing and parsing give back the same name.
    @Test func randomNamesRoundTrip() throws {
        var rng = SplitMix64(seed: 0x5eed_c0de)
        let alphabet = Array("abcXYZ019-_.:")
        func segment() -> String {
            String((0..<(1 + rng.int(128))).map { _ in alphabet[rng.int(alphabet.count)] })
        }
        for _ in 0..<2_000 {
            let depth = rng.int(5)
            let parts = (0..<depth).map { _ in segment() }
            let text = ResourceName.scheme + parts.joined(separator: "/")
            let name = try ResourceName(parsing: text)
            #expect(name.description == text)
            #expect(name.level == ResourceName.Level.allCases[depth])
            let decoded = try JSONDecoder().decode(ResourceName.self, from: JSONEncoder().encode(name))
            #expect(decoded == name)
        }
    }

    @Test func nodeReferencesTakeIdsOrNames() throws {
        let bare = try ResourceName.nodeReference("n1")
        #expect(bare.region == nil && bare.node == "n1" && bare.unit == nil)
        let named = try ResourceName.nodeReference("cg://east/n1/GPU-1/gi1ci0")
        #expect(named.region == "east" && named.node == "n1" && named.unit == "GPU-1/gi1ci0")
        #expect(throws: ResourceNameError.self) { _ = try ResourceName.nodeReference("cg://east") }
        #expect(throws: ResourceNameError.self) { _ = try ResourceName.nodeReference("two words") }
    }
}

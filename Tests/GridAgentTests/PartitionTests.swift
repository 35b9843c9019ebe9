import Foundation
import GridAgent
import GridCore
import GridProtocol
import Testing

/// MIG slices (issue 9, partitions) at the agent: a slice is assigned by its id and named by its
/// MIG id in CUDA_VISIBLE_DEVICES; the partitioned device itself is never assigned whole.
@Suite struct PartitionTests {
    static let gpu = DeviceInventory(
        id: "GPU-5135", index: 0, vendor: .nvidia, model: "NVIDIA A100-SXM4-80GB", memoryTotalMiB: 81920,
        partitions: [DevicePartition(id: "GPU-5135/gi3ci0", memoryTotalMiB: 19968), DevicePartition(id: "MIG-abcd", profile: "1g.10gb", memoryTotalMiB: 9984)])

    static func harness() -> AgentHarness {
        var h = AgentHarness()
        h.instance = AgentInstance(settings: AgentInstance.Settings(node: "n1", hostname: "h", jobsDirectory: "/data/jobs", baseEnvironment: [:]),
                                   devices: [Self.gpu])
        h.registered()
        return h
    }

    @Test func aSliceRunsPinnedToItsMIGID() throws {
        var h = Self.harness()
        let out = h.receive(.assignment(AgentHarness.assignment(devices: ["GPU-5135/gi3ci0"])))
        #expect(out.acks.first?.accepted == true)
        let env = try #require(out.starts.first?.1)
        #expect(env["CUDA_VISIBLE_DEVICES"] == "MIG-GPU-5135/3/0")
        let other = h.receive(.assignment(AgentHarness.assignment("j-2.1", devices: ["MIG-abcd"])))
        #expect(other.starts.first?.1["CUDA_VISIBLE_DEVICES"] == "MIG-abcd")
    }

    @Test func thePartitionedDeviceIsNeverAssignedWhole() {
        var h = Self.harness()
        let out = h.receive(.assignment(AgentHarness.assignment(devices: ["GPU-5135"])))
        #expect(out.acks.first?.accepted == false && out.acks.first?.reason.contains("partitioned") == true)
        #expect(out.starts.isEmpty)
    }
}

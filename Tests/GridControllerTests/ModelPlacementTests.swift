import Foundation
import GridController
import GridCore
import GridProtocol
import Testing

/// Issue 9, item 7: a model job is placed at the precision and grade that fit with the least
/// frontier capacity; the precision travels in the assignment and upward; a job that fits only
/// at a precision it does not allow waits and says so.
@Suite struct ModelPlacementTests {
    static func gpu(_ id: String, _ model: String, memGiB: Int, grade: DeviceGrade, gcu: Double) -> DeviceInventory {
        DeviceInventory(id: id, index: 0, vendor: .nvidia, model: model, memoryTotalMiB: memGiB * 1024, health: .healthy,
                        grade: grade, computeUnits: gcu)
    }

    static let llama13B = ModelRequirement(name: "llama-2-13b", parameters: 13e9, precisions: [.bf16, .int8],
                                           layers: 40, hiddenSize: 5120, attentionHeads: 40)

    @Test func aModelJobRunsAtInt8OnTheLowerGradeAndSaysSo() throws {
        var h = RegionHarness()
        _ = h.register("big", devices: [Self.gpu("a100", "NVIDIA A100-SXM4-80GB", memGiB: 80, grade: .b, gcu: 312)])
        _ = h.register("small", devices: [Self.gpu("a10g", "NVIDIA A10G", memGiB: 24, grade: .c, gcu: 70)])
        _ = h.forward("serve", JobSpec(name: "serve", command: "serve", retry: RetryPolicy(backoffSeconds: 0), model: Self.llama13B))
        let out = h.tick()
        let a = try #require(out.assignments.first)
        #expect(a.nodeID == "small" && a.deviceIds == ["a10g"])
        #expect(a.precision == "int8")
        let job = try #require(h.instance.job("serve"))
        #expect(job.precision == .int8 && job.message.hasPrefix("assigned to small at int8: 1 × NVIDIA A10G (grade C, healthy, 24576 MiB, 70 GCU); least capable grade"), "\(job.message)")
        _ = h.ack(a)
        let up = h.tick(advanceMs: 10).statusUpdates.first { $0.jobID == "serve" }
        #expect(up?.precision == "int8")
        // Lost with its node: queued again with no precision until placed again, then bf16 on the A100.
        _ = h.send(.nodeCommand({ var c = Wire.NodeCommand(); c.nodeID = "small"; c.action = .cordon; c.reason = "test"; return c }()),
                   from: h.national)
        _ = h.status(a, .cancelled, reason: .agentStopped)
        let again = h.tick().assignments.first { $0.jobID == "serve" }
        #expect(again?.nodeID == "big" && again?.precision == "bf16", "\(String(describing: again))")
    }

    @Test func aJobThatFitsOnlyAtADisallowedPrecisionWaitsWithThatReason() throws {
        var h = RegionHarness()
        _ = h.register("small", devices: [Self.gpu("a10g", "NVIDIA A10G", memGiB: 24, grade: .c, gcu: 70)])
        var m = Self.llama13B
        m.precisions = [.bf16, .fp16]
        _ = h.forward("serve", JobSpec(name: "serve", command: "serve", model: m))
        #expect(h.tick().assignments.isEmpty)
        let job = try #require(h.instance.job("serve"))
        #expect(job.state == .queued && job.precision == nil)
        #expect(job.message.contains("fits only at int8"), "\(job.message)")
        #expect(job.message.contains("which the job does not allow (allowed: bf16, fp16)"), "\(job.message)")
        #expect(job.message.contains("memory below"), "the per-node count names the memory: \(job.message)")
    }

    @Test func aJobWithoutAModelCarriesNoPrecision() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("plain", JobSpec(name: "plain", command: "true"))
        let a = try #require(h.tick().assignments.first)
        #expect(a.precision.isEmpty && h.instance.job("plain")?.precision == nil)
    }

    /// Issue 13, item 3: a service's SLO (p99 less the network's share, tokens per request)
    /// becomes each replica's throughput need, so the region picks the lowest grade with the
    /// compute to meet it, and says so.
    @Test func aServiceSLOPicksTheLowestGradeFastEnough() throws {
        func replica(p99: Double, network: Double? = nil) -> JobSpec {
            ServiceSpec(name: "chat", template: JobSpec(name: "chat", command: "serve", retry: RetryPolicy(backoffSeconds: 0), model: Self.llama13B),
                        model: ServedModel(name: "llama", version: "v1", artifact: "/srv/llama"),
                        slo: ServiceSLO(p99Ms: p99, tokensPerRequest: 256, networkMs: network))
                .replicaSpec(version: "v1", drainMs: 0)
        }
        // 256 tokens in 2 s: 128 tokens/s, 2 × 13e9 × 128 / 0.4 = 8.3 GCU: the A10G is enough.
        #expect(abs((replica(p99: 2000).model?.tokensPerSecond ?? 0) - 128) < 1e-9)
        // 300 ms of which 100 ms is network: 200 ms for 256 tokens, 1,280 tokens/s, 83 GCU: the A10G's 70 is not.
        let fast = replica(p99: 300, network: 100)
        #expect(abs((fast.model?.tokensPerSecond ?? 0) - 1280) < 1e-9)
        for (name, spec, node) in [("slow", replica(p99: 2000), "small"), ("fast", fast, "big")] {
            var h = RegionHarness()
            _ = h.register("big", devices: [Self.gpu("a100", "NVIDIA A100-SXM4-80GB", memGiB: 80, grade: .b, gcu: 312)])
            _ = h.register("small", devices: [Self.gpu("a10g", "NVIDIA A10G", memGiB: 24, grade: .c, gcu: 70)])
            _ = h.forward(name, spec)
            let a = try #require(h.tick().assignments.first)
            #expect(a.nodeID == node, "\(name)")
            let message = h.instance.job(JobID(name))?.message ?? ""
            #expect(message.contains("needs ≥ \(name == "slow" ? 9 : 84) GCU in all for \(name == "slow" ? 128 : 1280) tokens/s"), "\(message)")
        }
    }
}

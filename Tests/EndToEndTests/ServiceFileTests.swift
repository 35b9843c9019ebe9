import Foundation
import GridCLI
import GridCore
import Testing

/// Service files (SERVICES.md): the shipped example reads as documented, and every kind of
/// mistake is reported at once with its line and column.
@Suite struct ServiceFileTests {
    @Test func theExampleServiceReadsAsDocumented() throws {
        let url = Cluster.repoRoot.appendingPathComponent("examples/services/tiny-mlp.yaml")
        let spec = try ServiceFile.parse(try String(contentsOf: url, encoding: .utf8), source: url.path)
        #expect(spec.name == "tiny-mlp" && spec.template.name == "tiny-mlp" && spec.template.command == "python3")
        #expect(spec.model == ServedModel(name: "tiny-mlp", version: "v1", artifact: "examples/model/tiny-mlp-{version}.json",
                                          format: "computegrid-mlp-json"))
        #expect(spec.model.artifact(for: "v2") == "examples/model/tiny-mlp-v2.json")
        #expect(spec.template.model == nil, "no size given: no model fit")
        #expect(spec.replicas == ReplicaRange(min: 2, max: 4))
        #expect(spec.health == ProbeSpec(path: "/healthz", intervalSeconds: 2, timeoutSeconds: 0.5, failureThreshold: 3, initialDelaySeconds: 2))
        #expect(spec.readiness == ProbeSpec(path: "/readyz", intervalSeconds: 0.5, timeoutSeconds: 0.5, failureThreshold: 1), "the timeout defaults to at most the interval")
        // No origin: the SLO bounds no network path (a job's latency bound needs an origin),
        // and the spec is one the national scheduler accepts.
        #expect(spec.slo.p99Ms == 50 && spec.template.routing.latencySLOMs == nil)
        #expect(spec.problems().isEmpty, "\(spec.problems())")
        #expect(spec.update == UpdateStrategy(maxSurge: 1, maxUnavailable: 0))
        #expect(spec.autoscale?.targetRequestsPerSecond == 200 && spec.autoscale?.scaleDownCooldownSeconds == 300)
        #expect(spec.template.accelerators.maxGrade == .c)
    }

    @Test func aBareReplicaCountAndDefaults() throws {
        let spec = try ServiceFile.parse("""
            name: echo
            command: /bin/cat
            accelerators: {count: 0}
            model: {name: echo, version: "1", artifact: /dev/null}
            replicas: 3
            """, source: "echo.yaml")
        #expect(spec.replicas == ReplicaRange(min: 3, max: 3))
        #expect(spec.health == .health && spec.readiness == .readiness && spec.autoscale == nil)
        #expect(spec.model.version == "1")
    }

    @Test func everyMistakeIsNamedWithItsLine() {
        let text = """
            name: "bad.name"
            command: python3
            accelerators: {count: 1}
            model:
              name: m
              version: "v 1"
              artifact: ftp://host/m.onnx
              parameters: 7B
              precisions: [fp32, fp8]
            replicas: {min: 3, max: 2, most: 9}
            health: {path: healthz, interval: soon, failure_threshold: 0}
            readiness: {timeout: 5s, interval: 1s}
            slo: {origin: east}
            update: {max_surge: 0, max_unavailable: 0}
            autoscale: {scale_to_zero: true}
            count: 4
            """
        #expect {
            _ = try ServiceFile.parse(text, source: "bad.yaml")
        } throws: { error in
            let message = "\(error)"
            let expected = [
                "line 1, column 1: name: 'bad.name' is a path segment of the gateway",
                "line 6, column 3: model.version: 'v 1' contains ' '",
                "line 7, column 3: model.artifact: 'ftp://host/m.onnx' is neither a path nor",
                "line 9, column 3: model.precisions: 'fp8' is not one of",
                "line 10, column 28: replicas.most: unknown key",
                "line 10, column 20: replicas.max: 2 is less than replicas.min 3",
                "line 11, column 10: health.path: 'healthz' must start with '/'",
                "line 11, column 25: health.interval: 'soon' is not a duration",
                "line 11, column 41: health.failure_threshold: 1…100, got 0",
                "line 12, column 13: readiness.timeout: 5.0 s is longer than the interval 1.0 s",
                "slo.p99_ms: required with slo.origin",
                "line 14, column 10: update.max_surge: max_surge and max_unavailable cannot both be 0",
                "line 15, column 1: autoscale: name a signal",
                "line 16, column 1: count: a service has replicas",
            ]
            for e in expected where !message.contains(e) { Issue.record("missing '\(e)' in:\n\(message)") }
            return true
        }
    }

    @Test func aServiceWithoutAModelIsRefused() {
        #expect {
            _ = try ServiceFile.parse("name: x\ncommand: /bin/true\n", source: "x.yaml")
        } throws: { "\($0)".contains("model: required") }
    }

    @Test func anSLOWithTokensAndANetworkShareSetsTheRoutingBoundAndTheThroughputNeed() throws {
        let spec = try ServiceFile.parse("""
            name: chat
            command: serve
            accelerators: {count: 1}
            model: {name: llama, version: v1, artifact: /srv/llama, parameters: 13B, precisions: [bf16, int8]}
            slo: {p99_ms: 300, origin: east, tokens_per_request: 256, network_ms: 100}
            """, source: "chat.yaml")
        #expect(spec.slo == ServiceSLO(p99Ms: 300, origin: "east", tokensPerRequest: 256, networkMs: 100))
        #expect(spec.template.routing.latencySLOMs == 100, "only the network's share bounds the RTT")
        let replica = spec.replicaSpec(version: "v1", drainMs: 0)
        #expect(replica.routing.latencySLOMs == 100 && replica.routing.origin == "east")
        #expect(replica.model?.tokensPerSecond == 1280, "256 tokens in the 200 ms left after the network")
        #expect {
            _ = try ServiceFile.parse("""
                name: chat
                command: serve
                model: {name: llama, version: v1, artifact: /srv/llama}
                slo: {p99_ms: 100, tokens_per_request: 0, network_ms: 150}
                """, source: "chat.yaml")
        } throws: { error in
            let m = "\(error)"
            return m.contains("slo.tokens_per_request: 1…10000000, got 0") && m.contains("slo.network_ms: 0 < network_ms < p99_ms (100.0), got 150.0")
                && m.contains("slo.tokens_per_request: needs the model's size")
        }
    }
}

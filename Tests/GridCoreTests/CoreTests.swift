import Foundation
import GridCore
import Testing

@Suite struct CoreTests {
    @Test(arguments: ["node-1", "j-mwt79h0f-1", "cn-gz-guian", "a.b:c_d"])
    func acceptableIdentifiers(_ id: String) {
        #expect(IdentifierRules.problem(with: id) == nil)
    }

    @Test(arguments: ["", "two words", "semi;colon", "slash/path", "ünïcode", String(repeating: "x", count: 129)])
    func rejectedIdentifiers(_ id: String) {
        #expect(IdentifierRules.problem(with: id) != nil)
    }

    @Test func worstHealthIsTheMaximum() {
        #expect([HealthState.healthy, .degraded, .unhealthy, .unknown].max() == .unhealthy)
        #expect([HealthState.healthy, .degraded].max() == .degraded)
        #expect(HealthState.unknown > .degraded, "not knowing is worse than knowing it is slow")
    }

    @Test func gradesOrderFromMostCapable() {
        #expect(DeviceGrade.a < .b && .b < .c && .c < .d && .d < .r)
    }

    @Test(arguments: [("NVIDIA", AcceleratorVendor.nvidia), ("cuda", .nvidia), ("ROCm", .amd), ("dcu", .hygon),
                      ("Ascend", .huawei), ("gaudi", .habana), ("xpu", .intel), ("corex", .iluvatar)])
    func looseVendorNames(_ text: String, _ vendor: AcceleratorVendor) {
        #expect(AcceleratorVendor(loose: text) == vendor)
    }

    @Test func everyKnownVendorHasAVisibleDevicesVariable() {
        for v in AcceleratorVendor.allCases where v != .unknown {
            #expect(!v.visibleDevicesVariables.isEmpty, "\(v)")
        }
        #expect(AcceleratorVendor.amd.visibleDevicesVariables == ["ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"])
    }

    @Test func jobSpecProblemsNameTheField() {
        let bad = JobSpec(name: "", command: "", env: ["A=B": "x"], accelerators: AcceleratorRequest(count: 65, minMemoryMiB: -1), timeoutSeconds: 0)
        let problems = bad.problems()
        for field in ["name:", "command:", "accelerators.count:", "accelerators.min_memory:", "timeout_seconds:", "env:"] {
            #expect(problems.contains { $0.hasPrefix(field) }, "\(field) missing from \(problems)")
        }
        #expect(JobSpec(name: "ok", command: "true").problems().isEmpty)
    }

    @Test func jobStatesOnlyMoveForward() {
        #expect(JobState.queued.progress < JobState.assigned.progress)
        #expect(JobState.assigned.progress < JobState.running.progress)
        #expect(JobState.running.progress < JobState.succeeded.progress)
        #expect(JobState.allCases.filter(\.isTerminal) == [.succeeded, .failed, .cancelled, .lost])
    }
}

/// What reaches execve is bounded and has no NUL (issue 11, item 7).
@Suite struct JobSpecBoundsTests {
    @Test(arguments: [
        (JobSpec(name: String(repeating: "n", count: 257), command: "true"), "name: at most 256 bytes, got 257"),
        (JobSpec(name: "t", command: "/" + String(repeating: "c", count: 4096)), "command: at most 4096 bytes (PATH_MAX), got 4097"),
        (JobSpec(name: "t", command: "true", args: ["a\u{0}b"]), "command/args/env: a NUL character cannot reach the process"),
        (JobSpec(name: "t", command: "true", env: ["K": "v\u{0}"]), "command/args/env: a NUL character cannot reach the process"),
        (JobSpec(name: "t", command: "true", args: Array(repeating: "x", count: 4097)), "args: at most 4096, got 4097"),
        (JobSpec(name: "t", command: "true", args: Array(repeating: String(repeating: "x", count: 60_000), count: 18)),
         "args/env: 1080023 bytes in all, at most 1048576 (the agent adds its own GRID_* variables)"),
    ] as [(JobSpec, String)])
    func aSpecPastABoundIsRefusedNamingIt(_ spec: JobSpec, _ problem: String) {
        #expect(spec.problems().contains(problem), "\(spec.problems())")
    }

    /// Found by the job-file fuzz target: `heads: 0` divided by zero in the check itself, so a
    /// SUBMIT carrying it would have stopped the national scheduler.
    @Test func zeroAttentionHeadsIsAProblemNotACrash() {
        var m = ModelRequirement(parameters: 13e9)
        m.hiddenSize = 5120
        m.attentionHeads = 0
        let spec = JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1), model: m)
        #expect(spec.problems().contains("model.heads: 1…100000, got 0"), "\(spec.problems())")
    }

    @Test func aSpecWithinTheBoundsHasNoProblem() {
        let spec = JobSpec(name: String(repeating: "n", count: 256), command: "/usr/bin/python3",
                           args: Array(repeating: "x", count: 4096), env: ["A": String(repeating: "v", count: 60_000)])
        #expect(spec.problems().isEmpty, "\(spec.problems())")
    }
}

/// Found by the job-file fuzz target: Yams' base-60 integer reading traps on overflow.
@Suite struct BaseSixtyTests {
    struct Doc: Decodable { var count: Int?; var name: String? }

    @Test(arguments: ["51288888888888888:8888888888888888889", "1:1:1:1:1:1:1:1:1:1:1", "-9223372036854775807:59", "+1_0:0:0:0:0:0:0:0:0:0:0"])
    func aBaseSixtyNumberTooLargeIsRefusedWithItsLineNotACrash(_ value: String) {
        #expect {
            _ = try ConfigFile.decode(Doc.self, from: "name: x\ncount: \(value)\n", source: "job.yaml")
        } throws: { "\($0)".contains("line 2, column 8: '\(value)' is a base-60 number") }
    }

    @Test func smallBaseSixtyNumbersAndQuotedTextStillDecode() throws {
        #expect(try ConfigFile.decode(Doc.self, from: "count: 1:30\n", source: "j").value.count == 90)
        #expect(try ConfigFile.decode(Doc.self, from: "name: \"51288888888888888:8888888888888888889\"\n", source: "j").value.name
                == "51288888888888888:8888888888888888889")
        // Unquoted, such text is refused even for a text field (the check runs before the types
        // are known); quoted it is plain text.
        #expect(throws: ConfigError.self) { _ = try ConfigFile.decode(Doc.self, from: "name: 1:1:1:1:1:1:1:1:1:1:1\n", source: "j") }
    }
}

/// Found by the controller-config fuzz target: Yams' duplicate-key check compares complex keys
/// in time exponential in their nesting (1.2 KB took minutes), so keys that are not plain
/// values are refused before Yams reads the text.
@Suite struct ComplexKeyTests {
    struct Doc: Decodable { var name: String?; var script: String?; var list: [String]? }

    @Test(arguments: [
        ("? a\n: b\n", "line 1, column 1: an explicit mapping key"),
        ("name: x\nlist:\n  - ? a\n    : b\n", "line 3, column 5: an explicit mapping key"),
        ("[a, b]: c\n", "line 1, column 6: a list or mapping used as a mapping key"),
        ("name: {x: 1}\n{a: b}: c\n", "line 2, column 6: a list or mapping used as a mapping key"),
        ("{? a: b}\n", "line 1, column 2: an explicit mapping key"),
    ])
    func complexKeysAreRefusedWithTheirPlace(_ text: String, _ expected: String) {
        #expect { _ = try ConfigFile.decode(Doc.self, from: text, source: "c.yaml") } throws: { "\($0)".contains(expected) }
    }

    /// Question marks and brackets in values, quotes, comments and block scalars are text.
    @Test func questionMarksAndBracketsInTextStillDecode() throws {
        let text = """
            name: "why? [a]: b"   # ? a comment [x]: y
            script: |
              ? not a key
              [a]: not a key either
            list: [what? yes, 'it''s ? fine', "{a}: b"]
            """
        let doc = try ConfigFile.decode(Doc.self, from: text + "\n", source: "c.yaml").value
        #expect(doc.name == "why? [a]: b")
        #expect(doc.script == "? not a key\n[a]: not a key either\n")
        #expect(doc.list == ["what? yes", "it's ? fine", "{a}: b"])
    }

    @Test func theFuzzersInputIsRefusedAtOnce() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/fuzz/controller-config/slow-nested-complex-keys.yaml")
        let text = try String(contentsOf: url, encoding: .utf8)
        let start = ContinuousClock.now
        #expect(throws: ConfigError.self) { _ = try ConfigFile.decode(Doc.self, from: text, source: "c.yaml") }
        #expect(ContinuousClock.now - start < .seconds(5))
    }
}

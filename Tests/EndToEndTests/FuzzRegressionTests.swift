import Foundation
import Testing

/// Fuzzing (issue 11, item 8; docs/security.md, "Fuzzing"): every input kept under
/// Tests/Fixtures/fuzz/<target>/ (seeds and any crash a fuzzing run found) goes through the
/// same target in the normal build, which must end without a crash.
@Suite struct FuzzRegressionTests {
    @Test(arguments: ["envelope", "vendor", "job-file", "service-file", "controller-config", "agent-config", "authorized-keys"])
    func keptInputsDoNotCrash(_ target: String) throws {
        let root = Cluster.repoRoot.appendingPathComponent("Tests/Fixtures/fuzz")
        var files: [String] = []
        for dir in [target, "\(target)-seeds"] {
            let d = root.appendingPathComponent(dir)
            files += ((try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? []).sorted().map { d.appendingPathComponent($0).path }
        }
        if target == "vendor" {
            files += try FileManager.default.contentsOfDirectory(atPath: Cluster.fixtures.path).sorted().map { Cluster.fixtures.appendingPathComponent($0).path }
        }
        if target == "job-file" || target == "service-file" {
            let ex = Cluster.repoRoot.appendingPathComponent(target == "job-file" ? "examples/jobs" : "examples/services")
            files += try FileManager.default.contentsOfDirectory(atPath: ex.path).sorted().map { ex.appendingPathComponent($0).path }
        }
        if target == "controller-config" || target == "agent-config" {
            let dir = Cluster.repoRoot.appendingPathComponent(target)
            files += try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }.sorted().map { dir.appendingPathComponent($0).path }
        }
        #expect(!files.isEmpty)
        let r = try Cluster.run(Cluster.binDir.appendingPathComponent("grid-fuzz").path, [target] + files)
        #expect(r.status == 0 && r.output.contains("\(files.count) input(s) through \(target): no crash"), "\(r.output)")
    }
}

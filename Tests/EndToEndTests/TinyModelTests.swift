import Foundation
import Testing

extension EndToEnd {
/// The demo model (examples/model) served for real: check_serve.py starts serve.py at fp32, fp16
/// and int8, compares its HTTP answers with an independent computation of the network, and
/// checks health, readiness, SIGTERM, a broken model and a bad port.
@Suite(.serialized) struct TinyModelTests {
    @Test func theDemoModelServesCorrectAnswersAtEveryPrecision() throws {
        let script = Cluster.repoRoot.appendingPathComponent("examples/model/check_serve.py").path
        let r = try Cluster.run("/usr/bin/python3", [script])
        #expect(r.status == 0 && r.output.contains("all checks passed") && !r.output.contains("FAIL"), "\(r.output)")
        #expect(r.output.split(separator: "\n").filter { $0.hasPrefix("ok ") }.count >= 30, "\(r.output)")
    }
}
}

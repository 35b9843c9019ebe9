import Foundation
import GridCore
import Testing
@testable import GridCatalog

@Suite("Grading policy decoding")
struct PolicyDecodingTests {
    func decode(_ json: String) throws -> GradingPolicy {
        try JSONDecoder().decode(GradingPolicy.self, from: Data(json.utf8))
    }

    @Test func emptyObjectGivesDefaults() throws {
        let p = try decode("{}")
        #expect(p == GradingPolicy.default)
        #expect(p.gradeA == .init(minGCU: 400, minMemoryGiB: 60))
        #expect(p.gradeB == .init(minGCU: 100, minMemoryGiB: 20))
        #expect(p.gradeC == .init(minGCU: 20, minMemoryGiB: 6))
        #expect(p.degradedGradeSteps == 1 && p.retireAgeYears == 10)
        #expect(p.computeUnits.degradedFactor == 0.5 && p.computeUnits.unknownFactor == 0)
        #expect(p.unknownModelBestGrade == .c && p.estimatedBestGrade == .b)
        #expect(p.retireOnReasons == [.remappingFailed, .fallenOffBus])
    }

    @Test func partialKeysKeepTheOtherDefaults() throws {
        let p = try decode("""
            {"grade_a": {"min_gcu": 800}, "retire_age_years": 8,
             "compute_units": {"degraded_factor": 0.75},
             "retire_on_reasons": ["remapping_failed", "ecc_uncorrectable"],
             "unknown_model_best_grade": "D"}
            """)
        #expect(p.gradeA == .init(minGCU: 800, minMemoryGiB: 60))
        #expect(p.gradeB == GradingPolicy.default.gradeB)
        #expect(p.retireAgeYears == 8)
        #expect(p.computeUnits.degradedFactor == 0.75 && p.computeUnits.healthyFactor == 1)
        #expect(p.retireOnReasons == [.remappingFailed, .eccUncorrectable])
        #expect(p.unknownModelBestGrade == .d)
        #expect(p.degradedGradeSteps == 1)
    }

    @Test func roundTrips() throws {
        var p = GradingPolicy()
        p.gradeC = .init(minGCU: 10, minMemoryGiB: 4)
        p.computeUnits.migSlicesPerGPU = 4
        let data = try JSONEncoder().encode(p)
        #expect(try JSONDecoder().decode(GradingPolicy.self, from: data) == p)
        let keys = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        #expect(keys?["grade_c"] != nil && keys?["compute_units"] != nil)
    }

    @Test(arguments: [
        #"{"grade_aa": {}}"#,
        #"{"grade_a": {"min_gpu": 1}}"#,
        #"{"compute_units": {"degraded_factor": 1.5}}"#,
        #"{"grade_b": {"min_gcu": 500}}"#,
        #"{"degraded_grade_steps": -1}"#,
        #"{"estimated_best_grade": "R"}"#,
        #"{"unknown_model_best_grade": "E"}"#,
    ])
    func badValuesAreErrors(json: String) {
        #expect(throws: DecodingError.self) { try decode(json) }
    }

    @Test func typoNamesTheKey() {
        do {
            _ = try decode(#"{"retire_age_yaers": 5}"#)
            Issue.record("expected an error")
        } catch {
            #expect(describeDecodingError(error).contains("retire_age_yaers"))
        }
    }

    @Test func historyDecodes() throws {
        let h = try JSONDecoder().decode(
            HealthHistory.self, from: Data(#"{"probes_in_window": 10, "unhealthy_probes_in_window": 3}"#.utf8))
        #expect(h == HealthHistory(probesInWindow: 10, unhealthyProbesInWindow: 3))
    }
}

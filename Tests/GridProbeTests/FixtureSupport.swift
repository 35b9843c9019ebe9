import Foundation

/// Vendor-tool captures in `Tests/Fixtures/vendor/`, located from this file's path so the
/// lookup works in any checkout without SwiftPM resources.
enum Fixture {
    /// `Tests/Fixtures/vendor/`, found by walking up from this source file to `Tests/`.
    static var vendorDirectory: URL {
        var directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while directory.lastPathComponent != "Tests", directory.pathComponents.count > 1 {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("Fixtures").appendingPathComponent("vendor")
    }

    static func url(_ name: String) -> URL {
        vendorDirectory.appendingPathComponent(name)
    }

    /// The fixture as UTF-8 text (invalid bytes replaced, never a failure).
    static func text(_ name: String) throws -> String {
        let data = try Data(contentsOf: url(name))
        return String(decoding: data, as: UTF8.self)
    }

    /// Every fixture file name except SOURCES.md, sorted.
    static func allNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: vendorDirectory.path)
            .filter { $0 != "SOURCES.md" && !$0.hasPrefix(".") }
            .sorted()
    }
}

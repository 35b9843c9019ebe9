import Foundation
import GridController
import GridCore
import GridProtocol
@testable import GridHTTP
import GridHTTPServer
import Hummingbird
import Logging
import Testing
import Yams

/// A controller that answers nothing: enough to build the router and list its routes.
struct SilentController: ControllerAccess {
    var role: ControllerRole = .national
    var name = "national"
    func ask(_ body: Body, caller: Principal?) async -> Body { .errorReply(Wire.ErrorReply()) }
    func observe(timeout: Duration) async -> ControllerObservation? { nil }
}

@Suite struct OpenAPIDocumentTests {
    static func document() throws -> [String: Any] {
        let url = try #require(Bundle.module.url(forResource: "openapi", withExtension: "yaml", subdirectory: nil)
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Sources/GridHTTP/Resources/openapi.yaml"))
        return try #require(try Yams.load(yaml: String(contentsOf: url, encoding: .utf8)) as? [String: Any])
    }

    /// Every route the server has is in the document, with its method, and the document
    /// describes no route the server lacks.
    @Test func documentAndRouterListTheSameRoutes() throws {
        let api = ControllerAPI(controller: SilentController(), metrics: MetricsExporter.controller(), tokens: try TokenStore(path: ""),
                                logger: Logger(label: "t"))
        let served = Set(api.router().routes.map { r -> String in
            let path = "/" + r.path.description.split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
            return "\(r.method.rawValue.lowercased()) \(path)"
        })
        let paths = try #require(try Self.document()["paths"] as? [String: [String: Any]])
        // Paths an agent serves (x-served-by: agent) are not the controller's.
        let documented = Set(paths.filter { $0.value["x-served-by"] as? String != "agent" }
            .flatMap { path, ops in ops.keys.filter { ["get", "post", "put", "delete", "patch"].contains($0) }.map { "\($0) \(path)" } })
        #expect(served == documented, "served only: \(served.subtracting(documented).sorted()); documented only: \(documented.subtracting(served).sorted())")
        #expect(served.count >= 20)
    }

    /// Every `$ref` names something the document defines; every operation has an id and a
    /// 2xx answer; every path parameter is declared.
    @Test func everyReferenceResolvesAndEveryOperationIsComplete() throws {
        let doc = try Self.document()
        var refs: [String] = []
        func walk(_ v: Any) {
            if let d = v as? [String: Any] {
                if let r = d["$ref"] as? String { refs.append(r) }
                d.values.forEach(walk)
            } else if let a = v as? [Any] { a.forEach(walk) }
        }
        walk(doc)
        #expect(!refs.isEmpty)
        for ref in refs {
            var node: Any? = doc
            for part in ref.dropFirst(2).split(separator: "/") { node = (node as? [String: Any])?[String(part)] }
            #expect(node != nil, "\(ref) does not resolve")
        }
        let paths = try #require(doc["paths"] as? [String: [String: Any]])
        var ids = Set<String>()
        for (path, ops) in paths {
            for (method, op) in ops where method != "x-served-by" {
                let o = try #require(op as? [String: Any], "\(method) \(path)")
                let id = try #require(o["operationId"] as? String, "\(method) \(path) has no operationId")
                #expect(ids.insert(id).inserted, "operationId \(id) used twice")
                let responses = try #require(o["responses"] as? [String: Any], "\(method) \(path)")
                #expect(responses.keys.contains { $0.hasPrefix("2") }, "\(method) \(path) has no 2xx response")
                if path.contains("{id}") {
                    let params = (o["parameters"] as? [[String: Any]]) ?? []
                    #expect(params.contains { ($0["$ref"] as? String)?.hasSuffix("ID") == true || $0["name"] as? String == "id" },
                            "\(method) \(path) does not declare its id")
                }
            }
        }
    }
}

@Suite struct TokenStoreTests {
    func file(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tokens-\(UUID().uuidString.prefix(8))").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func namesTheTokenAndRefusesOthers() throws {
        let store = try TokenStore(path: try file("# operators\nalice 0123456789abcdef0123\n\nbob  fedcba9876543210fedc\n"))
        #expect(store.count == 2)
        #expect(store.principal(for: "0123456789abcdef0123")?.operatorName == "alice")
        #expect(store.principal(for: "fedcba9876543210fedc")?.operatorName == "bob")
        #expect(store.principal(for: "0123456789abcdef012") == nil)
        #expect(store.principal(for: "0123456789abcdef01234") == nil)
        #expect(store.principal(for: "") == nil)
    }

    /// A token carries a right (default `operate`, the file's first format) and may be bound to
    /// a tenant, by the rules of an operator key; mistakes name their line.
    @Test func tokensCarryARightAndATenant() throws {
        let store = try TokenStore(path: try file("""
            ops    0123456789abcdef0123
            viewer 1123456789abcdef0123 read
            ana    2123456789abcdef0123 submit tenant=team-a
            """))
        #expect(store.principal(for: "0123456789abcdef0123") == .operator(name: "ops", right: .operate))
        #expect(store.principal(for: "1123456789abcdef0123") == .operator(name: "viewer", right: .read))
        #expect(store.principal(for: "2123456789abcdef0123") == .operator(name: "ana", right: .submit, tenant: "team-a"))
        #expect(store.principal(for: "3123456789abcdef0123") == nil)
        let path = try file("""
            a 0123456789abcdef0123 root
            b 1123456789abcdef0123 admin tenant=team-a
            c 2123456789abcdef0123 read tenant=bad/name
            d 0123456789abcdef0123 read
            e 4123456789abcdef0123 read extra field
            """)
        do {
            _ = try TokenStore(path: path)
            Issue.record("a bad token file was accepted")
        } catch let e as ConfigError {
            #expect(e.problems.count == 5, "\(e.problems)")
            #expect(e.problems.contains { $0.hasPrefix("line 1:") && $0.contains("read|submit|operate|admin") }, "\(e.problems)")
            #expect(e.problems.contains { $0.hasPrefix("line 2:") && $0.contains("admin") })
            #expect(e.problems.contains { $0.hasPrefix("line 3:") && $0.contains("tenant 'bad/name'") })
            #expect(e.problems.contains { $0.hasPrefix("line 4:") && $0.contains("also on line 1") })
            #expect(e.problems.contains { $0.hasPrefix("line 5:") && $0.contains("expected 'name token") })
        }
        // The same rules as a ZeroMQ key: a read token may query, not submit.
        let viewer = try #require(store.principal(for: "1123456789abcdef0123"))
        #expect(AccessControl.check(.query(Wire.Query()), viewer) == nil)
        #expect(AccessControl.check(.submit(Wire.Submit()), viewer)?.contains("'submit' right") == true)
    }

    @Test func aBadFileSaysWhichLineAndKeepsTheOldTokens() throws {
        let path = try file("alice 0123456789abcdef0123\n")
        let store = try TokenStore(path: path)
        try "alice 0123456789abcdef0123\nbob short\ncarol\n".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            try store.reload()
            Issue.record("a bad token file was accepted")
        } catch let e as ConfigError {
            #expect(e.problems.contains { $0.hasPrefix("line 2:") && $0.contains("shorter than 16") })
            #expect(e.problems.contains { $0.hasPrefix("line 3:") && $0.contains("name token") })
        }
        #expect(store.principal(for: "0123456789abcdef0123")?.operatorName == "alice")
    }
}

@Suite struct MetricsExporterTests {
    func scrape(_ e: MetricsExporter) -> String { String(decoding: e.render(), as: UTF8.self) }

    /// Counters follow running totals by their differences; a gauge's label set that went away
    /// is gone from the scrape; an observation older than the last applied changes nothing.
    @Test func countersFollowTotalsAndVanishedGaugesGo() {
        let e = MetricsExporter.controller()
        var o = ControllerObservation(role: .region, id: "r1", observedAt: Date(), ready: true)
        o.counters[.heartbeats] = 5
        o.devices[DeviceGroup(vendor: "nvidia", grade: "B", health: .healthy)] = DeviceCounts(total: 8, free: 3)
        e.update(from: o)
        o.counters[.heartbeats] = 12
        o.devices = [DeviceGroup(vendor: "amd", grade: "C", health: .degraded): DeviceCounts(total: 2, free: 0)]
        o.observedAt = o.observedAt.addingTimeInterval(1)
        e.update(from: o)
        var stale = o
        stale.observedAt = o.observedAt.addingTimeInterval(-0.5)
        stale.counters[.heartbeats] = 9
        e.update(from: stale)
        let text = scrape(e)
        #expect(text.contains("grid_region_heartbeats_received_total 12"))
        #expect(!text.contains(#"vendor="nvidia""#))
        #expect(text.contains(#"grid_devices{vendor="amd",grade="C",health="degraded"} 2"#))
        #expect(text.contains("# TYPE grid_region_heartbeats_received_total counter"))
        #expect(text.contains("# HELP grid_devices "))
    }

    @Test func snakeCaseOfMessageTypes() {
        #expect(MetricsExporter.snake("statusUpdate") == "status_update")
        #expect(MetricsExporter.snake("heartbeat") == "heartbeat")
    }
}

import AsyncHTTPClient
import Foundation
import GridController
import GridCore
import GridHTTPServer
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// A region's service gateway (SERVICES.md, "Gateway"): `/<service>/<path>` is sent to
/// `<path>` on one of the service's ready replicas, the one with the fewest requests
/// outstanding from this gateway (ties taken in turn). The rotation is the region controller's
/// (`GatewayTable`, from its `.routes` directives): running, passing readiness, not draining.
///
/// A request whose replica fails before answering (connection refused or reset, the replica
/// killed) is sent once more to another replica: a service's requests must be safe to repeat,
/// as inference is. With no ready replica the request waits up to `holdMs` for one (a service
/// scaled to zero starts one: the wait is reported as load), then gets 503.
public final class ServiceGateway: Sendable {
    let table: GatewayTable
    let client: HTTPClient
    let logger: Logger
    let holdMs: Int64
    let requestTimeout: TimeAmount
    let maxBodyBytes: Int
    /// Requests outstanding per replica endpoint, and a turn counter for ties.
    let outstanding = Mutex<[String: Int]>([:])
    let turn = Atomic<Int>(0)

    public init(table: GatewayTable, logger: Logger, holdMs: Int64 = 30_000, requestTimeoutSeconds: Int64 = 60,
                maxBodyBytes: Int = 64 << 20) {
        self.table = table
        self.logger = logger
        self.holdMs = holdMs
        self.requestTimeout = .seconds(requestTimeoutSeconds)
        self.maxBodyBytes = maxBodyBytes
        var config = HTTPClient.Configuration()
        config.timeout = .init(connect: .seconds(2), read: .seconds(requestTimeoutSeconds))
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        config.decompression = .disabled
        config.redirectConfiguration = .disallow
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    /// Closes the upstream connections (when the listener has stopped).
    public func shutdown() async {
        try? await client.shutdown()
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/") { _, _ in
            var body = ByteBuffer()
            let names = self.table.services
            body.writeString("{\"services\":[" + names.map { "\"\($0)\"" }.joined(separator: ",") + "]}\n")
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
        }
        for method in [HTTPRequest.Method.get, .post, .put, .delete, .patch, .head, .options] {
            router.on("**", method: method) { request, _ in try await self.proxy(request) }
        }
        return router
    }

    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                                        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"]

    func proxy(_ request: Request) async throws -> Response {
        let started = DispatchTime.now().uptimeNanoseconds
        let path = request.uri.path
        let afterSlash = path.dropFirst()
        let service = String(afterSlash.prefix { $0 != "/" })
        guard !service.isEmpty else { return Self.error(.notFound, "name a service: /<service>/<path>") }
        var rest = String(afterSlash.dropFirst(service.count))
        if rest.isEmpty { rest = "/" }
        if let q = request.uri.query, !q.isEmpty { rest += "?" + q }
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: maxBodyBytes) } catch {
            return Self.error(.contentTooLarge, "request body over \(maxBodyBytes) bytes")
        }
        var headers = HTTPHeaders()
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) {
            headers.add(name: field.name.rawName, value: field.value)
        }
        table.began(service)
        var tried: Set<String> = []
        var lastError = ""
        for _ in 0..<2 {
            guard let route = await pick(service, excluding: tried) else { break }
            tried.insert(route.endpoint)
            var up = HTTPClientRequest(url: "http://\(route.endpoint)\(rest)")
            up.method = HTTPMethod(rawValue: request.method.rawValue)
            up.headers = headers
            up.body = .bytes(body)
            adjust(route.endpoint, +1)
            let response: HTTPClientResponse
            do {
                response = try await client.execute(up, timeout: requestTimeout)
            } catch {
                adjust(route.endpoint, -1)
                lastError = "replica \(route.job) at \(route.endpoint): \(error)"
                logger.notice("gateway: upstream failed; trying another replica", metadata: ["service": "\(service)", "error": "\(lastError)"])
                continue
            }
            var fields = HTTPFields()
            var length: Int? = nil
            for (name, value) in response.headers {
                let lower = name.lowercased()
                if lower == "content-length" { length = Int(value) }
                if Self.hopByHop.contains(lower) { continue }
                if let n = HTTPField.Name(name) { fields.append(HTTPField(name: n, value: value)) }
            }
            fields.append(HTTPField(name: Self.replicaHeader, value: route.job.rawValue))
            fields.append(HTTPField(name: Self.versionHeader, value: route.version))
            let table = self.table
            let endpoint = route.endpoint
            let upstream = response.body
            let done: @Sendable (Bool) -> Void = { [weak self] ok in
                self?.adjust(endpoint, -1)
                let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
                table.ended(service, latencyMs: ok ? ms : nil, nowSeconds: GatewayTable.nowSeconds())
            }
            return Response(status: HTTPResponse.Status(code: Int(response.status.code)), headers: fields,
                             body: ResponseBody(contentLength: request.method == .head ? nil : length) { writer in
                do {
                    for try await chunk in upstream { try await writer.write(chunk) }
                    try await writer.finish(nil)
                    done(true)
                } catch {
                    done(false)
                    throw error
                }
            })
        }
        table.ended(service, latencyMs: nil, nowSeconds: GatewayTable.nowSeconds())
        if tried.isEmpty {
            return Self.error(.serviceUnavailable, "service \(service) has no ready replica (waited \(holdMs) ms)")
        }
        return Self.error(.badGateway, "service \(service): no replica answered (\(lastError))")
    }

    /// The ready replica with the fewest requests outstanding, not one already tried; waits up
    /// to `holdMs` while the service has none ready at all.
    func pick(_ service: String, excluding tried: Set<String>) async -> ServiceRoute? {
        var routes = table.routes(service)
        if routes.isEmpty && tried.isEmpty {
            table.waiting(service, 1)
            defer { table.waiting(service, -1) }
            let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(holdMs) * 1_000_000
            while routes.isEmpty && DispatchTime.now().uptimeNanoseconds < deadline {
                try? await Task.sleep(for: .milliseconds(20))
                if Task.isCancelled { return nil }
                routes = table.routes(service)
            }
        }
        let candidates = routes.filter { !tried.contains($0.endpoint) }
        guard !candidates.isEmpty else { return nil }
        let start = turn.add(1, ordering: .relaxed).newValue
        return outstanding.withLock { counts in
            var best: ServiceRoute? = nil
            var bestCount = Int.max
            for i in 0..<candidates.count {
                let r = candidates[(start + i) % candidates.count]
                let n = counts[r.endpoint] ?? 0
                if n < bestCount {
                    best = r
                    bestCount = n
                }
            }
            return best
        }
    }

    func adjust(_ endpoint: String, _ delta: Int) {
        outstanding.withLock { counts in
            let n = (counts[endpoint] ?? 0) + delta
            counts[endpoint] = n > 0 ? n : nil
        }
    }

    static let replicaHeader = HTTPField.Name("X-Grid-Replica")!
    static let versionHeader = HTTPField.Name("X-Grid-Version")!

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        var body = ByteBuffer()
        let escaped = message.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        body.writeString("{\"error\":\"\(escaped)\"}\n")
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }
}

/// The gateway's listener as a `Service`: the HTTP server, then the upstream connections closed.
public struct GatewayServer: Service {
    let server: HTTPServer<BasicRequestContext>
    let gateway: ServiceGateway

    public init(gateway: ServiceGateway, host: String, port: Int, logger: Logger, onListening: @escaping @Sendable (String) -> Void) {
        self.gateway = gateway
        server = HTTPServer(router: gateway.router(), host: host, port: port, logger: logger, onListening: onListening)
    }

    public func run() async throws {
        try await server.run()
        await gateway.shutdown()
    }
}

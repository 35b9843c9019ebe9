import Foundation
import GridCLI
import GridController
import GridCore
import GridHTTPServer
import GridProtocol
import Hummingbird
import Logging
import SwiftProtobuf

/// What the HTTP API needs of a controller: ask it a protocol question (answered the way a
/// peer would be), and observe it. `ControllerService` is one; tests may drive any.
public protocol ControllerAccess: Sendable {
    var role: ControllerRole { get }
    var name: String { get }
    /// `caller`: the bearer token's principal (its right and tenant apply; the audit log names
    /// it); nil = unrestricted (reads when they are open).
    func ask(_ body: Body, caller: Principal?) async -> Body
    func observe(timeout: Duration) async -> ControllerObservation?
}

extension ControllerAccess {
    func ask(_ body: Body) async -> Body { await ask(body, caller: nil) }
}

extension ControllerService: ControllerAccess {
    public var role: ControllerRole { config.role }
    public var name: String { config.id }
}

/// The routes of a controller's HTTP listener: the JSON API (`/api/v1`, described by
/// `/openapi.yaml`), `/metrics`, `/healthz`, `/readyz`, the dashboard at `/` and its live
/// updates at `/api/v1/events`.
///
/// Every read and write goes through the controller's loop as a protocol message from an
/// in-process peer, so the API gives the same answers as `gridctl` and a change is stored
/// before it is answered. Writes need a bearer token from `http_token_file`; so do reads unless
/// `reads` is `.open` (`http_read`). A token acts with its right and tenant, by the rules an
/// operator key has over ZeroMQ.
public struct ControllerAPI: Sendable {
    public let controller: any ControllerAccess
    public let metrics: MetricsExporter
    public let tokens: TokenStore
    /// Whether reads need a token (`http_read`, resolved: `.open` or `.token`).
    public let reads: HTTPReadAccess
    public let logger: Logger
    /// How often the event stream looks for changes.
    public var eventInterval: Duration = .seconds(1)
    /// Raised at shutdown: event streams end.
    public let stopping: ShutdownFlag

    public init(controller: any ControllerAccess, metrics: MetricsExporter, tokens: TokenStore, reads: HTTPReadAccess = .open,
                logger: Logger, stopping: ShutdownFlag = ShutdownFlag()) {
        self.stopping = stopping
        self.reads = reads == .auto ? .token : reads
        self.controller = controller
        self.metrics = metrics
        self.tokens = tokens
        self.logger = logger
    }

    static let json: JSONEncodingOptions = {
        var o = JSONEncodingOptions()
        o.preserveProtoFieldNames = true
        o.alwaysPrintInt64sAsNumbers = true
        return o
    }()

    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.middlewares.add(APIErrorMiddleware())
        router.get("/healthz") { _, _ in try await self.healthz() }
        router.get("/readyz") { _, _ in try await self.readyz() }
        router.get("/metrics") { request, _ in
            try await self.reading(request, "reading /metrics", fleet: true) { _ in try await self.scrape() }
        }
        router.get("/") { _, _ in Self.resource("dashboard.html", type: "text/html; charset=utf-8") }
        router.get("/dashboard.js") { _, _ in Self.resource("dashboard.js", type: "text/javascript; charset=utf-8") }
        router.get("/dashboard.css") { _, _ in Self.resource("dashboard.css", type: "text/css; charset=utf-8") }
        router.get("/openapi.yaml") { _, _ in Self.resource("openapi.yaml", type: "application/yaml") }
        let api = router.group("api/v1")
        // Reads: `fleet` ones (what runs where) are refused to a token bound to a tenant.
        api.get("overview") { request, _ in
            try await self.reading(request, "reading the overview", fleet: true) { _ in try await self.overview() }
        }
        api.get("events") { request, _ in
            try await self.reading(request, "following the overview", fleet: true) { _ in self.events(request) }
        }
        api.get("regions") { request, _ in
            try await self.reading(request, "listing regions") { _ in try await self.regions() }
        }
        api.get("nodes") { request, _ in
            try await self.reading(request, "listing nodes", fleet: true) { who in
                try await self.query(.nodes, region: request.uri.queryParameters.get("region"), page: request, caller: who)
            }
        }
        api.get("nodes/:id") { request, context in
            let id = try context.parameters.require("id")
            return try await self.reading(request, "reading a node", fleet: true) { who in
                try await self.node(id, region: request.uri.queryParameters.get("region").map { String($0) }, caller: who)
            }
        }
        api.get("resources") { request, _ in
            try await self.reading(request, "resolving a resource name", fleet: true) { who in
                try await self.resolve(request.uri.queryParameters.get("name").map { String($0) }, caller: who)
            }
        }
        api.get("jobs") { request, _ in
            try await self.reading(request, "listing jobs") { who in try await self.query(.jobs, page: request, caller: who) }
        }
        api.get("jobs/:id") { request, context in
            let id = try context.parameters.require("id")
            return try await self.reading(request, "reading a job") { who in try await self.query(.job, job: id, caller: who) }
        }
        api.get("jobs/:id/events") { request, context in
            let id = try context.parameters.require("id")
            return try await self.reading(request, "reading a job's events") { who in try await self.events(ofJob: id, caller: who) }
        }
        api.get("accounts") { request, _ in
            try await self.reading(request, "listing accounts", fleet: true) { who in
                try await self.query(.accounts, region: request.uri.queryParameters.get("region"), caller: who)
            }
        }
        api.get("services") { request, _ in
            try await self.reading(request, "listing services") { who in
                try await self.services(nil, origin: request.uri.queryParameters.get("origin"), caller: who)
            }
        }
        api.get("services/:name") { request, context in
            let name = try context.parameters.require("name")
            return try await self.reading(request, "reading a service") { who in
                try await self.services(name, origin: request.uri.queryParameters.get("origin"), caller: who)
            }
        }
        api.post("jobs") { request, context in try await self.submit(request, context) }
        for action in ["cancel", "hold", "release", "requeue"] {
            api.post("jobs/:id/\(action)") { request, context in
                try await self.jobAction(action, id: try context.parameters.require("id"), request)
            }
        }
        api.post("regions/:id/remove") { request, context in
            try await self.removeRegion(try context.parameters.require("id"), request)
        }
        for action in ["cordon", "uncordon", "drain"] {
            api.post("nodes/:id/\(action)") { request, context in
                try await self.nodeAction(action, id: try context.parameters.require("id"), request)
            }
        }
        return router
    }

    // MARK: health

    func healthz() async throws -> Response {
        guard await controller.observe(timeout: .seconds(2)) != nil else {
            return Self.problem(.serviceUnavailable, "unavailable", "the controller's loop did not answer within 2 s")
        }
        return Self.jsonResponse(.ok, #"{"status":"ok"}"#)
    }

    func readyz() async throws -> Response {
        guard let o = await controller.observe(timeout: .seconds(2)) else {
            return Self.problem(.serviceUnavailable, "unavailable", "the controller's loop did not answer within 2 s")
        }
        if o.ready { return Self.jsonResponse(.ok, #"{"status":"ready"}"#) }
        return Self.problem(.serviceUnavailable, "not_ready", o.notReady)
    }

    func scrape() async throws -> Response {
        if let o = await controller.observe(timeout: .seconds(5)) { metrics.update(from: o) }
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.render())))
    }

    // MARK: reads

    func overview() async throws -> Response {
        guard let o = await controller.observe(timeout: .seconds(5)) else {
            return Self.problem(.serviceUnavailable, "unavailable", "the controller's loop did not answer within 5 s")
        }
        return Self.jsonResponse(.ok, try Self.encode(Overview(o)))
    }

    func regions() async throws -> Response {
        guard controller.role == .national else {
            return Self.problem(.notFound, "not_found", "a region lists no regions; ask the national scheduler")
        }
        guard let o = await controller.observe(timeout: .seconds(5)) else {
            return Self.problem(.serviceUnavailable, "unavailable", "the controller's loop did not answer within 5 s")
        }
        return Self.jsonResponse(.ok, try Self.encode(Overview(o).regions))
    }

    /// Services (national): every one, or the one named, with replicas and endpoints (SERVICES.md).
    func services(_ name: String?, origin: String? = nil, caller: Principal? = nil) async throws -> Response {
        guard controller.role == .national else {
            return Self.problem(.notFound, "not_found", "services are kept by the national scheduler; ask it")
        }
        var q = Wire.Query()
        q.kind = .services
        q.service = name ?? ""
        q.regionID = origin ?? ""
        let answer = await controller.ask(.query(q), caller: caller)
        guard case .queryReply(let r) = answer else { return Self.refusal(answer) }
        if name != nil, let s = r.services.first { return Self.jsonResponse(.ok, try s.jsonString(options: Self.json)) }
        return Self.jsonResponse(.ok, try Self.list(r, .services))
    }

    func query(_ kind: Wire.Query.Kind, region: String? = nil, job: String = "", page request: Request? = nil,
               caller: Principal? = nil) async throws -> Response {
        var q = Wire.Query()
        q.kind = kind
        q.jobID = job
        q.regionID = region ?? ""
        if let request {
            let p = request.uri.queryParameters
            if let v = p.get("offset") {
                guard let n = UInt64(v) else { return Self.problem(.badRequest, "bad_request", "offset: '\(v)' is not a whole number ≥ 0") }
                q.offset = n
            }
            if let v = p.get("limit") {
                guard let n = UInt32(v), (1...10_000).contains(n) else {
                    return Self.problem(.badRequest, "bad_request", "limit: '\(v)' must be 1…10000")
                }
                q.limit = n
            }
        }
        let answer = await controller.ask(.query(q), caller: caller)
        switch answer {
        case .queryReply(let r):
            if kind == .job {
                guard let j = r.jobs.first else { return Self.problem(.notFound, "not_found", "job \(job) is not known") }
                return Self.jsonResponse(.ok, try j.jsonString(options: Self.json))
            }
            return Self.jsonResponse(.ok, try Self.list(r, kind))
        default:
            return Self.refusal(answer)
        }
    }

    /// One node with its units (device, grade, health, busy, the job holding it).
    func node(_ id: String, region: String?, caller: Principal? = nil) async throws -> Response {
        var q = Wire.Query()
        q.kind = .nodes
        q.nodeID = id
        q.regionID = region ?? ""
        let answer = await controller.ask(.query(q), caller: caller)
        guard case .queryReply(let r) = answer else { return Self.refusal(answer) }
        guard let n = r.nodes.first else { return Self.problem(.notFound, "not_found", "node \(id) is not known") }
        return Self.jsonResponse(.ok, try n.jsonString(options: Self.json))
    }

    /// `GET /api/v1/resources?name=cg://…`: what a resource name names — the network (the
    /// overview), a region (as /regions shows it), or a node with its units (narrowed to the
    /// named device or partition). A name that does not parse is a 400 naming the bad segment.
    func resolve(_ text: String?, caller: Principal? = nil) async throws -> Response {
        guard let text, !text.isEmpty else {
            return Self.problem(.badRequest, "bad_request", "name: required, a resource name cg://[REGION[/NODE[/DEVICE[/PARTITION]]]]")
        }
        let name: ResourceName
        do { name = try ResourceName(parsing: text) } catch {
            return Self.problem(.badRequest, "bad_request", "name: \(error.description)")
        }
        func wrap(_ json: String) -> Response {
            Self.jsonResponse(.ok, #"{"resource":"\#(name)","level":"\#(name.level.rawValue)","\#(name.level == .network ? "overview" : name.level == .region ? "region" : "node")":\#(json)}"#)
        }
        switch name.level {
        case .network, .region:
            guard let o = await controller.observe(timeout: .seconds(5)) else {
                return Self.problem(.serviceUnavailable, "unavailable", "the controller's loop did not answer within 5 s")
            }
            let overview = Overview(o)
            if name.level == .network { return wrap(try Self.encode(overview)) }
            let region = overview.regions.first { $0.id == name.region?.rawValue }
            if let region { return wrap(try Self.encode(region)) }
            if controller.role == .region, o.id == name.region?.rawValue {
                return wrap(try Self.encode(overview))
            }
            return Self.problem(.notFound, "not_found", "\(name) is not a region this controller knows")
        case .node, .device, .partition:
            var q = Wire.Query()
            q.kind = .nodes
            q.resource = text
            let answer = await controller.ask(.query(q), caller: caller)
            guard case .queryReply(let r) = answer else { return Self.refusal(answer) }
            guard let n = r.nodes.first else { return Self.problem(.notFound, "not_found", "\(name) is not known") }
            return wrap(try n.jsonString(options: Self.json))
        }
    }

    /// A job's dated events (submitted, decided, held, each attempt's start and end, the end).
    func events(ofJob id: String, caller: Principal? = nil) async throws -> Response {
        var q = Wire.Query()
        q.kind = .job
        q.jobID = id
        let answer = await controller.ask(.query(q), caller: caller)
        guard case .queryReply(let r) = answer else { return Self.refusal(answer) }
        guard let w = r.jobs.first else { return Self.problem(.notFound, "not_found", "job \(id) is not known") }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .millisecondsSince1970
        return Self.jsonResponse(.ok, String(decoding: try e.encode(JobEvent.of(try w.record())), as: UTF8.self))
    }

    // MARK: who calls

    /// The bearer token of a request: the `Authorization` header, or for a GET the
    /// `access_token` query parameter (RFC 6750 §2.3: a browser's EventSource cannot set
    /// headers). Nil when there is none.
    static func bearer(_ request: Request) -> String? {
        if let header = request.headers[.authorization] {
            guard header.lowercased().hasPrefix("bearer ") else { return "" }
            return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        }
        if request.method == .get, let t = request.uri.queryParameters.get("access_token") { return String(t) }
        return nil
    }

    /// Who calls, or the refusal to send. A write needs a token; a read needs one unless reads
    /// are open (a token given anyway must be valid, and then binds the read to its tenant).
    /// `fleet`: a read of what runs where (nodes, accounts, the overview, metrics), which a token
    /// bound to a tenant may not make (as its ZeroMQ key may not).
    func authorise(_ request: Request, _ what: String, write: Bool = false, fleet: Bool = false) -> Authorisation {
        let given = Self.bearer(request)
        guard tokens.configured else {
            if !write && reads == .open { return .caller(nil) }
            return .refused(Self.problem(.forbidden, "forbidden", write
                ? "this API only reads: set http_token_file in the controller's configuration to allow \(what)"
                : "\(what) needs a bearer token (http_read: token) and this controller has no http_token_file: set one, or http_read: open"))
        }
        guard let given else {
            if !write && reads == .open { return .caller(nil) }
            return .refused(Self.problem(.unauthorized, "unauthorized", "\(what) needs 'Authorization: Bearer <token>' (a token from http_token_file)",
                                         headers: [.wwwAuthenticate: #"Bearer realm="computegrid""#]))
        }
        guard let who = tokens.principal(for: given) else {
            return .refused(Self.problem(.unauthorized, "unauthorized", "the bearer token is not one of http_token_file's",
                                         headers: [.wwwAuthenticate: #"Bearer realm="computegrid", error="invalid_token""#]))
        }
        if fleet, let tenant = who.tenant {
            return .refused(Self.problem(.forbidden, "forbidden",
                                         "http token \(who.operatorName ?? ""): a token bound to tenant '\(tenant)' reads its jobs, regions and services only, not \(what.replacingOccurrences(of: "reading ", with: ""))"))
        }
        return .caller(who)
    }

    /// A read as `who` may make it, or the refusal.
    func reading(_ request: Request, _ what: String, fleet: Bool = false, _ answer: (Principal?) async throws -> Response) async throws -> Response {
        switch authorise(request, what, fleet: fleet) {
        case .caller(let who): return try await answer(who)
        case .refused(let r): return r
        }
    }

    // MARK: writes

    func submit(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let caller: Principal?
        switch authorise(request, "submitting jobs", write: true) {
        case .caller(let who): caller = who
        case .refused(let r): return r
        }
        let name = caller?.operatorName ?? "?"
        guard controller.role == .national else {
            return Self.problem(.notFound, "unsupported", "submit jobs to the national scheduler, not to region \(controller.name)")
        }
        let body = try await request.body.collect(upTo: 4 << 20)
        let text = String(buffer: body)
        let entry: (spec: JobSpec, count: Int)
        do {
            entry = try JobFile.parseEntry(text, source: "request body")
        } catch {
            return Self.problem(.badRequest, "bad_request", "\(error)")
        }
        var item = Wire.SubmitItem()
        item.spec = Wire.JobSpec(entry.spec)
        item.count = UInt32(entry.count)
        if let id = request.uri.queryParameters.get("id") { item.jobID = String(id) }
        var s = Wire.Submit()
        s.items = [item]
        logger.notice("HTTP submit", metadata: ["caller": "\(name)", "jobs": "\(entry.count)"])
        let answer = await controller.ask(.submit(s), caller: caller)
        guard case .submitReply(let r) = answer else { return Self.refusal(answer) }
        return Self.jsonResponse(r.accepted ? .created : .unprocessableContent, try r.jsonString(options: Self.json))
    }

    func jobAction(_ action: String, id: String, _ request: Request) async throws -> Response {
        let caller: Principal?
        switch authorise(request, "\(action) of a job", write: true) {
        case .caller(let who): caller = who
        case .refused(let r): return r
        }
        let name = caller?.operatorName ?? "?"
        let reason = request.uri.queryParameters.get("reason").map { String($0) } ?? "by \(name) over HTTP"
        let body: Body
        switch action {
        case "cancel":
            var c = Wire.Cancel()
            c.jobID = id
            body = .cancel(c)
        default:
            var c = Wire.JobControl()
            c.jobID = id
            c.reason = reason
            c.action = action == "hold" ? .hold : action == "release" ? .release : .requeue
            body = .jobControl(c)
        }
        logger.notice("HTTP job \(action)", metadata: ["caller": "\(name)", "job": "\(id)"])
        let answer = await controller.ask(body, caller: caller)
        guard case .queryReply(let r) = answer else { return Self.refusal(answer) }
        guard let j = r.jobs.first else { return Self.jsonResponse(.accepted, try r.jsonString(options: Self.json)) }
        return Self.jsonResponse(.ok, try j.jsonString(options: Self.json))
    }

    func removeRegion(_ id: String, _ request: Request) async throws -> Response {
        let caller: Principal?
        switch authorise(request, "removing a region", write: true) {
        case .caller(let who): caller = who
        case .refused(let r): return r
        }
        let name = caller?.operatorName ?? "?"
        var m = Wire.RegionControl()
        m.regionID = id
        m.action = .remove
        logger.notice("HTTP region remove", metadata: ["caller": "\(name)", "region": "\(id)"])
        let answer = await controller.ask(.regionControl(m), caller: caller)
        guard case .queryReply = answer else { return Self.refusal(answer) }
        return try await regions()
    }

    func nodeAction(_ action: String, id: String, _ request: Request) async throws -> Response {
        let caller: Principal?
        switch authorise(request, "\(action) of a node", write: true) {
        case .caller(let who): caller = who
        case .refused(let r): return r
        }
        let name = caller?.operatorName ?? "?"
        var c = Wire.NodeCommand()
        c.nodeID = id
        c.regionID = request.uri.queryParameters.get("region").map { String($0) } ?? ""
        c.reason = request.uri.queryParameters.get("reason").map { String($0) } ?? "by \(name) over HTTP"
        c.action = action == "cordon" ? .cordon : action == "uncordon" ? .uncordon : .drain
        logger.notice("HTTP node \(action)", metadata: ["caller": "\(name)", "node": "\(id)"])
        let answer = await controller.ask(.nodeCommand(c), caller: caller)
        guard case .queryReply(let r) = answer else { return Self.refusal(answer) }
        guard let n = r.nodes.first else { return Self.problem(.notFound, "not_found", "node \(id) is not known") }
        return Self.jsonResponse(.ok, try n.jsonString(options: Self.json))
    }

    // MARK: live updates

    /// Server-sent events: an `overview` event at once and whenever the overview changes
    /// (checked every `eventInterval`), and a comment every 15 s so proxies keep the stream open.
    func events(_ request: Request) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-store"
        let controller = self.controller
        let interval = eventInterval
        let stopping = self.stopping
        return Response(status: .ok, headers: headers, body: .init { writer in
            var last = ""
            var quiet = Duration.zero
            var id = 0
            while !Task.isCancelled && !stopping.isRaised {
                if let o = await controller.observe(timeout: .seconds(5)) {
                    var view = Overview(o)
                    // A change of time alone is not news: the clock and each region's seconds
                    // since its summary are left out of the comparison.
                    view.observedAt = 0
                    let ages = view.regions.map(\.secondsSinceSummary)
                    for i in view.regions.indices { view.regions[i].secondsSinceSummary = nil }
                    let text = (try? Self.encode(view)) ?? "{}"
                    if text != last {
                        last = text
                        id += 1
                        view.observedAt = Int64(o.observedAt.timeIntervalSince1970 * 1000)
                        for (i, age) in ages.enumerated() { view.regions[i].secondsSinceSummary = age }
                        let full = (try? Self.encode(view)) ?? text
                        try await writer.write(ByteBuffer(string: "id: \(id)\nevent: overview\ndata: \(full)\n\n"))
                        quiet = .zero
                    }
                }
                if quiet >= .seconds(15) {
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    quiet = .zero
                }
                try await Task.sleep(for: interval)
                quiet += interval
            }
            try await writer.finish(nil)
        })
    }

    // MARK: helpers

    /// A page as `{"total", "next_offset", "<items>": [...]}`, every key present (proto3 JSON
    /// leaves out empty lists and zeros; a list endpoint should not).
    static func list(_ r: Wire.QueryReply, _ kind: Wire.Query.Kind) throws -> String {
        let items: [String]
        let key: String
        switch kind {
        case .nodes: key = "nodes"; items = try r.nodes.map { try $0.jsonString(options: json) }
        case .accounts: key = "accounts"; items = try r.accounts.map { try $0.jsonString(options: json) }
        case .services: key = "services"; items = try r.services.map { try $0.jsonString(options: json) }
        default: key = "jobs"; items = try r.jobs.map { try $0.jsonString(options: json) }
        }
        return #"{"total":\#(r.total),"next_offset":\#(r.nextOffset),"\#(key)":[\#(items.joined(separator: ","))]}"#
    }

    static func encode<T: Encodable>(_ value: T) throws -> String { try HTTPJSON.encode(value) }

    static func jsonResponse(_ status: HTTPResponse.Status, _ text: String) -> Response { HTTPJSON.response(status, text) }

    /// An error as `{"error": {"code", "message"}}`, the code the same as the protocol's.
    static func problem(_ status: HTTPResponse.Status, _ code: String, _ message: String, headers extra: HTTPFields = [:]) -> Response {
        HTTPProblem.response(status, code, message, headers: extra)
    }

    /// A protocol refusal as the HTTP status it means.
    static func refusal(_ answer: Body) -> Response {
        guard case .errorReply(let e) = answer else {
            return problem(.internalServerError, "internal", "the controller answered with \(answer.type)")
        }
        let status: HTTPResponse.Status
        switch e.code {
        case "not_found": status = .notFound
        case "bad_request": status = .badRequest
        case "unsupported": status = .notFound
        case "unavailable": status = .serviceUnavailable
        case "forbidden": status = .forbidden
        case "overloaded": status = .tooManyRequests
        default: status = .internalServerError
        }
        return problem(status, e.code, e.message)
    }

    static func resource(_ name: String, type: String) -> Response {
        guard let url = Bundle.module.url(forResource: "Resources/\(name)", withExtension: nil),
              let data = try? Data(contentsOf: url) else {
            return problem(.notFound, "not_found", "\(name) is not installed with this build")
        }
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

enum Authorisation {
    /// Nil: no token, and none needed (an open read).
    case caller(Principal?)
    case refused(Response)
}

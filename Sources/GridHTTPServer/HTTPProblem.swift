import Foundation
import Hummingbird

/// Errors over HTTP as `{"error": {"code", "message"}}`, the code the same as the protocol's
/// (`not_found`, `bad_request`, `forbidden`, ...): what the agent's and the controllers'
/// listeners answer instead of an empty body.
public enum HTTPProblem {
    public static func response(_ status: HTTPResponse.Status, _ code: String, _ message: String,
                                headers extra: HTTPFields = [:]) -> Response {
        struct Problem: Encodable { var error: Detail }
        struct Detail: Encodable { var code: String; var message: String }
        var r = HTTPJSON.response(status, (try? HTTPJSON.encode(Problem(error: Detail(code: code, message: message)))) ?? "{}")
        r.headers.append(contentsOf: extra)
        return r
    }
}

/// JSON bodies as the HTTP APIs write them: keys sorted and in snake_case.
public enum HTTPJSON {
    public static func encode<T: Encodable>(_ value: T) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try e.encode(value), as: UTF8.self)
    }

    public static func response(_ status: HTTPResponse.Status, _ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Unknown routes and thrown errors as JSON problems, not empty bodies.
public struct APIErrorMiddleware: RouterMiddleware {
    public typealias Context = BasicRequestContext

    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            if error.status == .notFound {
                return HTTPProblem.response(.notFound, "not_found", "no route \(request.method) \(request.uri.path); see /openapi.yaml")
            }
            return HTTPProblem.response(error.status, "bad_request", error.body ?? "\(error.status)")
        } catch {
            return HTTPProblem.response(.internalServerError, "internal", "\(error)")
        }
    }
}

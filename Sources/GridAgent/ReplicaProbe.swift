import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A replica's HTTP probe (SERVICES.md, "Probes"): GET with a deadline on AsyncHTTPClient's
/// shared client, the answer handed to `done` on the client's event loop (the shell posts it
/// to the agent's loop). A 2xx or 3xx passes; anything else, a refused connection or the
/// deadline fails, with what happened in `detail`.
enum ReplicaProbe {
    static func get(_ url: String, timeoutMs: Int64, done: @escaping @Sendable (Bool, String) -> Void) {
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: url, method: .GET, headers: ["User-Agent": "grid-agent-probe", "Connection": "keep-alive"])
        } catch {
            done(false, "bad probe URL \(url): \(error)")
            return
        }
        HTTPClient.shared.execute(request: request, deadline: .now() + .milliseconds(timeoutMs)).whenComplete { result in
            switch result {
            case .success(let response):
                let code = response.status.code
                done((200..<400).contains(code), "HTTP \(code)")
            case .failure(let error):
                done(false, "\(error)")
            }
        }
    }
}

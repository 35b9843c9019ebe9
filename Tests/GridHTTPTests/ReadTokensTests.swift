import Foundation
import GridCore
import GridHTTPServer
import Testing

/// The agent's `http_token_file`: what a line may be, how a header is matched, and that a
/// broken file on reload keeps the tokens in force.
@Suite struct ReadTokensTests {
    func file(_ text: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tokens-\(UUID().uuidString)")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    @Test func headersMatchListedTokensOnly() throws {
        let t = try ReadTokens(path: try file("# scrapers\nprom  aaaaaaaaaaaaaaaa1\n\nci\tbbbbbbbbbbbbbbbb2\n"))
        #expect(t.count == 2)
        #expect(t.name(authorization: "Bearer aaaaaaaaaaaaaaaa1") == "prom")
        #expect(t.name(authorization: "bearer bbbbbbbbbbbbbbbb2") == "ci", "the scheme is case-insensitive")
        #expect(t.name(authorization: "Bearer aaaaaaaaaaaaaaaa") == nil, "a prefix of a token is not the token")
        #expect(t.name(authorization: "Bearer aaaaaaaaaaaaaaaa12") == nil)
        #expect(t.name(authorization: "Basic YWxhZGRpbjpvcGVuc2VzYW1l") == nil)
        #expect(t.name(authorization: "Bearer ") == nil && t.name(authorization: nil) == nil)
        #expect(try ReadTokens(path: "").configured == false)
    }

    @Test func problemsNameTheirLineAndAReloadKeepsWhatWorked() throws {
        #expect {
            _ = try ReadTokens(path: try file("one\nshort tok\nx cccccccccccccccc3\ny cccccccccccccccc3\n"))
        } throws: { error in
            let e = "\(error)"
            return e.contains("line 1: expected '<name> <token>', got 1 field(s)")
                && e.contains("line 2: the token of 'short' is shorter than 16 characters")
                && e.contains("line 4: the token of 'y' is also on line 3")
        }
        #expect(throws: ConfigError.self) { _ = try ReadTokens(path: try file("# nobody\n")) }
        let path = try file("prom dddddddddddddddd4\n")
        let t = try ReadTokens(path: path)
        try "prom eeee\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try t.reload() }
        #expect(t.name(authorization: "Bearer dddddddddddddddd4") == "prom", "the tokens in force stay")
    }
}

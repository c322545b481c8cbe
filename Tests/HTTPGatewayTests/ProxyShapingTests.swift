import Foundation
@testable import HTTPGateway
import Testing

@Suite("HTTP request shaping")
struct ProxyShapingTests {
    @Test func canonicalPathDecodesAndReencodesTheSameSegments() throws {
        let path = try CanonicalPath(raw: "/config/my%20key/caf%C3%A9")
        #expect(path.decoded == "/config/my key/café")
        #expect(path.encoded == "/config/my%20key/caf%C3%A9")
        #expect(try CanonicalPath(raw: "").decoded == "/")
        #expect(try CanonicalPath(raw: "/a//b/").decoded == "/a/b/", "empty segments collapse; a trailing slash stays")
        let delimiters = try CanonicalPath(raw: "/a,b/c%3Dd/e+f!")
        #expect(delimiters.decoded == "/a,b/c=d/e+f!")
        #expect(delimiters.encoded == "/a%2Cb/c%3Dd/e%2Bf%21", "sub-delimiters always travel encoded")
    }

    @Test(arguments: [
        ("/config/..", CanonicalPath.Problem.dotSegment),
        ("/config/%2e%2e/admin", .dotSegment),
        ("/./x", .dotSegment),
        ("/config%2Fsecret", .forbiddenCharacter),
        ("/a%5Cb", .forbiddenCharacter),
        ("/a%00b", .forbiddenCharacter),
        ("/a%zz", .badEncoding),
        ("/public/..;/admin", .pathParameter),
        ("/public/..%3B/admin", .pathParameter),
        ("/admin;x/users", .pathParameter),
        ("/a%0Ab", .forbiddenCharacter),
        ("/a%1Bb", .forbiddenCharacter),
        ("/a%7Fb", .forbiddenCharacter),
    ])
    func pathsThatCouldMeanSomethingElseUpstreamAreRefused(raw: String, problem: CanonicalPath.Problem) {
        #expect(throws: problem) { try CanonicalPath(raw: Substring(raw)) }
    }

    @Test func overlongPathIsRefused() {
        #expect(throws: CanonicalPath.Problem.tooLong) {
            try CanonicalPath(raw: Substring("/" + String(repeating: "a", count: CanonicalPath.maximumBytes)))
        }
    }

    @Test func upstreamHeadersDropTheClientsCredentialsAndHopByHopHeaders() {
        let client: HeaderShaping.Fields = [
            ("Host", "gateway:8080"), ("Authorization", "Bearer client-token"), ("Connection", "keep-alive, X-Private"),
            ("X-Private", "hop"), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"), ("Content-Length", "10"),
            ("X-Api-Key", "client-chosen"), ("Gatehouse-Intent", "why"), ("X-Forwarded-For", "10.9.9.9"),
            ("Accept", "application/json"), ("Content-Type", "text/plain"),
        ]
        let shaped = HeaderShaping.upstream(
            client: client, credentialHeader: ("X-Api-Key", "real-key"), clientAddress: "127.0.0.1",
            clientHost: "gateway:8080", clientProtocol: "http")
        let names = shaped.map { $0.name.lowercased() }
        #expect(!names.contains("authorization"))
        #expect(!names.contains("connection") && !names.contains("x-private") && !names.contains("keep-alive"))
        #expect(!names.contains("transfer-encoding") && !names.contains("content-length") && !names.contains("host"))
        #expect(!names.contains("gatehouse-intent"))
        #expect(shaped.filter { $0.name.lowercased() == "x-api-key" }.map(\.value) == ["real-key"], "the client cannot choose the credential")
        #expect(shaped.filter { $0.name == "X-Forwarded-For" }.map(\.value) == ["127.0.0.1"], "the client cannot forge its address")
        #expect(shaped.contains { $0.name == "Accept" && $0.value == "application/json" })
        #expect(shaped.contains { $0.name == "Content-Type" })
    }

    @Test func recordedHeadersNeverHoldCredentialValues() {
        let recorded = HeaderShaping.recorded(
            [("Authorization", "Bearer t"), ("Cookie", "s=1"), ("X-Custom-Key", "k"), ("Accept", "*/*")],
            alsoRedacting: ["x-custom-key"])
        #expect(recorded.map(\.1) == ["[redacted]", "[redacted]", "[redacted]", "*/*"])
    }

    @Test func downstreamHeadersDropFraming() {
        let shaped = HeaderShaping.downstream(upstream: [
            ("Content-Length", "5"), ("Transfer-Encoding", "chunked"), ("Connection", "close"), ("Content-Type", "text/plain"),
        ])
        #expect(shaped.map(\.name) == ["Content-Type"])
    }

    @Test func injectedQueryParameterReplacesTheClients() {
        #expect(QueryShaping.inject(into: "a=1&api_key=mine&b=2", name: "api_key", value: "s3cr/t") == "a=1&b=2&api_key=s3cr%2Ft")
        #expect(QueryShaping.inject(into: nil, name: "k", value: "v") == "k=v")
        #expect(QueryShaping.inject(into: "api%5Fkey=x", name: "api_key", value: "v") == "api_key=v", "an encoded name is the same name")
    }

    @Test func sessionIDsGroupByTokenWithoutRevealingIt() {
        let one = HTTPProxy.sessionID(token: "token-one", label: nil)
        #expect(one == HTTPProxy.sessionID(token: "token-one", label: nil))
        #expect(one != HTTPProxy.sessionID(token: "token-two", label: nil))
        #expect(!one.contains("token"))
        #expect(HTTPProxy.sessionID(token: "token-one", label: "run 7/x") == one + "-run7x")
    }

    @Test func bearerTokensAreTakenFromTheAuthorizationHeaderOnly() {
        #expect(HTTPProxy.bearerToken("Bearer abc.def") == "abc.def")
        #expect(HTTPProxy.bearerToken("bEaReR   abc  ") == "abc")
        #expect(HTTPProxy.bearerToken("Basic YWxhZGRpbjpvcGVuc2VzYW1l") == nil)
        #expect(HTTPProxy.bearerToken("Bearer ") == nil)
        #expect(HTTPProxy.bearerToken("Bearerabc") == nil)
        #expect(HTTPProxy.bearerToken(nil) == nil)
    }

    @Test func queryValuesThatLookLikeSecretsAreRedactedForTheRecord() {
        #expect(QueryShaping.redacted("a=1&API_KEY=s3&token=x&tokenish=y", names: QueryShaping.sensitiveNames)
            == "a=1&API_KEY=[redacted]&token=[redacted]&tokenish=y")
        #expect(QueryShaping.redacted("flag&key", names: ["key"]) == "flag&key", "a name without a value has nothing to hide")
    }

    @Test func echoedCredentialsAreScrubbedInEveryForm() {
        let basic = SecretScrubber(.basic(username: "svc", password: "hunter2-long"))
        let header = UpstreamCredential.basic(username: "svc", password: "hunter2-long")
        guard case .header(_, let value) = header else { return }
        #expect(basic.scrub("got \(value)") == "got [credential]")
        #expect(basic.scrub("password=hunter2-long") == "password=[credential]")
        let bearer = SecretScrubber(.bearer("tok-abcdef"))
        #expect(bearer.scrub("Authorization: Bearer tok-abcdef") == "Authorization: [credential]")
        #expect(bearer.scrub("just tok-abcdef") == "just [credential]")
        let query = SecretScrubber(.queryParameter(name: "key", value: "k/v+secret"))
        #expect(query.scrub("Location: /next?key=k%2Fv%2Bsecret") == "Location: /next?key=[credential]")
        #expect(SecretScrubber(nil).scrub("nothing") == "nothing")
        #expect(SecretScrubber.occurs("aab", in: "xaaab"), "a false start just before the match")
        #expect(SecretScrubber.occurs("secret", in: "the secret"))
        #expect(!SecretScrubber.occurs("secret", in: "the secre"))
        #expect(!SecretScrubber.occurs("longer than the text", in: "short"))
        // Echoed next to a combining mark, twice, and at both ends: replaced as bytes every time.
        #expect(bearer.scrub("tok-abcdef\u{301} and tok-abcdeftok-abcdef") == "[credential]\u{301} and [credential][credential]")
    }

    @Test func paddedHeadersCannotPushTheBodyOutOfTheRecord() throws {
        let headers = (0..<60).map { ("x-pad-\($0)", String(repeating: "p", count: 2000)) }
        let payload = HTTPProxy.payload(headers: headers, body: "the body that matters", truncated: false, maxBytes: 64 * 1024)
        #expect(payload.text.utf8.count <= 64 * 1024)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(payload.text.utf8)) as? [String: Any])
        #expect(object["body"] as? String == "the body that matters")
        #expect(object["headers_truncated"] as? Bool == true)
    }

    @Test func payloadStaysValidJSONWhenCut() throws {
        let payload = HTTPProxy.payload(
            headers: [("accept", "*/*")], body: String(repeating: "é", count: 5000), truncated: false, maxBytes: 1000)
        #expect(payload.truncated)
        #expect(payload.text.utf8.count <= 1000)
        let object = try JSONSerialization.jsonObject(with: Data(payload.text.utf8)) as? [String: Any]
        #expect(object?["body_truncated"] as? Bool == true)
    }
}

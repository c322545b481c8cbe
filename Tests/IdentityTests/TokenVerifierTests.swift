import CryptoExtras
import Foundation
import GatehouseCore
import JWTKit
import Testing

@testable import Identity

/// Serves discovery and key sets from memory and counts fetches. Unit tests of the token checks
/// need exact control over the published keys; the integration suite uses a real provider.
final class StaticKeySetFetcher: KeySetFetching, @unchecked Sendable {
    private let lock = NSLock()
    private var documents: [String: Data] = [:]
    private var fetches: [String] = []

    func publish(_ url: String, _ json: [String: JSONValue]) {
        lock.withLock { documents[url] = try! JSONEncoder().encode(json) }
    }

    var fetchCount: Int { lock.withLock { fetches.count } }

    func fetch(_ url: String) async throws -> Data {
        try lock.withLock {
            fetches.append(url)
            guard let data = documents[url] else { throw GatehouseError("test.not-found", url) }
            return data
        }
    }
}

/// A small identity provider in memory: signs tokens with keys it publishes through `fetcher`.
struct TestIssuer {
    static let issuer = "https://idp.test"
    static let jwksURL = "https://idp.test/keys"
    let fetcher = StaticKeySetFetcher()
    let keys = JWTKeyCollection()
    let rsaKey: JWTKit.Insecure.RSA.PrivateKey

    init() async throws {
        rsaKey = try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        await keys.add(rsa: rsaKey, digestAlgorithm: .sha256, kid: "rsa-1")
        let (n, e) = try rsaKey.publicKey.getKeyPrimitives()
        fetcher.publish(Self.issuer + "/.well-known/openid-configuration", ["issuer": .string(Self.issuer), "jwks_uri": .string(Self.jwksURL)])
        publish([["kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": n.base64URLEncoded, "e": e.base64URLEncoded]])
    }

    func publish(_ keys: [[String: String]]) {
        fetcher.publish(Self.jwksURL, ["keys": .array(keys.map { .object($0.mapValues { .string($0) }) })])
    }

    struct Claims: JWTPayload {
        var iss: String = TestIssuer.issuer
        var sub: String = "alice"
        var aud: [String] = ["gatehouse"]
        var exp: Int = Int(Date().timeIntervalSince1970) + 300
        var nbf: Int? = nil
        var iat: Int? = Int(Date().timeIntervalSince1970)
        var email: String? = "alice@example.com"
        var groups: [String]? = ["dev", "oncall"]
        var azp: String? = nil
        var act: [String: JSONValue]? = nil
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    func sign(_ claims: Claims = Claims(), kid: String = "rsa-1") async throws -> String {
        try await keys.sign(claims, kid: JWKIdentifier(string: kid))
    }

    func keySet(minimumRefetchInterval: TimeInterval = 30) -> IssuerKeys {
        IssuerKeys(
            settings: IssuerSettings(name: "test", issuer: Self.issuer, audiences: ["gatehouse"], agents: ["agent-client": "claude-code"]),
            fetcher: fetcher,
            minimumRefetchInterval: minimumRefetchInterval)
    }

    func verifier(minimumRefetchInterval: TimeInterval = 30) -> TokenVerifier {
        TokenVerifier(issuers: [keySet(minimumRefetchInterval: minimumRefetchInterval)], apiKeys: nil, clockSkew: 30)
    }
}

/// Claims of any shape, for tokens with malformed or unusual claim values.
struct RawClaims: JWTPayload {
    var claims: [String: JSONValue]
    init(claims: [String: JSONValue]) { self.claims = claims }
    init(from decoder: any Decoder) throws { claims = try [String: JSONValue](from: decoder) }
    func encode(to encoder: any Encoder) throws { try claims.encode(to: encoder) }
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Never answers, like an identity provider that accepted the connection and hung.
struct StalledFetcher: KeySetFetching {
    func fetch(_ url: String) async throws -> Data {
        try await Task.sleep(for: .seconds(3600))
        return Data()
    }
}

/// Builds a compact JWS from raw parts, for tokens no honest library would produce.
func forge(header: [String: String], payload: TestIssuer.Claims, signature: [UInt8] = []) throws -> String {
    let encoder = JSONEncoder()
    let h = try encoder.encode(header).base64URLEncoded
    let p = try encoder.encode(payload).base64URLEncoded
    return "\(h).\(p).\(Data(signature).base64URLEncoded)"
}

func rejection(_ result: Result<Principal, TokenRejection>) -> TokenRejection.Reason? {
    if case .failure(let rejection) = result { return rejection.reason }
    return nil
}

@Suite("Token verification")
struct TokenVerifierTests {
    let client = ClientInfo(address: "127.0.0.1:5555", application: "psql")

    @Test func aValidTokenBecomesAPrincipal() async throws {
        let idp = try await TestIssuer()
        let principal = try await idp.verifier().verify(try await idp.sign(), client: client).get()
        #expect(principal.subject == "alice")
        #expect(principal.email == "alice@example.com")
        #expect(principal.groups == ["dev", "oncall"])
        #expect(principal.issuer == TestIssuer.issuer)
        #expect(principal.client == client)
        #expect(principal.agent == nil)
    }

    @Test func theActClaimNamesTheAgentChain() async throws {
        let idp = try await TestIssuer()
        var claims = TestIssuer.Claims()
        claims.act = ["sub": .string("claude-code"), "act": .object(["sub": .string("orchestrator")])]
        let principal = try await idp.verifier().verify(try await idp.sign(claims), client: client).get()
        #expect(principal.actors.map(\.subject) == ["claude-code", "orchestrator"])
        #expect(principal.agent == "claude-code")
    }

    @Test func aConfiguredClientIDNamesTheAgentWhenThereIsNoActClaim() async throws {
        let idp = try await TestIssuer()
        var claims = TestIssuer.Claims()
        claims.azp = "agent-client"
        let principal = try await idp.verifier().verify(try await idp.sign(claims), client: client).get()
        #expect(principal.agent == "claude-code")
        #expect(principal.actors.first?.clientID == "agent-client")
    }

    @Test func algNoneIsRejected() async throws {
        let idp = try await TestIssuer()
        let token = try forge(header: ["alg": "none", "typ": "JWT"], payload: .init())
        #expect(rejection(await idp.verifier().verify(token, client: client)) == .algorithmNone)
    }

    @Test func hs256SignedWithTheRSAPublicKeyIsRejected() async throws {
        let idp = try await TestIssuer()
        // The classic confusion attack: the public key (which anyone may have) used as an HMAC secret.
        let publicPEM = Data(idp.rsaKey.publicKey.pemRepresentation.utf8)
        let attacker = JWTKeyCollection()
        await attacker.add(hmac: HMACKey(from: publicPEM), digestAlgorithm: .sha256, kid: "rsa-1")
        let token = try await attacker.sign(TestIssuer.Claims(), kid: "rsa-1")
        #expect(rejection(await idp.verifier().verify(token, client: client)) == .algorithmNotAllowed)
    }

    @Test func anAlgorithmOtherThanTheKeysPinnedOneIsRejected() async throws {
        let idp = try await TestIssuer()
        let pss = JWTKeyCollection()
        await pss.add(pss: idp.rsaKey, digestAlgorithm: .sha256, kid: "rsa-1")
        let token = try await pss.sign(TestIssuer.Claims(), kid: "rsa-1")
        #expect(rejection(await idp.verifier().verify(token, client: client)) == .algorithmMismatch)
    }

    @Test func anUnknownKidIsRejectedAfterOneRefetch() async throws {
        let idp = try await TestIssuer()
        let verifier = idp.verifier()
        _ = try await verifier.verify(try await idp.sign(), client: client).get()
        let fetchesBefore = idp.fetcher.fetchCount
        let other = JWTKeyCollection()
        await other.add(ecdsa: ES256PrivateKey(), kid: "stranger")
        let token = try await other.sign(TestIssuer.Claims(), kid: "stranger")
        // Rate limited: the verifier that fetched a moment ago does not fetch again.
        #expect(rejection(await verifier.verify(token, client: client)) == .unknownKeyID)
        #expect(idp.fetcher.fetchCount == fetchesBefore)

        let unthrottled = idp.verifier(minimumRefetchInterval: 0)
        _ = try await unthrottled.verify(try await idp.sign(), client: client).get()
        let loaded = idp.fetcher.fetchCount
        #expect(rejection(await unthrottled.verify(token, client: client)) == .unknownKeyID)
        #expect(idp.fetcher.fetchCount == loaded + 2, "one discovery + one key set fetch, then refused")
    }

    @Test func aRotatedKeyIsPickedUpByRefetchingOnAnUnknownKid() async throws {
        let idp = try await TestIssuer()
        let verifier = idp.verifier(minimumRefetchInterval: 0)
        _ = try await verifier.verify(try await idp.sign(), client: client).get()

        let newKey = ES256PrivateKey()
        await idp.keys.add(ecdsa: newKey, kid: "ec-2")
        let parameters = try #require(newKey.publicKey.parameters)
        idp.publish([["kty": "EC", "crv": "P-256", "kid": "ec-2", "x": parameters.x, "y": parameters.y]])

        let principal = try await verifier.verify(try await idp.sign(kid: "ec-2"), client: client).get()
        #expect(principal.subject == "alice")
        // The retired key is gone from the published set, so its tokens no longer verify.
        #expect(rejection(await verifier.verify(try await idp.sign(kid: "rsa-1"), client: client)) == .unknownKeyID)
    }

    @Test func aRememberedTokenStopsWorkingOnceItsKeyIsWithdrawn() async throws {
        let idp = try await TestIssuer()
        let verifier = idp.verifier(minimumRefetchInterval: 0)
        let token = try await idp.sign()
        _ = try await verifier.verify(token, client: client).get()
        _ = try await verifier.verify(token, client: client).get()

        let newKey = ES256PrivateKey()
        await idp.keys.add(ecdsa: newKey, kid: "ec-2")
        let parameters = try #require(newKey.publicKey.parameters)
        idp.publish([["kty": "EC", "crv": "P-256", "kid": "ec-2", "x": parameters.x, "y": parameters.y]])
        try await verifier.issuers[0].refresh()

        #expect(rejection(await verifier.verify(token, client: client)) == .unknownKeyID,
                "the cache never outlives the key that verified the token")
    }

    @Test func aWrongIssuerIsRejected() async throws {
        let idp = try await TestIssuer()
        var claims = TestIssuer.Claims()
        claims.iss = "https://evil.test"
        #expect(rejection(await idp.verifier().verify(try await idp.sign(claims), client: client)) == .wrongIssuer)
    }

    @Test func aWrongAudienceIsRejected() async throws {
        let idp = try await TestIssuer()
        var claims = TestIssuer.Claims()
        claims.aud = ["some-other-service"]
        #expect(rejection(await idp.verifier().verify(try await idp.sign(claims), client: client)) == .wrongAudience)
    }

    @Test func anExpiredTokenIsRejectedBeyondTheSkew() async throws {
        let idp = try await TestIssuer()
        var claims = TestIssuer.Claims()
        // Within the 30 s skew, with room for a slow machine between signing and checking.
        claims.exp = Int(Date().timeIntervalSince1970) - 5
        _ = try await idp.verifier().verify(try await idp.sign(claims), client: client).get()
        claims.exp = Int(Date().timeIntervalSince1970) - 120
        #expect(rejection(await idp.verifier().verify(try await idp.sign(claims), client: client)) == .expired)
    }

    @Test func aVerifiedTokenIsRememberedOnlyUntilTheCacheLifetimeAndItsExpiry() async throws {
        let idp = try await TestIssuer()
        let clock = TestClock(Date())
        let verifier = TokenVerifier(
            issuers: [idp.keySet()], apiKeys: nil, clockSkew: 0, cacheSeconds: 60, now: { clock.now })
        var claims = TestIssuer.Claims()
        claims.exp = Int(clock.now.timeIntervalSince1970) + 30
        let token = try await idp.sign(claims)
        let first = try await verifier.verify(token, client: client).get()
        let other = ClientInfo(address: "127.0.0.2:1", application: "curl")
        let again = try await verifier.verify(token, client: other).get()
        #expect(again.subject == first.subject && again.groups == first.groups)
        #expect(again.client == other, "the cached principal takes this request's client")
        clock.advance(by: 31)
        #expect(rejection(await verifier.verify(token, client: client)) == .expired, "a remembered token still expires")
    }

    @Test func aTokenNotYetValidIsRejected() async throws {
        let idp = try await TestIssuer()
        var claims = TestIssuer.Claims()
        claims.nbf = Int(Date().timeIntervalSince1970) + 600
        #expect(rejection(await idp.verifier().verify(try await idp.sign(claims), client: client)) == .notYetValid)
    }

    @Test(arguments: [
        ("not-a-token", TokenRejection.Reason.malformed),
        ("a.b", .malformed),
        ("a.b.c.d", .malformed),
        ("!!!.e30.sig", .malformed),
        ("e30.bm90IGpzb24.c2ln", .malformed),  // payload is not JSON
        ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", .malformed),  // no iss
        ("", .missing),
    ])
    func malformedTokensAreRejected(token: String, expected: TokenRejection.Reason) async throws {
        let idp = try await TestIssuer()
        #expect(rejection(await idp.verifier().verify(token, client: client)) == expected)
    }

    @Test(arguments: [
        ["exp": JSONValue.number(1e300)],
        ["exp": .string("tomorrow")],
        ["exp": .number(Date().timeIntervalSince1970 + 300), "nbf": .number(-1e300)],
        ["exp": .number(Date().timeIntervalSince1970 + 300), "iat": .string("now")],
        [:],  // no exp at all
    ])
    func timeClaimsThatAreMissingOrAbsurdAreMalformed(times: [String: JSONValue]) async throws {
        let idp = try await TestIssuer()
        var claims: [String: JSONValue] = ["iss": .string(TestIssuer.issuer), "sub": .string("alice"), "aud": .string("gatehouse")]
        claims.merge(times) { $1 }
        let token = try await idp.keys.sign(RawClaims(claims: claims), kid: "rsa-1")
        #expect(rejection(await idp.verifier().verify(token, client: client)) == .malformed)
    }

    @Test func aSpaceSeparatedAudienceIsOneAudience() async throws {
        let idp = try await TestIssuer()
        let claims: [String: JSONValue] = [
            "iss": .string(TestIssuer.issuer), "sub": .string("alice"), "aud": .string("other-api gatehouse"),
            "exp": .number(Date().timeIntervalSince1970 + 300),
        ]
        let token = try await idp.keys.sign(RawClaims(claims: claims), kid: "rsa-1")
        #expect(rejection(await idp.verifier().verify(token, client: client)) == .wrongAudience)
    }

    @Test func aKidlessTokenIsAcceptedOnlyWhenTheIssuerHasASingleKey() async throws {
        let idp = try await TestIssuer()
        let key = ES256PrivateKey()
        let parameters = try #require(key.publicKey.parameters)
        idp.publish([["kty": "EC", "crv": "P-256", "x": parameters.x, "y": parameters.y]])
        let signer = JWTKeyCollection()
        await signer.add(ecdsa: key)
        let token = try await signer.sign(TestIssuer.Claims())
        #expect(try await idp.verifier().verify(token, client: client).get().subject == "alice")

        let other = try #require(ES256PrivateKey().publicKey.parameters)
        idp.publish([
            ["kty": "EC", "crv": "P-256", "x": parameters.x, "y": parameters.y],
            ["kty": "EC", "crv": "P-256", "x": other.x, "y": other.y],
        ])
        #expect(rejection(await idp.verifier().verify(token, client: client)) == .unknownKeyID)
    }

    @Test func encryptionKeysAreNeverUsedToVerify() async throws {
        let idp = try await TestIssuer()
        let (n, e) = try idp.rsaKey.publicKey.getKeyPrimitives()
        idp.publish([["kty": "RSA", "kid": "rsa-1", "use": "enc", "n": n.base64URLEncoded, "e": e.base64URLEncoded]])
        #expect(rejection(await idp.verifier().verify(try await idp.sign(), client: client)) == .keysUnavailable)
    }

    @Test func aKeySetPublishingOneKidTwiceIsRefused() async throws {
        let idp = try await TestIssuer()
        let (n, e) = try idp.rsaKey.publicKey.getKeyPrimitives()
        let other = try #require(ES256PrivateKey().publicKey.parameters)
        idp.publish([
            ["kty": "RSA", "kid": "rsa-1", "n": n.base64URLEncoded, "e": e.base64URLEncoded],
            ["kty": "EC", "crv": "P-256", "kid": "rsa-1", "x": other.x, "y": other.y],
        ])
        let keys = idp.keySet()
        await #expect(throws: GatehouseError.self) { try await keys.refresh() }
        #expect(await keys.isReady == false)
    }

    @Test func discoveryNamingAnotherIssuerIsRefused() async throws {
        let idp = try await TestIssuer()
        idp.fetcher.publish(TestIssuer.issuer + "/.well-known/openid-configuration", ["issuer": .string("https://evil.test"), "jwks_uri": .string(TestIssuer.jwksURL)])
        let keys = idp.keySet()
        await #expect(throws: GatehouseError.self) { try await keys.refresh() }
    }

    @Test func aPlainHTTPKeySetOffLoopbackIsRefused() async throws {
        let idp = try await TestIssuer()
        idp.fetcher.publish(TestIssuer.issuer + "/.well-known/openid-configuration", ["issuer": .string(TestIssuer.issuer), "jwks_uri": .string("http://idp.test/keys")])
        let keys = idp.keySet()
        await #expect(throws: GatehouseError.self) { try await keys.refresh() }
        #expect(await keys.isReady == false)
    }

    @Test func concurrentUnknownKidsShareOneRefetch() async throws {
        let idp = try await TestIssuer()
        let verifier = idp.verifier(minimumRefetchInterval: 0)
        _ = try await verifier.verify(try await idp.sign(), client: client).get()
        let before = idp.fetcher.fetchCount
        let stranger = JWTKeyCollection()
        await stranger.add(ecdsa: ES256PrivateKey(), kid: "stranger")
        let token = try await stranger.sign(TestIssuer.Claims(), kid: "stranger")
        let client = self.client
        let reasons = await withTaskGroup(of: TokenRejection.Reason?.self) { group in
            for _ in 0..<20 { group.addTask { rejection(await verifier.verify(token, client: client)) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(reasons.allSatisfy { $0 == .unknownKeyID })
        // Each refetch is a discovery plus a key set fetch; concurrent misses join the one under way.
        #expect(idp.fetcher.fetchCount - before < 20)
    }

    /// The provider never answers; without the deadline this would wait an hour (the time limit
    /// fails it long before).
    @Test(.timeLimit(.minutes(1)))
    func aStalledProviderCannotHoldRequestsPastTheDeadline() async throws {
        let keys = IssuerKeys(
            settings: IssuerSettings(name: "slow", issuer: "https://slow.test", audiences: ["gatehouse"]),
            fetcher: StalledFetcher(),
            fetchDeadline: .milliseconds(200))
        await #expect(throws: GatehouseError.self) { try await keys.refresh() }
        #expect(await keys.isReady == false)
    }

    @Test func anOversizedTokenIsRejectedUnparsed() async throws {
        let idp = try await TestIssuer()
        var claims = TestIssuer.Claims()
        claims.groups = (0..<2000).map { "group-\($0)" }
        #expect(rejection(await idp.verifier().verify(try await idp.sign(claims), client: client)) == .oversized)
    }

    @Test func aTamperedPayloadFailsTheSignature() async throws {
        let idp = try await TestIssuer()
        let parts = try await idp.sign().split(separator: ".")
        var claims = TestIssuer.Claims()
        claims.sub = "root"
        let payload = try JSONEncoder().encode(claims).base64URLEncoded
        let token = "\(parts[0]).\(payload).\(parts[2])"
        #expect(rejection(await idp.verifier().verify(token, client: client)) == .badSignature)
    }

    @Test func symmetricKeysInAKeySetAreNeverUsed() async throws {
        let idp = try await TestIssuer()
        idp.publish([["kty": "oct", "kid": "shared", "alg": "HS256", "k": "c2VjcmV0"]])
        let keys = idp.keySet()
        await #expect(throws: GatehouseError.self) { try await keys.refresh() }
        #expect(await keys.isReady == false)
    }
}

final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date

    init(_ start: Date) { current = start }

    var now: Date {
        lock.lock()
        defer { lock.unlock() }
        return current
    }

    func advance(by seconds: TimeInterval) {
        lock.lock()
        current += seconds
        lock.unlock()
    }
}

import Foundation
import GatehouseCore
import Logging
import Metrics

/// Turns a bearer credential (an OIDC JWT or a gateway API key) into a Principal, or says exactly
/// why not. Every listener calls this one type, so every protocol applies the same checks.
public struct TokenVerifier: Sendable {
    public let issuers: [IssuerKeys]
    public let apiKeys: APIKeyStore?
    /// Tolerance for clocks that disagree, applied to `exp`, `nbf` and `iat`.
    public let clockSkew: TimeInterval
    let now: @Sendable () -> Date
    private let verified: VerifiedTokenCache?

    /// - Parameter cacheSeconds: how long a verified JWT is remembered, so a client sending the same
    ///   token on every request pays for its signature once (never past the token's own `exp`).
    ///   A remembered token is trusted only while the exact key that verified it is still published.
    ///   0 turns the cache off. API keys are never cached: revoking one applies to the next request.
    public init(
        issuers: [IssuerKeys],
        apiKeys: APIKeyStore?,
        clockSkew: TimeInterval = 60,
        cacheSeconds: TimeInterval = 60,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.issuers = issuers
        self.apiKeys = apiKeys
        self.clockSkew = clockSkew
        self.now = now
        self.verified = cacheSeconds > 0 ? VerifiedTokenCache(lifetime: cacheSeconds) : nil
    }

    /// Signing algorithms accepted at all. Symmetric algorithms are excluded: the gateway holds
    /// only public keys, and accepting HS256 is how RSA public keys get abused as HMAC secrets.
    static let asymmetricAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    public func verify(_ credential: String, client: ClientInfo) async -> Result<Principal, TokenRejection> {
        let result: Result<Principal, TokenRejection>
        do {
            result = .success(try await principal(for: credential, client: client))
        } catch {
            result = .failure(error)
        }
        if case .failure(let rejection) = result {
            Counter(label: "gatehouse_token_rejections_total", dimensions: [("reason", rejection.reason.rawValue)]).increment()
        }
        return result
    }

    private func principal(for credential: String, client: ClientInfo) async throws(TokenRejection) -> Principal {
        guard !credential.isEmpty else { throw TokenRejection(.missing, "no credential presented") }
        // Checked before anything else looks at the bytes, API keys included.
        guard credential.utf8.count <= CompactJWT.maximumBytes else {
            throw TokenRejection(.oversized, "credential is \(credential.utf8.count) bytes, over the \(CompactJWT.maximumBytes) byte limit")
        }
        if credential.hasPrefix(APIKeyStore.prefix) {
            guard let apiKeys else { throw TokenRejection(.unknownAPIKey, "API keys are not enabled") }
            var principal = try await apiKeys.principal(for: credential)
            principal.client = client
            return principal
        }
        let now = now().timeIntervalSince1970
        if let entry = verified?.entry(for: credential, now: now) {
            // The signature was checked before; the key that checked it must still be published.
            if entry.checked.keys.stillPublishes(entry.checked.kid, material: entry.checked.material) {
                var principal = entry.checked.principal
                principal.client = client
                return principal
            }
            verified?.forget(credential)
        }
        let checked = try await verifyJWT(credential, client: client)
        verified?.remember(credential, checked, now: now)
        return checked.principal
    }

    /// What one full check of a JWT established.
    struct CheckedToken {
        var principal: Principal
        /// The token's `exp`.
        var expires: Double
        var keys: IssuerKeys
        var kid: String?
        var material: Data
    }

    private func verifyJWT(_ token: String, client: ClientInfo) async throws(TokenRejection) -> CheckedToken {
        let jwt = try CompactJWT(token)
        let alg = jwt.header.alg
        if alg.lowercased() == "none" {
            throw TokenRejection(.algorithmNone, "unsigned token (alg none)")
        }
        guard Self.asymmetricAlgorithms.contains(alg) else {
            throw TokenRejection(.algorithmNotAllowed, "algorithm \(Self.printable(alg)) is not accepted")
        }
        guard let iss = jwt.claims["iss"]?.string else {
            throw TokenRejection(.malformed, "token has no iss claim")
        }
        guard let keys = issuers.first(where: { $0.settings.issuer == iss }) else {
            throw TokenRejection(.wrongIssuer, "issuer \(Self.printable(iss)) is not trusted")
        }
        let settings = keys.settings
        let material: Data
        switch await keys.key(for: jwt.header.kid) {
        case .noKeys:
            throw TokenRejection(.keysUnavailable, "no usable keys for issuer \(settings.name)")
        case .unknown:
            throw TokenRejection(.unknownKeyID, "key \(Self.printable(jwt.header.kid ?? "(none)")) is not published by issuer \(settings.name)")
        case .found(let key):
            guard key.algorithm.rawValue == alg else {
                throw TokenRejection(.algorithmMismatch, "token says \(alg) but key is pinned to \(key.algorithm.rawValue)")
            }
            guard (try? key.verifier.verify(jwt.signature, signs: jwt.signingInput)) == true else {
                throw TokenRejection(.badSignature, "signature does not verify with issuer \(settings.name)'s key")
            }
            material = key.material
        }
        let expires = try checkTime(jwt.claims)
        let audiences = jwt.claims["aud"]?.stringList ?? []
        guard audiences.contains(where: settings.audiences.contains) else {
            throw TokenRejection(.wrongAudience, "audience \(Self.printable(audiences.joined(separator: ","))) is not one of this gateway's")
        }
        guard let subject = jwt.claims["sub"]?.string, !subject.isEmpty else {
            throw TokenRejection(.malformed, "token has no sub claim")
        }
        let principal = Principal(
            subject: subject,
            email: jwt.claims[settings.emailClaim]?.string,
            groups: jwt.claims[settings.groupsClaim]?.stringList ?? [],
            issuer: iss,
            authMethod: .oidc,
            actors: actors(jwt.claims, settings: settings),
            client: client
        )
        return CheckedToken(principal: principal, expires: expires, keys: keys, kid: jwt.header.kid, material: material)
    }

    /// Checks exp, nbf and iat; returns exp.
    private func checkTime(_ claims: [String: JSONValue]) throws(TokenRejection) -> Double {
        let now = now().timeIntervalSince1970
        guard let exp = try Self.timestamp(claims, "exp") else {
            throw TokenRejection(.malformed, "token has no exp claim")
        }
        if now > exp + clockSkew {
            throw TokenRejection(.expired, "token expired \(Self.seconds(now - exp)) s ago")
        }
        if let nbf = try Self.timestamp(claims, "nbf"), now + clockSkew < nbf {
            throw TokenRejection(.notYetValid, "token is not valid for another \(Self.seconds(nbf - now)) s")
        }
        if let iat = try Self.timestamp(claims, "iat"), now + clockSkew < iat {
            throw TokenRejection(.notYetValid, "token was issued \(Self.seconds(iat - now)) s in the future")
        }
        return exp
    }

    /// A NumericDate claim: absent is nil; anything but a finite number in a sane range is malformed.
    private static func timestamp(_ claims: [String: JSONValue], _ name: String) throws(TokenRejection) -> Double? {
        guard let value = claims[name] else { return nil }
        guard let number = value.number, number.isFinite, (0...1e11).contains(number) else {
            throw TokenRejection(.malformed, "token claim \(name) is not a valid time")
        }
        return number
    }

    private static func seconds(_ interval: Double) -> Int64 { Int64(interval.rounded()) }

    /// The delegation chain: RFC 8693 `act` (nested, current actor outermost), else the configured
    /// agent name for the OAuth client that obtained the token.
    private func actors(_ claims: [String: JSONValue], settings: IssuerSettings) -> [Actor] {
        var chain: [Actor] = []
        var current = claims["act"]?.object
        while let act = current, chain.count < 8 {
            if let subject = act["sub"]?.string {
                chain.append(Actor(subject: subject, clientID: act["client_id"]?.string))
            }
            current = act["act"]?.object
        }
        if chain.isEmpty {
            for claim in settings.clientIDClaims {
                if let clientID = claims[claim]?.string, let agent = settings.agents[clientID] {
                    chain.append(Actor(subject: agent, clientID: clientID))
                    break
                }
            }
        }
        return chain
    }

    /// Values from a token are attacker-controlled; keep what goes into logs short and printable.
    static func printable(_ value: String) -> String {
        let cleaned = value.unicodeScalars.map { $0.properties.isAlphabetic || $0.properties.numericType != nil || "-_.:/@ ,".unicodeScalars.contains($0) ? Character($0) : "?" }
        let text = String(cleaned)
        return text.count > 80 ? String(text.prefix(80)) + "…" : text
    }
}


/// Verified JWTs, remembered for a short time. Bounded: when full, expired entries go first, then
/// everything (a flood of distinct valid tokens only costs their verification again).
final class VerifiedTokenCache: @unchecked Sendable {
    static let capacity = 10_000

    struct Entry {
        /// The check as it was made, without the client of the request that made it.
        var checked: TokenVerifier.CheckedToken
        var until: Double
    }

    private let lifetime: TimeInterval
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]

    init(lifetime: TimeInterval) {
        self.lifetime = lifetime
    }

    func entry(for token: String, now: Double) -> Entry? {
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entries[token] else { return nil }
        guard now < entry.until else {
            entries[token] = nil
            return nil
        }
        return entry
    }

    func forget(_ token: String) {
        lock.lock()
        entries[token] = nil
        lock.unlock()
    }

    /// An entry never outlives the token's `exp`.
    func remember(_ token: String, _ checked: TokenVerifier.CheckedToken, now: Double) {
        lock.lock()
        defer { lock.unlock() }
        if entries.count >= Self.capacity {
            entries = entries.filter { now < $0.value.until }
            if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
        }
        var stored = checked
        stored.principal.client = ClientInfo()
        entries[token] = Entry(checked: stored, until: min(now + lifetime, checked.expires))
    }
}

import Foundation
import GatehouseCore
import JWTKit
import Logging
import Metrics

/// One issuer's signing keys, fetched through OIDC discovery and kept fresh. Each key is pinned to
/// one algorithm when it is loaded, and a token is verified with exactly the key its `kid` names,
/// so a token cannot choose how it is checked.
public actor IssuerKeys {
    public nonisolated let settings: IssuerSettings
    private let fetcher: any KeySetFetching
    private let minimumRefetchInterval: TimeInterval
    /// Upper bound on one refresh (discovery and key set, bodies included): requests waiting on an
    /// unknown `kid` wait at most this long, however slowly the provider answers.
    private let fetchDeadline: Duration
    private let now: @Sendable () -> Date
    private let logger: Logger
    private let refreshFailures: Counter

    struct PinnedKey: Sendable {
        var algorithm: JWK.Algorithm
        var verifier: any JWTAlgorithm
        /// The key as published, to tell a key from a different one reusing its kid.
        var material: Data
    }

    private var keys: [String: PinnedKey] = [:] {
        didSet { publishedMaterial.set(keys.mapValues(\.material)) }
    }
    /// The published keys' material, readable without entering the actor: every request with a
    /// remembered token checks it, and an actor hop per request would serialize them all.
    private nonisolated let publishedMaterial = PublishedMaterial()
    private var lastAttempt: Date?
    private var inFlight: Task<Void, Error>?

    public init(
        settings: IssuerSettings,
        fetcher: any KeySetFetching,
        minimumRefetchInterval: TimeInterval = 30,
        fetchDeadline: Duration = .seconds(5),
        now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger = Logger(label: "gatehouse.identity")
    ) {
        self.settings = settings
        self.fetcher = fetcher
        self.minimumRefetchInterval = minimumRefetchInterval
        self.fetchDeadline = fetchDeadline
        self.now = now
        self.logger = logger
        self.refreshFailures = Counter(label: "gatehouse_jwks_refresh_failures_total", dimensions: [("issuer", settings.name)])
    }

    /// True once a usable key set has been loaded.
    public var isReady: Bool { !keys.isEmpty }

    /// Fetches discovery and the key set now; concurrent callers share one fetch.
    public func refresh() async throws {
        if let inFlight {
            return try await inFlight.value
        }
        let task = Task { try await self.fetchAndInstall() }
        inFlight = task
        defer { inFlight = nil }
        do {
            try await task.value
        } catch {
            refreshFailures.increment()
            logger.warning("key set refresh failed", metadata: ["issuer": "\(settings.name)", "error": "\(error)"])
            throw error
        }
    }

    enum Lookup {
        case found(PinnedKey)
        case unknown
        case noKeys
    }

    /// The key a token names. An unknown `kid` triggers one refetch, at most once per
    /// `minimumRefetchInterval`, because rotation publishes new keys before tokens use them. A
    /// refresh already under way is always waited for: it may be bringing exactly this key.
    func key(for kid: String?) async -> Lookup {
        if let found = lookup(kid) { return found }
        if let inFlight {
            _ = try? await inFlight.value
            if let found = lookup(kid) { return found }
        }
        let mayRefetch = lastAttempt.map { now().timeIntervalSince($0) >= minimumRefetchInterval } ?? true
        if mayRefetch {
            try? await refresh()
            if let found = lookup(kid) { return found }
        }
        return keys.isEmpty ? .noKeys : .unknown
    }

    /// Whether this exact key is still published (no refetch): a token verified with it earlier may
    /// be trusted again without checking its signature.
    nonisolated func stillPublishes(_ kid: String?, material: Data) -> Bool {
        let current = publishedMaterial.get()
        if let kid { return current[kid] == material }
        // Same rule as `lookup`: a kid-less token names the only key, or none.
        return current.count == 1 && current.first?.value == material
    }

    private func lookup(_ kid: String?) -> Lookup? {
        if let kid {
            return keys[kid].map { .found($0) }
        }
        // Some providers publish a single key and omit `kid`; with several keys a kid-less token is
        // ambiguous and refused.
        if keys.count == 1, let only = keys.first {
            return .found(only.value)
        }
        return nil
    }

    private struct DiscoveryDocument: Decodable {
        var issuer: String
        var jwks_uri: String
    }

    private func fetchAndInstall() async throws {
        lastAttempt = now()
        let (settings, fetcher) = (self.settings, self.fetcher)
        let keySet = try await withDeadline(fetchDeadline, code: "identity.timeout", what: "key set refresh of issuer \(settings.name)") {
            try Self.requireSecureURL(settings.discoveryURL, what: "discovery URL", issuer: settings.name)
            let discovery: DiscoveryDocument
            do {
                discovery = try JSONDecoder().decode(DiscoveryDocument.self, from: try await fetcher.fetch(settings.discoveryURL))
            } catch let error as GatehouseError {
                throw error
            } catch {
                throw GatehouseError("identity.discovery", "discovery document of issuer \(settings.name) is unusable")
            }
            // OpenID Connect Discovery §4.3: the document must name exactly the issuer we asked about.
            guard discovery.issuer == settings.issuer else {
                throw GatehouseError("identity.discovery-issuer", "discovery for \(settings.name) names a different issuer")
            }
            try Self.requireSecureURL(discovery.jwks_uri, what: "jwks_uri", issuer: settings.name)
            return try await fetcher.fetch(discovery.jwks_uri)
        }
        try await install(parsing: keySet)
    }

    /// Keys fetched over plain http can be swapped by anyone on the path; loopback is the exception
    /// (the demo's and the tests' providers run there).
    static func requireSecureURL(_ text: String, what: String, issuer: String) throws {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), let host = url.host,
              scheme == "https" || (scheme == "http" && Loopback.contains(host: host)) else {
            throw GatehouseError("identity.insecure-url", "\(what) of issuer \(issuer) must be https")
        }
    }

    /// Sorted keys, so the same key encodes to the same bytes on every refresh.
    private static let canonicalEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    private struct RawKeySet: Decodable {
        var keys: [JSONValue]
    }

    private func install(parsing data: Data) async throws {
        guard let raw = try? JSONDecoder().decode(RawKeySet.self, from: data) else {
            throw GatehouseError("identity.jwks", "key set of issuer \(settings.name) is not a JWKS document")
        }
        var fresh: [String: PinnedKey] = [:]
        for (index, entry) in raw.keys.enumerated() {
            guard let object = entry.object else { continue }
            // Encryption keys are published in the same set and must never verify signatures.
            if let use = object["use"]?.string, use != "sig" { continue }
            guard let encoded = try? Self.canonicalEncoder.encode(entry), var jwk = try? JSONDecoder().decode(JWK.self, from: encoded),
                  let algorithm = Self.pinnedAlgorithm(for: jwk, declared: object["alg"]?.string) else {
                logger.debug("skipping unusable key", metadata: ["issuer": "\(settings.name)", "index": "\(index)"])
                continue
            }
            let kid = jwk.keyIdentifier?.string ?? "#\(index)"
            // Two keys under one kid would make "the key this token names" ambiguous.
            guard fresh[kid] == nil else {
                throw GatehouseError("identity.jwks-duplicate-kid", "key set of issuer \(settings.name) publishes kid \(kid) twice")
            }
            jwk.keyIdentifier = JWKIdentifier(string: kid)
            jwk.algorithm = algorithm
            do {
                let single = JWTKeyCollection()
                try await single.add(jwk: jwk)
                fresh[kid] = PinnedKey(
                    algorithm: algorithm, verifier: try await single.getKey(for: JWKIdentifier(string: kid), alg: algorithm.rawValue),
                    material: encoded)
            } catch {
                logger.debug("skipping key jwt-kit refused", metadata: ["issuer": "\(settings.name)", "kid": "\(kid)"])
            }
        }
        guard !fresh.isEmpty else {
            throw GatehouseError("identity.jwks-empty", "key set of issuer \(settings.name) has no usable signing key")
        }
        keys = fresh
    }

    /// The one algorithm a key may verify: the one it declares, or the only sensible one for its
    /// type. Symmetric (`oct`) keys are never accepted from a key set.
    static func pinnedAlgorithm(for jwk: JWK, declared: String?) -> JWK.Algorithm? {
        let allowed: [JWK.Algorithm]
        switch jwk.keyType {
        case .rsa: allowed = [.rs256, .rs384, .rs512, .ps256, .ps384, .ps512]
        case .ecdsa:
            switch jwk.curve?.rawValue {
            case "P-256": allowed = [.es256]
            case "P-384": allowed = [.es384]
            case "P-521": allowed = [.es512]
            default: return nil
            }
        case .octetKeyPair: allowed = [.eddsa]
        default: return nil
        }
        if let declared {
            guard let algorithm = JWK.Algorithm(rawValue: declared), allowed.contains(algorithm) else { return nil }
            return algorithm
        }
        return allowed.first
    }
}

/// A lock-protected copy of an issuer's published key material.
final class PublishedMaterial: @unchecked Sendable {
    private let lock = NSLock()
    private var material: [String: Data] = [:]

    func get() -> [String: Data] {
        lock.lock()
        defer { lock.unlock() }
        return material
    }

    func set(_ value: [String: Data]) {
        lock.lock()
        material = value
        lock.unlock()
    }
}

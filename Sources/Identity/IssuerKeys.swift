import Foundation
import GatehouseCore
import JWTKit
import Logging
import Metrics

/// One issuer's signing keys, fetched through OIDC discovery and kept fresh. Each key is pinned to
/// one algorithm when it is loaded, so a token cannot choose how it is checked.
public actor IssuerKeys {
    public nonisolated let settings: IssuerSettings
    private let fetcher: any KeySetFetching
    private let minimumRefetchInterval: TimeInterval
    private let now: @Sendable () -> Date
    private let logger: Logger
    private let refreshFailures: Counter

    private var pinned: [String: JWK.Algorithm] = [:]
    private var collection = JWTKeyCollection()
    private var jwksURI: String?
    private var lastAttempt: Date?
    private var inFlight: Task<Void, Error>?
    public private(set) var lastRefresh: Date?

    public init(
        settings: IssuerSettings,
        fetcher: any KeySetFetching,
        minimumRefetchInterval: TimeInterval = 30,
        now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger = Logger(label: "gatehouse.identity")
    ) {
        self.settings = settings
        self.fetcher = fetcher
        self.minimumRefetchInterval = minimumRefetchInterval
        self.now = now
        self.logger = logger
        self.refreshFailures = Counter(label: "gatehouse_jwks_refresh_failures_total", dimensions: [("issuer", settings.name)])
    }

    /// True once a usable key set has been loaded.
    public var isReady: Bool { !pinned.isEmpty }

    public var keyIDs: [String] { pinned.keys.sorted() }

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

    /// Installs a key set directly (the development issuer's own keys in tests, or a static set).
    public func install(jwksJSON: Data) async throws {
        try await install(parsing: jwksJSON)
    }

    enum Lookup {
        case found(JWK.Algorithm, JWTKeyCollection)
        case unknown
        case noKeys
    }

    /// The key a token names. An unknown `kid` triggers one refetch, at most once per
    /// `minimumRefetchInterval`, because rotation publishes new keys before tokens use them.
    func key(for kid: String?) async -> Lookup {
        if let found = lookup(kid) { return found }
        let mayRefetch = lastAttempt.map { now().timeIntervalSince($0) >= minimumRefetchInterval } ?? true
        if mayRefetch {
            try? await refresh()
            if let found = lookup(kid) { return found }
        }
        return pinned.isEmpty ? .noKeys : .unknown
    }

    private func lookup(_ kid: String?) -> Lookup? {
        if let kid {
            return pinned[kid].map { .found($0, collection) }
        }
        // Some providers publish a single key and omit `kid`; with several keys a kid-less token is
        // ambiguous and refused.
        if pinned.count == 1, let only = pinned.first {
            return .found(only.value, collection)
        }
        return nil
    }

    private struct DiscoveryDocument: Decodable {
        var issuer: String
        var jwks_uri: String
    }

    private func fetchAndInstall() async throws {
        lastAttempt = now()
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
        guard let uri = URL(string: discovery.jwks_uri), let scheme = uri.scheme?.lowercased(), let host = uri.host,
              scheme == "https" || (scheme == "http" && Self.isLoopback(host)) else {
            throw GatehouseError("identity.jwks-uri", "jwks_uri of issuer \(settings.name) must be https")
        }
        jwksURI = discovery.jwks_uri
        try await install(parsing: try await fetcher.fetch(discovery.jwks_uri))
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    private struct RawKeySet: Decodable {
        var keys: [JSONValue]
    }

    private func install(parsing data: Data) async throws {
        guard let raw = try? JSONDecoder().decode(RawKeySet.self, from: data) else {
            throw GatehouseError("identity.jwks", "key set of issuer \(settings.name) is not a JWKS document")
        }
        let fresh = JWTKeyCollection()
        var freshPinned: [String: JWK.Algorithm] = [:]
        for (index, entry) in raw.keys.enumerated() {
            guard let object = entry.object else { continue }
            // Encryption keys are published in the same set and must never verify signatures.
            if let use = object["use"]?.string, use != "sig" { continue }
            guard let encoded = try? JSONEncoder().encode(entry), var jwk = try? JSONDecoder().decode(JWK.self, from: encoded),
                  let algorithm = Self.pinnedAlgorithm(for: jwk, declared: object["alg"]?.string) else {
                logger.debug("skipping unusable key", metadata: ["issuer": "\(settings.name)", "index": "\(index)"])
                continue
            }
            let kid = jwk.keyIdentifier?.string ?? "#\(index)"
            jwk.keyIdentifier = JWKIdentifier(string: kid)
            jwk.algorithm = algorithm
            do {
                try await fresh.add(jwk: jwk)
                freshPinned[kid] = algorithm
            } catch {
                logger.debug("skipping key jwt-kit refused", metadata: ["issuer": "\(settings.name)", "kid": "\(kid)"])
            }
        }
        guard !freshPinned.isEmpty else {
            throw GatehouseError("identity.jwks-empty", "key set of issuer \(settings.name) has no usable signing key")
        }
        collection = fresh
        pinned = freshPinned
        lastRefresh = now()
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

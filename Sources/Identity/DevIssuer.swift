import Crypto
import Foundation
import GatehouseCore
import JWTKit

/// A development identity provider built into the gateway, so the demo needs no external IdP. It
/// publishes its key through discovery and JWKS like any issuer, and the gateway verifies its
/// tokens through the same code path as a real provider's. Enabled only by `dev: true`, and only
/// on loopback (the configuration refuses anything else).
public struct DevIssuer: Sendable {
    public let issuerURL: String
    public let audience: String
    public let keyID: String
    private let key: ES256PrivateKey

    /// Loads the signing key, creating it (mode 0600) on first use.
    public init(keyPath: String, issuerURL: String, audience: String) throws {
        self.issuerURL = issuerURL
        self.audience = audience
        let fileManager = FileManager.default
        if fileManager.fileExists(atPath: keyPath) {
            // An existing key that cannot be read is an error, never a reason to replace it.
            guard let pem = try? String(contentsOfFile: keyPath, encoding: .utf8), let loaded = try? ES256PrivateKey(pem: pem) else {
                throw GatehouseError("dev-issuer.key", "development issuer key at \(keyPath) cannot be read as a P-256 private key")
            }
            key = loaded
        } else {
            key = ES256PrivateKey()
            let directory = URL(fileURLWithPath: keyPath).deletingLastPathComponent().path
            try fileManager.createDirectory(atPath: directory, withIntermediateDirectories: true)
            guard fileManager.createFile(atPath: keyPath, contents: Data(key.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw GatehouseError("dev-issuer.key", "cannot write development issuer key at \(keyPath)")
            }
        }
        guard let parameters = key.publicKey.parameters else {
            throw GatehouseError("dev-issuer.key", "development issuer key has no public parameters")
        }
        // RFC 7638-style thumbprint, so the kid changes exactly when the key does.
        let thumbprintInput = #"{"crv":"P-256","kty":"EC","x":"\#(parameters.x)","y":"\#(parameters.y)"}"#
        keyID = Data(SHA256.hash(data: Data(thumbprintInput.utf8))).base64URLEncoded.prefix(16).description
    }

    public var discoveryDocument: [String: JSONValue] {
        [
            "issuer": .string(issuerURL),
            "jwks_uri": .string(issuerURL + "/jwks.json"),
            "id_token_signing_alg_values_supported": .array([.string("ES256")]),
            "response_types_supported": .array([.string("token")]),
            "subject_types_supported": .array([.string("public")]),
        ]
    }

    public var jwks: [String: JSONValue] {
        let parameters = key.publicKey.parameters
        return ["keys": .array([.object([
            "kty": .string("EC"),
            "crv": .string("P-256"),
            "use": .string("sig"),
            "alg": .string("ES256"),
            "kid": .string(keyID),
            "x": .string(parameters?.x ?? ""),
            "y": .string(parameters?.y ?? ""),
        ])])]
    }

    public struct TokenRequest: Sendable {
        public var subject: String
        public var email: String?
        public var groups: [String]
        /// The agent acting for the subject, recorded as an RFC 8693 `act` claim.
        public var actor: String?
        public var lifetime: TimeInterval

        public init(subject: String, email: String? = nil, groups: [String] = [], actor: String? = nil, lifetime: TimeInterval = 3600) {
            self.subject = subject
            self.email = email
            self.groups = groups
            self.actor = actor
            self.lifetime = lifetime
        }
    }

    struct Claims: JWTPayload {
        struct Act: Codable, Sendable {
            var sub: String
        }

        var iss: String
        var sub: String
        var aud: [String]
        var exp: Int
        var iat: Int
        var nbf: Int
        var email: String?
        var groups: [String]
        var act: Act?

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    public func token(_ request: TokenRequest, now: Date = Date()) async throws -> String {
        let issuedAt = Int(now.timeIntervalSince1970)
        let claims = Claims(
            iss: issuerURL,
            sub: request.subject,
            aud: [audience],
            exp: issuedAt + Int(request.lifetime),
            iat: issuedAt,
            nbf: issuedAt,
            email: request.email,
            groups: request.groups,
            act: request.actor.map { Claims.Act(sub: $0) }
        )
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: key, kid: JWKIdentifier(string: keyID))
        return try await keys.sign(claims, kid: JWKIdentifier(string: keyID))
    }
}

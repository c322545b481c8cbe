/// Why a credential was refused. `code` goes to the audit trail and metrics; clients only ever see
/// a generic message, so a probe learns nothing about which check failed.
public struct TokenRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        case missing = "missing"
        case oversized = "oversized"
        case malformed = "malformed"
        case algorithmNone = "alg-none"
        case algorithmNotAllowed = "alg-not-allowed"
        case algorithmMismatch = "alg-mismatch"
        case unknownKeyID = "unknown-kid"
        case badSignature = "bad-signature"
        case wrongIssuer = "wrong-issuer"
        case wrongAudience = "wrong-audience"
        case expired = "expired"
        case notYetValid = "not-yet-valid"
        case keysUnavailable = "keys-unavailable"
        case unknownAPIKey = "unknown-api-key"
        case revokedAPIKey = "revoked-api-key"
    }

    public var reason: Reason
    /// Detail for the audit trail and logs. Never contains the token or any part of a key.
    public var detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }

    /// What a client is told, whatever the reason.
    public static let clientMessage = "authentication failed"
}

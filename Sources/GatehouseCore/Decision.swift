/// What policy decided for one operation, and why. Every protocol records the same shape.
public struct Decision: Sendable, Codable, Equatable {
    public enum Effect: String, Sendable, Codable, Equatable {
        case allow
        case deny
        case review
        case mask
    }

    public var effect: Effect
    /// The rule that decided, if a named rule did.
    public var rule: String?
    /// A human-readable reason. Never contains secrets or raw credentials.
    public var reason: String?

    public init(effect: Effect, rule: String? = nil, reason: String? = nil) {
        self.effect = effect
        self.rule = rule
        self.reason = reason
    }

    public static func allow(rule: String? = nil, reason: String? = nil) -> Decision {
        Decision(effect: .allow, rule: rule, reason: reason)
    }

    public static func deny(rule: String? = nil, reason: String) -> Decision {
        Decision(effect: .deny, rule: rule, reason: reason)
    }
}

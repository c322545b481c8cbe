import Foundation
import GatehouseCore
import NIOConcurrencyHelpers

/// Time-boxed access to one connection, granted through an access review.
public struct AccessGrant: Sendable, Codable, Equatable {
    /// The access review that granted it.
    public var review: String
    public var issuer: String
    public var subject: String
    public var connection: String
    /// Agents acting for the person share the grant only when it was asked for and granted so.
    public var includesAgents: Bool
    public var grantedBy: [String]
    public var expiresAt: Date

    public func covers(_ principal: Principal, connection: String, at now: Date) -> Bool {
        self.connection == connection && principal.issuer == issuer && principal.subject == subject
            && (principal.agent == nil || includesAgents) && now < expiresAt
    }

    /// How a connection's access decision reads when a grant lets the principal in.
    public var decision: Decision {
        .allow(rule: "grant:\(review)", reason: "access granted by \(grantedBy.joined(separator: ", ")) (review \(review)) until \(Self.timestamp(expiresAt))")
    }

    static func timestamp(_ date: Date) -> String {
        ISO8601DateFormatter().string(from: date)
    }
}

/// The grants in force, read on every login and request without waiting: a lock, not an actor.
public final class AccessGrants: Sendable {
    private let grants = NIOLockedValueBox<[AccessGrant]>([])

    public init(_ initial: [AccessGrant] = []) {
        grants.withLockedValue { $0 = initial }
    }

    public func add(_ grant: AccessGrant) {
        grants.withLockedValue { grants in
            grants.removeAll { $0.expiresAt <= Date() }
            grants.append(grant)
        }
    }

    /// The grant that lets `principal` use `connection` now, the one lasting longest if several do.
    public func grant(for principal: Principal, connection: String, now: Date = Date()) -> AccessGrant? {
        grants.withLockedValue { grants in
            grants.filter { $0.covers(principal, connection: connection, at: now) }.max { $0.expiresAt < $1.expiresAt }
        }
    }

    /// Ends a grant before its time; false when there is none by that review.
    public func revoke(_ review: String) -> AccessGrant? {
        grants.withLockedValue { grants in
            guard let index = grants.firstIndex(where: { $0.review == review }) else { return nil }
            return grants.remove(at: index)
        }
    }

    /// Whether the grant made by this review still lets its holder in.
    public func isActive(_ review: String, now: Date = Date()) -> Bool {
        grants.withLockedValue { $0.contains { $0.review == review && $0.expiresAt > now } }
    }

    public var all: [AccessGrant] {
        let now = Date()
        return grants.withLockedValue { $0.filter { $0.expiresAt > now } }
    }
}

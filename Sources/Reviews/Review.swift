import Foundation
import GatehouseCore

/// One request for a person's approval: an operation held on a live session, or time-boxed access
/// to a connection. Everything a reviewer needs to decide is here, and nothing secret.
public struct Review: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// A statement or request that waits on its session until decided.
        case operation
        /// Access to a connection for some minutes (`gatehouse access request`).
        case access
    }

    public enum State: String, Sendable, Codable, CaseIterable {
        case pending
        /// Enough approvals; the held operation may run (once).
        case approved
        case denied
        /// Nobody decided in time.
        case expired
        /// The client went away, cancelled, or the gateway stopped: the operation never runs.
        case abandoned
        /// The approved operation was sent on its way.
        case executed
        /// Access granted (access reviews only).
        case granted
    }

    public struct Approval: Sendable, Codable, Equatable {
        public var subject: String
        public var issuer: String
        public var email: String?

        var principal: Principal {
            Principal(subject: subject, email: email, groups: [], issuer: issuer, authMethod: .oidc)
        }
        public var time: Date
        public var comment: String?
    }

    public var id: String
    public var kind: Kind
    public var state: State
    /// The session (PostgreSQL connection, HTTP session) the operation is held on.
    public var session: String
    public var connection: String
    /// `postgres`, `http`, or `access`.
    public var protocolName: String
    /// The exact operation as the reviewer sees it (SQL with its parameters, method and path).
    public var operation: String
    /// What the agent said it was doing.
    public var intent: String?
    /// SHA-256 of the exact operation, identity and connection; an approval is for this digest only.
    public var digest: String
    public var requester: Principal
    /// The policy rule that asked for review, and why.
    public var rule: String?
    public var reason: String?
    public var approvalsRequired: Int
    /// The approver must be in one of these groups (for each entry: a rule's groups).
    public var approverGroups: [[String]]
    public var approvals: [Approval]
    public var createdAt: Date
    public var expiresAt: Date
    public var closedAt: Date?
    /// Who denied, and the reviewer's reason; or why it expired or was abandoned.
    public var closedBy: String?
    public var closeReason: String?
    /// Access reviews: how long the grant lasts, and whether agents acting for the requester share it.
    public var grantMinutes: Int?
    public var grantIncludesAgents: Bool?
}

/// How a held operation's review ended, as its session learns it.
public enum ReviewOutcome: Sendable, Equatable {
    case approved(Review)
    /// Denied, expired or abandoned: the reason is for the client.
    case refused(Review)
}

/// Why an approval or denial was not taken. The message is for the reviewer.
public struct ReviewRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case notFound = "not-found"
        case closed
        case ownRequest = "own-request"
        case notApprover = "not-approver"
        case agent
        case alreadyApproved = "already-approved"
        case digestMismatch = "digest-mismatch"
        case auditUnavailable = "audit-unavailable"
        case invalid
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// What makes a reviewer eligible: pure, so it can be tested on its own.
public enum ReviewEligibility {
    /// One person: the same subject at the same issuer, or the same email (a person with accounts
    /// at two issuers is still one person).
    public static func samePerson(_ a: Principal, _ b: Principal) -> Bool {
        if a.issuer == b.issuer && a.subject == b.subject { return true }
        if let first = a.email?.lowercased(), let second = b.email?.lowercased(), !first.isEmpty, first == second { return true }
        return false
    }

    /// Who may see a review: its requester, and people who could decide it (the gateway's
    /// approvers, or those of one of its rules).
    public static func canSee(_ review: Review, _ principal: Principal, approverGroups: [String]) -> Bool {
        if review.requester.subject == principal.subject && review.requester.issuer == principal.issuer { return true }
        return principal.agent == nil
            && (principal.groups.contains(where: approverGroups.contains) || review.approverGroups.contains { $0.contains(where: principal.groups.contains) })
    }

    /// Nil when `approver` may approve or deny `review`, else why not.
    public static func refusal(for approver: Principal, on review: Review) -> ReviewRefusal? {
        if approver.agent != nil {
            return ReviewRefusal(.agent, "agents cannot decide reviews; a person must (the token names agent \(approver.agent!))")
        }
        // A service account's key is no person: with one, someone could approve their own
        // request, or count twice.
        if approver.authMethod != .oidc {
            return ReviewRefusal(.agent, "reviews are decided by people signed in with the identity provider, not with an API key")
        }
        if samePerson(approver, review.requester) {
            return ReviewRefusal(.ownRequest, "\(approver.subject) requested review \(review.id) and cannot decide it")
        }
        for groups in review.approverGroups where !groups.contains(where: approver.groups.contains) {
            return ReviewRefusal(.notApprover, "\(approver.subject) is not in an approver group for review \(review.id) (one of: \(groups.sorted().joined(separator: ", ")))")
        }
        if review.approverGroups.isEmpty {
            return ReviewRefusal(.notApprover, "no approver groups are configured, so nobody can decide review \(review.id)")
        }
        return nil
    }
}

import GatehouseCore
import NIOCore
import Policy
import PostgresWire
import Reviews
import SQLInspection

/// What the policy said about one statement, kept with it until its result is done: the decision
/// it was recorded under, the row limit, and the statement as inspected (masking needs to know
/// which columns a computed result column may come from).
struct StatementControls: Sendable {
    var statement: SQLStatement?
    var evaluation: PolicyEvaluation?
    var decision: Decision?
    /// The columns of the statement's rows, once the server has described them (extended protocol).
    var description: RowDescriptionBox?
    /// PREPARE, DEALLOCATE, DECLARE, DISCARD ALL: applied to the session's records once it ran.
    var sessionEffect: SQLStatement?
    /// FETCH or MOVE on a SQL cursor: its rows count toward one limit per cursor.
    var cursorName: String?
    /// What approving the statement takes, when it is held (every statement of its text counted).
    var approval: ApprovalRequirement?

    init(statement: SQLStatement? = nil, evaluation: PolicyEvaluation? = nil, decision: Decision? = nil) {
        self.statement = statement
        self.evaluation = evaluation
        self.decision = decision ?? evaluation?.decision
    }

    var rowLimit: RowLimit? { evaluation?.rowLimit }
}

/// A statement the policy did not let through, and what the client is told.
struct Refusal: Sendable {
    /// Sent upstream in the refused statement's place. Certain to fail in the parser, before
    /// anything runs or any catalog is read, for every PostgreSQL version, and recognisable in the
    /// server's log.
    static let standInSQL = "gatehouse refused this statement"

    var decision: Decision
    var sqlState = "42501"
    var hint = "The attempt is recorded in the audit trail. Ask the gateway's administrators if you need this access."

    /// Nil when the decision lets the statement run, or when it waits for approval and the message
    /// carrying it can be held (`canHold`).
    init?(_ decision: Decision, canHold: Bool = false) {
        switch decision.effect {
        case .allow, .mask:
            return nil
        case .deny:
            self.decision = decision
        case .review:
            if canHold { return nil }
            // A fast-path call or a FETCH through a portal the gateway did not bind runs nothing
            // the reviewer could read; what needs approval there is refused.
            self.decision = .deny(
                rule: decision.rule,
                reason: (decision.reason ?? "approval required") + "; send it as a query or a prepared statement to have it reviewed")
        }
    }

    init(decision: Decision, sqlState: String = "42501", hint: String? = nil) {
        self.decision = decision
        self.sqlState = sqlState
        if let hint { self.hint = hint }
    }

    /// A held statement that will not run: denied, expired, cancelled or abandoned.
    init(closed review: Review) {
        let rule = "review:\(review.id)"
        switch review.state {
        case .abandoned:
            // What a cancelled statement looks like to every PostgreSQL client.
            self.init(decision: .deny(rule: rule, reason: "canceling statement due to user request"), sqlState: "57014",
                      hint: "Review \(review.id) was closed: \(review.closeReason ?? "abandoned").")
        case .expired:
            self.init(decision: .deny(rule: rule, reason: "review \(review.id) expired: \(review.closeReason ?? "no decision in time")"),
                      hint: "Nobody approved the statement in time; it did not run. Send it again to ask again.")
        default:
            self.init(decision: .deny(rule: rule, reason: "review \(review.id) was \(review.closeReason ?? "denied")"),
                      hint: "The statement did not run.")
        }
    }

    var message: String {
        sqlState == "57014" ? (decision.reason ?? "canceling statement") : "gatehouse: " + (decision.reason ?? "refused by policy")
    }

    func errorFrame(allocator: ByteBufferAllocator) -> PostgresFrame {
        let fields = ErrorFields(
            severity: "ERROR", sqlState: sqlState, message: message,
            detail: decision.rule.map { $0.hasPrefix("review:") ? "Decided through \($0)." : "Refused by policy rule \($0)." },
            hint: hint)
        return PostgresFrame.backend(.errorResponse(fields), allocator: allocator)
    }
}

/// A result stopped at its row limit.
struct RowLimitCut {
    var statementID: Int
    var limit: RowLimit
    /// The statement's end has been replaced by the limit's error; the server's messages up to its
    /// next ReadyForQuery are dropped, as the client skips to there.
    var swallowing = false
    var cancelInFlight = false

    func errorFrame(allocator: ByteBufferAllocator) -> PostgresFrame {
        let fields = ErrorFields(
            severity: "ERROR", sqlState: "54000",
            message: "gatehouse: the result was stopped at \(limit.maxRows) rows (rule \(limit.rule) limits a statement to \(limit.maxRows) rows)",
            detail: "Rule \(limit.rule) limits how many rows one statement may return.",
            hint: "Narrow the query (WHERE, LIMIT) or page through the data.")
        return PostgresFrame.backend(.errorResponse(fields), allocator: allocator)
    }
}

/// The row description of one prepared statement, filled in when the server's answer to a
/// Describe arrives, and shared by every portal bound to the statement. Lives on the session's
/// event loop only.
final class RowDescriptionBox: @unchecked Sendable {
    var fields: [FieldDescription]?
}

extension PostgresFrame {
    /// A message the gateway writes itself, as a frame like the ones it relays.
    static func backend(_ message: BackendMessage, allocator: ByteBufferAllocator) -> PostgresFrame {
        var buffer = allocator.buffer(capacity: 64)
        PostgresEncoder.backend(message, into: &buffer)
        return frame(encoded: buffer)
    }

    static func frontend(_ message: FrontendMessage, allocator: ByteBufferAllocator) -> PostgresFrame {
        var buffer = allocator.buffer(capacity: 64)
        PostgresEncoder.frontend(message, into: &buffer)
        return frame(encoded: buffer)
    }

    /// A whole encoded message (type byte, length, body) as a frame.
    private static func frame(encoded: ByteBuffer) -> PostgresFrame {
        var buffer = encoded
        let type = buffer.readInteger(as: UInt8.self) ?? 0
        buffer.moveReaderIndex(forwardBy: 4)
        return PostgresFrame(type: type, body: buffer)
    }
}

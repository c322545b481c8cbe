import GatehouseCore
import NIOCore
import Policy
import PostgresWire
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

    /// Nil when the decision lets the statement run.
    init?(_ decision: Decision) {
        switch decision.effect {
        case .allow, .mask:
            return nil
        case .deny:
            self.decision = decision
        case .review:
            // Holding a statement for approval comes with the approvals feature; until then, what
            // needs approval is refused, and the client is told so.
            self.decision = .deny(
                rule: decision.rule,
                reason: (decision.reason ?? "approval required") + "; approvals are not available on this gateway yet")
        }
    }

    var message: String { "gatehouse: " + (decision.reason ?? "refused by policy") }

    func errorFrame(allocator: ByteBufferAllocator) -> PostgresFrame {
        let fields = ErrorFields(
            severity: "ERROR", sqlState: "42501", message: message,
            detail: decision.rule.map { "Refused by policy rule \($0)." },
            hint: "The attempt is recorded in the audit trail. Ask the gateway's administrators if you need this access.")
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

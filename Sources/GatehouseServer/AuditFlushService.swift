import Audit
import Logging
import MCPGateway
import Reviews
import ServiceLifecycle

/// Owns the audit log's lifetime inside the service group: on shutdown it drains every queued
/// event and writes the final signed checkpoint. It is the first service in the group, so it is
/// the last to stop, after every listener that could still append.
struct AuditFlushService: Service {
    let log: AuditLog
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        do {
            try await log.shutdown()
            logger.info("audit trail flushed and checkpointed")
        } catch {
            logger.error("audit trail could not be flushed", metadata: ["error": "\(error)"])
            throw error
        }
    }
}

/// The last service in the group, so the first to stop: closes what waits for approval (and
/// stops new reviews and approvals) and ends the MCP sessions, whose open event streams would
/// otherwise keep the HTTP listener from finishing. Held clients then get their refusal while the
/// listeners and the audit trail are still up, so each closing is recorded: a held operation
/// never runs in a later life of the gateway.
struct ReviewShutdownService: Service {
    let board: ReviewBoard
    let mcp: MCPEndpoint?

    func run() async throws {
        try? await gracefulShutdown()
        await board.abandonAll(reason: "the gateway stopped")
        await mcp?.closeSessions()
    }
}

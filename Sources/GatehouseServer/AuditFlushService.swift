import Audit
import Logging
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

/// Closes what waits for approval when the gateway stops, after the listeners (so no new review
/// opens) and before the audit trail (so the closing is recorded): a held operation must never run
/// in a later life of the gateway.
struct ReviewShutdownService: Service {
    let board: ReviewBoard

    func run() async throws {
        try? await gracefulShutdown()
        await board.abandonAll(reason: "the gateway stopped")
    }
}

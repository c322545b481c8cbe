import Audit
import Logging
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

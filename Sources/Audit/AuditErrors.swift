import GatehouseCore

/// The audit errors callers can act on. Messages name files and SQLite's reason, never record
/// contents, so they are safe to log and to return to a denied client.
enum AuditErrors {
    static func unavailable(_ path: String, _ reason: String) -> GatehouseError {
        GatehouseError(
            "audit.store_unavailable",
            "the audit store \(path) cannot be written (\(reason)); requests are denied until it can"
        )
    }

    static func unreadable(_ path: String, _ reason: String) -> GatehouseError {
        GatehouseError("audit.store_unreadable", "the audit store \(path) cannot be read (\(reason))")
    }

    static func closed() -> GatehouseError {
        GatehouseError("audit.store_closed", "the audit store is closed; requests are denied")
    }

    static func recordTooLarge(bytes: Int) -> GatehouseError {
        GatehouseError(
            "audit.record_too_large",
            "an audit record of \(bytes) bytes exceeds the limit of \(AuditCanonical.maximumBodyBytes) bytes; the request is denied"
        )
    }

    static func overloaded(depth: Int) -> GatehouseError {
        GatehouseError(
            "audit.overloaded",
            "the audit log already has \(depth) events waiting to be written; the request is denied"
        )
    }

    static func undecodable(seq: Int64) -> GatehouseError {
        GatehouseError(
            "audit.event_undecodable",
            "audit event \(seq) cannot be decoded; run `gatehouse audit verify`"
        )
    }

    static func schema(_ path: String, found: Int64, supported: Int64) -> GatehouseError {
        GatehouseError(
            "audit.schema_unsupported",
            "the audit store \(path) has schema version \(found); this gateway supports up to \(supported)"
        )
    }

    static func signingKey(_ path: String, _ reason: String) -> GatehouseError {
        GatehouseError("audit.signing_key", "the audit signing key \(path) \(reason)")
    }

    static func headFile(_ path: String, _ reason: String) -> GatehouseError {
        GatehouseError("audit.head_file", "the audit head file \(path) \(reason)")
    }

    static func internalMismatch() -> GatehouseError {
        GatehouseError("audit.internal", "the audit store returned a different number of events than it was given")
    }
}

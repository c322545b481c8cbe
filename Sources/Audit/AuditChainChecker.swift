import Foundation
import GatehouseCore

/// A column value as stored, whatever its type: tampering can put any type in any column, and the
/// checker must name that, not crash on it.
enum StoredValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    init(_ text: String?) {
        self = text.map { .text($0) } ?? .null
    }

    var text: String? {
        if case .text(let value) = self { return value }
        return nil
    }

    /// A body is text; a blob holding the same bytes has the same meaning and the same hash.
    var bytes: [UInt8]? {
        switch self {
        case .text(let value): Array(value.utf8)
        case .blob(let value): value
        default: nil
        }
    }
}

/// One row of the events table (or its equivalent in another store), read without interpretation.
struct StoredEventRow: Sendable {
    var seq: Int64
    var timeMillis: StoredValue
    var subject: StoredValue
    var agent: StoredValue
    var session: StoredValue
    var connection: StoredValue
    var kind: StoredValue
    var body: StoredValue
    var prevHash: StoredValue
    var hash: StoredValue
}

/// The verification algorithm, shared by every store: it streams rows in sequence order with one
/// row of lookahead, and merges the checkpoints in, so memory stays bounded however long the trail.
///
/// Each check runs in an order chosen so the first one to fail names the tampering that happened:
/// gaps in the numbering (removed), the row's own hash (changed), the body's own number against the
/// row's (swapped, inserted, removed-and-renumbered), the searchable columns (changed), and last
/// the link to the event before (changed with a recomputed hash). Checkpoints then catch a chain
/// that was recomputed wholesale, and the head checkpoint catches a truncated tail.
struct AuditChainChecker {
    struct Outcome: Sendable {
        var problem: AuditProblem?
        var lastSeq: Int64
    }

    let verifier: AuditSignatureVerifier

    /// The newest checkpoint as the store keeps it outside the checkpoints table (the SQLite store's
    /// head file), and that checkpoint's row in the table (nil if the row is missing).
    var head: AuditCheckpoint?
    var headRow: AuditCheckpoint?
    var headDescription = "the head file"

    func run(
        nextEvent: () throws -> StoredEventRow?,
        nextCheckpoint: () throws -> AuditCheckpoint?
    ) throws -> Outcome {
        let headProblem = checkHead()
        // A validly signed head proves how far the trail reached even when its row is missing.
        let headIsTrusted = head.map(verifier.isValid) ?? false

        var expected: Int64 = 1
        var previousHash = AuditEvent.genesisHash
        var lastGoodCheckpoint: Int64 = 0
        var checkpoint = try nextCheckpoint()
        var current = try nextEvent()
        var problem: AuditProblem?

        scan: while let row = current {
            let next = try nextEvent()
            if let found = checkEvent(row, next: next, expected: expected, previousHash: previousHash) {
                problem = found
                break scan
            }
            // checkEvent has established that the hash column is the body's true hash.
            let hash = row.hash.text ?? ""

            while let signed = checkpoint, signed.seq <= row.seq {
                if !verifier.isValid(signed) {
                    problem = badSignature(signed)
                    break scan
                }
                if signed.seq < row.seq {
                    // Only reachable for a checkpoint numbered below 1: every real number was met.
                    problem = AuditProblem(
                        kind: .badCheckpoint, seq: signed.seq,
                        message: "the checkpoint at event \(signed.seq) names an event that cannot exist"
                    )
                    break scan
                }
                if signed.hash != hash {
                    problem = checkpointMismatch(seq: row.seq, after: lastGoodCheckpoint)
                    break scan
                }
                lastGoodCheckpoint = signed.seq
                checkpoint = try nextCheckpoint()
            }
            if headIsTrusted, let head, head.seq == row.seq, head.hash != hash {
                problem = checkpointMismatch(seq: row.seq, after: lastGoodCheckpoint)
                break scan
            }

            previousHash = hash
            expected = row.seq + 1
            current = next
        }
        let lastSeq = expected - 1

        if problem == nil {
            if let signed = checkpoint {
                problem = verifier.isValid(signed) ? truncated(after: lastSeq, covered: signed.seq) : badSignature(signed)
            } else if headIsTrusted, let head, head.seq > lastSeq {
                problem = truncated(after: lastSeq, covered: head.seq)
            }
        }

        // The head is checked before the scan but its finding competes by position: the first bad
        // event wins, and at the same event the scan's finding says more.
        switch (problem, headProblem) {
        case (let found?, let fromHead?):
            return Outcome(problem: fromHead.seq < found.seq ? fromHead : found, lastSeq: lastSeq)
        default:
            return Outcome(problem: problem ?? headProblem, lastSeq: lastSeq)
        }
    }

    private func checkHead() -> AuditProblem? {
        guard let head else { return nil }
        guard verifier.isValid(head) else {
            return AuditProblem(
                kind: .badCheckpoint, seq: head.seq,
                message: "the checkpoint for event \(head.seq) in \(headDescription) is not signed by the configured key"
            )
        }
        guard let headRow else {
            return AuditProblem(
                kind: .removed, seq: head.seq,
                message: "the signed checkpoint for event \(head.seq) was removed (\(headDescription) still names it)"
            )
        }
        guard headRow == head else {
            return AuditProblem(
                kind: .badCheckpoint, seq: head.seq,
                message: "the checkpoint for event \(head.seq) differs from the one in \(headDescription)"
            )
        }
        return nil
    }

    private func checkEvent(
        _ row: StoredEventRow,
        next: StoredEventRow?,
        expected: Int64,
        previousHash: String
    ) -> AuditProblem? {
        let seq = row.seq
        if seq < expected {
            return AuditProblem(
                kind: .inserted, seq: seq,
                message: "event \(seq) was inserted: the trail starts at event 1"
            )
        }
        if seq > expected {
            return removed(from: expected, through: seq - 1, detail: nil)
        }

        guard let bytes = row.body.bytes else {
            return changed(seq, "its body is missing")
        }
        guard row.hash == .text(AuditCanonical.hash(of: bytes)) else {
            return changed(seq, "its hash does not match its contents")
        }
        guard let body = try? AuditCanonical.decode(bytes) else {
            return changed(seq, "its contents cannot be decoded")
        }

        if body.seq != seq {
            if body.seq == seq + 1, let next, next.seq == seq + 1, Self.bodySeq(of: next) == seq {
                return AuditProblem(
                    kind: .reordered, seq: seq,
                    message: "events \(seq) and \(seq + 1) were swapped"
                )
            }
            if body.seq > seq {
                return removed(from: seq, through: body.seq - 1, detail: "and the events after it renumbered")
            }
            // The rows from body.seq up to here all looked sound, so they are the intruders and
            // this row is the original event body.seq, pushed down.
            let count = seq - body.seq
            return AuditProblem(
                kind: .inserted, seq: body.seq,
                message: count == 1
                    ? "event \(body.seq) was inserted: the original event \(body.seq) now sits at \(seq)"
                    : "events \(body.seq) to \(seq - 1) were inserted: the original event \(body.seq) now sits at \(seq)"
            )
        }

        let record = body.record
        let columns: [(String, StoredValue, StoredValue)] = [
            ("time", row.timeMillis, .integer(record.timeMillis)),
            ("subject", row.subject, StoredValue(record.principal?.subject)),
            ("agent", row.agent, StoredValue(record.principal?.agent)),
            ("session", row.session, StoredValue(record.session)),
            ("connection", row.connection, StoredValue(record.connection)),
            ("kind", row.kind, StoredValue(record.operation.kind)),
            ("prev_hash", row.prevHash, .text(body.prevHash)),
        ]
        for (name, stored, truth) in columns where stored != truth {
            return changed(seq, "its \(name) column does not match its contents")
        }

        if body.prevHash != previousHash {
            if seq == 1 {
                return changed(1, "it does not link to the start of the chain")
            }
            // The event before passed its own hash check, so it was rewritten together with its
            // hash (or this event's link was): either way the break is right after the change.
            return AuditProblem(
                kind: .changed, seq: seq - 1,
                message: "event \(seq - 1) was changed: its hash is not the one event \(seq) was chained to"
            )
        }
        return nil
    }

    private static func bodySeq(of row: StoredEventRow) -> Int64? {
        guard let bytes = row.body.bytes else { return nil }
        return try? AuditCanonical.decode(bytes).seq
    }

    private func changed(_ seq: Int64, _ reason: String) -> AuditProblem {
        AuditProblem(kind: .changed, seq: seq, message: "event \(seq) was changed: \(reason)")
    }

    private func removed(from first: Int64, through last: Int64, detail: String?) -> AuditProblem {
        var message = first == last ? "event \(first) was removed" : "events \(first) to \(last) were removed"
        if let detail { message += " " + detail }
        return AuditProblem(kind: .removed, seq: first, message: message)
    }

    private func truncated(after lastSeq: Int64, covered: Int64) -> AuditProblem {
        let first = lastSeq + 1
        let what = first == covered ? "event \(first) was removed" : "events \(first) to \(covered) were removed"
        return AuditProblem(
            kind: .removed, seq: first,
            message: "\(what) from the end of the trail: a signed checkpoint covers event \(covered)"
        )
    }

    private func badSignature(_ checkpoint: AuditCheckpoint) -> AuditProblem {
        var message = "the checkpoint for event \(checkpoint.seq) is not signed by the configured key"
        if checkpoint.publicKey != verifier.publicKey {
            message += " (it names key \(checkpoint.publicKey.prefix(16))…)"
        }
        return AuditProblem(kind: .badCheckpoint, seq: checkpoint.seq, message: message)
    }

    private func checkpointMismatch(seq: Int64, after lastGood: Int64) -> AuditProblem {
        let message = lastGood + 1 == seq
            ? "event \(seq) was changed: it does not match its signed checkpoint"
            : "event \(seq) does not match its signed checkpoint: an event from \(lastGood + 1) to \(seq) was changed and the hashes after it recomputed"
        return AuditProblem(kind: .changed, seq: seq, message: message)
    }
}

import Foundation
import GatehouseCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where audit events are kept. Implementations are append-only, hash-chained trails; every
/// implementation must pass the same conformance suite, so nothing here may assume a particular
/// database.
public protocol AuditStore: Sendable {
    /// Appends `records` together and returns them as sequenced, chained events, in order.
    ///
    /// The chain tail is read under the same lock as the write, so another process appending to
    /// the same trail (the CLI, a second gateway) can never fork the chain. Either every record is
    /// stored and durable when this returns, or none is and it throws: callers deny the request
    /// (fail closed).
    ///
    /// Blocking: `AuditLog` calls it on its writer thread, or on the requesting thread (an event
    /// loop) when `appendsAreQuick`, which saves two thread hops per statement.
    func append(encoded records: [EncodedAuditRecord]) throws -> [AuditEvent]

    /// Whether an append is a local write short enough to run on an event loop: no network round
    /// trip and no fsync.
    var appendsAreQuick: Bool { get }

    /// Signs the current tail (its sequence number and hash) and stores the checkpoint.
    /// Returns nil when there is nothing new to sign: no events, or the tail is already checkpointed.
    /// Blocking, like `append`; the audit log runs it on its writer thread.
    func appendCheckpoint(signedBy signer: AuditSigner, time: Date) throws -> AuditCheckpoint?

    /// Events matching `query`, in sequence order. Page large trails with `afterSeq` and `limit`.
    func events(_ query: AuditQuery) async throws -> [AuditEvent]

    /// Proves the trail is whole, or names the first event where it is not. Checkpoint signatures are
    /// checked against `verifier`'s key, never against the key a checkpoint claims for itself.
    func verify(verifier: AuditSignatureVerifier) async throws -> AuditVerification

    /// Whether an append could succeed now (for readiness probes). Never appends anything.
    func isWritable() async -> Bool

    /// Releases the store. Later calls throw.
    func close() async throws
}

extension AuditStore {
    public func append(_ records: [AuditRecord]) throws -> [AuditEvent] {
        try append(encoded: try records.map(EncodedAuditRecord.init))
    }
}

/// Which events to list.
public struct AuditQuery: Sendable, Equatable {
    /// Only events recorded at or after this time.
    public var since: Date?
    /// Only events whose principal has this subject.
    public var subject: String?
    /// Only events with a sequence number greater than this (for paging).
    public var afterSeq: Int64?
    /// At most this many events; nil for all of them.
    public var limit: Int?
    /// Only events of this session (one client connection).
    public var session: String?

    public init(since: Date? = nil, subject: String? = nil, afterSeq: Int64? = nil, limit: Int? = nil, session: String? = nil) {
        self.since = since
        self.subject = subject
        self.afterSeq = afterSeq
        self.limit = limit
        self.session = session
    }
}

/// How the embedded store is opened and how often the gateway signs its tail.
public struct AuditStoreOptions: Sendable, Equatable {
    public enum Durability: String, Sendable, Codable, CaseIterable {
        /// A committed event survives the gateway being killed (SIGKILL, crash), not a power loss.
        case normal
        /// A committed event also survives a power loss or kernel crash, at the cost of an fsync per
        /// batch.
        case fsync
    }

    /// The SQLite file. `-wal`, `-shm` and `.head` files live beside it.
    public var path: String
    public var durability: Durability
    /// Sign a checkpoint after at least this many events (and at shutdown).
    public var checkpointEvery: Int
    /// At most this many events per transaction.
    public var maxBatch: Int
    /// The Ed25519 private key that signs checkpoints; created on first start.
    public var signingKeyPath: String
    /// This gateway's name, written into its checkpoints.
    public var node: String
    /// How long a write waits for another process (the CLI) holding the file's write lock.
    public var busyTimeout: Duration

    public init(
        path: String,
        durability: Durability = .normal,
        checkpointEvery: Int = 1000,
        maxBatch: Int = 512,
        signingKeyPath: String? = nil,
        node: String = AuditStoreOptions.defaultNode(),
        busyTimeout: Duration = .seconds(5)
    ) {
        self.path = path
        self.durability = durability
        self.checkpointEvery = checkpointEvery
        self.maxBatch = maxBatch
        self.signingKeyPath = signingKeyPath ?? path + ".key"
        self.node = node
        self.busyTimeout = busyTimeout
    }

    /// The host name, read without a DNS lookup (`ProcessInfo.hostName` may resolve it, and stall
    /// on a machine without a resolver).
    public static func defaultNode() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "gatehouse" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "gatehouse" : name
    }
}

/// The result of `AuditStore.verify`.
public struct AuditVerification: Sendable, Equatable, CustomStringConvertible {
    public var eventCount: Int64
    /// The newest checkpoint stored.
    public var lastCheckpoint: AuditCheckpoint?
    /// Events after the last checkpoint. They are chained but not yet signed, so removing them from
    /// the end of the trail cannot be proven; this is not an error.
    public var uncheckpointedTail: Int64
    /// The first thing found wrong, nil when the trail is intact.
    public var problem: AuditProblem?

    public init(eventCount: Int64, lastCheckpoint: AuditCheckpoint?, uncheckpointedTail: Int64, problem: AuditProblem?) {
        self.eventCount = eventCount
        self.lastCheckpoint = lastCheckpoint
        self.uncheckpointedTail = uncheckpointedTail
        self.problem = problem
    }

    public var isIntact: Bool { problem == nil }

    public var description: String {
        if let problem {
            return "audit trail is NOT intact: \(problem.message)"
        }
        var text = "audit trail is intact: \(eventCount) events"
        if let lastCheckpoint {
            text += ", last signed checkpoint at event \(lastCheckpoint.seq)"
        } else {
            text += ", no signed checkpoint yet"
        }
        if uncheckpointedTail > 0 {
            text += ", \(uncheckpointedTail) events after it not yet signed"
        }
        return text
    }
}

/// What `verify` found wrong, naming the first bad event.
public struct AuditProblem: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable, Equatable, CaseIterable {
        /// An event's contents, hash or columns were altered.
        case changed
        /// One or more events (or a signed checkpoint) are missing.
        case removed
        /// An event that was never appended by the gateway sits in the chain.
        case inserted
        /// Events are in the wrong order.
        case reordered
        /// A checkpoint is not signed by the configured key, or disagrees with the head file.
        case badCheckpoint
    }

    public var kind: Kind
    /// The first event concerned (for `badCheckpoint`, the event the checkpoint covers).
    public var seq: Int64
    /// For people, e.g. "event 17 was changed: its hash does not match its contents".
    public var message: String

    public init(kind: Kind, seq: Int64, message: String) {
        self.kind = kind
        self.seq = seq
        self.message = message
    }

    public var description: String { message }
}

import Foundation
import GatehouseCore
import Logging
import Metrics

/// The gateway's single audit writer (group commit).
///
/// Requests from many sessions call `append` concurrently; one writer task takes everything queued
/// so far (up to `maxBatch`) and stores it in one transaction. While that transaction is in flight,
/// new events queue up and form the next batch, so batches grow with load without any timer, and a
/// request waits only for the transaction holding its own event.
public actor AuditLog {
    /// Counts since this log was created, for tests and status pages.
    public struct Statistics: Sendable, Equatable {
        /// Transactions that stored events.
        public var batches = 0
        public var events = 0
        public var failedAppends = 0
        public var checkpoints = 0
    }

    private struct Pending {
        var item: EncodedAuditRecord
        var continuation: CheckedContinuation<AuditEvent, any Error>
    }

    private enum State {
        case open
        case draining
        case closed
    }

    public nonisolated let store: any AuditStore
    private let signer: AuditSigner
    private let checkpointEvery: Int
    private let maxBatch: Int
    private let maxQueueDepth: Int
    private let logger: Logger

    private var queue: [Pending] = []
    private var writer: Task<Void, Never>?
    private var shutdownTask: Task<Void, any Error>?
    private var state = State.open
    private var sinceCheckpoint = 0
    public private(set) var statistics = Statistics()

    private let batchSize = Recorder(label: "gatehouse_audit_batch_size")
    private let queueDepth = Gauge(label: "gatehouse_audit_queue_depth")
    private let failures = Counter(label: "gatehouse_audit_append_failures_total")

    /// - Parameter maxQueueDepth: events allowed to wait; beyond it appends are refused at once
    ///   (fail closed) rather than letting memory and latency grow without bound.
    public init(
        store: any AuditStore,
        signer: AuditSigner,
        checkpointEvery: Int = 1000,
        maxBatch: Int = 512,
        maxQueueDepth: Int = 65_536,
        logger: Logger
    ) {
        self.store = store
        self.signer = signer
        self.checkpointEvery = max(1, checkpointEvery)
        self.maxBatch = max(1, maxBatch)
        self.maxQueueDepth = max(1, maxQueueDepth)
        self.logger = logger
    }

    /// Opens the embedded SQLite store and the signing key (created on first start) named by
    /// `options`.
    public init(options: AuditStoreOptions, logger: Logger) throws {
        let signer = try AuditSigner.loadOrCreate(path: options.signingKeyPath, logger: logger)
        let store = try SQLiteAuditStore(options: options)
        self.init(
            store: store,
            signer: signer,
            checkpointEvery: options.checkpointEvery,
            maxBatch: options.maxBatch,
            logger: logger
        )
    }

    /// Records one event durably and returns it with its sequence number and hash. When this throws,
    /// the event was not recorded and the caller must deny the request.
    public nonisolated func append(_ record: AuditRecord) async throws -> AuditEvent {
        // Encoded here, in the caller's task, so that work runs in parallel across requests and the
        // single writer only splices and hashes.
        let item: EncodedAuditRecord
        do {
            item = try EncodedAuditRecord(record)
        } catch {
            await countFailures(1)
            throw error
        }
        return try await enqueue(item)
    }

    private func enqueue(_ item: EncodedAuditRecord) async throws -> AuditEvent {
        guard state == .open else {
            countFailures(1)
            throw AuditErrors.closed()
        }
        guard queue.count < maxQueueDepth else {
            countFailures(1)
            throw AuditErrors.overloaded(depth: queue.count)
        }
        return try await withCheckedThrowingContinuation { continuation in
            queue.append(Pending(item: item, continuation: continuation))
            queueDepth.record(queue.count)
            if writer == nil {
                writer = Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while !queue.isEmpty {
            let count = min(maxBatch, queue.count)
            let batch = Array(queue.prefix(count))
            queue.removeFirst(count)
            queueDepth.record(queue.count)
            batchSize.record(count)

            do {
                let events = try await write(batch.map(\.item))
                guard events.count == batch.count else { throw AuditErrors.internalMismatch() }
                statistics.batches += 1
                statistics.events += count
                for (pending, event) in zip(batch, events) {
                    pending.continuation.resume(returning: event)
                }
                sinceCheckpoint += count
                if sinceCheckpoint >= checkpointEvery {
                    await checkpoint()
                }
            } catch {
                countFailures(count)
                logger.error(
                    "audit append failed; the requests are denied",
                    metadata: ["events": "\(count)", "error": "\(error)"]
                )
                let reported = error is GatehouseError ? error : AuditErrors.unavailable("store", String(describing: error))
                for pending in batch {
                    pending.continuation.resume(throwing: reported)
                }
            }
        }
        writer = nil
    }

    private func write(_ items: [EncodedAuditRecord]) async throws -> [AuditEvent] {
        if let sqlite = store as? SQLiteAuditStore {
            return try await sqlite.append(encoded: items)
        }
        return try await store.append(items.map(\.record))
    }

    private func checkpoint() async {
        do {
            if try await store.appendCheckpoint(signedBy: signer, time: Date()) != nil {
                statistics.checkpoints += 1
            }
            sinceCheckpoint = 0
        } catch {
            // Events stay chained; the next batch tries again and verify reports the unsigned tail.
            logger.error("audit checkpoint failed", metadata: ["error": "\(error)"])
        }
    }

    private func countFailures(_ count: Int) {
        statistics.failedAppends += count
        failures.increment(by: count)
    }

    /// Refuses new events, writes every queued one, signs a final checkpoint and closes the store.
    /// Safe to call more than once; later calls wait for the first.
    public func shutdown() async throws {
        if let shutdownTask {
            return try await shutdownTask.value
        }
        state = .draining
        let task = Task { try await self.finish() }
        shutdownTask = task
        try await task.value
    }

    private func finish() async throws {
        if let writer {
            await writer.value
        }
        state = .closed
        var firstError: (any Error)?
        do {
            if try await store.appendCheckpoint(signedBy: signer, time: Date()) != nil {
                statistics.checkpoints += 1
            }
        } catch {
            logger.error("final audit checkpoint failed", metadata: ["error": "\(error)"])
            firstError = error
        }
        do {
            try await store.close()
        } catch {
            firstError = firstError ?? error
        }
        if let firstError {
            throw firstError
        }
    }
}

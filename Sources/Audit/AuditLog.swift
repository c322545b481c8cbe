import Dispatch
import Foundation
import GatehouseCore
import Logging
import Metrics

/// The gateway's single way into the audit trail.
///
/// Three ways to append, by what the caller needs:
/// - `appendNow`: blocking, on the caller's thread. The PostgreSQL gateway uses it on its event
///   loop for a statement's request event when the store's appends are quick, so a statement costs
///   no thread hop at all before it is forwarded.
/// - `append` (async): queued for the writer thread, which stores everything queued so far in one
///   append (group commit: batches grow with load, without a timer).
/// - `appendEventually`: queued without waiting, stored with the next write or within
///   `flushDelay`. For events nothing waits on (a statement's result, a disconnect); they can be
///   lost only if the process dies inside that window, and the statement's request event, which is
///   always recorded before the statement runs, is never among them.
///
/// Every write takes whatever is queued first, so events are chained in the order they were
/// appended, whichever path they took.
public final class AuditLog: Sendable {
    /// Counts since this log was created, for tests and status pages.
    public struct Statistics: Sendable, Equatable {
        /// Transactions that stored events.
        public var batches = 0
        public var events = 0
        public var failedAppends = 0
        public var checkpoints = 0
    }

    private typealias Completion = @Sendable (Result<AuditEvent, any Error>) -> Void

    private struct Pending {
        var item: EncodedAuditRecord
        var completion: Completion?
    }

    private struct State {
        var queue: [Pending] = []
        var queuedBytes = 0
        var flushScheduled = false
        var closed = false
        var sinceCheckpoint = 0
        var checkpointScheduled = false
        var statistics = Statistics()
    }

    public let store: any AuditStore
    private let signer: AuditSigner
    private let checkpointEvery: Int
    private let maxBatch: Int
    private let maxQueueDepth: Int
    private let maxQueueBytes: Int
    private let flushDelay: Duration
    private let logger: Logger

    private let state = Locked(State())
    /// Held while a batch is taken from the queue and written, so batches reach the store in the
    /// order they were taken.
    private let writeLock = NSLock()
    private let writer = DispatchQueue(label: "gatehouse.audit.writer", qos: .userInitiated)

    private let batchSize = Recorder(label: "gatehouse_audit_batch_size")
    private let queueDepth = Gauge(label: "gatehouse_audit_queue_depth")
    private let failures = Counter(label: "gatehouse_audit_append_failures_total")

    /// - Parameter maxQueueBytes: encoded bytes allowed to wait, so large payloads cannot pile up
    ///   in memory while the store is slow; beyond it appends are refused too.
    /// - Parameter maxQueueDepth: events allowed to wait; beyond it appends are refused at once
    ///   (fail closed) rather than letting memory and latency grow without bound.
    /// - Parameter flushDelay: how long an `appendEventually` event may wait for a write to join.
    public init(
        store: any AuditStore,
        signer: AuditSigner,
        checkpointEvery: Int = 1000,
        maxBatch: Int = 512,
        maxQueueDepth: Int = 65_536,
        maxQueueBytes: Int = 256 << 20,
        flushDelay: Duration = .milliseconds(20),
        logger: Logger
    ) {
        self.store = store
        self.signer = signer
        self.checkpointEvery = max(1, checkpointEvery)
        self.maxBatch = max(1, maxBatch)
        self.maxQueueDepth = max(1, maxQueueDepth)
        self.maxQueueBytes = max(1, maxQueueBytes)
        self.flushDelay = flushDelay
        self.logger = logger
    }

    /// Opens the embedded SQLite store and the signing key (created on first start) named by
    /// `options`.
    public convenience init(options: AuditStoreOptions, logger: Logger) throws {
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

    public var statistics: Statistics {
        state.withLock { $0.statistics }
    }

    /// Whether `appendNow` is cheap enough for an event loop (see `AuditStore.appendsAreQuick`).
    public var appendsAreQuick: Bool { store.appendsAreQuick }

    // MARK: Appending

    /// Records one event durably on the calling thread and returns it with its sequence number and
    /// hash; anything queued before it is written in the same transaction. When this throws, the
    /// event was not recorded and the caller must deny the request.
    public func appendNow(_ record: AuditRecord) throws -> AuditEvent {
        try appendNow([record])[0].get()
    }

    /// Records several events durably on the calling thread, in one transaction when they fit in a
    /// batch, and returns one result per record, in order. A record that fails (too large) fails
    /// alone; a store failure fails them all.
    public func appendNow(_ records: [AuditRecord]) -> [Result<AuditEvent, any Error>] {
        var results: [Result<AuditEvent, any Error>?] = Array(repeating: nil, count: records.count)
        var items: [EncodedAuditRecord] = []
        var positions: [Int] = []
        items.reserveCapacity(records.count)
        positions.reserveCapacity(records.count)
        for (index, record) in records.enumerated() {
            do {
                items.append(try encode(record))
                positions.append(index)
            } catch {
                results[index] = .failure(error)
            }
        }
        if !items.isEmpty {
            writeLock.lock()
            // Checked under the lock: shutdown takes it for the final checkpoint, and nothing may
            // be recorded after that.
            let written: Written
            if state.withLock({ $0.closed }) {
                written = Written(own: Array(repeating: .failure(AuditErrors.closed()), count: items.count), waiters: [])
                countFailures(items.count)
            } else {
                written = writeQueued(then: items)
            }
            writeLock.unlock()
            written.finish()
            for (position, result) in zip(positions, written.own) { results[position] = result }
        }
        return results.map { $0 ?? .failure(AuditErrors.internalMismatch()) }
    }

    /// Records one event durably (group commit on the writer thread) and returns it with its
    /// sequence number and hash. When this throws, the event was not recorded and the caller must
    /// deny the request.
    public func append(_ record: AuditRecord) async throws -> AuditEvent {
        let item = try encode(record)
        return try await withCheckedThrowingContinuation { continuation in
            enqueue(item, completion: { continuation.resume(with: $0) }, delay: .zero)
        }
    }

    /// Queues an event nothing waits for. A failure to store it is logged and counted.
    public func appendEventually(_ record: AuditRecord) {
        guard let item = try? encode(record) else {
            logger.error("audit event could not be encoded", metadata: ["kind": "\(record.operation.kind)"])
            return
        }
        enqueue(item, completion: nil, delay: flushDelay)
    }

    private func encode(_ record: AuditRecord) throws -> EncodedAuditRecord {
        do {
            return try EncodedAuditRecord(record)
        } catch {
            countFailures(1)
            throw error
        }
    }

    private func enqueue(_ item: EncodedAuditRecord, completion: Completion?, delay: Duration) {
        enum Admission { case refused(any Error), queued(flushNow: Bool, schedule: Bool) }
        let admission = state.withLock { state -> Admission in
            guard !state.closed else { return .refused(AuditErrors.closed()) }
            guard state.queue.count < maxQueueDepth, state.queuedBytes + item.json.count <= maxQueueBytes else {
                return .refused(AuditErrors.overloaded(depth: state.queue.count))
            }
            state.queuedBytes += item.json.count
            state.queue.append(Pending(item: item, completion: completion))
            let flushNow = delay == .zero || state.queue.count >= maxBatch
            let schedule = !state.flushScheduled || flushNow
            if schedule { state.flushScheduled = true }
            return .queued(flushNow: flushNow, schedule: schedule)
        }
        switch admission {
        case .refused(let error):
            countFailures(1)
            if let completion {
                completion(.failure(error))
            } else {
                logger.error("audit event dropped", metadata: ["error": "\(error)"])
            }
        case .queued(let flushNow, let schedule):
            queueDepth.record(state.withLock { $0.queue.count })
            guard schedule else { return }
            if flushNow {
                writer.async { self.flushQueue() }
            } else {
                writer.asyncAfter(deadline: .now() + .nanoseconds(Int(delay.inNanoseconds))) { self.flushQueue() }
            }
        }
    }

    private func flushQueue() {
        state.withLock { $0.flushScheduled = false }
        writeLock.lock()
        let written = writeQueued(then: [])
        writeLock.unlock()
        written.finish()
    }

    /// What one write did: the caller's own results and the queued waiters to tell.
    private struct Written {
        var own: [Result<AuditEvent, any Error>]
        var waiters: [(Completion, Result<AuditEvent, any Error>)]

        func finish() {
            for (completion, result) in waiters { completion(result) }
        }
    }

    /// Takes everything queued (then `own`) and stores it in transactions of at most `maxBatch`.
    /// Called with `writeLock` held.
    private func writeQueued(then own: [EncodedAuditRecord]) -> Written {
        // A scheduled flush stays scheduled (it finds the queue empty): re-arming a timer on every
        // statement would cost more than the one spare wake-up.
        var items = state.withLock { state -> [Pending] in
            defer {
                state.queue.removeAll(keepingCapacity: true)
                state.queuedBytes = 0
            }
            return state.queue
        }
        queueDepth.record(0)
        let firstOwn = items.count
        items.append(contentsOf: own.map { Pending(item: $0, completion: nil) })

        var written = Written(own: [], waiters: [])
        written.own.reserveCapacity(own.count)
        var start = 0
        while start < items.count {
            let range = start..<min(items.count, start + maxBatch)
            start = range.upperBound
            let batch = items[range]
            let result: Result<[AuditEvent], any Error> = Result {
                let events = try store.append(encoded: batch.map(\.item))
                guard events.count == batch.count else { throw AuditErrors.internalMismatch() }
                return events
            }
            let results: [Result<AuditEvent, any Error>]
            switch result {
            case .success(let events):
                batchSize.record(batch.count)
                let checkpointDue = state.withLock { state -> Bool in
                    state.statistics.batches += 1
                    state.statistics.events += batch.count
                    state.sinceCheckpoint += batch.count
                    guard state.sinceCheckpoint >= checkpointEvery, !state.checkpointScheduled else { return false }
                    state.checkpointScheduled = true
                    return true
                }
                if checkpointDue {
                    writer.async { self.checkpoint() }
                }
                results = events.map { .success($0) }
            case .failure(let error):
                countFailures(batch.count)
                logger.error(
                    "audit append failed; the requests are denied",
                    metadata: ["events": "\(batch.count)", "error": "\(error)"]
                )
                let reported = error is GatehouseError ? error : AuditErrors.unavailable("store", String(describing: error))
                results = Array(repeating: .failure(reported), count: batch.count)
            }
            for (index, result) in zip(range, results) {
                if index >= firstOwn {
                    written.own.append(result)
                } else if let completion = items[index].completion {
                    written.waiters.append((completion, result))
                }
            }
        }
        return written
    }

    private func checkpoint() {
        writeLock.lock()
        defer { writeLock.unlock() }
        do {
            let stored = try store.appendCheckpoint(signedBy: signer, time: Date())
            state.withLock { state in
                if stored != nil { state.statistics.checkpoints += 1 }
                state.sinceCheckpoint = 0
                state.checkpointScheduled = false
            }
        } catch {
            // Events stay chained; the next batch tries again and verify reports the unsigned tail.
            state.withLock { $0.checkpointScheduled = false }
            logger.error("audit checkpoint failed", metadata: ["error": "\(error)"])
        }
    }

    private func countFailures(_ count: Int) {
        state.withLock { $0.statistics.failedAppends += count }
        failures.increment(by: count)
    }

    // MARK: Shutdown

    /// Refuses new events, writes every queued one, signs a final checkpoint and closes the store
    /// (also when that checkpoint fails; the failure is what is thrown). Safe to call more than once.
    public func shutdown() async throws {
        let first = state.withLock { state -> Bool in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        do {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                writer.async {
                    continuation.resume(with: Result { try self.flushAndSign() })
                }
            }
        } catch {
            try? await store.close()
            throw error
        }
        try await store.close()
    }

    private func flushAndSign() throws {
        flushQueue()
        writeLock.lock()
        defer { writeLock.unlock() }
        do {
            if try store.appendCheckpoint(signedBy: signer, time: Date()) != nil {
                state.withLock { $0.statistics.checkpoints += 1 }
            }
        } catch {
            logger.error("final audit checkpoint failed", metadata: ["error": "\(error)"])
            throw error
        }
    }
}

/// A value behind a lock, for state shared across threads that is too small to deserve an actor.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

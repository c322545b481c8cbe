import Audit
import Foundation
import GatehouseCore
import NIOConcurrencyHelpers
import NIOCore

/// Statement events of every session on one event loop, recorded together once per loop tick.
///
/// Statements that arrive in one wake-up of the loop (several clients, or a pipelining client) share
/// one append to the trail, written on the loop itself right after its reads: group commit without a
/// thread hop. Each statement is still forwarded only after its own event is recorded. Used only on
/// its event loop.
final class LoopAuditBatcher {
    typealias Completion = (Result<AuditEvent, any Error>) -> Void

    private let log: AuditLog
    private let eventLoop: any EventLoop
    private var records: [AuditRecord] = []
    private var completions: [Completion] = []
    private var flushScheduled = false

    init(log: AuditLog, eventLoop: any EventLoop) {
        self.log = log
        self.eventLoop = eventLoop
    }

    func append(_ record: AuditRecord, completion: @escaping Completion) {
        eventLoop.preconditionInEventLoop()
        records.append(record)
        completions.append(completion)
        guard !flushScheduled else { return }
        flushScheduled = true
        eventLoop.assumeIsolated().execute { self.flush() }
    }

    private func flush() {
        flushScheduled = false
        let batch = records
        let callbacks = completions
        records.removeAll(keepingCapacity: true)
        completions.removeAll(keepingCapacity: true)
        for (callback, result) in zip(callbacks, log.appendNow(batch)) {
            callback(result)
        }
    }
}

/// One batcher per event loop, created on first use.
final class LoopAuditBatchers: Sendable {
    private let log: AuditLog
    private let batchers = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<LoopAuditBatcher>]>([:])

    init(log: AuditLog) {
        self.log = log
    }

    /// The batcher of `eventLoop`; call it on that loop.
    func batcher(on eventLoop: any EventLoop) -> LoopAuditBatcher {
        let key = ObjectIdentifier(eventLoop)
        return batchers.withLockedValue { batchers in
            if let existing = batchers[key] { return existing.value }
            let batcher = LoopAuditBatcher(log: log, eventLoop: eventLoop)
            batchers[key] = NIOLoopBound(batcher, eventLoop: eventLoop)
            return batcher
        }
    }
}

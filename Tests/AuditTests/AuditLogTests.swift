@testable import Audit
import Foundation
import GatehouseCore
import Logging
import Testing

/// A store that refuses every write, as a full disk or a lost database would.
private final class BrokenStore: AuditStore {
    let closed = LockedFlag()

    var appendsAreQuick: Bool { true }

    func append(encoded records: [EncodedAuditRecord]) throws -> [AuditEvent] {
        throw GatehouseError("audit.store_unavailable", "disk full")
    }

    func appendCheckpoint(signedBy signer: AuditSigner, time: Date) throws -> AuditCheckpoint? {
        throw GatehouseError("audit.store_unavailable", "disk full")
    }

    func events(_ query: AuditQuery) async throws -> [AuditEvent] { [] }

    func verify(verifier: AuditSignatureVerifier) async throws -> AuditVerification {
        AuditVerification(eventCount: 0, lastCheckpoint: nil, uncheckpointedTail: 0, problem: nil)
    }

    func isWritable() async -> Bool { false }

    func close() async throws { _ = closed.set() }
}

@Suite("AuditLog")
struct AuditLogTests {
    let signer = AuditSigner.generate()

    @Test func failingStoreFailsEveryWaitingRequest() async throws {
        let store = BrokenStore()
        let log = AuditLog(store: store, signer: signer, logger: Fixture.logger)
        let outcomes = await withTaskGroup(of: String?.self) { group in
            for index in 1...20 {
                group.addTask {
                    do {
                        _ = try await log.append(Fixture.record(index))
                        return nil
                    } catch let error as GatehouseError {
                        return error.code
                    } catch {
                        return "unexpected"
                    }
                }
            }
            var codes: [String?] = []
            for await code in group { codes.append(code) }
            return codes
        }
        #expect(outcomes.count == 20)
        #expect(outcomes.allSatisfy { $0 == "audit.store_unavailable" })
        #expect(log.statistics.failedAppends == 20)
        #expect(log.statistics.events == 0)
        await #expect(throws: GatehouseError.self) { try await log.shutdown() }
        #expect(store.closed.value, "shutdown closes the store even when the final checkpoint fails")
    }

    @Test func oversizedRecordFailsAloneAndOthersInTheBatchSucceed() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let log = AuditLog(store: try await harness.openStore(), signer: signer, logger: Fixture.logger)
        var huge = Fixture.record(0)
        huge.payload = String(repeating: "x", count: AuditCanonical.maximumBodyBytes)
        let hugeRecord = huge

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let error = await #expect(throws: GatehouseError.self) { _ = try await log.append(hugeRecord) }
                #expect(error?.code == "audit.record_too_large")
            }
            for index in 1...10 {
                group.addTask { _ = try await log.append(Fixture.record(index)) }
            }
            try await group.waitForAll()
        }
        #expect(log.statistics.events == 10)
        #expect(log.statistics.failedAppends == 1)
        try await log.shutdown()
    }

    @Test func shutdownDrainsTheQueueAndRefusesLaterAppends() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let log = AuditLog(store: try await harness.openStore(), signer: signer, checkpointEvery: 1000, logger: Fixture.logger)
        async let appended = withThrowingTaskGroup(of: AuditEvent.self) { group in
            for index in 1...50 {
                group.addTask { try await log.append(Fixture.record(index)) }
            }
            var count = 0
            for try await _ in group { count += 1 }
            return count
        }
        #expect(try await appended == 50)
        try await log.shutdown()
        try await log.shutdown()

        let error = await #expect(throws: GatehouseError.self) { _ = try await log.append(Fixture.record(51)) }
        #expect(error?.code == "audit.store_closed")

        let result = try await Fixture.verify(harness, with: signer.verifier)
        #expect(result.isIntact)
        #expect(result.eventCount == 50)
        #expect(result.lastCheckpoint?.seq == 50, "shutdown signs the tail")
        #expect(result.uncheckpointedTail == 0)
    }

    @Test func checkpointsEveryNEvents() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let log = AuditLog(store: try await harness.openStore(), signer: signer, checkpointEvery: 3, logger: Fixture.logger)
        for index in 1...7 {
            _ = try await log.append(Fixture.record(index))
        }
        #expect(log.statistics.checkpoints == 2)
        let store = try await harness.openStore()
        let before = try await store.verify(verifier: signer.verifier)
        #expect(before.lastCheckpoint?.seq == 6)
        #expect(before.uncheckpointedTail == 1)
        try await store.close()
        try await log.shutdown()
        #expect(log.statistics.checkpoints == 3)
    }

    @Test func queuedEventsAreChainedBeforeAnInlineAppend() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let log = AuditLog(
            store: try await harness.openStore(), signer: signer, flushDelay: .seconds(60), logger: Fixture.logger)
        log.appendEventually(Fixture.record(1))
        log.appendEventually(Fixture.record(2))
        #expect(log.statistics.events == 0, "nothing forces a write yet")
        let third = try log.appendNow(Fixture.record(3))
        #expect(third.seq == 3)
        #expect(log.statistics.batches == 1, "the queued events joined the inline transaction")
        try await log.shutdown()

        let store = try await harness.openStore()
        let events = try await store.events(AuditQuery())
        #expect(events.map(\.record) == [Fixture.record(1), Fixture.record(2), Fixture.record(3)])
        try await store.close()
    }

    @Test func eventuallyAppendedEventsLandWithinTheFlushDelay() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let log = AuditLog(
            store: try await harness.openStore(), signer: signer, flushDelay: .milliseconds(10), logger: Fixture.logger)
        log.appendEventually(Fixture.record(1))
        let deadline = ContinuousClock.now + .seconds(5)
        while log.statistics.events == 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(log.statistics.events == 1)
        try await log.shutdown()
        #expect(try await Fixture.verify(harness, with: signer.verifier).eventCount == 1)
    }

    @Test func queuedBytesAreBounded() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        var big = Fixture.record(1)
        big.payload = String(repeating: "x", count: 1000)
        let size = try EncodedAuditRecord(big).json.count
        let log = AuditLog(
            store: try await harness.openStore(), signer: signer, maxQueueBytes: size * 5 / 2, flushDelay: .seconds(60),
            logger: Fixture.logger)
        log.appendEventually(big)
        log.appendEventually(big)
        #expect(log.statistics.failedAppends == 0)
        log.appendEventually(big)
        #expect(log.statistics.failedAppends == 1, "the third would pass the byte budget and is refused")
        _ = try log.appendNow(Fixture.record(2))
        #expect(log.statistics.events == 3, "the two queued events were written with the inline one")
        log.appendEventually(big)
        #expect(log.statistics.failedAppends == 1, "written events no longer count against the budget")
        try await log.shutdown()
    }

    @Test func inlineAppendFailsClosedWithABrokenStore() async throws {
        let log = AuditLog(store: BrokenStore(), signer: signer, logger: Fixture.logger)
        let error = #expect(throws: GatehouseError.self) { _ = try log.appendNow(Fixture.record(1)) }
        #expect(error?.code == "audit.store_unavailable")
        #expect(log.statistics.failedAppends == 1)
    }

    @Test func opensFromOptionsAndCreatesTheKey() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let options = AuditStoreOptions(
            path: harness.directory + "/nested/audit.sqlite",
            checkpointEvery: 2,
            signingKeyPath: harness.directory + "/keys/audit.key",
            node: "gw-1"
        )
        let log = try AuditLog(options: options, logger: Fixture.logger)
        _ = try await log.append(Fixture.record(1))
        try await log.shutdown()

        let signer = try AuditSigner.loadOrCreate(path: options.signingKeyPath)
        let store = try SQLiteAuditStore(options: options)
        let result = try await store.verify(verifier: signer.verifier)
        #expect(result.isIntact)
        #expect(result.lastCheckpoint?.node == "gw-1")
        try await store.close()
    }
}

import Audit
import Foundation
import GatehouseCore
import Testing

/// Runs every store through the same checks. Each tampering case edits the backing database
/// directly, then a freshly opened store (as `gatehouse audit verify` would open it) must name it.
@Suite("Audit store conformance")
struct AuditStoreConformanceTests {
    let signer = AuditSigner.generate()

    private func withHarness(_ kind: StoreKind, _ body: (any AuditStoreHarness) async throws -> Void) async throws {
        let harness = try await kind.makeHarness()
        defer { harness.remove() }
        try await body(harness)
    }

    private func expectProblem(
        _ harness: any AuditStoreHarness,
        _ kind: AuditProblem.Kind,
        seq: Int64,
        mentioning words: [String] = [],
        verifier: AuditSignatureVerifier? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let result = try await Fixture.verify(harness, with: verifier ?? signer.verifier)
        let problem = try #require(result.problem, "verify found nothing", sourceLocation: sourceLocation)
        #expect(problem.kind == kind, "\(problem.message)", sourceLocation: sourceLocation)
        #expect(problem.seq == seq, "\(problem.message)", sourceLocation: sourceLocation)
        for word in words {
            #expect(problem.message.contains(word), "\(problem.message)", sourceLocation: sourceLocation)
        }
        #expect(!result.isIntact, sourceLocation: sourceLocation)
    }

    // MARK: Intact trails

    @Test(arguments: StoreKind.allCases)
    func intactTrailVerifies(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let events = try await Fixture.populate(harness, signer: signer)
            #expect(events.map(\.seq) == Array(1...10))
            #expect(events[0].prevHash == AuditEvent.genesisHash)
            for (previous, event) in zip(events, events.dropFirst()) {
                #expect(event.prevHash == previous.hash)
            }
            for event in events {
                #expect(try AuditCanonical.hash(seq: event.seq, prevHash: event.prevHash, record: event.record) == event.hash)
            }

            let result = try await Fixture.verify(harness, with: signer.verifier)
            #expect(result.isIntact, "\(result)")
            #expect(result.eventCount == 10)
            #expect(result.lastCheckpoint?.seq == 10)
            #expect(result.lastCheckpoint?.hash == events[9].hash)
            #expect(result.uncheckpointedTail == 0)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func eventsAfterTheLastCheckpointAreReportedAsTail(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            let store = try await harness.openStore()
            _ = try store.append([Fixture.record(11), Fixture.record(12), Fixture.record(13)])
            let result = try await store.verify(verifier: signer.verifier)
            try await store.close()
            #expect(result.isIntact, "\(result)")
            #expect(result.eventCount == 13)
            #expect(result.uncheckpointedTail == 3)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func emptyTrailIsIntact(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let store = try await harness.openStore()
            let result = try await store.verify(verifier: signer.verifier)
            #expect(result == AuditVerification(eventCount: 0, lastCheckpoint: nil, uncheckpointedTail: 0, problem: nil))
            #expect(try store.appendCheckpoint(signedBy: signer, time: Date()) == nil)
            try await store.close()
        }
    }

    @Test(arguments: StoreKind.allCases)
    func checkpointSignsTheTailOnce(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let store = try await harness.openStore()
            let events = try store.append([Fixture.record(1), Fixture.record(2)])
            let checkpoint = try #require(try store.appendCheckpoint(signedBy: signer, time: Fixture.base))
            #expect(checkpoint.seq == 2)
            #expect(checkpoint.hash == events[1].hash)
            #expect(checkpoint.node == "test-node")
            #expect(checkpoint.timeMillis == 1_700_000_000_000)
            #expect(checkpoint.publicKey == signer.publicKey)
            #expect(signer.verifier.isValid(checkpoint))
            #expect(try store.appendCheckpoint(signedBy: signer, time: Date()) == nil)
            try await store.close()
        }
    }

    // MARK: Changed events

    @Test(arguments: StoreKind.allCases)
    func detectsUpdatedRecordFieldInBody(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("UPDATE events SET body = replace(body, 'op-0005', 'op-0666') WHERE seq = 5")
            try await expectProblem(harness, .changed, seq: 5, mentioning: ["event 5 was changed", "hash does not match its contents"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsUpdatedSubjectColumn(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("UPDATE events SET subject = 'mallory' WHERE seq = 5")
            try await expectProblem(harness, .changed, seq: 5, mentioning: ["event 5 was changed", "subject column"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsUpdatedTimeColumn(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("UPDATE events SET time_ms = time_ms - 86400000 WHERE seq = 7")
            try await expectProblem(harness, .changed, seq: 7, mentioning: ["time column"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsUpdatedHash(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            let fake = String(repeating: "ab", count: 32)
            try await harness.tamper("UPDATE events SET hash = '\(fake)' WHERE seq = 5")
            try await expectProblem(harness, .changed, seq: 5, mentioning: ["hash does not match"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsUpdatedPrevHashColumn(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("UPDATE events SET prev_hash = '\(AuditEvent.genesisHash)' WHERE seq = 3")
            try await expectProblem(harness, .changed, seq: 3, mentioning: ["prev_hash column"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsEventRewrittenWithItsHashRecomputed(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let events = try await Fixture.populate(harness, signer: signer)
            var forged = events[4].record
            forged.decision = .deny(reason: "never happened")
            let rewrite = try Fixture.rewriteSQL(seq: 5, prevHash: events[3].hash, record: forged)
            try await harness.tamper(rewrite.sql)
            try await expectProblem(harness, .changed, seq: 5, mentioning: ["event 5 was changed", "event 6 was chained to"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsChainRecomputedToTheEndThroughTheCheckpoint(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let events = try await Fixture.populate(harness, signer: signer)
            var previous = events[3].hash
            var sql = ""
            for event in events[4...] {
                var record = event.record
                if event.seq == 5 { record.operation.text = "SELECT 1" }
                let rewrite = try Fixture.rewriteSQL(seq: event.seq, prevHash: previous, record: record)
                sql += rewrite.sql + "\n"
                previous = rewrite.hash
            }
            try await harness.tamper(sql)
            // Every link holds; only the signed checkpoint at 8 can tell, and it bounds the change.
            try await expectProblem(harness, .changed, seq: 8, mentioning: ["signed checkpoint", "from 5 to 8"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsChangedLastEventThroughTheShutdownCheckpoint(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let events = try await Fixture.populate(harness, signer: signer)
            var record = events[9].record
            record.payload = "nothing to see"
            let rewrite = try Fixture.rewriteSQL(seq: 10, prevHash: events[8].hash, record: record)
            try await harness.tamper(rewrite.sql)
            try await expectProblem(harness, .changed, seq: 10, mentioning: ["signed checkpoint"])
        }
    }

    // MARK: Removed events

    @Test(arguments: StoreKind.allCases)
    func detectsDeletedFirstEvent(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("DELETE FROM events WHERE seq = 1")
            try await expectProblem(harness, .removed, seq: 1, mentioning: ["event 1 was removed"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsDeletedMiddleEvent(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("DELETE FROM events WHERE seq = 5")
            try await expectProblem(harness, .removed, seq: 5, mentioning: ["event 5 was removed"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsDeletedRangeOfEvents(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("DELETE FROM events WHERE seq BETWEEN 3 AND 6")
            try await expectProblem(harness, .removed, seq: 3, mentioning: ["events 3 to 6 were removed"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsDeletedEventWithTheRestRenumbered(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("""
                DELETE FROM events WHERE seq = 5;
                UPDATE events SET seq = -(seq - 1) WHERE seq > 5;
                UPDATE events SET seq = -seq WHERE seq < 0;
                """)
            try await expectProblem(harness, .removed, seq: 5, mentioning: ["event 5 was removed", "renumbered"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsDeletedLastEventThroughTheShutdownCheckpoint(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("DELETE FROM events WHERE seq = 10")
            try await expectProblem(harness, .removed, seq: 10, mentioning: ["event 10 was removed", "end of the trail"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsDeletedNewestCheckpoint(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("DELETE FROM checkpoints WHERE seq = (SELECT max(seq) FROM checkpoints)")
            try await expectProblem(harness, .removed, seq: 10, mentioning: ["checkpoint for event 10 was removed"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsTruncatedTailWithItsCheckpoint(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("""
                DELETE FROM events WHERE seq > 8;
                DELETE FROM checkpoints WHERE seq > 8;
                """)
            try await expectProblem(harness, .removed, seq: 9, mentioning: ["events 9 to 10 were removed"])
        }
    }

    // MARK: Inserted and reordered events

    @Test(arguments: StoreKind.allCases)
    func detectsForgedEventInsertedByRenumbering(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let events = try await Fixture.populate(harness, signer: signer)
            var forged = Fixture.record(99, subject: "alice")
            forged.operation.text = "GRANT ALL ON orders TO mallory"
            try await harness.tamper("""
                UPDATE events SET seq = -seq WHERE seq >= 5;
                UPDATE events SET seq = -seq + 1 WHERE seq < 0;
                \(try Fixture.insertSQL(seq: 5, prevHash: events[3].hash, record: forged));
                """)
            try await expectProblem(harness, .inserted, seq: 5, mentioning: ["event 5 was inserted", "now sits at 6"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsSwappedPair(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("""
                UPDATE events SET seq = -1 WHERE seq = 5;
                UPDATE events SET seq = 5 WHERE seq = 6;
                UPDATE events SET seq = 6 WHERE seq = -1;
                """)
            try await expectProblem(harness, .reordered, seq: 5, mentioning: ["events 5 and 6 were swapped"])
        }
    }

    // MARK: Checkpoints

    @Test(arguments: StoreKind.allCases)
    func detectsCheckpointResignedWithAnotherKey(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let events = try await Fixture.populate(harness, signer: signer)
            let intruder = AuditSigner.generate()
            let forged = try intruder.sign(seq: 4, hash: events[3].hash, time: Date(), node: "test-node")
            try await harness.tamper("""
                UPDATE checkpoints SET public_key = '\(forged.publicKey)', signature = '\(forged.signature)',
                    time_ms = \(forged.timeMillis) WHERE seq = 4
                """)
            try await expectProblem(harness, .badCheckpoint, seq: 4, mentioning: ["not signed by the configured key"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func detectsCheckpointWhoseHashWasChanged(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await harness.tamper("UPDATE checkpoints SET hash = '\(AuditEvent.genesisHash)' WHERE seq = 8")
            try await expectProblem(harness, .badCheckpoint, seq: 8)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func rejectsCheckpointsWhenVerifyingWithAnotherKey(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            try await Fixture.populate(harness, signer: signer)
            try await expectProblem(harness, .badCheckpoint, seq: 4, verifier: AuditSigner.generate().verifier)
        }
    }

    // MARK: Appending

    @Test(arguments: StoreKind.allCases)
    func appendAfterReopenContinuesTheChain(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let first = try await harness.openStore()
            let before = try first.append([Fixture.record(1), Fixture.record(2), Fixture.record(3)])
            try await first.close()

            let second = try await harness.openStore()
            let after = try second.append([Fixture.record(4), Fixture.record(5)])
            #expect(after.map(\.seq) == [4, 5])
            #expect(after[0].prevHash == before[2].hash)
            let result = try await second.verify(verifier: signer.verifier)
            #expect(result.isIntact, "\(result)")
            #expect(result.eventCount == 5)
            try await second.close()
        }
    }

    @Test(arguments: StoreKind.allCases)
    func secondWriterOnTheSameTrailKeepsTheChain(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let gateway = try await harness.openStore()
            let cli = try await harness.openStore()
            for index in 0..<10 {
                let writer = index.isMultiple(of: 2) ? gateway : cli
                _ = try writer.append([Fixture.record(index)])
            }
            _ = try cli.appendCheckpoint(signedBy: signer, time: Date())

            // And at the same time, in batches, from both.
            try await withThrowingTaskGroup(of: [AuditEvent].self) { group in
                for index in 0..<40 {
                    let writer = index.isMultiple(of: 2) ? gateway : cli
                    group.addTask { try writer.append([Fixture.record(100 + index), Fixture.record(200 + index)]) }
                }
                var seqs: [Int64] = []
                for try await events in group {
                    #expect(events.count == 2)
                    #expect(events[1].seq == events[0].seq + 1, "a transaction's events are contiguous")
                    seqs += events.map(\.seq)
                }
                #expect(seqs.sorted() == Array(11...90))
            }
            _ = try gateway.appendCheckpoint(signedBy: signer, time: Date())

            let result = try await cli.verify(verifier: signer.verifier)
            #expect(result.isIntact, "\(result)")
            #expect(result.eventCount == 90)
            #expect(result.lastCheckpoint?.seq == 90)
            try await gateway.close()
            try await cli.close()
        }
    }

    @Test(arguments: StoreKind.allCases)
    func appendFailsClosedWhileTheStoreCannotBeWritten(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let store = try await harness.openImpatientStore()
            _ = try store.append([Fixture.record(1)])
            #expect(await store.isWritable())

            let release = try await harness.holdWriteLock()
            #expect(await store.isWritable() == false)
            // Appends are recorded (in the journal) until events have waited longer than the busy
            // timeout to be indexed; from then on they are refused.
            var accepted = 0
            var refusal: GatehouseError?
            let deadline = ContinuousClock.now + .seconds(10)
            while refusal == nil, ContinuousClock.now < deadline {
                do {
                    _ = try store.append([Fixture.record(2 + accepted)])
                    accepted += 1
                    try await Task.sleep(for: .milliseconds(20))
                } catch let error as GatehouseError {
                    refusal = error
                }
            }
            #expect(refusal?.code == "audit.store_unavailable")
            #expect(refusal?.message.contains("indexed") == true)

            // Through the group-commit writer the caller sees the same refusal.
            let log = AuditLog(store: store, signer: signer, logger: Fixture.logger)
            await #expect(throws: GatehouseError.self) {
                _ = try await log.append(Fixture.record(100))
            }
            #expect(log.statistics.failedAppends == 1)

            try await release()
            var event: AuditEvent?
            while event == nil, ContinuousClock.now < deadline {
                event = try? await log.append(Fixture.record(101))
                if event == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            // Nothing accepted while the table was locked was lost.
            #expect(event?.seq == Int64(2 + accepted))
            #expect(try await store.events(AuditQuery()).count == 2 + accepted)
            try await log.shutdown()
            #expect(try await Fixture.verify(harness, with: signer.verifier).isIntact)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func closedStoreRefusesEverything(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let store = try await harness.openStore()
            try await store.close()
            #expect(await store.isWritable() == false)
            let error = #expect(throws: GatehouseError.self) {
                _ = try store.append([Fixture.record(1)])
            }
            #expect(error?.code == "audit.store_closed")
            try await store.close()
        }
    }

    @Test(arguments: StoreKind.allCases)
    func isWritableAppendsNothing(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let store = try await harness.openStore()
            _ = try store.append([Fixture.record(1)])
            #expect(await store.isWritable())
            #expect(await store.isWritable())
            #expect(try await store.verify(verifier: signer.verifier).eventCount == 1)
            try await store.close()
        }
    }

    @Test(arguments: StoreKind.allCases)
    func oversizedRecordIsRefused(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let store = try await harness.openStore()
            var huge = Fixture.record(1)
            huge.payload = String(repeating: "x", count: AuditCanonical.maximumBodyBytes)
            let error = #expect(throws: GatehouseError.self) {
                _ = try store.append([huge])
            }
            #expect(error?.code == "audit.record_too_large")
            #expect(try await store.verify(verifier: signer.verifier).eventCount == 0)
            try await store.close()
        }
    }

    // MARK: Queries

    @Test(arguments: StoreKind.allCases)
    func queriesBySinceSubjectAndPage(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let store = try await harness.openStore()
            var records: [AuditRecord] = []
            for index in 1...12 {
                records.append(Fixture.record(
                    index,
                    subject: index.isMultiple(of: 3) ? "bob" : "alice",
                    time: Fixture.base.addingTimeInterval(Double(index) * 60)
                ))
            }
            let stored = try store.append(records)

            let all = try await store.events(AuditQuery())
            #expect(all == stored)

            let bob = try await store.events(AuditQuery(subject: "bob"))
            #expect(bob.map(\.seq) == [3, 6, 9, 12])
            #expect(bob.allSatisfy { $0.record.principal?.subject == "bob" })

            let recent = try await store.events(AuditQuery(since: Fixture.base.addingTimeInterval(10 * 60)))
            #expect(recent.map(\.seq) == [10, 11, 12])

            let recentAlice = try await store.events(AuditQuery(since: Fixture.base.addingTimeInterval(7 * 60), subject: "alice"))
            #expect(recentAlice.map(\.seq) == [7, 8, 10, 11])

            var pages: [[Int64]] = []
            var after: Int64 = 0
            while true {
                let page = try await store.events(AuditQuery(afterSeq: after, limit: 5))
                guard let last = page.last else { break }
                pages.append(page.map(\.seq))
                after = last.seq
            }
            #expect(pages == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]])

            #expect(try await store.events(AuditQuery(subject: "nobody")).isEmpty)
            try await store.close()
        }
    }

    // MARK: Group commit

    @Test(arguments: StoreKind.allCases)
    func concurrentAppendsShareTransactions(kind: StoreKind) async throws {
        try await withHarness(kind) { harness in
            let store = try await harness.openStore()
            let log = AuditLog(store: store, signer: signer, checkpointEvery: 50, maxBatch: 64, logger: Fixture.logger)
            let events = try await withThrowingTaskGroup(of: AuditEvent.self) { group in
                for index in 1...200 {
                    group.addTask { try await log.append(Fixture.record(index)) }
                }
                var events: [AuditEvent] = []
                for try await event in group { events.append(event) }
                return events
            }
            let sorted = events.sorted { $0.seq < $1.seq }
            #expect(sorted.map(\.seq) == Array(1...200))
            #expect(sorted[0].prevHash == AuditEvent.genesisHash)
            for (previous, event) in zip(sorted, sorted.dropFirst()) {
                #expect(event.prevHash == previous.hash)
            }
            let statistics = log.statistics
            #expect(statistics.events == 200)
            #expect(statistics.batches < 200, "group commit should put several events in one transaction")
            #expect(statistics.checkpoints >= 1)
            try await log.shutdown()

            let result = try await Fixture.verify(harness, with: signer.verifier)
            #expect(result.isIntact, "\(result)")
            #expect(result.eventCount == 200)
            #expect(result.lastCheckpoint?.seq == 200)
        }
    }
}

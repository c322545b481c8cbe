@testable import Audit
import Foundation
import GatehouseCore
import GRDB
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What only the SQLite store has: the file, its pragmas, its schema table and the head file.
@Suite("SQLite audit store")
struct SQLiteAuditStoreTests {
    let signer = AuditSigner.generate()

    @Test func durabilitySetsSynchronous() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        var options = harness.options()
        let normal = try SQLiteAuditStore(options: options)
        #expect(try await normal.synchronousSetting() == 1)
        try await normal.close()

        options.durability = .fsync
        let fsync = try SQLiteAuditStore(options: options)
        #expect(try await fsync.synchronousSetting() == 2)
        _ = try fsync.append([Fixture.record(1)])
        _ = try fsync.appendCheckpoint(signedBy: signer, time: Date())
        try await fsync.close()
    }

    @Test func fileIsWalAndPrivate() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        _ = try store.append([Fixture.record(1)])
        let mode = try FileManager.default.attributesOfItem(atPath: harness.path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        try await store.close()
        let queue = try DatabaseQueue(path: harness.path)
        #expect(try await queue.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
        #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT max(version) FROM schema_version") } == 2)
        try queue.close()
    }

    /// Two processes append through one journal; each chains to what the other wrote last.
    @Test func twoStoresOnOneFileKeepOneChain() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let first = try SQLiteAuditStore(options: harness.options())
        let second = try SQLiteAuditStore(options: harness.options())
        var written: [AuditEvent] = []
        for round in 0..<3 {
            written += try first.append([Fixture.record(4 * round + 1), Fixture.record(4 * round + 2)])
            written += try second.append([Fixture.record(4 * round + 3)])
            written += try first.append([Fixture.record(4 * round + 4)])
        }
        #expect(written.map(\.seq) == Array(1...12))
        #expect(zip(written.dropFirst(), written).allSatisfy { $0.prevHash == $1.hash })
        try await first.close()
        try await second.close()
        #expect(try await Fixture.verify(harness, with: signer.verifier).isIntact)
    }

    @Test func aCleanCloseLeavesEverythingInTheTableAndTheJournalEmpty() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        for index in 1...5 { _ = try store.append([Fixture.record(index)]) }
        try await store.close()
        let journalSize = try FileManager.default.attributesOfItem(atPath: harness.path + ".journal")[.size] as? Int
        #expect(journalSize == Int(AuditJournal.headerSize))
        let mode = try FileManager.default.attributesOfItem(atPath: harness.path + ".journal")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let queue = try DatabaseQueue(path: harness.path)
        #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM events") } == 5)
        try queue.close()
    }

    /// A process killed before its indexer ran: the next one to open the store finds the events.
    @Test func eventsLeftInTheJournalAreIndexedByTheNextOpen() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let killed = try SQLiteAuditStore(options: harness.options())
        let written = try killed.append([Fixture.record(1), Fixture.record(2), Fixture.record(3)])
        // Not closed, as after SIGKILL; the table may not have them yet.
        let next = try SQLiteAuditStore(options: harness.options())
        #expect(try await next.events(AuditQuery()).map(\.hash) == written.map(\.hash))
        #expect(try next.append([Fixture.record(4)]).first?.prevHash == written.last?.hash)
        try await next.close()
        #expect(try await Fixture.verify(harness, with: signer.verifier).isIntact)
    }

    /// A write cut short by a kill leaves half a record at the end; it was never acknowledged, so it
    /// is dropped and the chain goes on from the last whole record.
    @Test func aTornRecordAtTheEndIsDropped() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let killed = try SQLiteAuditStore(options: harness.options())
        let written = try killed.append([Fixture.record(1), Fixture.record(2)])
        var torn: [UInt8] = []
        AuditJournal.encode(
            AuditJournal.Entry(
                seq: 3, timeMillis: 0, subject: "mallory", agent: nil, session: nil, connection: nil, kind: "x",
                prevHash: written[1].hash, hash: String(repeating: "0", count: 64), body: Array(repeating: 65, count: 300)
            ),
            into: &torn
        )
        for cut in [1, 8, 100, torn.count - 1] {
            let handle = try #require(FileHandle(forWritingAtPath: harness.path + ".journal"))
            let end = try handle.seekToEnd()
            try handle.write(contentsOf: torn.prefix(cut))
            try handle.close()
            let appended = try killed.append([Fixture.record(10 + cut)])
            #expect(appended.first?.seq == 3, "cut at \(cut)")
            #expect(appended.first?.prevHash == written[1].hash)
            // Undo the append, so the next round tears the same place.
            let undo = try #require(FileHandle(forWritingAtPath: harness.path + ".journal"))
            try undo.truncate(atOffset: end)
            try undo.close()
        }
        let next = try SQLiteAuditStore(options: harness.options())
        #expect(try await next.events(AuditQuery()).map(\.seq) == [1, 2])
        try await next.close()
        #expect(try await Fixture.verify(harness, with: signer.verifier).isIntact)
    }

    /// One process empties the journal while another has read part of it: the other must start
    /// over in the new journal, not skip what was appended there.
    @Test func anIndexerNoticesTheJournalWasEmptiedByAnotherProcess() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let first = try SQLiteAuditStore(options: harness.options())
        let second = try SQLiteAuditStore(options: harness.options())
        _ = try first.append([Fixture.record(1), Fixture.record(2)])
        try first.indexNow()
        try second.indexNow(empty: true)
        #expect(try await second.busyTimeoutSetting() == 5000, "restored after emptying")
        _ = try second.append([Fixture.record(3)])
        _ = try first.append([Fixture.record(4)])
        try first.indexNow()
        let queue = try DatabaseQueue(path: harness.path)
        #expect(try await queue.read { try Int64.fetchAll($0, sql: "SELECT seq FROM events ORDER BY seq") } == [1, 2, 3, 4])
        try queue.close()
        try await first.close()
        try await second.close()
        #expect(try await Fixture.verify(harness, with: signer.verifier).isIntact)
    }

    /// Damage before whole records is not a torn write: cutting there would drop acknowledged
    /// events, so the journal is refused instead and left as it is.
    @Test func damageInTheMiddleOfTheJournalIsRefusedNotCut() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        _ = try store.append([Fixture.record(1), Fixture.record(2), Fixture.record(3)])
        let journalPath = harness.path + ".journal"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: journalPath)))
        let size = bytes.count
        bytes[Int(AuditJournal.headerSize) + 2] ^= 0xFF  // inside the first record's magic
        try Data(bytes).write(to: URL(fileURLWithPath: journalPath))
        let other = try SQLiteAuditStore(options: harness.options())
        let error = #expect(throws: GatehouseError.self) { try other.indexNow() }
        #expect(error?.message.contains("damaged") == true)
        #expect(try FileManager.default.attributesOfItem(atPath: journalPath)[.size] as? Int == size)
        try? await other.close()
        try? await store.close()
    }

    /// An event written into the table behind the journal's back (say by an older binary) with
    /// the same sequence number as a journal event is a fork: indexing stops instead of dropping
    /// the acknowledged journal event.
    @Test func aForkBetweenTheJournalAndTheTableStopsIndexing() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        _ = try store.append([Fixture.record(1), Fixture.record(2)])
        try store.indexNow()
        let third = try store.append([Fixture.record(3)])
        try await harness.tamper("""
            INSERT INTO events (seq, time_ms, subject, agent, session, connection, kind, body, prev_hash, hash)
            SELECT 3, time_ms, subject, agent, session, connection, kind, body, hash, 'forged' FROM events WHERE seq = 2
            """)
        let error = #expect(throws: GatehouseError.self) { try store.indexNow() }
        #expect(error?.message.contains("event 3 differs") == true)
        #expect(third.first?.seq == 3)
        try? await store.close()
    }

    @Test func aVersionOneStoreIsUpgradedAndKeptFromOlderBinaries() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        _ = try store.append([Fixture.record(1)])
        try await store.close()
        try await harness.tamper("UPDATE schema_version SET version = 1")
        let reopened = try SQLiteAuditStore(options: harness.options())
        #expect(try reopened.append([Fixture.record(2)]).first?.seq == 2)
        try await reopened.close()
        let queue = try DatabaseQueue(path: harness.path)
        #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT max(version) FROM schema_version") } == 2)
        try queue.close()
    }

    /// Another process holding the journal (a stopped CLI) is waited for up to the busy timeout,
    /// then the append is refused instead of blocking an event loop for good.
    @Test func aJournalHeldByAnotherProcessIsWaitedForThenRefused() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options(busyTimeout: .milliseconds(200)))
        _ = try store.append([Fixture.record(1)])
        let holder = open(harness.path + ".journal", O_RDWR)
        #expect(flock(holder, LOCK_EX) == 0)
        let started = ContinuousClock.now
        let error = #expect(throws: GatehouseError.self) { _ = try store.append([Fixture.record(2)]) }
        #expect(error?.message.contains("held by another process") == true)
        #expect(ContinuousClock.now - started >= .milliseconds(200))
        flock(holder, LOCK_UN)
        close(holder)
        // The indexer was kept out too; once it has caught up, appends go on.
        try store.indexNow()
        #expect(try store.append([Fixture.record(3)]).first?.seq == 2)
        try await store.close()
    }

    /// A journal that lost its newest records (power loss under `durability: normal`) while the
    /// table kept them is moved up to the table's tail at open, so sequence numbers are not reused.
    @Test func aJournalBehindTheTableIsMovedUpAtOpen() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        _ = try store.append([Fixture.record(1)])
        let journalPath = harness.path + ".journal"
        let stale = try Data(contentsOf: URL(fileURLWithPath: journalPath))  // header at event 0
        let later = try store.append([Fixture.record(2), Fixture.record(3)])
        try await store.close()
        try Data(stale.prefix(Int(AuditJournal.headerSize))).write(to: URL(fileURLWithPath: journalPath))
        let reopened = try SQLiteAuditStore(options: harness.options())
        let next = try reopened.append([Fixture.record(4)])
        #expect(next.first?.seq == 4)
        #expect(next.first?.prevHash == later.last?.hash)
        try await reopened.close()
        #expect(try await Fixture.verify(harness, with: signer.verifier).isIntact)
    }

    /// Events lost from the table (power loss under `durability: normal`) while the journal's
    /// header went past them leave a gap: indexing goes on, and verify names the missing events.
    @Test func aGapBehindTheJournalIsIndexedAndReported() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        _ = try store.append([Fixture.record(1), Fixture.record(2), Fixture.record(3)])
        try store.indexNow(empty: true)
        try await harness.tamper("DELETE FROM events WHERE seq = 3")
        #expect(try store.append([Fixture.record(4)]).first?.seq == 4)
        try store.indexNow()
        try await store.close()
        let result = try await Fixture.verify(harness, with: signer.verifier)
        #expect(result.problem?.kind == .removed)
        #expect(result.problem?.seq == 3)
    }

    @Test func verifyReportsEventsThatCannotBeIndexed() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        _ = try store.append([Fixture.record(1), Fixture.record(2)])
        let journalPath = harness.path + ".journal"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: journalPath)))
        bytes[Int(AuditJournal.headerSize) + 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: journalPath))
        let error = await #expect(throws: GatehouseError.self) { _ = try await store.verify(verifier: signer.verifier) }
        #expect(error?.message.contains("cannot be indexed") == true)
        try? await store.close()
    }

    @Test func somethingElseInTheJournalsPlaceIsRefused() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        try Data(repeating: 0x41, count: 200).write(to: URL(fileURLWithPath: harness.path + ".journal"))
        let store = try SQLiteAuditStore(options: harness.options())
        let error = #expect(throws: GatehouseError.self) { _ = try store.append([Fixture.record(1)]) }
        #expect(error?.code == "audit.store_unavailable")
        #expect(error?.message.contains("not a Gatehouse audit journal") == true)
        try? await store.close()
    }

    @Test func headFileHoldsTheNewestCheckpoint() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let store = try SQLiteAuditStore(options: harness.options())
        _ = try store.append([Fixture.record(1), Fixture.record(2)])
        let first = try #require(try store.appendCheckpoint(signedBy: signer, time: Date()))
        _ = try store.append([Fixture.record(3)])
        let second = try #require(try store.appendCheckpoint(signedBy: signer, time: Date()))
        let data = try #require(FileManager.default.contents(atPath: store.headPath))
        let head = try JSONDecoder().decode(AuditCheckpoint.self, from: data)
        #expect(head == second)
        #expect(head != first)
        try await store.close()
    }

    @Test func headFileSignedByAnotherKeyIsReported() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        let events = try await Fixture.populate(harness, signer: signer)
        let forged = try AuditSigner.generate().sign(seq: 10, hash: events[9].hash, time: Date(), node: "test-node")
        try AuditCanonical.encoder().encode(forged).write(to: URL(fileURLWithPath: harness.path + ".head"))
        let result = try await Fixture.verify(harness, with: signer.verifier)
        #expect(result.problem?.kind == .badCheckpoint)
        #expect(result.problem?.seq == 10)
    }

    @Test func missingHeadFileStillVerifiesTheRows() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        try await Fixture.populate(harness, signer: signer)
        try FileManager.default.removeItem(atPath: harness.path + ".head")
        #expect(try await Fixture.verify(harness, with: signer.verifier).isIntact)
    }

    @Test func malformedHeadFileIsAnError() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        try await Fixture.populate(harness, signer: signer)
        try Data("not json".utf8).write(to: URL(fileURLWithPath: harness.path + ".head"))
        let error = await #expect(throws: GatehouseError.self) { _ = try await Fixture.verify(harness, with: signer.verifier) }
        #expect(error?.code == "audit.head_file")
    }

    @Test func newerSchemaIsRefused() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        try await SQLiteAuditStore(options: harness.options()).close()
        try await harness.tamper("UPDATE schema_version SET version = 99")
        let error = #expect(throws: GatehouseError.self) { _ = try SQLiteAuditStore(options: harness.options()) }
        #expect(error?.code == "audit.schema_unsupported")
    }

    @Test func unopenablePathThrowsClearly() {
        let error = #expect(throws: GatehouseError.self) {
            _ = try SQLiteAuditStore(options: AuditStoreOptions(path: "/proc/gatehouse/audit.sqlite"))
        }
        #expect(error?.code == "audit.store_unavailable")
    }

    @Test func tamperedColumnTypesAreReportedNotFatal() async throws {
        let harness = try SQLiteHarness()
        defer { harness.remove() }
        try await Fixture.populate(harness, signer: signer)
        try await harness.tamper("UPDATE events SET time_ms = 'yesterday', hash = 42 WHERE seq = 4")
        let result = try await Fixture.verify(harness, with: signer.verifier)
        #expect(result.problem?.kind == .changed)
        #expect(result.problem?.seq == 4)
    }
}

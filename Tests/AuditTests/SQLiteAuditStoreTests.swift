@testable import Audit
import Foundation
import GatehouseCore
import GRDB
import Testing

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
        #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT version FROM schema_version") } == 1)
        try queue.close()
    }

    /// Each store remembers the tail it wrote; a commit by another connection in between (another
    /// process on the same file) must make it read the tail again, or the chain would fork.
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

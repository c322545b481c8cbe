import Audit
import Foundation
import GatehouseCore
import GRDB
import Logging

/// What the conformance suite needs from a store implementation. A PostgreSQL harness adds a case
/// to `StoreKind` and implements this; every test in `AuditStoreConformanceTests` then runs against
/// it too. `tamper` SQL is written in the dialect both databases share.
protocol AuditStoreHarness: Sendable {
    /// Opens a store on this harness's trail. Each call opens another one on the same trail, as a
    /// second process (the CLI) would.
    func openStore() async throws -> any AuditStore
    /// Like `openStore`, but gives up within a fraction of a second when the write lock is held.
    func openImpatientStore() async throws -> any AuditStore
    /// Runs SQL on the backing database directly, as someone with access to it would.
    func tamper(_ sql: String) async throws
    /// Holds the trail's write lock from outside the store until the returned closure is called.
    func holdWriteLock() async throws -> @Sendable () async throws -> Void
    /// Deletes everything the harness created.
    func remove()
}

enum StoreKind: String, CaseIterable, Sendable {
    case sqlite

    func makeHarness() async throws -> any AuditStoreHarness {
        switch self {
        case .sqlite: try SQLiteHarness()
        }
    }
}

final class SQLiteHarness: AuditStoreHarness {
    let directory: String
    let path: String

    init() throws {
        directory = NSTemporaryDirectory() + "gatehouse-audit-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/audit.sqlite"
    }

    func options(busyTimeout: Duration = .seconds(5)) -> AuditStoreOptions {
        AuditStoreOptions(path: path, node: "test-node", busyTimeout: busyTimeout)
    }

    func openStore() async throws -> any AuditStore {
        try SQLiteAuditStore(options: options())
    }

    func openImpatientStore() async throws -> any AuditStore {
        try SQLiteAuditStore(options: options(busyTimeout: .milliseconds(100)))
    }

    /// Uses the `sqlite3` command-line shell when it is installed, because that is how a person
    /// would edit the file; GRDB otherwise.
    func tamper(_ sql: String) async throws {
        let shell = "/usr/bin/sqlite3"
        guard FileManager.default.isExecutableFile(atPath: shell) else {
            let queue = try DatabaseQueue(path: path)
            try await queue.write { db in try db.execute(sql: sql) }
            try queue.close()
            return
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: shell)
        process.arguments = ["-bail", "-cmd", ".timeout 5000", path, sql]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw GatehouseError("test.tamper", "sqlite3 failed: \(message)")
        }
    }

    func holdWriteLock() async throws -> @Sendable () async throws -> Void {
        var configuration = Configuration()
        configuration.allowsUnsafeTransactions = true
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        try await queue.writeWithoutTransaction { db in try db.execute(sql: "BEGIN IMMEDIATE") }
        return {
            try await queue.writeWithoutTransaction { db in try db.execute(sql: "ROLLBACK") }
            try queue.close()
        }
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

// MARK: Fixtures

enum Fixture {
    static let base = Date(timeIntervalSince1970: 1_700_000_000)

    /// A recognisable record: its operation text holds `op-NNNN`, so tampering SQL can find it.
    static func record(_ index: Int, subject: String = "alice", agent: String? = "claude", time: Date? = nil) -> AuditRecord {
        let tag = String(format: "op-%04d", index)
        return AuditRecord(
            time: time ?? base.addingTimeInterval(Double(index)),
            node: "test-node",
            session: "session-\(index % 3)",
            principal: Principal(
                subject: subject,
                email: "\(subject)@example.com",
                groups: ["eng"],
                issuer: "https://idp.example.com/",
                authMethod: .oidc,
                actors: agent.map { [Actor(subject: $0, clientID: "cli")] } ?? []
            ),
            client: ClientInfo(address: "127.0.0.1:5000", application: "psql"),
            connection: "orders-db",
            operation: .init(kind: "sql.query", text: "SELECT * FROM orders /* \(tag) */", intent: "check/report"),
            decision: .allow(rule: "read-only", reason: "reads are allowed"),
            outcome: .init(status: "ok", rows: Int64(index)),
            payload: "id=\(index) ünïcødé \"quoted\" / slash"
        )
    }

    /// Quiet: the failure tests log errors on purpose.
    static let logger = Logger(label: "gatehouse.audit.tests", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Appends `count` events one by one through an `AuditLog` that checkpoints every
    /// `checkpointEvery`, then shuts it down (final checkpoint). With the defaults the trail holds
    /// events 1...10 and checkpoints at 4, 8 and 10.
    @discardableResult
    static func populate(
        _ harness: any AuditStoreHarness,
        signer: AuditSigner,
        count: Int = 10,
        checkpointEvery: Int = 4
    ) async throws -> [AuditEvent] {
        let store = try await harness.openStore()
        let log = AuditLog(store: store, signer: signer, checkpointEvery: checkpointEvery, logger: logger)
        var events: [AuditEvent] = []
        for index in 1...count {
            events.append(try await log.append(record(index)))
        }
        try await log.shutdown()
        return events
    }

    static func verify(_ harness: any AuditStoreHarness, with verifier: AuditSignatureVerifier) async throws -> AuditVerification {
        let store = try await harness.openStore()
        let result = try await store.verify(verifier: verifier)
        try await store.close()
        return result
    }

    /// A row for the events table in SQL both databases accept.
    static func insertSQL(seq: Int64, prevHash: String, record: AuditRecord) throws -> String {
        let body = String(decoding: try AuditCanonical.bytes(seq: seq, prevHash: prevHash, record: record), as: UTF8.self)
        let hash = try AuditCanonical.hash(seq: seq, prevHash: prevHash, record: record)
        return """
            INSERT INTO events (seq, time_ms, subject, agent, session, connection, kind, body, prev_hash, hash)
            VALUES (\(seq), \(record.timeMillis), \(literal(record.principal?.subject)), \(literal(record.principal?.agent)),
                    \(literal(record.session)), \(literal(record.connection)), \(literal(record.operation.kind)),
                    \(literal(body)), \(literal(prevHash)), \(literal(hash)))
            """
    }

    static func rewriteSQL(seq: Int64, prevHash: String, record: AuditRecord) throws -> (sql: String, hash: String) {
        let body = String(decoding: try AuditCanonical.bytes(seq: seq, prevHash: prevHash, record: record), as: UTF8.self)
        let hash = try AuditCanonical.hash(seq: seq, prevHash: prevHash, record: record)
        return ("UPDATE events SET body = \(literal(body)), prev_hash = \(literal(prevHash)), hash = \(literal(hash)) WHERE seq = \(seq);", hash)
    }

    static func literal(_ text: String?) -> String {
        guard let text else { return "NULL" }
        return "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }
}

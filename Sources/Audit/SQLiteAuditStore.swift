import Foundation
import GatehouseCore
import GRDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The embedded default store: one SQLite file in WAL mode.
///
/// Several processes may open the same file (the gateway and the CLI): every append takes the write
/// lock first (`BEGIN IMMEDIATE`) and reads the chain tail inside that transaction, and a busy
/// timeout makes each side wait for the other instead of failing.
///
/// The newest checkpoint is also kept in a sidecar file (`<path>.head`, replaced atomically), so
/// deleting the newest checkpoint row, or the events at the end of the trail along with it, cannot go
/// unnoticed by `verify`.
public final class SQLiteAuditStore: AuditStore {
    public static let schemaVersion: Int64 = 1

    public let path: String
    public let headPath: String
    let node: String
    let durability: AuditStoreOptions.Durability
    private let pool: DatabasePool
    private let closed = LockedFlag()
    /// The chain's tail as this store last wrote it; used only on the writer connection.
    private let knownTail = KnownTail()

    public init(options: AuditStoreOptions) throws {
        self.path = options.path
        self.headPath = options.path + ".head"
        self.node = options.node
        self.durability = options.durability

        try Self.prepareFile(options.path)
        var configuration = Configuration()
        configuration.label = "gatehouse.audit"
        let timeout = options.busyTimeout.components
        configuration.busyMode = .timeout(Double(timeout.seconds) + Double(timeout.attoseconds) / 1e18)
        configuration.maximumReaderCount = 4
        do {
            pool = try DatabasePool(path: options.path, configuration: configuration)
            let synchronous = options.durability == .fsync ? "FULL" : "NORMAL"
            try pool.writeWithoutTransaction { db in
                // GRDB sets NORMAL while enabling WAL; this runs after it, on the one writer connection.
                try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
                try Self.migrate(db, path: options.path)
            }
        } catch let error as GatehouseError {
            throw error
        } catch {
            throw AuditErrors.unavailable(options.path, Self.reason(error))
        }
    }

    // MARK: AuditStore

    /// Quick (no fsync per commit) unless `durability` is `fsync`.
    public var appendsAreQuick: Bool { durability == .normal }

    public func append(encoded records: [EncodedAuditRecord]) throws -> [AuditEvent] {
        try checkOpen()
        guard !records.isEmpty else { return [] }
        do {
            return try pool.writeWithoutTransaction { db in
                var events: [AuditEvent] = []
                events.reserveCapacity(records.count)
                var dataVersion: Int64 = -1
                try Self.immediateTransaction(db) {
                    // Read under the write lock: no other connection can commit until this one ends.
                    dataVersion = try KnownTail.dataVersion(db)
                    let tail = try knownTail.current(dataVersion: dataVersion) ?? Self.tail(db)
                    var seq = tail?.seq ?? 0
                    var previousHash = tail?.hash ?? AuditEvent.genesisHash
                    let insert = try db.cachedStatement(sql: """
                        INSERT INTO events (seq, time_ms, subject, agent, session, connection, kind, body, prev_hash, hash)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """)
                    for item in records {
                        seq += 1
                        let body = AuditCanonical.bytes(seq: seq, prevHash: previousHash, recordJSON: item.json)
                        guard body.count <= AuditCanonical.maximumBodyBytes else {
                            throw AuditErrors.recordTooLarge(bytes: body.count)
                        }
                        let hash = AuditCanonical.hash(of: body)
                        let record = item.record
                        try insert.execute(arguments: [
                            seq, record.timeMillis, record.principal?.subject, record.principal?.agent,
                            record.session, record.connection, record.operation.kind,
                            String(decoding: body, as: UTF8.self), previousHash, hash,
                        ])
                        events.append(AuditEvent(seq: seq, prevHash: previousHash, hash: hash, record: record))
                        previousHash = hash
                    }
                } onCommit: {
                    if let last = events.last { knownTail.remember(seq: last.seq, hash: last.hash, dataVersion: dataVersion) }
                } onRollback: {
                    knownTail.forget()
                }
                return events
            }
        } catch let error as GatehouseError {
            throw error
        } catch {
            throw AuditErrors.unavailable(path, Self.reason(error))
        }
    }

    public func appendCheckpoint(signedBy signer: AuditSigner, time: Date) throws -> AuditCheckpoint? {
        try checkOpen()
        let node = self.node
        let checkpoint: AuditCheckpoint?
        do {
            checkpoint = try pool.writeWithoutTransaction { db in
                var checkpoint: AuditCheckpoint?
                try db.inTransaction(.immediate) {
                    guard let tail = try Self.tail(db) else { return .commit }
                    if let newest = try Int64.fetchOne(db, sql: "SELECT max(seq) FROM checkpoints"), newest >= tail.seq {
                        return .commit
                    }
                    let signed = try signer.sign(seq: tail.seq, hash: tail.hash, time: time, node: node)
                    try db.execute(
                        sql: """
                            INSERT INTO checkpoints (seq, hash, time_ms, node, public_key, signature)
                            VALUES (?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [signed.seq, signed.hash, signed.timeMillis, signed.node, signed.publicKey, signed.signature]
                    )
                    checkpoint = signed
                    return .commit
                }
                return checkpoint
            }
        } catch let error as GatehouseError {
            throw error
        } catch {
            throw AuditErrors.unavailable(path, Self.reason(error))
        }
        // Written after the commit, so the head never names a checkpoint that might not exist; a
        // crash in between leaves an older head, which verify accepts.
        if let checkpoint {
            try writeHead(checkpoint)
        }
        return checkpoint
    }

    public func events(_ query: AuditQuery) async throws -> [AuditEvent] {
        try checkOpen()
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let since = query.since {
            conditions.append("time_ms >= ?")
            _ = arguments.append(contentsOf: [Int64((since.timeIntervalSince1970 * 1000).rounded(.down))])
        }
        if let subject = query.subject {
            conditions.append("subject = ?")
            _ = arguments.append(contentsOf: [subject])
        }
        if let session = query.session {
            conditions.append("session = ?")
            _ = arguments.append(contentsOf: [session])
        }
        if let afterSeq = query.afterSeq {
            conditions.append("seq > ?")
            _ = arguments.append(contentsOf: [afterSeq])
        }
        var sql = "SELECT seq, body, hash FROM events"
        if !conditions.isEmpty {
            sql += " WHERE " + conditions.joined(separator: " AND ")
        }
        sql += " ORDER BY seq"
        if let limit = query.limit {
            sql += " LIMIT ?"
            _ = arguments.append(contentsOf: [max(0, limit)])
        }
        let finalSQL = sql
        let finalArguments = arguments
        do {
            return try await pool.read { db in
                var events: [AuditEvent] = []
                let rows = try Row.fetchCursor(db, sql: finalSQL, arguments: finalArguments)
                while let row = try rows.next() {
                    let seq = try Self.integer(row[0])
                    guard let bytes = StoredValue(row[1] as DatabaseValue).bytes,
                          let body = try? AuditCanonical.decode(bytes)
                    else {
                        throw AuditErrors.undecodable(seq: seq)
                    }
                    let hash = StoredValue(row[2] as DatabaseValue).text ?? ""
                    events.append(AuditEvent(seq: seq, prevHash: body.prevHash, hash: hash, record: body.record))
                }
                return events
            }
        } catch let error as GatehouseError {
            throw error
        } catch {
            throw AuditErrors.unreadable(path, Self.reason(error))
        }
    }

    public func verify(verifier: AuditSignatureVerifier) async throws -> AuditVerification {
        try checkOpen()
        // Read before the snapshot opens: the head is written after its checkpoint commits, so the
        // snapshot holds at least the checkpoint the head names.
        let head = try readHead()
        let headDescription = "the head file \(headPath)"
        do {
            return try await pool.read { db in
                let counts = try Row.fetchOne(db, sql: "SELECT count(*), max(seq) FROM events")
                let eventCount = try counts.map { try Self.integer($0[0]) } ?? 0
                let maxSeq = try counts.flatMap { row -> Int64? in
                    (row[1] as DatabaseValue).isNull ? nil : try Self.integer(row[1])
                } ?? 0
                let newest = try Self.checkpoints(db, afterSeq: nil, newestFirst: true, limit: 1).first

                var checker = AuditChainChecker(verifier: verifier)
                checker.head = head
                checker.headDescription = headDescription
                if let head {
                    checker.headRow = try Self.checkpoints(db, exactly: head.seq)
                }

                let rows = try Row.fetchCursor(db, sql: """
                    SELECT seq, time_ms, subject, agent, session, connection, kind, body, prev_hash, hash
                    FROM events ORDER BY seq
                    """)
                var page: [AuditCheckpoint] = []
                var pageIndex = 0
                var lastCheckpointSeq: Int64?
                let outcome = try checker.run(
                    nextEvent: {
                        guard let row = try rows.next() else { return nil }
                        return StoredEventRow(
                            seq: try Self.integer(row[0]),
                            timeMillis: StoredValue(row[1] as DatabaseValue),
                            subject: StoredValue(row[2] as DatabaseValue),
                            agent: StoredValue(row[3] as DatabaseValue),
                            session: StoredValue(row[4] as DatabaseValue),
                            connection: StoredValue(row[5] as DatabaseValue),
                            kind: StoredValue(row[6] as DatabaseValue),
                            body: StoredValue(row[7] as DatabaseValue),
                            prevHash: StoredValue(row[8] as DatabaseValue),
                            hash: StoredValue(row[9] as DatabaseValue)
                        )
                    },
                    nextCheckpoint: {
                        if pageIndex == page.count {
                            page = try Self.checkpoints(db, afterSeq: lastCheckpointSeq, newestFirst: false, limit: 256)
                            pageIndex = 0
                            guard !page.isEmpty else { return nil }
                        }
                        let checkpoint = page[pageIndex]
                        pageIndex += 1
                        lastCheckpointSeq = checkpoint.seq
                        return checkpoint
                    }
                )
                return AuditVerification(
                    eventCount: eventCount,
                    lastCheckpoint: newest,
                    uncheckpointedTail: max(0, maxSeq - (newest?.seq ?? 0)),
                    problem: outcome.problem
                )
            }
        } catch let error as GatehouseError {
            throw error
        } catch {
            throw AuditErrors.unreadable(path, Self.reason(error))
        }
    }

    public func isWritable() async -> Bool {
        guard !closed.value else { return false }
        do {
            try await pool.writeWithoutTransaction { db in
                // Taking the write lock proves the file can be locked for writing; nothing is written.
                try db.execute(sql: "BEGIN IMMEDIATE")
                try db.execute(sql: "ROLLBACK")
            }
            return true
        } catch {
            return false
        }
    }

    public func close() async throws {
        guard closed.set() else { return }
        do {
            try pool.close()
        } catch {
            throw AuditErrors.unavailable(path, Self.reason(error))
        }
    }

    // MARK: Schema

    private static func migrate(_ db: Database, path: String) throws {
        try db.inTransaction(.immediate) {
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            let found = try Int64.fetchOne(db, sql: "SELECT max(version) FROM schema_version")
            if let found {
                guard found <= schemaVersion else {
                    throw AuditErrors.schema(path, found: found, supported: schemaVersion)
                }
                return .commit
            }
            try db.execute(sql: """
                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY,
                    time_ms INTEGER NOT NULL,
                    subject TEXT,
                    agent TEXT,
                    session TEXT,
                    connection TEXT,
                    kind TEXT,
                    body TEXT NOT NULL,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL
                );
                CREATE INDEX events_time ON events (time_ms);
                CREATE INDEX events_subject ON events (subject, seq);
                CREATE INDEX events_session ON events (session, seq);
                CREATE TABLE checkpoints (
                    seq INTEGER PRIMARY KEY,
                    hash TEXT NOT NULL,
                    time_ms INTEGER NOT NULL,
                    node TEXT NOT NULL,
                    public_key TEXT NOT NULL,
                    signature TEXT NOT NULL
                );
                """)
            try db.execute(sql: "INSERT INTO schema_version (version) VALUES (?)", arguments: [schemaVersion])
            return .commit
        }
    }

    /// Creates a missing file (and directory) readable by the owner only; SQLite gives its `-wal` and
    /// `-shm` files the same mode. The trail holds who did what, so it is not for every local user.
    private static func prepareFile(_ path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]
                )
            } catch {
                throw AuditErrors.unavailable(path, "its directory cannot be created")
            }
        }
        if let reason = FileIO.createIfMissing(path, mode: 0o600) {
            throw AuditErrors.unavailable(path, reason)
        }
    }

    // MARK: Rows

    /// `BEGIN IMMEDIATE` … `COMMIT` through prepared statements: GRDB's transaction helper
    /// compiles both texts again on every call, a measurable share of a one-event append.
    private static func immediateTransaction(
        _ db: Database, _ body: () throws -> Void, onCommit: () -> Void, onRollback: () -> Void
    ) throws {
        try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            try body()
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
        } catch {
            onRollback()
            if db.isInsideTransaction { try? db.execute(sql: "ROLLBACK TRANSACTION") }
            throw error
        }
        onCommit()
    }

    private static func tail(_ db: Database) throws -> (seq: Int64, hash: String)? {
        let statement = try db.cachedStatement(sql: "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        guard let row = try Row.fetchOne(statement) else {
            return nil
        }
        // A tampered hash column is chained to as it is; verify names the tampering.
        return (try integer(row[0]), StoredValue(row[1] as DatabaseValue).text ?? "")
    }

    private static func checkpoints(_ db: Database, afterSeq: Int64?, newestFirst: Bool, limit: Int) throws -> [AuditCheckpoint] {
        var sql = "SELECT seq, hash, time_ms, node, public_key, signature FROM checkpoints"
        var arguments: StatementArguments = []
        if let afterSeq {
            sql += " WHERE seq > ?"
            arguments = [afterSeq]
        }
        sql += newestFirst ? " ORDER BY seq DESC" : " ORDER BY seq"
        sql += " LIMIT \(limit)"
        return try Row.fetchAll(db, sql: sql, arguments: arguments).map(checkpoint)
    }

    private static func checkpoints(_ db: Database, exactly seq: Int64) throws -> AuditCheckpoint? {
        try Row.fetchOne(
            db,
            sql: "SELECT seq, hash, time_ms, node, public_key, signature FROM checkpoints WHERE seq = ?",
            arguments: [seq]
        ).map(checkpoint)
    }

    /// Odd types in a tampered row become values whose signature cannot verify, never a crash.
    private static func checkpoint(_ row: Row) throws -> AuditCheckpoint {
        func text(_ index: Int) -> String { StoredValue(row[index] as DatabaseValue).text ?? "" }
        let time: Int64
        if case .integer(let value) = StoredValue(row[2] as DatabaseValue) { time = value } else { time = -1 }
        return AuditCheckpoint(
            seq: try integer(row[0]), hash: text(1), timeMillis: time, node: text(3),
            publicKey: text(4), signature: text(5)
        )
    }

    private static func integer(_ value: DatabaseValue) throws -> Int64 {
        guard case .int64(let integer) = value.storage else {
            throw GatehouseError("audit.store_unreadable", "the audit store holds a sequence number that is not an integer")
        }
        return integer
    }

    private static func reason(_ error: any Error) -> String {
        if let error = error as? DatabaseError {
            return error.message ?? "SQLite error \(error.resultCode.rawValue)"
        }
        return String(describing: type(of: error))
    }

    private func checkOpen() throws {
        if closed.value { throw AuditErrors.closed() }
    }

    // MARK: Head file

    private func readHead() throws -> AuditCheckpoint? {
        var info = stat()
        guard stat(headPath, &info) == 0 else {
            if errno == ENOENT { return nil }
            throw AuditErrors.headFile(headPath, "cannot be read (\(String(cString: strerror(errno))))")
        }
        guard info.st_size <= 64 * 1024, let data = FileManager.default.contents(atPath: headPath) else {
            throw AuditErrors.headFile(headPath, "cannot be read")
        }
        do {
            return try JSONDecoder().decode(AuditCheckpoint.self, from: data)
        } catch {
            throw AuditErrors.headFile(headPath, "is malformed")
        }
    }

    private func writeHead(_ checkpoint: AuditCheckpoint) throws {
        // Two processes may checkpoint; never let the slower one put an older head back.
        if let current = try? readHead(), current.seq >= checkpoint.seq {
            return
        }
        let sync = durability == .fsync
        let temporary = headPath + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let data: Data
        do {
            data = try AuditCanonical.encoder().encode(checkpoint)
        } catch {
            throw AuditErrors.headFile(headPath, "cannot be encoded")
        }
        try FileIO.writeNewFile(temporary, contents: data, mode: 0o600, sync: sync) { reason in
            AuditErrors.headFile(headPath, "cannot be written (\(reason))")
        }
        guard rename(temporary, headPath) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw AuditErrors.headFile(headPath, "cannot be written (\(reason))")
        }
        if sync {
            FileIO.syncDirectory(of: headPath)
        }
    }

    // MARK: Test support

    /// The `synchronous` setting of the writer connection (1 = NORMAL, 2 = FULL).
    func synchronousSetting() async throws -> Int {
        try await pool.writeWithoutTransaction { db in
            try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
        }
    }
}

extension StoredValue {
    init(_ value: DatabaseValue) {
        switch value.storage {
        case .null: self = .null
        case .int64(let integer): self = .integer(integer)
        case .double(let real): self = .real(real)
        case .string(let text): self = .text(text)
        case .blob(let data): self = .blob([UInt8](data))
        }
    }
}

/// A flag that flips once, readable from any thread.
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false

    var value: Bool {
        lock.lock()
        defer { lock.unlock() }
        return flag
    }

    /// Sets the flag; returns false if it was already set.
    func set() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if flag { return false }
        flag = true
        return true
    }
}

/// The tail of the chain as the writer connection left it, so an append need not read it back.
/// Trusted only while no other connection (another process on the same file) has committed since:
/// SQLite's `data_version` tells, and otherwise the tail is read from the table as before.
private final class KnownTail: @unchecked Sendable {
    // Touched only inside the writer connection's serialized access.
    private var tail: (seq: Int64, hash: String, dataVersion: Int64)?

    func current(dataVersion: Int64) -> (seq: Int64, hash: String)? {
        guard let tail, tail.dataVersion == dataVersion else {
            self.tail = nil
            return nil
        }
        return (tail.seq, tail.hash)
    }

    /// `dataVersion` as read inside the transaction that wrote this tail: the connection's own
    /// commit does not change it, any other connection's does.
    func remember(seq: Int64, hash: String, dataVersion: Int64) {
        tail = (seq, hash, dataVersion)
    }

    func forget() {
        tail = nil
    }

    static func dataVersion(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "PRAGMA data_version")) ?? -1
    }
}

import Foundation
import GatehouseCore
import GRDB
import GRDBSQLite

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The embedded default store: an append-only journal in front of one SQLite file in WAL mode.
///
/// An append is recorded when it is in the journal (`<path>.journal`, `AuditJournal`): chained to
/// the journal's last record under an exclusive file lock and written with one `pwrite`, which costs
/// a few system calls where a SQLite commit costs a B-tree transaction and a dozen writes. Behind
/// the appends, an indexer copies the journal's records into the `events` table (in batches, about
/// every 20 ms, on its own thread) and empties the journal once it holds a few megabytes, all of it
/// indexed. Everything that reads (list, replay, verify) and every checkpoint indexes first, and
/// opening the store indexes what a killed process left, so readers see every recorded event.
///
/// Fail closed: when events have waited longer than the busy timeout to be indexed (the SQLite
/// file cannot be written), or the journal has grown past its limit, appends are refused.
///
/// Several processes may open the same file (the gateway and the CLI): appends and emptying hold
/// the journal's lock, and the indexer inserts only events newer than the table's newest inside a
/// `BEGIN IMMEDIATE` transaction, so two indexers cannot insert an event twice.
///
/// The newest checkpoint is also kept in a sidecar file (`<path>.head`, replaced atomically), so
/// deleting the newest checkpoint row, or the events at the end of the trail along with it, cannot go
/// unnoticed by `verify`.
public final class SQLiteAuditStore: AuditStore {
    /// 2: events are appended to the journal and only indexed into the table. A binary that knows
    /// only version 1 would write the table directly, behind the journal's back, so it must not
    /// open the store.
    public static let schemaVersion: Int64 = 2

    public let path: String
    public let headPath: String
    let node: String
    let durability: AuditStoreOptions.Durability
    private let pool: DatabasePool
    private let closed = LockedFlag()
    private let journal: AuditJournal
    /// How long a write waits for another process; also how long an event may wait to be indexed
    /// before appends are refused.
    private let busyTimeout: Duration
    private let indexing = Locked(IndexState())
    /// One indexing pass at a time in this process (the scheduled one, a checkpoint's, a reader's).
    private let indexLock = NSLock()
    private let indexQueue = DispatchQueue(label: "gatehouse.audit.indexer", qos: .utility)

    /// The journal may hold at most this many bytes not yet indexed; appends beyond are refused.
    static let journalLimit: Int64 = 256 << 20
    /// The journal is emptied once the indexed part of it is this large.
    static let emptyJournalAbove: Int64 = 4 << 20
    static let indexDelay = DispatchTimeInterval.milliseconds(20)
    static let indexRetryDelay = DispatchTimeInterval.milliseconds(200)

    private struct IndexState {
        /// Where this process's indexer is in the journal, and in which generation of it.
        var offset = AuditJournal.headerSize
        var generation: UInt64?
        var scheduled = false
        /// Appends by this process, so an indexing pass can tell whether it saw all of them.
        var appended = 0
        /// When the oldest append not yet indexed was made.
        var waitingSince: ContinuousClock.Instant?
        var lastFailure: String?
    }

    public init(options: AuditStoreOptions) throws {
        self.path = options.path
        self.headPath = options.path + ".head"
        self.node = options.node
        self.durability = options.durability
        self.busyTimeout = options.busyTimeout

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
        journal = try AuditJournal(
            path: options.path + ".journal", syncEachAppend: options.durability == .fsync, lockTimeout: options.busyTimeout)
        // A new journal continues the trail the table holds.
        let pool = self.pool
        try journal.prepare {
            do {
                return try pool.read { db in try Self.tail(db) }
            } catch {
                throw AuditErrors.unavailable(options.path, Self.reason(error))
            }
        }
        // What a process killed before its indexer ran left in the journal.
        indexScheduled()
    }

    // MARK: AuditStore

    /// Quick (no fsync per commit) unless `durability` is `fsync`.
    public var appendsAreQuick: Bool { durability == .normal }

    public func append(encoded records: [EncodedAuditRecord]) throws -> [AuditEvent] {
        try checkOpen()
        guard !records.isEmpty else { return [] }
        if let stalled = indexingStalled() {
            throw AuditErrors.unavailable(path, stalled)
        }
        let events = try journal.append(records, maximumBytes: Self.journalLimit)
        scheduleIndexing(after: Self.indexDelay) { $0.appended += 1 }
        return events
    }

    // MARK: Indexing

    /// Why appends are refused, if events have waited too long to be indexed.
    private func indexingStalled() -> String? {
        indexing.withLock { state in
            guard let since = state.waitingSince, ContinuousClock.now - since > busyTimeout else { return nil }
            return "its events have waited over \(busyTimeout) to be indexed (\(state.lastFailure ?? "the index is behind"))"
        }
    }

    private func indexScheduled() {
        indexing.withLock { $0.scheduled = false }
        guard !closed.value else { return }
        do {
            try indexNow()
        } catch {
            scheduleIndexing(after: Self.indexRetryDelay) { $0.lastFailure = Self.reason(error) }
        }
    }

    /// Indexes on the indexer's queue, not on the caller's (cooperative) thread, and returns what
    /// stopped it, if anything. Listing reads what is indexed regardless (a read-only copy cannot
    /// index); `verify` reports it, since recorded events may be missing from what it checks.
    @discardableResult
    private func indexBeforeReading() async -> (any Error)? {
        await withCheckedContinuation { (done: CheckedContinuation<(any Error)?, Never>) in
            indexQueue.async {
                do {
                    try self.indexNow()
                    done.resume(returning: nil)
                } catch {
                    done.resume(returning: error)
                }
            }
        }
    }

    /// Notes that something waits to be indexed and runs the indexer after `delay`, unless a run
    /// is already scheduled.
    private func scheduleIndexing(after delay: DispatchTimeInterval, _ update: (inout IndexState) -> Void) {
        let schedule = indexing.withLock { state -> Bool in
            update(&state)
            if state.waitingSince == nil { state.waitingSince = .now }
            guard !state.scheduled else { return false }
            state.scheduled = true
            return true
        }
        if schedule {
            indexQueue.asyncAfter(deadline: .now() + delay) { self.indexScheduled() }
        }
    }

    /// Copies every journal record not yet in the table into it; with `empty`, or once the journal
    /// is large, also empties the journal (under its lock, after indexing what came in meanwhile).
    func indexNow(empty: Bool = false) throws {
        indexLock.lock()
        defer { indexLock.unlock() }
        let (start, knownGeneration, appendedBefore) = indexing.withLock { ($0.offset, $0.generation, $0.appended) }
        let startedAt = ContinuousClock.now
        var position = start
        var generation = knownGeneration
        func indexToEnd() throws {
            var slice: AuditJournal.Slice
            repeat {
                slice = try journal.read(from: position, generation: generation)
                try insert(slice.entries)
                position = slice.end
                generation = slice.generation
            } while !slice.reachedEnd
        }
        try indexToEnd()
        if empty || position > Self.emptyJournalAbove {
            // What came in since the last read is indexed under the journal's lock, then it is
            // emptied. The writer connection is taken first (the lock order everywhere is writer,
            // then journal), and the insert does not wait for another process holding the table:
            // appenders are never kept waiting on SQLite; the journal is emptied on a later pass.
            do {
                try pool.writeWithoutTransaction { db in
                    try journal.exclusively { locked in
                        let rest = try locked.read(from: position, generation: generation)
                        try db.execute(sql: "PRAGMA busy_timeout = 0")
                        defer { try? db.execute(sql: "PRAGMA busy_timeout = \(Int64(busyTimeout / .milliseconds(1)))") }
                        guard (try? Self.insert(rest.entries, into: db, path: path)) != nil else { return }
                        generation = try locked.empty()
                        position = AuditJournal.headerSize
                    }
                }
            } catch let error as GatehouseError {
                throw error
            } catch {
                throw AuditErrors.unavailable(path, Self.reason(error))
            }
        }
        indexing.withLock { state in
            state.offset = position
            state.generation = generation
            state.lastFailure = nil
            state.waitingSince = state.appended == appendedBefore ? nil : startedAt
        }
    }

    private func insert(_ entries: [AuditJournal.Entry]) throws {
        guard !entries.isEmpty else { return }
        do {
            try pool.writeWithoutTransaction { db in try Self.insert(entries, into: db, path: path) }
        } catch let error as GatehouseError {
            throw error
        } catch {
            throw AuditErrors.unavailable(path, Self.reason(error))
        }
    }

    /// Inserts the entries the table does not hold yet. Another process's indexer may have copied
    /// some already: those must be the same events, and a new one right after the table's tail
    /// must continue its chain; anything else (a fork) stops indexing, so appends are soon
    /// refused, rather than dropping an acknowledged event. A gap (events lost with the page cache
    /// in a power loss under `durability: normal`) is inserted as it is, and `verify` names it.
    private static func insert(_ entries: [AuditJournal.Entry], into db: Database, path: String) throws {
        guard !entries.isEmpty else { return }
        try immediateTransaction(db) {
            var tail = try Self.tail(db) ?? (0, AuditEvent.genesisHash)
            let insert = try db.cachedStatement(sql: """
                INSERT INTO events (seq, time_ms, subject, agent, session, connection, kind, body, prev_hash, hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            for entry in entries {
                if entry.seq <= tail.seq {
                    let stored = try String.fetchOne(
                        db.cachedStatement(sql: "SELECT hash FROM events WHERE seq = ?"), arguments: [entry.seq])
                    guard stored == entry.hash else {
                        throw AuditErrors.unavailable(path, "its journal's event \(entry.seq) differs from the trail's")
                    }
                    continue
                }
                guard entry.seq > tail.seq + 1 || entry.prevHash == tail.hash else {
                    throw AuditErrors.unavailable(path, "its journal does not continue the trail at event \(entry.seq)")
                }
                try insertRow(entry, with: insert, in: db)
                tail = (entry.seq, entry.hash)
            }
        }
    }

    /// Binds and steps the prepared insert through SQLite's C API: GRDB's argument boxing was most
    /// of the indexer's cost per event.
    private static func insertRow(_ entry: AuditJournal.Entry, with statement: Statement, in db: Database) throws {
        let handle = statement.sqliteStatement
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        defer {
            sqlite3_reset(handle)
            sqlite3_clear_bindings(handle)
        }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        func bind(_ index: Int32, _ text: String?) {
            if let text {
                sqlite3_bind_text(handle, index, text, -1, transient)
            } else {
                sqlite3_bind_null(handle, index)
            }
        }
        sqlite3_bind_int64(handle, 1, entry.seq)
        sqlite3_bind_int64(handle, 2, entry.timeMillis)
        bind(3, entry.subject)
        bind(4, entry.agent)
        bind(5, entry.session)
        bind(6, entry.connection)
        bind(7, entry.kind)
        entry.body.withUnsafeBytes { body in
            _ = sqlite3_bind_text(handle, 8, body.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(body.count), transient)
        }
        bind(9, entry.prevHash)
        bind(10, entry.hash)
        let code = sqlite3_step(handle)
        guard code == SQLITE_DONE else {
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
        }
    }

    public func appendCheckpoint(signedBy signer: AuditSigner, time: Date) throws -> AuditCheckpoint? {
        try checkOpen()
        // Signs what the table holds, so everything recorded so far goes into it first.
        try indexNow()
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
        await indexBeforeReading()
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
        if let failure = await indexBeforeReading() {
            throw AuditErrors.unreadable(path, "events recorded in its journal cannot be indexed: \(Self.reason(failure))")
        }
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
        guard !closed.value, indexingStalled() == nil else { return false }
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

    /// Indexes everything and empties the journal (a clean stop leaves the whole trail in the
    /// SQLite file), then closes. What cannot be indexed stays in the journal for the next open.
    public func close() async throws {
        guard closed.set() else { return }
        indexQueue.sync {}
        var failure: (any Error)?
        do {
            try indexNow(empty: true)
        } catch {
            failure = error
        }
        do {
            try pool.close()
        } catch {
            throw AuditErrors.unavailable(path, Self.reason(error))
        }
        if let failure { throw failure }
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
                if found < schemaVersion {
                    // Version 1 has the same tables; the new number keeps older binaries out.
                    try db.execute(sql: "INSERT INTO schema_version (version) VALUES (?)", arguments: [schemaVersion])
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
    private static func immediateTransaction(_ db: Database, _ body: () throws -> Void) throws {
        try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            try body()
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
        } catch {
            if db.isInsideTransaction { try? db.execute(sql: "ROLLBACK TRANSACTION") }
            throw error
        }
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
        if let error = error as? GatehouseError {
            return error.message
        }
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

    /// The writer connection's busy timeout in milliseconds (emptying the journal lowers it to 0
    /// for one transaction).
    func busyTimeoutSetting() async throws -> Int {
        try await pool.writeWithoutTransaction { db in
            try Int.fetchOne(db, sql: "PRAGMA busy_timeout") ?? -1
        }
    }

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

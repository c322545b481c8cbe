import Foundation
import GatehouseCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The append-only file in front of the SQLite trail (`<store>.journal`).
///
/// An append chains its events to the journal's last record (or, when it holds none, to the tail
/// its header names) and writes them with one `pwrite`: that is the moment an event is recorded.
/// What survives a SIGKILL is the same as for a SQLite commit in WAL mode without fsync (the page
/// cache), at a few system calls instead of a B-tree transaction. `SQLiteAuditStore` copies the
/// records into its tables behind the appends and empties the journal once they are all there.
///
/// Several processes may append (the gateway and the CLI): every append and every emptying holds
/// an exclusive `flock` on the file, so the chain cannot fork. A write cut short by a kill leaves a
/// torn record at the end; the next append or read finds the last whole record and drops the rest,
/// which nobody was ever told was recorded.
///
/// Layout: a 96-byte header (`GHJ1`, 4 zero bytes, a random generation that changes whenever the
/// journal is emptied, and the seq and hash of the trail's tail when it was created or emptied,
/// which the first append after it chains to), then records. A record is `GHR1`, the payload
/// length, the payload (seq, time, subject, agent, session, connection, kind, previous hash, hash,
/// body) and an 80-byte trailer (payload length, seq, hash, `GHRE`), so the tail is found from the
/// file's last 80 bytes. Integers are big-endian; strings are length-prefixed, -1 for none.
final class AuditJournal: @unchecked Sendable {
    struct Entry: Equatable {
        var seq: Int64
        var timeMillis: Int64
        var subject: String?
        var agent: String?
        var session: String?
        var connection: String?
        var kind: String?
        var prevHash: String
        var hash: String
        var body: [UInt8]
    }

    /// What a read found: whole records from the requested offset, where they end, and the
    /// generation they belong to.
    struct Slice {
        var entries: [Entry]
        var end: Int64
        var generation: UInt64
        /// Whether `end` is the end of the file (nothing was left for a later read).
        var reachedEnd: Bool
    }

    static let headerSize: Int64 = 96
    static let trailerSize = 80
    private static let fileMagic: [UInt8] = Array("GHJ1".utf8)
    private static let recordMagic: [UInt8] = Array("GHR1".utf8)
    private static let trailerMagic: [UInt8] = Array("GHRE".utf8)
    /// A record can never be larger than this (the body limit plus its columns), so a corrupted
    /// length is caught before anything is allocated for it.
    static let maximumPayload = AuditCanonical.maximumBodyBytes + 64 * 1024
    /// Reads happen in pieces of at most this many bytes, so a long journal never sits in memory
    /// whole.
    static let readChunk = 1 << 20

    let path: String
    private let descriptor: Int32
    private let syncEachAppend: Bool
    /// How long to wait for another process holding the journal (like SQLite's busy timeout).
    private let lockTimeout: Duration
    private let threadLock = NSLock()
    /// Where this process's last append ended and what it ended with (touched under the locks).
    /// While the journal still ends there in the same generation, nobody appended after it (an
    /// append would have moved the end; emptying changes the generation; dropping a torn record
    /// only cuts back to a whole one), so its tail needs no reading back.
    private var lastWritten: (end: Int64, generation: UInt64, seq: Int64, hash: String)?

    init(path: String, syncEachAppend: Bool, lockTimeout: Duration) throws {
        self.path = path
        self.syncEachAppend = syncEachAppend
        self.lockTimeout = lockTimeout
        let opened = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard opened >= 0 else { throw Self.failure(path, "cannot be opened") }
        descriptor = opened
    }

    deinit {
        close(descriptor)
    }

    // MARK: Appending

    /// Creates the journal if there is none, chained to `tail` (the indexed trail's tail). A
    /// journal without records whose header is behind the table (its newest records lost with the
    /// page cache in a power loss, while the table kept them) is moved up to the table's tail, so
    /// appends do not reuse sequence numbers the table holds.
    func prepare(tail: () throws -> (seq: Int64, hash: String)?) throws {
        try withLock(LOCK_EX) {
            var info = stat()
            guard fstat(descriptor, &info) == 0 else { throw Self.failure(path, "cannot be read") }
            if info.st_size < Self.headerSize {
                // Empty (new) or cut inside its header: nothing in it was ever a record.
                let (seq, hash) = try tail() ?? (0, AuditEvent.genesisHash)
                try writeHeader(generation: UInt64.random(in: 1...UInt64.max), seq: seq, hash: hash)
            } else if info.st_size == Self.headerSize, let table = try tail(), table.seq > (try readHeader().seq) {
                try writeHeader(generation: UInt64.random(in: 1...UInt64.max), seq: table.seq, hash: table.hash)
            }
        }
    }

    /// Chains `records` after the journal's last record (or the tail its header names when it holds
    /// none) and writes them in one piece. When this returns they are recorded; when it throws,
    /// none is.
    func append(_ records: [EncodedAuditRecord], maximumBytes: Int64) throws -> [AuditEvent] {
        try withLock(LOCK_EX) {
            let size = try currentSize()
            guard size <= maximumBytes else {
                throw Self.failure(path, "holds \(size) bytes, over its limit of \(maximumBytes): the index is not keeping up")
            }
            let generation = try readGeneration()
            let tail: (seq: Int64, hash: String)
            if let known = lastWritten, known.end == size, known.generation == generation {
                tail = (known.seq, known.hash)
            } else {
                tail = try lastRecord(size: size)
            }
            var seq = tail.seq
            var previousHash = tail.hash
            var events: [AuditEvent] = []
            events.reserveCapacity(records.count)
            var bytes: [UInt8] = []
            for item in records {
                let (next, overflow) = seq.addingReportingOverflow(1)
                guard !overflow else { throw Self.failure(path, "has run out of sequence numbers") }
                seq = next
                let body = AuditCanonical.bytes(seq: seq, prevHash: previousHash, recordJSON: item.json)
                guard body.count <= AuditCanonical.maximumBodyBytes else {
                    throw AuditErrors.recordTooLarge(bytes: body.count)
                }
                let hash = AuditCanonical.hash(of: body)
                let record = item.record
                let start = bytes.count
                Self.encode(
                    Entry(
                        seq: seq, timeMillis: record.timeMillis, subject: record.principal?.subject,
                        agent: record.principal?.agent, session: record.session, connection: record.connection,
                        kind: record.operation.kind, prevHash: previousHash, hash: hash, body: body
                    ),
                    into: &bytes
                )
                // What a reader would refuse as damage must never be acknowledged.
                guard bytes.count - start - 8 - Self.trailerSize <= Self.maximumPayload else {
                    throw AuditErrors.recordTooLarge(bytes: bytes.count - start)
                }
                events.append(AuditEvent(seq: seq, prevHash: previousHash, hash: hash, record: record))
                previousHash = hash
            }
            lastWritten = nil
            try write(bytes, at: size)
            if let last = events.last {
                lastWritten = (size + Int64(bytes.count), generation, last.seq, last.hash)
            }
            return events
        }
    }

    /// Writes at `offset`; on failure cuts the file back to `offset`, so no half-written record
    /// stays (not for the header, whose loss would stop every appender).
    private func write(_ bytes: [UInt8], at offset: Int64, cutOnFailure: Bool = true) throws {
        var written = 0
        let failure: String? = bytes.withUnsafeBytes { buffer in
            while written < buffer.count {
                let result = pwrite(descriptor, buffer.baseAddress! + written, buffer.count - written, off_t(offset) + off_t(written))
                if result < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                written += result
            }
            return nil
        }
        if let failure {
            // Nobody is told these events were recorded, so none of them may stay half written.
            if cutOnFailure { _ = ftruncate(descriptor, off_t(offset)) }
            throw Self.failure(path, "cannot be written (\(failure))")
        }
        if syncEachAppend, fdatasync(descriptor) != 0 {
            let reason = String(cString: strerror(errno))
            if cutOnFailure { _ = ftruncate(descriptor, off_t(offset)) }
            throw Self.failure(path, "cannot be synced (\(reason))")
        }
    }

    // MARK: Reading and emptying

    /// Whole records from `offset` on, if the journal is still of `generation`; otherwise from its
    /// start. At most `limit` bytes of records are returned (at least one record).
    func read(from offset: Int64, generation: UInt64?, limit: Int = readChunk) throws -> Slice {
        try withLock(LOCK_EX) { try readLocked(from: offset, generation: generation, limit: limit) }
    }

    /// Runs `body` while no other process can append, for emptying the journal once what it holds
    /// is indexed.
    func exclusively<T>(_ body: (Locked) throws -> T) throws -> T {
        try withLock(LOCK_EX) { try body(Locked(journal: self)) }
    }

    struct Locked {
        fileprivate let journal: AuditJournal

        /// What came in after `offset` of `generation` (everything, if it is another generation).
        func read(from offset: Int64, generation: UInt64?) throws -> Slice {
            try journal.readLocked(from: offset, generation: generation, limit: .max)
        }

        /// Empties the journal, all of whose records are indexed, under a new generation (so a
        /// reader that remembered an offset in the old one starts over instead of skipping
        /// records), chained to its last record. The new header is written over the old one before
        /// the file is cut, so a kill in between leaves a journal that still has a header: the old
        /// records after it are the table's already (same hashes), and are skipped again.
        func empty() throws -> UInt64 {
            let size = try journal.currentSize()
            let tail = try journal.lastRecord(size: size)
            let generation = UInt64.random(in: 1...UInt64.max)
            try journal.writeHeader(generation: generation, seq: tail.seq, hash: tail.hash)
            guard ftruncate(journal.descriptor, off_t(AuditJournal.headerSize)) == 0 else {
                throw AuditJournal.failure(journal.path, "cannot be emptied (\(String(cString: strerror(errno))))")
            }
            return generation
        }
    }

    private func readLocked(from offset: Int64, generation: UInt64?, limit: Int) throws -> Slice {
        let size = try currentSize()
        let current = try readHeader().generation
        var position = (generation == current && offset >= Self.headerSize && offset <= size) ? offset : Self.headerSize
        var entries: [Entry] = []
        var taken = 0
        while position < size, taken < limit || entries.isEmpty {
            guard let (entry, length) = try record(at: position, size: size) else {
                try dropTornTail(at: position, size: size)
                return Slice(entries: entries, end: position, generation: current, reachedEnd: true)
            }
            entries.append(entry)
            position += Int64(length)
            taken += length
        }
        return Slice(entries: entries, end: position, generation: current, reachedEnd: position >= size)
    }

    // MARK: Layout

    /// Locked: the file's size; a journal must have its header.
    private func currentSize() throws -> Int64 {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw Self.failure(path, "cannot be read") }
        guard info.st_size >= Self.headerSize else { throw Self.failure(path, "has lost its header") }
        return Int64(info.st_size)
    }

    private func writeHeader(generation: UInt64, seq: Int64, hash: String) throws {
        var bytes = Self.fileMagic
        bytes += [0, 0, 0, 0]
        Self.append(generation, to: &bytes)
        Self.append(seq, to: &bytes)
        bytes += Self.hashBytes(hash)
        bytes += [UInt8](repeating: 0, count: Int(Self.headerSize) - bytes.count)
        try write(bytes, at: 0, cutOnFailure: false)
    }

    /// The chain tail a hash in the header or a trailer stands for: always 64 bytes.
    private static func hashBytes(_ hash: String) -> [UInt8] {
        let bytes = Array(hash.utf8.prefix(64))
        return bytes + [UInt8](repeating: UInt8(ascii: "0"), count: 64 - bytes.count)
    }

    private func readGeneration() throws -> UInt64 {
        let bytes = try readBytes(at: 8, count: 8)
        return bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    private func readHeader() throws -> (generation: UInt64, seq: Int64, hash: String) {
        let header = try readBytes(at: 0, count: Int(Self.headerSize))
        var reader = ByteReader(header[...])
        guard reader.bytes(4).map(Array.init) == Self.fileMagic, reader.skip(4),
              let generation = reader.int64(), let seq = reader.int64(), seq >= 0,
              let hash = reader.string(exactly: 64)
        else {
            throw Self.failure(path, "is not a Gatehouse audit journal")
        }
        return (UInt64(bitPattern: generation), seq, hash)
    }

    /// The chain tail: the last record's seq and hash, or the header's when there is none. A torn
    /// tail is cut back to the last whole record first.
    private func lastRecord(size: Int64) throws -> (seq: Int64, hash: String) {
        if size > Self.headerSize, let tail = try lastWholeRecord(endingAt: size) {
            return (tail.seq, tail.hash)
        }
        // Rare: no whole record at the end. Find the last one from the start; what follows it is
        // a torn write, which is dropped.
        let header = try readHeader()
        var last = (seq: header.seq, hash: header.hash)
        var position = Self.headerSize
        while position < size, let (entry, length) = try record(at: position, size: size) {
            last = (entry.seq, entry.hash)
            position += Int64(length)
        }
        try dropTornTail(at: position, size: size)
        return last
    }

    /// The record that ends at `end`, found from its trailer and then parsed whole.
    private func lastWholeRecord(endingAt end: Int64) throws -> Entry? {
        guard end >= Self.headerSize + Int64(Self.trailerSize + 8) else { return nil }
        let bytes = try readBytes(at: end - Int64(Self.trailerSize), count: Self.trailerSize)
        guard Array(bytes[76..<80]) == Self.trailerMagic else { return nil }
        var reader = ByteReader(bytes[...])
        guard let payload = reader.int32(), payload >= 0, payload <= Self.maximumPayload else { return nil }
        let start = end - Int64(Self.trailerSize) - Int64(payload) - 8
        guard start >= Self.headerSize, let (entry, length) = try record(at: start, size: end),
              start + Int64(length) == end
        else { return nil }
        return entry
    }

    /// Bytes from `position` to the end that are not a record. After a write cut short by a kill
    /// that is a torn record, never acknowledged, and it is dropped. If a whole record still
    /// follows them, they are damage in the middle of the journal instead: cutting there would
    /// drop acknowledged records, so the journal is refused (fail closed) until someone looks.
    private func dropTornTail(at position: Int64, size: Int64) throws {
        guard position < size else { return }
        if try lastWholeRecord(endingAt: size) != nil {
            throw Self.failure(path, "is damaged at byte \(position), before records that are whole; it needs inspection")
        }
        guard ftruncate(descriptor, off_t(position)) == 0 else {
            throw Self.failure(path, "cannot drop a torn record (\(String(cString: strerror(errno))))")
        }
    }

    /// The whole record at `position` and its length, nil if what is there is not one.
    private func record(at position: Int64, size: Int64) throws -> (Entry, Int)? {
        guard size - position >= 8 + Int64(Self.trailerSize) else { return nil }
        let head = try readBytes(at: position, count: 8)
        var headReader = ByteReader(head[...])
        guard Array(head[0..<4]) == Self.recordMagic, headReader.skip(4), let payload = headReader.int32(),
              payload >= 0, payload <= Self.maximumPayload
        else { return nil }
        let length = 8 + Int(payload) + Self.trailerSize
        guard Int64(length) <= size - position else { return nil }
        let bytes = try readBytes(at: position + 8, count: Int(payload) + Self.trailerSize)
        var reader = ByteReader(bytes[...])
        guard let seq = reader.int64(), seq > 0, let time = reader.int64(),
              let subject = reader.optionalString(), let agent = reader.optionalString(),
              let session = reader.optionalString(), let connection = reader.optionalString(),
              let kind = reader.optionalString(),
              let prevHash = reader.lengthPrefixedString(), let hash = reader.lengthPrefixedString(),
              let bodyLength = reader.int32(), bodyLength >= 0, let body = reader.bytes(Int(bodyLength)),
              reader.offset == Int(payload),
              reader.int32() == payload, reader.int64() == seq, reader.string(exactly: 64) == hash,
              reader.bytes(4).map(Array.init) == Self.trailerMagic
        else { return nil }
        let entry = Entry(
            seq: seq, timeMillis: time, subject: subject.value, agent: agent.value, session: session.value,
            connection: connection.value, kind: kind.value, prevHash: prevHash, hash: hash, body: Array(body)
        )
        return (entry, length)
    }

    static func encode(_ entry: Entry, into out: inout [UInt8]) {
        let start = out.count
        out += recordMagic
        out += [0, 0, 0, 0]  // the payload length, filled in below
        append(entry.seq, to: &out)
        append(entry.timeMillis, to: &out)
        for value in [entry.subject, entry.agent, entry.session, entry.connection, entry.kind] {
            if let value {
                append(Int32(value.utf8.count), to: &out)
                out += value.utf8
            } else {
                append(Int32(-1), to: &out)
            }
        }
        for text in [entry.prevHash, entry.hash] {
            append(Int32(text.utf8.count), to: &out)
            out += text.utf8
        }
        append(Int32(entry.body.count), to: &out)
        out += entry.body
        let payload = Int32(out.count - start - 8)
        withUnsafeBytes(of: payload.bigEndian) { length in
            for index in 0..<4 { out[start + 4 + index] = length[index] }
        }
        append(payload, to: &out)
        append(entry.seq, to: &out)
        // The hash is 64 hex digits, as `AuditCanonical.hash` makes it.
        out += hashBytes(entry.hash)
        out += trailerMagic
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { out += $0 }
    }

    private func readBytes(at offset: Int64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let result = bytes.withUnsafeMutableBytes { buffer in
                pread(descriptor, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if result < 0, errno == EINTR { continue }
            guard result > 0 else { throw Self.failure(path, "cannot be read") }
            done += result
        }
        return bytes
    }

    /// `flock` belongs to the open file, which this process's threads share, so it keeps other
    /// processes out and this lock keeps other threads out. Another process holding the journal
    /// (a stopped CLI) is waited for up to `lockTimeout`, then the append is refused.
    private func withLock<T>(_ operation: Int32, _ body: () throws -> T) throws -> T {
        threadLock.lock()
        defer { threadLock.unlock() }
        let deadline = ContinuousClock.now + lockTimeout
        var pause: UInt32 = 50
        while flock(descriptor, operation | LOCK_NB) != 0 {
            switch errno {
            case EINTR:
                continue
            case EWOULDBLOCK where ContinuousClock.now < deadline:
                usleep(pause)
                pause = min(pause * 2, 10_000)
            case EWOULDBLOCK:
                throw Self.failure(path, "is held by another process for over \(lockTimeout)")
            default:
                throw Self.failure(path, "cannot be locked (\(String(cString: strerror(errno))))")
            }
        }
        defer { _ = flock(descriptor, LOCK_UN) }
        return try body()
    }

    static func failure(_ path: String, _ reason: String) -> GatehouseError {
        AuditErrors.unavailable(path, "its journal \(reason)")
    }
}

/// Bounds-checked big-endian reads: nil instead of a trap on anything short or malformed.
private struct ByteReader {
    private let storage: ArraySlice<UInt8>
    private(set) var offset = 0

    init(_ storage: ArraySlice<UInt8>) {
        self.storage = storage
    }

    /// A string that may be absent; `.value` is nil for the absent one.
    struct MaybeString { var value: String? }

    mutating func skip(_ count: Int) -> Bool {
        bytes(count) != nil
    }

    mutating func bytes(_ count: Int) -> ArraySlice<UInt8>? {
        guard count >= 0, count <= storage.count - offset else { return nil }
        let start = storage.startIndex + offset
        offset += count
        return storage[start..<start + count]
    }

    mutating func int32() -> Int32? {
        bytes(4).map { $0.reduce(UInt32(0)) { $0 << 8 | UInt32($1) } }.map { Int32(bitPattern: $0) }
    }

    mutating func int64() -> Int64? {
        bytes(8).map { $0.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }.map { Int64(bitPattern: $0) }
    }

    mutating func string(exactly count: Int) -> String? {
        bytes(count).map { String(decoding: $0, as: UTF8.self) }
    }

    mutating func lengthPrefixedString() -> String? {
        guard let length = int32(), length >= 0 else { return nil }
        return string(exactly: Int(length))
    }

    mutating func optionalString() -> MaybeString? {
        guard let length = int32() else { return nil }
        if length == -1 { return MaybeString(value: nil) }
        guard length >= 0, let text = string(exactly: Int(length)) else { return nil }
        return MaybeString(value: text)
    }
}

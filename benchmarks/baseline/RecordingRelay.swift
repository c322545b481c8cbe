import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The floor of "record before forwarding": the bare relay, except that every batch of bytes a
/// client sends is first appended to a hash-chained journal file with one `write` (what survives a
/// SIGKILL: the page cache, as for the gateway's trail) and only then passed on. No parsing, no
/// identity, no index: whatever a gateway that records each statement before it runs does on top of
/// this is its own work.
enum RecordingRelay {
    static func run(port: Int, upstreamHost: String, upstreamPort: Int, journalPath: String) async throws {
        let journal = try Journal(path: journalPath)
        try await TCPRelay.run(port: port, upstreamHost: upstreamHost, upstreamPort: upstreamPort) {
            [RecordBeforeForwarding(journal: journal)]
        }
    }
}

/// Append-only, hash-chained: each record is its sequence number, the previous record's hash, the
/// length and the bytes, then SHA-256 over all of that. Shared by the event loops, hence the lock.
final class Journal: Sendable {
    private struct Tail {
        var seq: UInt64 = 0
        var hash = [UInt8](repeating: 0, count: 32)
        var record: [UInt8] = []
    }

    private let descriptor: Int32
    private let tail = NIOLockedValueBox(Tail())

    init(path: String) throws {
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    /// Returns once the record is in the file (the page cache), or throws.
    func append(_ bytes: ByteBuffer) throws {
        try tail.withLockedValue { tail in
            tail.seq += 1
            tail.record.removeAll(keepingCapacity: true)
            withUnsafeBytes(of: tail.seq.bigEndian) { tail.record.append(contentsOf: $0) }
            tail.record.append(contentsOf: tail.hash)
            withUnsafeBytes(of: UInt32(bytes.readableBytes).bigEndian) { tail.record.append(contentsOf: $0) }
            bytes.withUnsafeReadableBytes { tail.record.append(contentsOf: $0) }
            tail.hash = Array(SHA256.hash(data: tail.record))
            tail.record.append(contentsOf: tail.hash)
            let written = tail.record.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            guard written == tail.record.count else { throw POSIXError(.EIO) }
        }
    }
}

/// Client side: what one wake-up read is recorded as one record, then forwarded.
final class RecordBeforeForwarding: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let journal: Journal
    private var batch: ByteBuffer?

    init(journal: Journal) {
        self.journal = journal
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if batch == nil {
            batch = bytes
        } else {
            batch!.writeBuffer(&bytes)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard let bytes = batch else { return context.fireChannelReadComplete() }
        batch = nil
        do {
            try journal.append(bytes)
        } catch {
            context.close(promise: nil)  // not recorded: not forwarded
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.fireChannelReadComplete()
    }
}

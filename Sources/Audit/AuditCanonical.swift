import Crypto
import Foundation
import GatehouseCore

/// The exact bytes an event's hash covers. Every store writes these bytes as the event's body and
/// hashes them as stored, so a trail stays verifiable even if a later Foundation formats JSON
/// differently.
///
/// The encoding is JSON of `{seq, prevHash, record}` with sorted keys and unescaped slashes.
public enum AuditCanonical {
    /// The largest body a store accepts. Listeners cap payloads well below this; the limit keeps a
    /// single event from exhausting memory in `verify` or a transaction.
    public static let maximumBodyBytes = 4 * 1024 * 1024

    /// The decoded form of a body.
    public struct Body: Sendable, Codable, Equatable {
        public var seq: Int64
        public var prevHash: String
        public var record: AuditRecord

        public init(seq: Int64, prevHash: String, record: AuditRecord) {
            self.seq = seq
            self.prevHash = prevHash
            self.record = record
        }
    }

    public static func bytes(seq: Int64, prevHash: String, record: AuditRecord) throws -> [UInt8] {
        bytes(seq: seq, prevHash: prevHash, recordJSON: try recordJSON(record))
    }

    public static func hash(seq: Int64, prevHash: String, record: AuditRecord) throws -> String {
        hash(of: try bytes(seq: seq, prevHash: prevHash, record: record))
    }

    /// Lower-case hex SHA-256.
    public static func hash(of bytes: [UInt8]) -> String {
        Hex.encode(SHA256.hash(data: bytes))
    }

    /// The record's canonical JSON alone. It does not depend on the chain, so it can be computed
    /// before the write lock is taken.
    public static func recordJSON(_ record: AuditRecord) throws -> [UInt8] {
        AuditRecordJSON.encode(record)
    }

    /// Splices the body from a pre-encoded record, producing exactly what encoding `Body` with
    /// `encoder()` produces (sorted keys put `prevHash` < `record` < `seq`; a hex hash and an integer
    /// need no escaping). A test holds this equal to the plain encoding.
    public static func bytes(seq: Int64, prevHash: String, recordJSON: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(recordJSON.count + 120)
        out.append(contentsOf: #"{"prevHash":""#.utf8)
        out.append(contentsOf: prevHash.utf8)
        out.append(contentsOf: #"","record":"#.utf8)
        out.append(contentsOf: recordJSON)
        out.append(contentsOf: #","seq":"#.utf8)
        out.append(contentsOf: String(seq).utf8)
        out.append(UInt8(ascii: "}"))
        return out
    }

    public static func decode(_ body: [UInt8]) throws -> Body {
        try JSONDecoder().decode(Body.self, from: Data(body))
    }

    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// Bytes the splice adds around a record, at most (64-character hash, 20-digit sequence number).
    static let bodyOverhead = 128
}

/// A record encoded once, in the caller's task, so the writer only splices and hashes under the lock.
/// A record with its canonical JSON, checked against the size limit, ready to be chained.
public struct EncodedAuditRecord: Sendable {
    public var record: AuditRecord
    var json: [UInt8]

    public init(_ record: AuditRecord) throws {
        self.record = record
        self.json = try AuditCanonical.recordJSON(record)
        let size = json.count + AuditCanonical.bodyOverhead
        guard size <= AuditCanonical.maximumBodyBytes else {
            throw AuditErrors.recordTooLarge(bytes: size)
        }
    }
}

enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = value(chars[index]), let low = value(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func value(_ char: UInt8) -> UInt8? {
        switch char {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): char - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): char - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): char - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

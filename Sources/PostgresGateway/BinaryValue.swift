import Foundation
import NIOCore

/// Readable text for binary-format parameter values of common types, so the trail shows `7`
/// rather than `\x0007`. Anything else (or a value whose size does not fit its type) is hex.
enum BinaryValue {
    static func text(_ buffer: ByteBuffer, typeOID: UInt32) -> String {
        var value = buffer
        let size = value.readableBytes
        switch (typeOID, size) {
        case (16, 1): // bool
            return value.readInteger(as: UInt8.self) == 0 ? "false" : "true"
        case (21, 2): // int2
            return value.readInteger(as: Int16.self).map(String.init) ?? hex(buffer)
        case (23, 4), (26, 4): // int4, oid
            return value.readInteger(as: Int32.self).map(String.init) ?? hex(buffer)
        case (20, 8): // int8
            return value.readInteger(as: Int64.self).map(String.init) ?? hex(buffer)
        case (700, 4): // float4
            return value.readInteger(as: UInt32.self).map { String(Float(bitPattern: $0)) } ?? hex(buffer)
        case (701, 8): // float8
            return value.readInteger(as: UInt64.self).map { String(Double(bitPattern: $0)) } ?? hex(buffer)
        case (25, _), (1043, _), (1042, _), (19, _), (114, _): // text, varchar, bpchar, name, json
            return StatementTracker.text(buffer, binary: false)
        case (2950, 16): // uuid
            let bytes = value.readBytes(length: 16) ?? []
            let hexDigits = bytes.map { String(format: "%02x", $0) }.joined()
            var uuid = hexDigits
            for offset in [8, 13, 18, 23] { uuid.insert("-", at: uuid.index(uuid.startIndex, offsetBy: offset)) }
            return uuid
        default:
            return StatementTracker.text(buffer, binary: true)
        }
    }

    private static let digits = Array("0123456789abcdef".utf8)

    static func hex(_ buffer: ByteBuffer) -> String {
        var out: [UInt8] = [UInt8(ascii: "\\"), UInt8(ascii: "x")]
        out.reserveCapacity(2 + buffer.readableBytes * 2)
        for byte in buffer.readableBytesView {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

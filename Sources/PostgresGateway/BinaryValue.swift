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

    /// The value's text, for the number types the detectors must see (a card number kept as
    /// bigint or numeric); nil for types read here only as hex.
    static func readableText(_ buffer: ByteBuffer, typeOID: UInt32) -> String? {
        switch (typeOID, buffer.readableBytes) {
        case (20, 8), (700, 4), (701, 8), (25, _), (1043, _), (1042, _), (19, _), (114, _):
            return text(buffer, typeOID: typeOID)
        case (1700, _):
            return numericText(buffer)
        default:
            return nil
        }
    }

    /// numeric's binary form: digit count, weight, sign, display scale, then base-10000 digits.
    static func numericText(_ buffer: ByteBuffer) -> String? {
        var value = buffer
        guard let count = value.readInteger(as: Int16.self), let weight = value.readInteger(as: Int16.self),
              let sign = value.readInteger(as: UInt16.self), let scale = value.readInteger(as: Int16.self),
              count >= 0, count <= 1000, scale >= 0, value.readableBytes == Int(count) * 2 else { return nil }
        if sign == 0xC000 { return "NaN" }
        var groups: [Int16] = []
        for _ in 0..<count {
            guard let group = value.readInteger(as: Int16.self), (0..<10000).contains(group) else { return nil }
            groups.append(group)
        }
        // Digits before the point: groups 0...weight; after it, the rest (padded to the scale).
        var integer = ""
        var fraction = ""
        for index in 0..<max(Int(weight) + 1, 0) {
            let group = index < groups.count ? groups[index] : 0
            integer += index == 0 ? String(group) : String(format: "%04d", group)
        }
        if integer.isEmpty { integer = "0" }
        var index = max(Int(weight) + 1, 0)
        var leadingZeroGroups = Int(weight) < -1 ? -Int(weight) - 1 : 0
        while leadingZeroGroups > 0 {
            fraction += "0000"
            leadingZeroGroups -= 1
        }
        while index < groups.count {
            fraction += String(format: "%04d", groups[index])
            index += 1
        }
        if fraction.count < Int(scale) { fraction += String(repeating: "0", count: Int(scale) - fraction.count) }
        fraction = String(fraction.prefix(Int(scale)))
        let magnitude = fraction.isEmpty ? integer : integer + "." + fraction
        return sign == 0x4000 ? "-" + magnitude : magnitude
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

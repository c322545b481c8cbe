import NIOCore

/// Reads one message body, turning every shortfall into a `PostgresWireError` instead of a trap.
///
/// Text is decoded in one of two ways. Client text is what the gateway inspects and records, so it
/// must be exactly the bytes the server will run: invalid UTF-8 is rejected rather than repaired.
/// Server text is only shown and recorded, so it is repaired (U+FFFD) rather than ending a session.
struct WireReader {
    enum Text { case strictUTF8, lossyUTF8 }

    private(set) var buffer: ByteBuffer
    let context: String
    let text: Text

    init(_ buffer: ByteBuffer, context: String, text: Text) {
        self.buffer = buffer
        self.context = context
        self.text = text
    }

    var remaining: Int { buffer.readableBytes }

    func malformed(_ what: String) -> PostgresWireError {
        PostgresWireError(.malformedMessage, "\(context): \(what)")
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self, _ what: String) throws -> T {
        guard let value = buffer.readInteger(as: T.self) else { throw malformed("truncated \(what)") }
        return value
    }

    mutating func byte(_ what: String) throws -> UInt8 { try integer(UInt8.self, what) }

    /// A count in PostgreSQL is read as unsigned 16 bits (`pq_getmsgint(msg, 2)`), so 65535
    /// parameters are legal; each element must still fit in what is left of the body.
    mutating func count(_ what: String, minimumElementSize: Int) throws -> Int {
        let count = Int(try integer(UInt16.self, what))
        guard count <= remaining / max(minimumElementSize, 1) else {
            throw malformed("\(what) \(count) exceeds the message")
        }
        return count
    }

    mutating func cString(_ what: String) throws -> String {
        let terminator = buffer.withUnsafeReadableBytes { $0.firstIndex(of: 0) }
        guard let length = terminator else { throw malformed("\(what) is not NUL-terminated") }
        let string = try buffer.withUnsafeReadableBytes { raw -> String in
            let bytes = UnsafeRawBufferPointer(rebasing: raw[0..<length])
            return try decodeText(bytes, what)
        }
        buffer.moveReaderIndex(forwardBy: length + 1)
        return string
    }

    mutating func bytes(_ count: Int, _ what: String) throws -> ByteBuffer {
        guard count >= 0, count <= remaining, let slice = buffer.readSlice(length: count) else {
            throw malformed("\(what) exceeds the message")
        }
        return slice
    }

    /// Int32 length then bytes; -1 is SQL NULL, any other negative length is an attack or a bug.
    mutating func nullableValue(_ what: String) throws -> ByteBuffer? {
        let length = try integer(Int32.self, "\(what) length")
        if length == -1 { return nil }
        guard length >= 0 else { throw malformed("\(what) has negative length") }
        return try bytes(Int(length), what)
    }

    mutating func rest() -> ByteBuffer {
        buffer.readSlice(length: buffer.readableBytes) ?? ByteBuffer()
    }

    /// PostgreSQL itself rejects trailing bytes (`pq_getmsgend`); so do we, so that what we parse is
    /// all that the server would see.
    func finish() throws {
        guard remaining == 0 else { throw malformed("\(remaining) unexpected trailing bytes") }
    }

    private func decodeText(_ bytes: UnsafeRawBufferPointer, _ what: String) throws -> String {
        let string = String(decoding: bytes, as: UTF8.self)
        if text == .strictUTF8 {
            guard string.utf8.count == bytes.count, string.utf8.elementsEqual(bytes) else {
                throw malformed("\(what) is not valid UTF-8")
            }
        }
        return string
    }
}

extension ByteBuffer {
    /// Writes `string` as a C string. Everything from an embedded NUL on is dropped: the peer would
    /// stop reading there anyway, and writing it would let text smuggle extra fields into a message.
    mutating func writeCString(_ string: String) {
        let utf8 = string.utf8
        if let nul = utf8.firstIndex(of: 0) {
            writeBytes(utf8[utf8.startIndex..<nul])
        } else {
            writeString(string)
        }
        writeInteger(UInt8(0))
    }

    /// Writes a type byte, a length placeholder, the body, then patches the length in.
    /// A message longer than Int32.max cannot be expressed on the wire; building one is a bug.
    mutating func writePostgresMessage(type: UInt8?, _ body: (inout ByteBuffer) -> Void) {
        if let type { writeInteger(type) }
        let lengthIndex = writerIndex
        writeInteger(Int32(0))
        body(&self)
        guard let length = Int32(exactly: writerIndex - lengthIndex) else {
            preconditionFailure("PostgreSQL message longer than Int32.max")
        }
        setInteger(length, at: lengthIndex)
    }

    /// Counts go on the wire as unsigned 16 bits; more elements than that is a bug in the caller.
    mutating func writeCount(_ count: Int) {
        guard let value = UInt16(exactly: count) else {
            preconditionFailure("PostgreSQL message element count above 65535")
        }
        writeInteger(value)
    }
}

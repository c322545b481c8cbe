import NIOCore

/// A typed frame: 1 type byte + Int32 length (includes itself) + body. `body` excludes type and length.
///
/// Every message after startup, in both directions, is a frame. The gateway forwards frames it does
/// not need to understand without parsing them.
public struct PostgresFrame: Sendable, Equatable {
    public var type: UInt8
    public var body: ByteBuffer

    public init(type: UInt8, body: ByteBuffer) {
        self.type = type
        self.body = body
    }
}

/// Splits a byte stream into `PostgresFrame`s.
///
/// The declared length is checked the moment the 5-byte header is readable, so a hostile peer that
/// announces a huge frame is refused before any memory is set aside for its body. Bytes are consumed
/// only when a whole frame is present; the body is a slice of the input, not a copy.
public struct PostgresFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = PostgresFrame

    /// The largest accepted value of the length field (which counts its own 4 bytes, not the type byte).
    public let maximumFrameLength: Int

    public init(maximumFrameLength: Int = 64 << 20) {
        self.maximumFrameLength = max(maximumFrameLength, 4)
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> PostgresFrame? {
        let start = buffer.readerIndex
        guard let type = buffer.getInteger(at: start, as: UInt8.self),
              let declared = buffer.getInteger(at: start + 1, as: Int32.self)
        else { return nil }
        guard declared >= 4 else {
            throw PostgresWireError(.malformedLength, "frame declares length \(declared), below the minimum of 4")
        }
        let length = Int(declared)
        guard length <= maximumFrameLength else {
            throw PostgresWireError(.frameTooLarge, "frame declares length \(length), above the maximum of \(maximumFrameLength)")
        }
        guard buffer.readableBytes - 1 >= length else { return nil }
        buffer.moveReaderIndex(forwardBy: 5)
        guard let body = buffer.readSlice(length: length - 4) else {
            buffer.moveReaderIndex(to: start)
            return nil
        }
        return PostgresFrame(type: type, body: body)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> PostgresFrame? {
        try decode(buffer: &buffer)
    }
}

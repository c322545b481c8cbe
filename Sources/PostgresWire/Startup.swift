import NIOCore

/// One `name=value` pair of a StartupMessage.
public struct StartupParameter: Sendable, Equatable, Hashable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// The StartupMessage: protocol version and connection parameters (`user`, `database`, `options`, ...).
public struct StartupMessage: Sendable, Equatable {
    /// Protocol 3.0, the only version whose message layouts this codec implements.
    public static let protocolVersion3_0: UInt32 = 196_608

    /// Major version in the high 16 bits, minor in the low 16 bits. A client asking for 3.x with x > 0
    /// should be answered with NegotiateProtocolVersion (see `PostgresEncoder.negotiateProtocolVersion`).
    public var protocolVersion: UInt32
    /// In the order the client sent them; names are unique (the decoder rejects duplicates, because
    /// the server would let the last one win and the gateway must not check one value and pass another).
    public var parameters: [StartupParameter]

    public init(protocolVersion: UInt32 = StartupMessage.protocolVersion3_0, parameters: [StartupParameter]) {
        self.protocolVersion = protocolVersion
        self.parameters = parameters
    }

    public var majorVersion: UInt16 { UInt16(truncatingIfNeeded: protocolVersion >> 16) }
    public var minorVersion: UInt16 { UInt16(truncatingIfNeeded: protocolVersion) }

    public subscript(name: String) -> String? {
        parameters.first { $0.name == name }?.value
    }
}

/// The first message on a client connection has no type byte.
public enum StartupPacket: Sendable, Equatable {
    /// Protocol 3.x (3.0 is 196608).
    case startup(StartupMessage)
    /// 80877103
    case sslRequest
    /// 80877104
    case gssEncRequest
    /// 80877102
    case cancel(processID: Int32, secretKey: Int32)

    static let sslRequestCode: UInt32 = 80_877_103
    static let gssEncRequestCode: UInt32 = 80_877_104
    static let cancelRequestCode: UInt32 = 80_877_102
}

/// Decodes the untyped packets a client sends before its StartupMessage is accepted.
///
/// After an SSLRequest or GSSENCRequest the client must wait for the server's one-byte answer, so
/// any byte already buffered behind the request was sent in the clear before encryption began and
/// could be mistaken for protected data (CVE-2021-23214). Such a request is therefore rejected with
/// `.malformedMessage`. The decoder can be reused after the answer: a client refused with 'N' may
/// go on in the clear, and one that negotiated TLS sends its StartupMessage through the TLS handler.
public struct PostgresStartupDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = StartupPacket

    /// Largest accepted packet length (which counts its own 4 bytes). PostgreSQL's own limit is 10000.
    public let maximumLength: Int

    public init(maximumLength: Int = 10_000) {
        self.maximumLength = max(maximumLength, 8)
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> StartupPacket? {
        let start = buffer.readerIndex
        guard let declared = buffer.getInteger(at: start, as: Int32.self) else { return nil }
        guard declared >= 8 else {
            throw PostgresWireError(.malformedLength, "startup packet declares length \(declared), below the minimum of 8")
        }
        let length = Int(declared)
        guard length <= maximumLength else {
            throw PostgresWireError(.frameTooLarge, "startup packet declares length \(length), above the maximum of \(maximumLength)")
        }
        guard let code = buffer.getInteger(at: start + 4, as: UInt32.self) else { return nil }
        // Decide what the packet is before waiting for its body, so nothing is buffered for a
        // request we would refuse anyway.
        switch code {
        case StartupPacket.sslRequestCode, StartupPacket.gssEncRequestCode:
            guard length == 8 else {
                throw PostgresWireError(.malformedLength, "encryption request declares length \(length), expected 8")
            }
        case StartupPacket.cancelRequestCode:
            guard length == 16 else {
                throw PostgresWireError(.malformedLength, "CancelRequest declares length \(length), expected 16")
            }
        default:
            guard code >> 16 == 3 else {
                throw PostgresWireError(.unsupportedProtocol, "unsupported protocol \(code >> 16).\(code & 0xFFFF)")
            }
        }
        guard buffer.readableBytes >= length, var packet = buffer.readSlice(length: length) else { return nil }
        packet.moveReaderIndex(forwardBy: 8)

        switch code {
        case StartupPacket.sslRequestCode, StartupPacket.gssEncRequestCode:
            guard buffer.readableBytes == 0 else {
                throw PostgresWireError(.malformedMessage, "unencrypted data received after an encryption request")
            }
            return code == StartupPacket.sslRequestCode ? .sslRequest : .gssEncRequest
        case StartupPacket.cancelRequestCode:
            var reader = WireReader(packet, context: "CancelRequest", text: .strictUTF8)
            let processID = try reader.integer(Int32.self, "process ID")
            let secretKey = try reader.integer(Int32.self, "secret key")
            return .cancel(processID: processID, secretKey: secretKey)
        default:
            return .startup(try Self.parseStartup(version: code, body: packet))
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> StartupPacket? {
        try decode(buffer: &buffer)
    }

    /// Pairs of C strings ended by an empty name, which must be the packet's last byte (as the server requires).
    static func parseStartup(version: UInt32, body: ByteBuffer) throws -> StartupMessage {
        var reader = WireReader(body, context: "StartupMessage", text: .strictUTF8)
        var parameters: [StartupParameter] = []
        var seen = Set<String>()
        while true {
            let name = try reader.cString("parameter name")
            if name.isEmpty { break }
            let value = try reader.cString("parameter value")
            guard seen.insert(name).inserted else { throw reader.malformed("duplicate parameter") }
            parameters.append(StartupParameter(name: name, value: value))
        }
        try reader.finish()
        return StartupMessage(protocolVersion: version, parameters: parameters)
    }
}

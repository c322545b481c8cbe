import NIOCore
import PostgresWire

/// What a client sends: first untyped startup packets (SSLRequest, then StartupMessage), then
/// typed frames.
enum ClientInbound {
    case startup(StartupPacket)
    case frame(PostgresFrame)
}

/// Switches from startup packets to typed frames by itself after the StartupMessage, so nothing
/// the client sends right behind it can be read with the wrong framing.
struct ClientMessageDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = ClientInbound

    private var startupDecoder = PostgresStartupDecoder()
    private var frameDecoder: PostgresFrameDecoder
    private var inStartupPhase = true

    init(maximumFrameLength: Int) {
        frameDecoder = PostgresFrameDecoder(maximumFrameLength: maximumFrameLength)
    }

    mutating func decode(buffer: inout ByteBuffer) throws -> ClientInbound? {
        if inStartupPhase {
            guard let packet = try startupDecoder.decode(buffer: &buffer) else { return nil }
            if case .startup = packet { inStartupPhase = false }
            return .startup(packet)
        }
        return try frameDecoder.decode(buffer: &buffer).map(ClientInbound.frame)
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ClientInbound? {
        try decode(buffer: &buffer)
    }
}

import NIOCore
import PostgresWire

/// What a client sends: first untyped startup packets (SSLRequest, then StartupMessage), then
/// typed frames.
enum ClientInbound {
    case startup(StartupPacket)
    case frame(PostgresFrame)
}

/// Whether the client has logged in; shared by the session (which sets it) and the decoder (which
/// reads it), both on the channel's event loop.
final class LoginState {
    var loggedIn = false
}

/// Switches from startup packets to typed frames by itself after the StartupMessage, so nothing
/// the client sends right behind it can be read with the wrong framing. Until the client has
/// logged in, frames are limited to what a token needs: an unauthenticated peer cannot make the
/// gateway buffer a large message.
struct ClientMessageDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = ClientInbound

    static let maximumFrameBeforeLogin = 32 * 1024

    private var startupDecoder = PostgresStartupDecoder()
    private var loginDecoder = PostgresFrameDecoder(maximumFrameLength: Self.maximumFrameBeforeLogin)
    private var frameDecoder: PostgresFrameDecoder
    private var inStartupPhase = true
    private let login: LoginState

    init(maximumFrameLength: Int, login: LoginState) {
        frameDecoder = PostgresFrameDecoder(maximumFrameLength: maximumFrameLength)
        self.login = login
    }

    mutating func decode(buffer: inout ByteBuffer) throws -> ClientInbound? {
        if inStartupPhase {
            guard let packet = try startupDecoder.decode(buffer: &buffer) else { return nil }
            if case .startup = packet { inStartupPhase = false }
            return .startup(packet)
        }
        if !login.loggedIn {
            return try loginDecoder.decode(buffer: &buffer).map(ClientInbound.frame)
        }
        return try frameDecoder.decode(buffer: &buffer).map(ClientInbound.frame)
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ClientInbound? {
        try decode(buffer: &buffer)
    }
}

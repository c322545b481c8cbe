import NIOCore
import NIOSSL
import PostgresWire

/// TLS to the database, like libpq's sslmode: `require` encrypts, `verify-full` also checks the
/// certificate chain and that it names the host.
public struct UpstreamTLS: Sendable {
    public var context: NIOSSLContext
    /// Checked against the certificate (verify-full); nil with `require`.
    public var serverHostname: String?

    public init(context: NIOSSLContext, serverHostname: String?) {
        self.context = context
        self.serverHostname = serverHostname
    }
}

/// PostgreSQL starts TLS in-band: SSLRequest, a one-byte answer, then the handshake. This handler
/// does that exchange, puts the TLS handler in front of the pipeline and steps aside.
final class UpstreamTLSNegotiator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let tls: UpstreamTLS
    private let ready: EventLoopPromise<Void>

    init(tls: UpstreamTLS, ready: EventLoopPromise<Void>) {
        self.tls = tls
        self.ready = ready
    }

    func channelActive(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 8)
        PostgresEncoder.sslRequest(into: &buffer)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let answer = unwrapInboundIn(data)
        // Anything after the single answer byte was sent before encryption and cannot be trusted.
        guard answer.readableBytes == 1, answer.getInteger(at: answer.readerIndex, as: UInt8.self) == UInt8(ascii: "S") else {
            ready.fail(PostgresWireError(.authenticationFailed, "the database refused TLS"))
            context.close(promise: nil)
            return
        }
        do {
            let handler = try NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverHostname)
            try context.pipeline.syncOperations.addHandler(handler, position: .first)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            ready.succeed()
        } catch {
            ready.fail(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        ready.fail(PostgresWireError(.authenticationFailed, "the database closed the connection during TLS negotiation"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        ready.fail(error)
        context.close(promise: nil)
    }
}

import Audit
import GatehouseCore
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Identity
import Logging
import NIOCore
import Reviews
import ServiceLifecycle

/// The HTTP gateway's listener: a ServiceLifecycle service that serves `HTTPProxy` until graceful
/// shutdown, then closes the upstream connection pools.
public struct HTTPGatewayListener: Service {
    private let settings: HTTPGatewaySettings
    private let proxy: HTTPProxy
    private let logger: Logger
    private let onBound: @Sendable (Int) async -> Void
    /// Endpoints served next to the proxy on the same listener (the MCP server); nil: not theirs.
    public typealias Responder = @Sendable (Request, HTTPGatewayContext) async throws -> Response?
    private let extra: Responder?

    public init(
        settings: HTTPGatewaySettings, verifier: TokenVerifier, auditLog: AuditLog, logger: Logger, reviews: ReviewBoard? = nil,
        extra: Responder? = nil, onBound: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.extra = extra
        self.settings = settings
        self.proxy = HTTPProxy(settings: settings, verifier: verifier, auditLog: auditLog, logger: logger, reviews: reviews)
        self.logger = logger
        self.onBound = onBound
    }

    /// HTTP/1.1, over TLS when configured; idle connections are closed so they cannot pile up.
    static func server(_ settings: HTTPGatewaySettings) throws -> HTTPServerBuilder {
        let http = HTTPServerBuilder.http1(configuration: .init(
            additionalChannelHandlers: [HangupWatcher()], idleTimeout: .nanoseconds(settings.idleTimeout.inNanoseconds)))
        guard let tls = settings.tls else { return http }
        return try .tls(http, tlsConfiguration: tls)
    }

    public func run() async throws {
        let proxy = self.proxy
        let onBound = self.onBound
        let extra = self.extra
        let port = settings.port
        let application = Application(
            responder: CallbackResponder<HTTPGatewayContext> { request, context in
                if let extra, let response = try await extra(request, context) { return response }
                return try await proxy.respond(to: request, context: context)
            },
            server: try Self.server(settings),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "gatehouse"),
            onServerRunning: { channel in
                await onBound(channel.localAddress?.port ?? port)
            },
            logger: logger)
        do {
            // As a service of the gateway's group, not a group of its own: it stops when the
            // group tells it to (after the reviews are closed), never on a signal by itself.
            try await application.run()
        } catch {
            await proxy.shutdown()
            throw error
        }
        await proxy.shutdown()
    }
}

/// Tells a request waiting for approval that its client has gone: the connection closed, or the
/// client shut its sending side (the server allows half-closed connections, so only this handler
/// sees that while the request is held).
final class HangupWatcher: ChannelInboundHandler, RemovableChannelHandler {
    // Reads pass through untouched (the default channelRead forwards them).
    typealias InboundIn = NIOAny

    private var promise: EventLoopPromise<Void>?

    var hangup: EventLoopFuture<Void> {
        promise!.futureResult
    }

    func handlerAdded(context: ChannelHandlerContext) {
        promise = context.eventLoop.makePromise()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise?.succeed(())
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.succeed(())
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { promise?.succeed(()) }
        context.fireUserInboundEventTriggered(event)
    }
}

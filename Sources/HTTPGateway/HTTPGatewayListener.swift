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

/// Tells the requests that watch their client that it has gone: the connection closed, or the
/// client shut its sending side (the server allows half-closed connections, so only this handler
/// sees that while a request is held). Each request stops watching when it is done, so a
/// kept-alive connection does not collect one callback per request it carried.
final class HangupWatcher: ChannelInboundHandler, RemovableChannelHandler {
    // Reads pass through untouched (the default channelRead forwards them).
    typealias InboundIn = NIOAny

    private var observers: [ObjectIdentifier: @Sendable () -> Void] = [:]
    private var hungUp = false

    /// Runs `callback` when the client goes, at once if it has gone already.
    func observe(_ key: ObjectIdentifier, _ callback: @escaping @Sendable () -> Void) {
        guard !hungUp else { return callback() }
        observers[key] = callback
    }

    func stopObserving(_ key: ObjectIdentifier) {
        observers[key] = nil
    }

    var observerCount: Int { observers.count }

    private func hangUp() {
        guard !hungUp else { return }
        hungUp = true
        let callbacks = observers.values
        observers = [:]
        for callback in callbacks { callback() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        hangUp()
    }

    func channelInactive(context: ChannelHandlerContext) {
        hangUp()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { hangUp() }
        context.fireUserInboundEventTriggered(event)
    }
}

/// One request's watch on its client (see `HTTPProxy.onHangup`); `end()` it when the request is done.
public final class HangupObservation: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    static func start(on channel: any Channel, _ callback: @escaping @Sendable () -> Void) -> HangupObservation {
        let observation = HangupObservation(channel: channel)
        let key = ObjectIdentifier(observation)
        channel.eventLoop.execute {
            if let watcher = try? channel.pipeline.syncOperations.handler(type: HangupWatcher.self) {
                watcher.observe(key, callback)
            } else {
                // No watcher (it went with the connection's pipeline): the client is gone.
                callback()
            }
        }
        return observation
    }

    /// Stops watching; the callback will not run after this (unless it already has).
    public func end() {
        let key = ObjectIdentifier(self)
        let channel = self.channel
        // Ordered after the registration, which was submitted to the same loop first.
        channel.eventLoop.execute {
            (try? channel.pipeline.syncOperations.handler(type: HangupWatcher.self))?.stopObserving(key)
        }
    }
}

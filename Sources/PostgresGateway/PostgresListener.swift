import Audit
import Identity
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresWire
import Reviews
import ServiceLifecycle

/// The PostgreSQL listener as a ServiceLifecycle service: accepts clients until graceful shutdown,
/// then stops accepting and ends the sessions it has, each once its statement in flight is answered.
public final class PostgresListener: Service, Sendable {
    private let environment: SessionEnvironment
    private let logger: Logger
    private let onBound: @Sendable (Int) async -> Void

    public init(
        settings: PostgresGatewaySettings,
        verifier: TokenVerifier,
        auditLog: AuditLog,
        logger: Logger,
        reviews: ReviewBoard? = nil,
        onBound: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        environment = SessionEnvironment(settings: settings, verifier: verifier, auditLog: auditLog, cancels: CancelRegistry(),
            statementBatchers: LoopAuditBatchers(log: auditLog),
            catalogs: CatalogCache(), reviews: reviews)
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let environment = self.environment
        let logger = self.logger
        let sessions = ChannelGroup()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Beyond the limit a client is told why at once and let go, before it can hold
                    // any login state.
                    let refusal: (sqlState: String, message: String)?
                    switch sessions.add(channel, limit: environment.settings.maxConnections) {
                    case .added: refusal = nil
                    case .full: refusal = ("53300", "too many connections to the gateway")
                    case .stopping: refusal = ("57P01", "the gateway is shutting down")
                    }
                    if let refusal {
                        var buffer = channel.allocator.buffer(capacity: 64)
                        PostgresEncoder.errorResponse(severity: "FATAL", sqlState: refusal.sqlState, message: refusal.message, into: &buffer)
                        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
                        return
                    }
                    let login = LoginState()
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(ClientMessageDecoder(maximumFrameLength: environment.settings.maxFrameBytes, login: login)))
                    try channel.pipeline.syncOperations.addHandler(ClientSession(environment: environment, login: login, logger: logger))
                }
            }
            .bind(host: environment.settings.host, port: environment.settings.port)
            .get()
        let port = server.localAddress?.port ?? environment.settings.port
        logger.info("PostgreSQL listener started", metadata: ["address": "\(environment.settings.host):\(port)"])
        await onBound(port)
        await withGracefulShutdownHandler {
            try? await server.closeFuture.get()
        } onGracefulShutdown: {
            server.close(promise: nil)
        }
        // Each session finishes the statement it is running (a held one gets its refusal), then
        // ends; what is still busy after the grace period is cut.
        sessions.tellAll(GatewayStopping())
        await sessions.waitUntilEmpty(deadline: .now + Self.stopGracePeriod)
        if sessions.count > 0 {
            logger.warning("sessions still busy when the gateway stopped were cut", metadata: ["sessions": "\(sessions.count)"])
        }
        sessions.closeAll()
        // Their disconnect events are queued as they close: before the trail's final checkpoint.
        await sessions.waitUntilEmpty(deadline: .now + .seconds(1))
    }

    static let stopGracePeriod = Duration.seconds(5)
}

/// Sent to every session when the gateway stops.
struct GatewayStopping: Sendable {}

/// The client channels of one listener, so shutdown can end them.
final class ChannelGroup: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: Channel] = [:]
        var stopping = false
    }

    enum Admission { case added, full, stopping }

    private let state = NIOLockedValueBox(State())

    /// Adds the channel unless `limit` channels are already open or the listener is stopping.
    func add(_ channel: Channel, limit: Int) -> Admission {
        let id = ObjectIdentifier(channel)
        let admission = state.withLockedValue { state -> Admission in
            guard !state.stopping else { return .stopping }
            guard state.channels.count < limit else { return .full }
            state.channels[id] = channel
            return .added
        }
        guard admission == .added else { return admission }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.state.withLockedValue { $0.channels.removeValue(forKey: id) }
        }
        return .added
    }

    /// From now on no channel is added; every channel already added is sent `event`.
    func tellAll(_ event: some Sendable) {
        let channels = state.withLockedValue { state -> [Channel] in
            state.stopping = true
            return Array(state.channels.values)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(event)
        }
    }

    func waitUntilEmpty(deadline: ContinuousClock.Instant) async {
        while state.withLockedValue({ !$0.channels.isEmpty }), ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    var count: Int { state.withLockedValue { $0.channels.count } }

    func closeAll() {
        for channel in state.withLockedValue({ Array($0.channels.values) }) {
            channel.close(promise: nil)
        }
    }
}

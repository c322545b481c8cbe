import Audit
import Identity
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The PostgreSQL listener as a ServiceLifecycle service: accepts clients until graceful shutdown,
/// then stops accepting and closes the sessions it has.
public final class PostgresListener: Service, Sendable {
    private let environment: SessionEnvironment
    private let logger: Logger
    private let onBound: @Sendable (Int) async -> Void

    public init(
        settings: PostgresGatewaySettings,
        verifier: TokenVerifier,
        auditLog: AuditLog,
        logger: Logger,
        onBound: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        environment = SessionEnvironment(settings: settings, verifier: verifier, auditLog: auditLog, cancels: CancelRegistry())
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
                    sessions.add(channel)
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
        sessions.closeAll()
    }
}

/// The client channels of one listener, so shutdown can end them.
final class ChannelGroup: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])

    func add(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.channels.withLockedValue { $0.removeValue(forKey: id) }
        }
    }

    func closeAll() {
        for channel in channels.withLockedValue({ Array($0.values) }) {
            channel.close(promise: nil)
        }
    }
}

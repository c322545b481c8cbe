import Audit
import Hummingbird
import HummingbirdTLS
import Identity
import Logging
import ServiceLifecycle

/// The HTTP gateway's listener: a ServiceLifecycle service that serves `HTTPProxy` until graceful
/// shutdown, then closes the upstream connection pools.
public struct HTTPGatewayListener: Service {
    private let settings: HTTPGatewaySettings
    private let proxy: HTTPProxy
    private let logger: Logger
    private let onBound: @Sendable (Int) async -> Void

    public init(
        settings: HTTPGatewaySettings, verifier: TokenVerifier, auditLog: AuditLog, logger: Logger,
        onBound: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.settings = settings
        self.proxy = HTTPProxy(settings: settings, verifier: verifier, auditLog: auditLog, logger: logger)
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let proxy = self.proxy
        let onBound = self.onBound
        let port = settings.port
        let application = Application(
            responder: CallbackResponder<HTTPGatewayContext> { request, context in
                try await proxy.respond(to: request, context: context)
            },
            server: try settings.tls.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1(),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "gatehouse"),
            onServerRunning: { channel in
                await onBound(channel.localAddress?.port ?? port)
            },
            logger: logger)
        do {
            try await application.runService()
        } catch {
            await proxy.shutdown()
            throw error
        }
        await proxy.shutdown()
    }
}

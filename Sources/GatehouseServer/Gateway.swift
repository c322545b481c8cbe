import AsyncHTTPClient
import Audit
import Foundation
import GatehouseConfig
import GatehouseCore
import HTTPGateway
import Hummingbird
import Identity
import Logging
import Masking
import MCPGateway
import NIOSSL
import Policy
import PostgresGateway
import Reviews
import ServiceLifecycle

/// One running gateway: the stores, the identity checks and the listeners built from a
/// configuration, run as a ServiceLifecycle group that stops cleanly on SIGINT/SIGTERM.
public final class Gateway: Sendable {
    public let config: GatehouseConfig
    public let verifier: TokenVerifier
    public let auditLog: AuditLog
    public let auditStore: SQLiteAuditStore
    public let devIssuer: DevIssuer?
    public let reviewBoard: ReviewBoard
    /// Where approve and deny links point.
    let reviewLinkBase: String
    let issuers: [IssuerKeys]
    let logger: Logger

    private let httpClient: HTTPClient
    private let readinessCache = ReadinessCache()

    public init(config: GatehouseConfig, logger: Logger) async throws {
        self.config = config
        self.logger = logger
        GatehouseMetrics.bootstrap()

        // Everything that can fail comes first: the HTTP client below must be shut down once made.
        if config.dev {
            devIssuer = try DevIssuer(
                keyPath: config.identity.devKeyPath,
                issuerURL: Self.devIssuerURL(config),
                audience: GatehouseConfig.Identity.devAudience)
        } else {
            devIssuer = nil
        }
        let apiKeys = try APIKeyStore(path: config.identity.apiKeysPath)
        auditStore = try Self.openAuditStore(config)
        let reviewStore = try ReviewStore(path: config.reviews.path)
        auditLog = AuditLog(
            store: auditStore,
            signer: try AuditSigner.loadOrCreate(path: config.audit.signingKeyPath, logger: logger),
            checkpointEvery: config.audit.checkpointEvery,
            maxBatch: config.audit.maxBatch,
            logger: logger)

        // No redirects: an identity provider's https endpoints must not be able to send the
        // gateway to plain http, or to some other host, for its keys.
        httpClient = HTTPClient(
            eventLoopGroup: HTTPClient.defaultEventLoopGroup,
            configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(5))))
        let fetcher = HTTPKeySetFetcher(client: httpClient)
        var issuerSettings = config.identity.issuers.map {
            IssuerSettings(
                name: $0.name, issuer: $0.issuer, discoveryURL: $0.discoveryURL, audiences: $0.audiences,
                groupsClaim: $0.groupsClaim, emailClaim: $0.emailClaim, clientIDClaims: $0.clientIDClaims, agents: $0.agents)
        }
        if let devIssuer {
            issuerSettings.append(IssuerSettings(name: GatehouseConfig.Identity.devIssuerName, issuer: devIssuer.issuerURL, audiences: [devIssuer.audience]))
        }
        issuers = issuerSettings.map {
            IssuerKeys(settings: $0, fetcher: fetcher, minimumRefetchInterval: TimeInterval(config.identity.jwksMinRefetchSeconds), logger: logger)
        }
        verifier = TokenVerifier(
            issuers: issuers, apiKeys: apiKeys, clockSkew: TimeInterval(config.identity.clockSkewSeconds),
            cacheSeconds: TimeInterval(config.identity.tokenCacheSeconds))

        let auditLog = self.auditLog
        let node = config.gateway.node
        let linkBase = config.reviews.publicURL ?? config.admin.url
        reviewLinkBase = linkBase
        let client = httpClient
        let webhook = config.reviews.webhook.map {
            ReviewWebhook(webhook: $0, linkBase: linkBase, client: client)
        }
        reviewBoard = ReviewBoard(
            store: reviewStore,
            settings: ReviewSettings(
                approverGroups: config.reviews.approvers, timeout: .seconds(config.reviews.timeoutSeconds),
                maxGrantMinutes: config.reviews.maxGrantMinutes, accessApprovals: config.reviews.accessApprovals, node: node,
                retention: .seconds(config.reviews.retentionDays * 86_400)),
            logger: logger,
            record: { record in _ = try await auditLog.append(record) },
            notify: { review in
                guard let webhook else { return }
                let (delivered, detail) = await webhook.deliver(review)
                if !delivered { logger.warning("review notification failed", metadata: ["review": "\(review.id)", "detail": "\(detail)"]) }
                // The trail says who was told, and whether the message got there.
                auditLog.appendEventually(AuditRecord(
                    node: node, session: review.session, principal: review.requester, client: ClientInfo(), connection: review.connection,
                    operation: .init(kind: "review.notified", text: "review \(review.id): webhook"),
                    decision: Decision(effect: .review, rule: review.rule, reason: detail),
                    outcome: .init(status: delivered ? "delivered" : "failed")))
            })
    }

    /// The development issuer lives on the admin listener, so its URL follows from the config.
    public static func devIssuerURL(_ config: GatehouseConfig) -> String {
        "http://\(config.admin.listen)/dev"
    }

    public static func openAuditStore(_ config: GatehouseConfig) throws -> SQLiteAuditStore {
        try SQLiteAuditStore(options: AuditStoreOptions(
            path: config.audit.path,
            durability: config.audit.durability == .fsync ? .fsync : .normal,
            checkpointEvery: config.audit.checkpointEvery,
            maxBatch: config.audit.maxBatch,
            signingKeyPath: config.audit.signingKeyPath,
            node: config.gateway.node))
    }

    /// Ready to serve: the audit trail can be written and every issuer has keys to check tokens
    /// with. Anything less and requests would be refused anyway (fail closed).
    public func readiness() async -> [String: Bool] {
        // Probing the store takes its write lock; a probe flood must not starve real appends.
        await readinessCache.value(maxAge: .seconds(1)) {
            var checks: [String: Bool] = ["audit": await self.auditStore.isWritable()]
            for issuer in self.issuers {
                checks["issuer:\(issuer.settings.name)"] = await issuer.isReady
            }
            return checks
        }
    }

    /// Where the listeners ended up (ports matter when the config asks for port 0).
    public struct BoundListeners: Sendable {
        public var admin: Int
        public var postgres: Int?
        public var http: Int?
    }

    /// Runs until SIGINT/SIGTERM (or cancellation), then drains and checkpoints the audit trail.
    /// `onReady` is called once every listener is accepting connections.
    public func run(onReady: @escaping @Sendable (BoundListeners) async -> Void = { _ in }) async throws {
        let maskKey = try MaskKey.load(config)
        var mcp: MCPEndpoint?
        let masker = ValueMasker(hashKey: maskKey)
        let expected = 1 + (config.postgres.listen == nil ? 0 : 1) + (config.http.listen == nil ? 0 : 1)
        let loopbackPorts = LoopbackPorts()
        let bound = BoundPorts(expected: expected) { ports in
            await onReady(BoundListeners(admin: ports["admin"] ?? 0, postgres: ports["postgres"], http: ports["http"]))
        }
        let admin = try AdminListener(gateway: self).application { port in await bound.report("admin", port) }
        await reviewBoard.closeLeftovers()
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: AuditFlushService(log: auditLog, logger: logger)),
            .init(service: KeyRefreshService(issuers: issuers, interval: .seconds(config.identity.jwksRefreshSeconds), logger: logger)),
            .init(service: admin),
        ]
        if let listen = config.postgres.listen {
            let settings = try PostgresGatewaySettings(
                host: listen.host,
                port: listen.port,
                tls: Self.serverTLS(config.postgres),
                requireTLS: config.postgres.requireTLS,
                maxFrameBytes: config.postgres.maxFrameBytes,
                maxRecordedRows: config.postgres.maxRecordedRows,
                maxPayloadBytes: config.audit.maxPayloadBytes,
                maxConnections: config.postgres.maxConnections,
                node: config.gateway.node,
                connections: try Self.postgresTargets(config),
                policy: config.policy,
                masker: masker,
                auditSeal: AuditSeal(maskKey: maskKey))
            services.append(.init(service: PostgresListener(
                settings: settings, verifier: verifier, auditLog: auditLog, logger: logger, reviews: reviewBoard,
                onBound: { port in
                    loopbackPorts.set("postgres", port)
                    await bound.report("postgres", port)
                })))
        }
        if let listen = config.http.listen {
            var settings = HTTPGatewaySettings(
                host: listen.host,
                port: listen.port,
                idleTimeout: .seconds(config.http.idleTimeoutSeconds),
                tls: try Self.httpServerTLS(config.http),
                node: config.gateway.node,
                maxRecordedBodyBytes: config.http.maxRecordedBodyBytes,
                maxPayloadBytes: config.audit.maxPayloadBytes,
                targets: try Self.httpTargets(config),
                policy: config.policy,
                masker: masker)
            settings.commands = Self.commandTargets(config)
            mcp = config.mcp.enabled ? try makeMCP(loopbackPorts) : nil
            var extra: HTTPGatewayListener.Responder?
            if let endpoint = mcp {
                extra = { request, context in try await endpoint.respond(to: request, context: context) }
            }
            services.append(.init(service: HTTPGatewayListener(
                settings: settings, verifier: verifier, auditLog: auditLog, logger: logger, reviews: reviewBoard,
                extra: extra,
                onBound: { port in
                    loopbackPorts.set("http", port)
                    await bound.report("http", port)
                })))
        }
        services.append(.init(service: ReviewShutdownService(board: reviewBoard, mcp: mcp)))
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch {
            await mcp?.shutdown()
            try? await httpClient.shutdown()
            throw error
        }
        await mcp?.shutdown()
        try await httpClient.shutdown()
    }

    /// Records one event and waits until it is committed. Throwing means the trail could not be
    /// written, and the caller must refuse the request.
    @discardableResult
    func record(
        session: String,
        principal: Principal?,
        client: ClientInfo,
        operation: AuditRecord.Operation,
        decision: Decision,
        outcome: AuditRecord.Outcome? = nil,
        payload: String? = nil
    ) async throws -> AuditEvent {
        let kept = payload.map { $0.truncated(toUTF8Bytes: config.audit.maxPayloadBytes) }
        return try await auditLog.append(AuditRecord(
            node: config.gateway.node,
            session: session,
            principal: principal,
            client: client,
            operation: operation,
            decision: decision,
            outcome: outcome,
            payload: kept?.text,
            payloadTruncated: kept?.truncated == true ? true : nil))
    }

}

extension Gateway {
    static func serverTLS(_ postgres: GatehouseConfig.Postgres) throws -> NIOSSLContext? {
        guard let certificate = postgres.tlsCertificate, let key = postgres.tlsKey else { return nil }
        let configuration = try serverTLS(certificate: certificate, key: key, code: "postgres.tls", listener: "PostgreSQL")
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw GatehouseError("postgres.tls", "cannot load the PostgreSQL listener's TLS certificate or key")
        }
    }

    static func adminServerTLS(_ admin: GatehouseConfig.Admin) throws -> TLSConfiguration? {
        guard let certificate = admin.tlsCertificate, let key = admin.tlsKey else { return nil }
        return try serverTLS(certificate: certificate, key: key, code: "admin.tls", listener: "admin")
    }

    static func httpServerTLS(_ http: GatehouseConfig.HTTP) throws -> TLSConfiguration? {
        guard let certificate = http.tlsCertificate, let key = http.tlsKey else { return nil }
        return try serverTLS(certificate: certificate, key: key, code: "http.tls", listener: "HTTP")
    }

    /// TLS 1.2+ for a listener, from PEM files.
    static func serverTLS(certificate: String, key: String, code: String, listener: String) throws -> TLSConfiguration {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            configuration.minimumTLSVersion = .tlsv12
            return configuration
        } catch {
            throw GatehouseError(code, "cannot load the \(listener) listener's TLS certificate or key")
        }
    }

    static func postgresTargets(_ config: GatehouseConfig) throws -> [String: UpstreamTarget] {
        var targets: [String: UpstreamTarget] = [:]
        for connection in config.connections where connection.kind == .postgres {
            let database = connection.upstream.path.split(separator: "/").first.map(String.init) ?? connection.username ?? ""
            let secret = connection.password
            targets[connection.name] = UpstreamTarget(
                name: connection.name,
                host: connection.upstream.host ?? "127.0.0.1",
                port: connection.upstream.port ?? 5432,
                database: database,
                username: connection.username ?? "",
                password: { try secret?.resolve() },
                access: ConnectionAccess(
                    connection: connection.name, groups: connection.allow.groups,
                    subjects: connection.allow.subjects, agents: connection.allow.agents),
                tls: try upstreamTLS(connection))
        }
        return targets
    }

    static func httpTargets(_ config: GatehouseConfig) throws -> [HTTPTarget] {
        try config.connections.filter { $0.kind == .http }.map { connection in
            let options = connection.http
            return HTTPTarget(
                name: connection.name,
                baseURL: connection.upstream,
                hosts: options?.hosts ?? [],
                access: ConnectionAccess(
                    connection: connection.name, groups: connection.allow.groups,
                    subjects: connection.allow.subjects, agents: connection.allow.agents),
                credential: options?.credential.map(Self.credentialProvider),
                credentialHeader: options?.credential.flatMap(Self.credentialHeader),
                credentialQueryParameter: options?.credential.flatMap(Self.credentialQueryParameter),
                tls: try httpTLS(connection),
                connectTimeout: .seconds(options?.connectTimeoutSeconds ?? 5),
                readTimeout: .seconds(options?.readTimeoutSeconds ?? 60),
                totalTimeout: .seconds(options?.totalTimeoutSeconds ?? 300))
        }
    }

    /// The MCP server: its tools reach the listeners of this same process on loopback.
    func makeMCP(_ ports: LoopbackPorts) throws -> MCPEndpoint {
        guard let http = config.http.listen else { throw GatehouseError("mcp.listen", "the MCP server needs the HTTP listener") }
        var issuers = config.identity.issuers.map(\.issuer)
        if let devIssuer { issuers.append(devIssuer.issuerURL) }
        let connections = config.connections.map { connection in
            let kind: MCPConnection.Kind = switch connection.kind {
            case .postgres: .postgres
            case .http: .http
            case .command: .command
            }
            return MCPConnection(
                name: connection.name,
                kind: kind,
                description: connection.description,
                access: ConnectionAccess(
                    connection: connection.name, groups: connection.allow.groups,
                    subjects: connection.allow.subjects, agents: connection.allow.agents))
        }
        let settings = MCPSettings(
            publicBaseURL: config.mcp.publicURL ?? "\(config.http.scheme)://\(http)",
            authorizationServers: issuers, connections: connections, policy: config.policy, node: config.gateway.node,
            postgresHost: config.postgres.listen?.local.host, postgresTLS: config.postgres.tlsCertificate != nil,
            httpHost: http.local.host, httpTLS: config.http.tlsCertificate != nil,
            callTimeout: .seconds(config.mcp.callTimeoutSeconds))
        return MCPEndpoint(settings: settings, verifier: verifier, auditLog: auditLog, reviews: reviewBoard, ports: ports, logger: logger)
    }

    static func commandTargets(_ config: GatehouseConfig) -> [CommandTarget] {
        config.connections.compactMap { connection in
            guard connection.kind == .command, let options = connection.command else { return nil }
            return CommandTarget(
                name: connection.name,
                access: ConnectionAccess(
                    connection: connection.name, groups: connection.allow.groups,
                    subjects: connection.allow.subjects, agents: connection.allow.agents),
                executable: options.executable, arguments: options.arguments, environment: options.environment,
                secrets: options.secrets.mapValues { reference in { try reference.resolve() } },
                secretFiles: options.secretFiles.mapValues { reference in { try reference.resolve() } },
                workingDirectory: options.workingDirectory, timeout: .seconds(options.timeoutSeconds),
                maxOutputBytes: options.maxOutputBytes, maxInputBytes: options.maxInputBytes,
                forbiddenOptions: options.forbiddenOptions, maxConcurrent: options.maxConcurrent)
        }
    }

    /// Secrets are read on every request, so a rotated `file:` secret applies without a restart.
    static func credentialProvider(_ credential: GatehouseConfig.Connection.Credential) -> @Sendable () throws -> UpstreamCredential {
        switch credential {
        case .header(let name, let value): { .header(name: name, value: try value.resolve()) }
        case .bearer(let token): { .bearer(try token.resolve()) }
        case .basic(let username, let password): { .basic(username: username, password: try password.resolve()) }
        case .query(let name, let value): { .queryParameter(name: name, value: try value.resolve()) }
        }
    }

    static func credentialHeader(_ credential: GatehouseConfig.Connection.Credential) -> String? {
        switch credential {
        case .header(let name, _): name
        case .bearer, .basic: "Authorization"
        case .query: nil
        }
    }

    static func credentialQueryParameter(_ credential: GatehouseConfig.Connection.Credential) -> String? {
        if case .query(let name, _) = credential { return name }
        return nil
    }

    static func httpTLS(_ connection: GatehouseConfig.Connection) throws -> TLSConfiguration? {
        guard connection.upstream.scheme?.lowercased() == "https" else { return nil }
        // `disable` cannot mean plain http to an https URL; like `require` it encrypts without verifying.
        return try clientTLS(connection, verify: connection.upstreamTLS == .verifyFull)
    }

    /// TLS 1.2+ to an upstream, verified against `ca_file` (or the system roots) when asked.
    static func clientTLS(_ connection: GatehouseConfig.Connection, verify: Bool) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        guard verify else {
            configuration.certificateVerification = .none
            return configuration
        }
        configuration.certificateVerification = .fullVerification
        if let caFile = connection.caFile {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            } catch {
                throw GatehouseError("\(connection.kind.rawValue).upstream-ca", "cannot read ca_file of connection \(connection.name)")
            }
        }
        return configuration
    }

    static func upstreamTLS(_ connection: GatehouseConfig.Connection) throws -> UpstreamTLS? {
        guard connection.upstreamTLS != .disable else { return nil }
        let configuration = try clientTLS(connection, verify: connection.upstreamTLS == .verifyFull)
        do {
            let host = connection.upstream.host ?? "127.0.0.1"
            // SNI cannot carry an IP address; without a name NIOSSL checks the certificate's IP
            // entries against the address it connected to instead.
            let isIPAddress = host.contains(":") || host.split(separator: ".").count == 4 && host.split(separator: ".").allSatisfy { UInt8($0) != nil }
            return UpstreamTLS(
                context: try NIOSSLContext(configuration: configuration),
                serverHostname: connection.upstreamTLS == .verifyFull && !isIPAddress ? host : nil)
        } catch {
            throw GatehouseError("postgres.upstream-tls", "cannot set up TLS for connection \(connection.name)")
        }
    }
}

/// Collects the ports listeners bound, and reports once all have.
actor BoundPorts {
    private var ports: [String: Int] = [:]
    private let expected: Int
    private let onAll: @Sendable ([String: Int]) async -> Void

    init(expected: Int, onAll: @escaping @Sendable ([String: Int]) async -> Void) {
        self.expected = expected
        self.onAll = onAll
    }

    func report(_ name: String, _ port: Int) async {
        ports[name] = port
        if ports.count == expected { await onAll(ports) }
    }
}

/// The last readiness result, reused for a short while.
actor ReadinessCache {
    private var cached: (at: ContinuousClock.Instant, checks: [String: Bool])?

    func value(maxAge: Duration, compute: @Sendable () async -> [String: Bool]) async -> [String: Bool] {
        if let cached, ContinuousClock.now - cached.at < maxAge { return cached.checks }
        let checks = await compute()
        cached = (ContinuousClock.now, checks)
        return checks
    }
}

import AsyncHTTPClient
import Audit
import Foundation
import GatehouseConfig
import GatehouseCore
import Hummingbird
import Identity
import Logging
import ServiceLifecycle

/// One running gateway: the stores, the identity checks and the listeners built from a
/// configuration, run as a ServiceLifecycle group that stops cleanly on SIGINT/SIGTERM.
public final class Gateway: Sendable {
    public let config: GatehouseConfig
    public let verifier: TokenVerifier
    public let auditLog: AuditLog
    public let auditStore: SQLiteAuditStore
    public let devIssuer: DevIssuer?
    let issuers: [IssuerKeys]
    let logger: Logger

    public init(config: GatehouseConfig, logger: Logger) async throws {
        self.config = config
        self.logger = logger
        GatehouseMetrics.bootstrap()

        let fetcher = HTTPKeySetFetcher(client: HTTPClient.shared)
        var issuerSettings = config.identity.issuers.map {
            IssuerSettings(
                name: $0.name, issuer: $0.issuer, discoveryURL: $0.discoveryURL, audiences: $0.audiences,
                groupsClaim: $0.groupsClaim, emailClaim: $0.emailClaim, clientIDClaims: $0.clientIDClaims, agents: $0.agents)
        }
        if config.dev {
            let dev = try DevIssuer(
                keyPath: config.identity.devKeyPath,
                issuerURL: Self.devIssuerURL(config),
                audience: GatehouseConfig.Identity.devAudience)
            devIssuer = dev
            issuerSettings.append(IssuerSettings(name: "dev", issuer: dev.issuerURL, audiences: [dev.audience]))
        } else {
            devIssuer = nil
        }
        issuers = issuerSettings.map {
            IssuerKeys(settings: $0, fetcher: fetcher, minimumRefetchInterval: TimeInterval(config.identity.jwksMinRefetchSeconds), logger: logger)
        }
        verifier = TokenVerifier(
            issuers: issuers,
            apiKeys: try APIKeyStore(path: config.identity.apiKeysPath),
            clockSkew: TimeInterval(config.identity.clockSkewSeconds))

        auditStore = try Self.openAuditStore(config)
        auditLog = AuditLog(
            store: auditStore,
            signer: try AuditSigner.loadOrCreate(path: config.audit.signingKeyPath, logger: logger),
            checkpointEvery: config.audit.checkpointEvery,
            maxBatch: config.audit.maxBatch,
            logger: logger)
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
        var checks: [String: Bool] = ["audit": await auditStore.isWritable()]
        for issuer in issuers {
            checks["issuer:\(issuer.settings.name)"] = await issuer.isReady
        }
        return checks
    }

    /// Runs until SIGINT/SIGTERM (or cancellation), then drains and checkpoints the audit trail.
    /// `onAdminRunning` receives the bound admin port (useful with port 0).
    public func run(onAdminRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let admin = AdminListener(gateway: self).application(onRunning: onAdminRunning)
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: AuditFlushService(log: auditLog, logger: logger)),
                .init(service: KeyRefreshService(issuers: issuers, interval: .seconds(config.identity.jwksRefreshSeconds), logger: logger)),
                .init(service: admin),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
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
        let kept = payload.map { Self.cut($0, toBytes: config.audit.maxPayloadBytes) }
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

    /// The longest prefix of `text` within `limit` UTF-8 bytes that ends on a character boundary.
    static func cut(_ text: String, toBytes limit: Int) -> (text: String, truncated: Bool) {
        guard text.utf8.count > limit else { return (text, false) }
        var end = text.utf8.index(text.utf8.startIndex, offsetBy: limit)
        while end > text.startIndex, String.Index(end, within: text) == nil {
            end = text.utf8.index(before: end)
        }
        return (String(text[..<end]), true)
    }
}

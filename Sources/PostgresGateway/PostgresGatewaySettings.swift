import Audit
import GatehouseCore
import Identity
import Masking
import NIOSSL
import Policy
import Reviews

/// Everything the PostgreSQL gateway needs, built by the server from the configuration.
public struct PostgresGatewaySettings: Sendable {
    public var host: String
    public var port: Int
    /// TLS to clients; nil refuses SSLRequest.
    public var tls: NIOSSLContext?
    public var requireTLS: Bool
    public var maxFrameBytes: Int
    public var maxRecordedRows: Int
    public var maxPayloadBytes: Int
    public var maxConnections: Int
    public var node: String
    public var connections: [String: UpstreamTarget]
    /// The gateway's one policy: every statement is decided by its rules.
    public var policy: Policy
    /// Applies the policy's mask rules (keyed hashes use the gateway's mask key).
    public var masker: ValueMasker
    /// Seals the unmasked results mask rules let the trail keep; nil keeps masked values only.
    public var auditSeal: AuditSeal?

    public init(
        host: String, port: Int, tls: NIOSSLContext?, requireTLS: Bool, maxFrameBytes: Int, maxRecordedRows: Int,
        maxPayloadBytes: Int, maxConnections: Int = 1000, node: String, connections: [String: UpstreamTarget],
        policy: Policy = Policy(), masker: ValueMasker, auditSeal: AuditSeal? = nil
    ) {
        self.policy = policy
        self.masker = masker
        self.auditSeal = auditSeal
        self.maxConnections = maxConnections
        self.host = host
        self.port = port
        self.tls = tls
        self.requireTLS = requireTLS
        self.maxFrameBytes = maxFrameBytes
        self.maxRecordedRows = maxRecordedRows
        self.maxPayloadBytes = maxPayloadBytes
        self.node = node
        self.connections = connections
    }
}

/// One configured database behind the gateway, with the credential only the gateway holds.
public struct UpstreamTarget: Sendable {
    public var name: String
    public var host: String
    public var port: Int
    public var database: String
    public var username: String
    /// Resolved on every connection, so a rotated secret is picked up without a restart.
    public var password: @Sendable () throws -> String?
    public var access: ConnectionAccess
    /// nil: plain TCP to the database.
    public var tls: UpstreamTLS?

    public init(
        name: String, host: String, port: Int, database: String, username: String,
        password: @escaping @Sendable () throws -> String?, access: ConnectionAccess, tls: UpstreamTLS? = nil
    ) {
        self.tls = tls
        self.name = name
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
        self.access = access
    }
}

/// What every session shares.
struct SessionEnvironment: Sendable {
    let settings: PostgresGatewaySettings
    let verifier: TokenVerifier
    let auditLog: AuditLog
    let cancels: CancelRegistry
    let statementBatchers: LoopAuditBatchers
    let catalogs: CatalogCache
    /// Where statements that need approval wait; nil: such statements are refused.
    let reviews: ReviewBoard?
}

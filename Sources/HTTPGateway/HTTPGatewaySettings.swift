import Foundation
import GatehouseCore
import NIOSSL
import Masking
import Policy

/// The credential the gateway adds to every request it forwards on a connection. The client never
/// sends it and never sees it.
public enum UpstreamCredential: Sendable, Equatable {
    /// A header, e.g. `Authorization: Bearer ...` or `X-Api-Key: ...`.
    case header(name: String, value: String)
    /// A query parameter, e.g. `?api_key=...`.
    case queryParameter(name: String, value: String)

    public static func bearer(_ token: String) -> UpstreamCredential {
        .header(name: "Authorization", value: "Bearer " + token)
    }

    public static func basic(username: String, password: String) -> UpstreamCredential {
        .header(name: "Authorization", value: "Basic " + Data("\(username):\(password)".utf8).base64EncodedString())
    }
}

/// One configured HTTP connection.
public struct HTTPTarget: Sendable {
    public var name: String
    /// Scheme, host, port and an optional base path every forwarded path is appended to.
    public var baseURL: URL
    /// Host names that reach this connection directly (`Host: name`), besides `/c/NAME/`.
    public var hosts: [String]
    public var access: ConnectionAccess
    /// Resolved for every request, so a rotated `file:` secret takes effect without a restart.
    public var credential: (@Sendable () throws -> UpstreamCredential)?
    /// The header the credential travels in, if it is a header: redacted wherever it is recorded.
    public var credentialHeader: String?
    /// The query parameter the credential travels in, if it is one: redacted wherever it is recorded.
    public var credentialQueryParameter: String?
    /// TLS to the upstream (https only); nil means the system's roots with full verification.
    public var tls: TLSConfiguration?
    public var connectTimeout: Duration
    /// Longest silence while waiting for or reading the response.
    public var readTimeout: Duration
    /// Longest the upstream may take to answer with its response head (body streaming is bounded
    /// by `readTimeout` between chunks instead, so server-sent events can run for hours).
    public var totalTimeout: Duration

    public init(
        name: String, baseURL: URL, hosts: [String] = [], access: ConnectionAccess,
        credential: (@Sendable () throws -> UpstreamCredential)? = nil, credentialHeader: String? = nil,
        credentialQueryParameter: String? = nil,
        tls: TLSConfiguration? = nil,
        connectTimeout: Duration = .seconds(5), readTimeout: Duration = .seconds(60), totalTimeout: Duration = .seconds(300)
    ) {
        self.name = name
        self.baseURL = baseURL
        self.hosts = hosts.map { $0.lowercased() }
        self.access = access
        self.credential = credential
        self.credentialHeader = credentialHeader?.lowercased()
        self.credentialQueryParameter = credentialQueryParameter
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.readTimeout = readTimeout
        self.totalTimeout = totalTimeout
    }
}

public struct HTTPGatewaySettings: Sendable {
    public var host: String
    public var port: Int
    /// A client connection with no traffic for this long is closed.
    public var idleTimeout: Duration
    /// TLS to clients; nil serves plain HTTP (the configuration allows that only on loopback).
    public var tls: TLSConfiguration?
    public var node: String
    /// Request and response body bytes kept in the audit trail per exchange.
    public var maxRecordedBodyBytes: Int
    /// A request held for approval is read whole before it waits and shown whole to the
    /// reviewer; larger bodies are refused.
    public var maxHeldBodyBytes = 64 * 1024
    /// Largest audit payload (headers and body prefix together).
    public var maxPayloadBytes: Int
    public var targets: [HTTPTarget]
    /// Command connections, reached at `POST /c/NAME/exec`.
    public var commands: [CommandTarget] = []
    /// The gateway's one policy; HTTP requests are decided by its rules.
    public var policy: Policy
    /// Applies the policy's mask rules (keyed hashes use the gateway's mask key).
    public var masker: ValueMasker

    public init(host: String, port: Int, idleTimeout: Duration = .seconds(60), tls: TLSConfiguration? = nil, node: String, maxRecordedBodyBytes: Int = 16 * 1024, maxPayloadBytes: Int = 64 * 1024, targets: [HTTPTarget], policy: Policy = Policy(), masker: ValueMasker) {
        self.host = host
        self.port = port
        self.idleTimeout = idleTimeout
        self.tls = tls
        self.node = node
        self.maxRecordedBodyBytes = maxRecordedBodyBytes
        self.maxPayloadBytes = maxPayloadBytes
        self.targets = targets
        self.policy = policy
        self.masker = masker
    }
}

import AsyncHTTPClient
import Audit
import Foundation
import GatehouseCore
import HTTPGateway
import HTTPTypes
import Hummingbird
import Identity
import Logging
import MCP
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import Policy
import Reviews

/// Where the MCP tools send what they do: the gateway's own listeners, on loopback, so a tool
/// call meets exactly the checks the same operation meets from psql or curl.
public final class LoopbackPorts: Sendable {
    private let ports = NIOLockedValueBox<[String: Int]>([:])

    public init() {}

    public func set(_ name: String, _ port: Int) { ports.withLockedValue { $0[name] = port } }
    func get(_ name: String) -> Int? { ports.withLockedValue { $0[name] } }
}

/// One configured connection as the MCP tools show it.
public struct MCPConnection: Sendable {
    public enum Kind: String, Sendable { case postgres, http, command }
    public var name: String
    public var kind: Kind
    public var description: String?
    public var access: ConnectionAccess

    public init(name: String, kind: Kind, description: String?, access: ConnectionAccess) {
        self.name = name
        self.kind = kind
        self.description = description
        self.access = access
    }
}

public struct MCPSettings: Sendable {
    /// The HTTP listener's public base URL (`http://127.0.0.1:8080`): the resource is `<base>/mcp`.
    public var publicBaseURL: String
    /// Issuers a client can get a token from, for the protected resource metadata (RFC 9728).
    public var authorizationServers: [String]
    public var connections: [MCPConnection]
    public var policy: Policy
    public var node: String
    /// The loopback listeners' hosts and whether they speak TLS.
    public var postgresHost: String?
    public var postgresTLS: Bool
    public var httpHost: String
    public var httpTLS: Bool
    /// What one tool result carries at most (rows, bytes); the rest is cut and said.
    public var maxResultRows: Int = 500
    public var maxResultBytes: Int = 256 * 1024
    /// A tool call (a held one included) gives up after this long.
    public var callTimeout: Duration

    public init(
        publicBaseURL: String, authorizationServers: [String], connections: [MCPConnection], policy: Policy, node: String,
        postgresHost: String?, postgresTLS: Bool, httpHost: String, httpTLS: Bool, callTimeout: Duration
    ) {
        self.publicBaseURL = publicBaseURL
        self.authorizationServers = authorizationServers
        self.connections = connections
        self.policy = policy
        self.node = node
        self.postgresHost = postgresHost
        self.postgresTLS = postgresTLS
        self.httpHost = httpHost
        self.httpTLS = httpTLS
        self.callTimeout = callTimeout
    }

    var resource: String { publicBaseURL + "/mcp" }
    var metadataURL: String { publicBaseURL + "/.well-known/oauth-protected-resource/mcp" }
}

/// The MCP server on the HTTP listener: `/mcp` (streamable HTTP, one MCP session per client,
/// every request with a bearer token verified like any other) and the protected resource
/// metadata that tells MCP clients where to get that token.
public final class MCPEndpoint: Sendable {
    let settings: MCPSettings
    let verifier: TokenVerifier
    let auditLog: AuditLog
    let reviews: ReviewBoard?
    let ports: LoopbackPorts
    let logger: Logger
    let loopbackClient: HTTPClient
    private let sessions = MCPSessions()
    /// Tool calls in progress by HTTP request, so a client that leaves takes its call with it.
    let calls = RunningCalls()
    /// The peer address and an id of the HTTP request, passed to the tool handlers (the SDK
    /// hands them the request, not its connection).
    static let peerHeader = "x-gatehouse-mcp-peer"
    static let requestHeader = "x-gatehouse-mcp-request"

    public init(settings: MCPSettings, verifier: TokenVerifier, auditLog: AuditLog, reviews: ReviewBoard?, ports: LoopbackPorts, logger: Logger) {
        self.settings = settings
        self.verifier = verifier
        self.auditLog = auditLog
        self.reviews = reviews
        self.ports = ports
        self.logger = logger
        // The gateway's own listener on loopback: nothing in between to verify, and no redirects.
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        loopbackClient = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(tlsConfiguration: tls, redirectConfiguration: .disallow, decompression: .disabled))
    }

    public func shutdown() async {
        await sessions.closeAll()
        try? await loopbackClient.shutdown()
    }

    /// Ends every MCP session (the gateway is stopping): their event streams end with them.
    public func closeSessions() async {
        await sessions.closeAll()
    }

    /// Nil when the request is not for the MCP server.
    public func respond(to request: Request, context: HTTPGatewayContext) async throws -> Response? {
        let path = request.uri.path
        if path == "/.well-known/oauth-protected-resource" || path == "/.well-known/oauth-protected-resource/mcp" {
            guard request.method == .get else { return try ProblemResponse.make(.methodNotAllowed, "use GET") }
            return try ProblemResponse.json([
                "resource": .string(settings.resource),
                "authorization_servers": .array(settings.authorizationServers.map { .string($0) }),
                "bearer_methods_supported": .array([.string("header")]),
                "resource_name": .string("Gatehouse"),
            ])
        }
        guard path == "/mcp" else { return nil }

        let client = ClientInfo(
            address: context.remoteAddress.map(peerDescription),
            application: request.headers[.userAgent].map { $0.truncated(toUTF8Bytes: 256).text })
        guard let token = HTTPProxy.bearerToken(request.headers[.authorization]) else {
            return try await unauthorized(client, reason: "no bearer token", code: "missing-token", invalid: false)
        }
        let principal: Principal
        switch await verifier.verify(token, client: client) {
        case .failure(let rejection):
            return try await unauthorized(client, reason: rejection.description, code: rejection.reason.rawValue, invalid: true)
        case .success(let verified):
            principal = verified
        }

        let body = request.method == .post ? try await request.body.collect(upTo: 4 << 20) : ByteBuffer()
        var headers: [String: String] = [:]
        for field in request.headers where field.name.canonicalName != Self.peerHeader && field.name.canonicalName != Self.requestHeader {
            let name = field.name.canonicalName
            headers[name] = headers[name].map { $0 + ", " + field.value } ?? field.value
        }
        headers[Self.peerHeader] = client.address ?? ""
        // A held call must not outlive its client: when the connection goes, its call is cancelled
        // (closing the loopback connection, which abandons the review).
        let requestID = UUID().uuidString
        headers[Self.requestHeader] = requestID
        let calls = self.calls
        calls.watch(requestID) { callback in HTTPProxy.onHangup(of: context, callback) }
        let mcpRequest = MCP.HTTPRequest(
            method: request.method.rawValue, headers: headers, body: body.readableBytes > 0 ? Data(buffer: body) : nil, path: path)
        let answer = await sessions.handle(mcpRequest, principal: principal, calls: calls) { sessionID in
            try await self.makeServer(sessionID: sessionID)
        }
        // The request's watch ends with its answer: at once, or when its event stream ends.
        return Self.response(answer) { calls.forget(requestID) }
    }

    private func unauthorized(_ client: ClientInfo, reason: String, code: String, invalid: Bool) async throws -> Response {
        let record = AuditRecord(
            node: settings.node, session: "mcp-anonymous", principal: nil, client: client,
            operation: .init(kind: "mcp.request", text: "POST /mcp"),
            decision: .deny(rule: "identity", reason: reason), outcome: .init(status: "401", errorCode: code))
        do {
            _ = try await auditLog.append(record)
        } catch {
            return try ProblemResponse.make(.serviceUnavailable, "the audit trail cannot be written; request refused")
        }
        var response = try ProblemResponse.make(.unauthorized, invalid ? TokenRejection.clientMessage : "a bearer token is required")
        response.headers[.wwwAuthenticate] = #"Bearer realm="gatehouse", resource_metadata=""# + settings.metadataURL + #"""#
            + (invalid ? #", error="invalid_token""# : "")
        return response
    }

    static func response(_ answer: MCP.HTTPResponse, whenDone: @escaping @Sendable () -> Void) -> Response {
        var fields = HTTPFields()
        for (name, value) in answer.headers where name.lowercased() != "connection" {
            if let fieldName = HTTPField.Name(name) { fields[fieldName] = value }
        }
        let status = HTTPTypes.HTTPResponse.Status(code: answer.statusCode)
        if case .stream(let stream, _) = answer {
            return Response(status: status, headers: fields, body: ResponseBody { writer in
                defer { whenDone() }
                for try await chunk in stream { try await writer.write(ByteBuffer(data: chunk)) }
                try await writer.finish(nil)
            })
        }
        whenDone()
        return Response(status: status, headers: fields, body: answer.bodyData.map { ResponseBody(byteBuffer: ByteBuffer(data: $0)) } ?? ResponseBody())
    }
}

/// The MCP sessions this gateway serves: one SDK server and transport each, bound to the identity
/// that opened it (another token cannot use it), closed after an hour without use.
actor MCPSessions {
    struct Session {
        var server: Server
        var transport: StatefulHTTPServerTransport
        var owner: String
        var lastUsed: ContinuousClock.Instant
    }

    private var sessions: [String: Session] = [:]
    /// Ending a session cancels the tool calls it has in progress.
    private var calls: RunningCalls?
    /// Sessions being made (counted against the limit before the await that makes them).
    private var starting = 0
    static let idleLimit: Duration = .seconds(3600)
    static let maxSessions = 1000
    static let maxSessionsPerOwner = 20

    static func owner(_ principal: Principal) -> String {
        ([principal.issuer, principal.subject] + principal.actors.map(\.subject)).joined(separator: "\u{0}")
    }

    func handle(
        _ request: MCP.HTTPRequest, principal: Principal, calls registry: RunningCalls,
        makeServer: (String) async throws -> (Server, StatefulHTTPServerTransport)
    ) async -> MCP.HTTPResponse {
        calls = registry
        evictIdle()
        if let id = request.header(HTTPHeaderName.sessionID) {
            guard var session = sessions[id], session.owner == Self.owner(principal) else {
                return .error(statusCode: 404, .invalidRequest("Session not found"))
            }
            session.lastUsed = .now
            sessions[id] = session
            let answer = await session.transport.handleRequest(request)
            if request.method.uppercased() == "DELETE" {
                sessions[id] = nil
                calls?.cancel(session: id)
                await session.server.stop()
            }
            return answer
        }
        guard request.method.uppercased() == "POST", let body = request.body else {
            return .error(statusCode: 400, .invalidRequest("Bad Request: the MCP-Session-Id header is required"))
        }
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            return .error(statusCode: 400, .parseError("the body is not a JSON-RPC message"))
        }
        guard object["method"] as? String == "initialize" else {
            return .error(statusCode: 400, .invalidRequest("Bad Request: the MCP-Session-Id header is required"))
        }
        let owner = Self.owner(principal)
        // One identity cannot take every session: past its share, its least recently used goes.
        let mine = sessions.filter { $0.value.owner == owner }.sorted { $0.value.lastUsed < $1.value.lastUsed }
        if mine.count >= Self.maxSessionsPerOwner, let (oldest, session) = mine.first {
            sessions[oldest] = nil
            calls?.cancel(session: oldest)
            Task { await session.server.stop() }
        }
        guard sessions.count + starting < Self.maxSessions else {
            return .error(statusCode: 503, .internalError("too many MCP sessions"))
        }
        let id = UUID().uuidString.lowercased()
        starting += 1
        defer { starting -= 1 }
        do {
            let (server, transport) = try await makeServer(id)
            sessions[id] = Session(server: server, transport: transport, owner: owner, lastUsed: .now)
            let answer = await transport.handleRequest(request)
            if case .error = answer {
                sessions[id] = nil
                await server.stop()
            }
            return answer
        } catch {
            return .error(statusCode: 500, .internalError("the MCP session could not be started"))
        }
    }

    func closeAll() async {
        let all = sessions.values
        for id in sessions.keys { calls?.cancel(session: id) }
        sessions = [:]
        for session in all { await session.server.stop() }
    }

    private func evictIdle() {
        let now = ContinuousClock.now
        for (id, session) in sessions where now - session.lastUsed > Self.idleLimit {
            sessions[id] = nil
            calls?.cancel(session: id)
            Task { await session.server.stop() }
        }
    }
}

/// The tool calls in progress, and what ends them: their client's connection going (watched from
/// the HTTP request that carries the call, so a client gone before the call starts is seen too),
/// or their session ending.
final class RunningCalls: Sendable {
    /// Starts watching the client of one HTTP request.
    typealias HangupWatch = @Sendable (_ callback: @escaping @Sendable () -> Void) -> HangupObservation

    private struct State {
        var hangups: [String: HangupWatch] = [:]
        var bySession: [String: [String: @Sendable () -> Void]] = [:]
    }

    private let state = NIOLockedValueBox(State())

    func watch(_ request: String, hangup: @escaping HangupWatch) {
        state.withLockedValue { $0.hangups[request] = hangup }
    }

    func forget(_ request: String) {
        _ = state.withLockedValue { $0.hangups.removeValue(forKey: request) }
    }

    /// Ties a call to its client and its session; the returned closure ends the tie.
    func start(request: String?, session: String, cancel: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
        let id = UUID().uuidString
        let hangup = state.withLockedValue { state -> HangupWatch? in
            state.bySession[session, default: [:]][id] = cancel
            return request.flatMap { state.hangups[$0] }
        }
        // Already gone: the callback runs at once.
        let observation = hangup?(cancel)
        return { [state] in
            observation?.end()
            state.withLockedValue { state in
                state.bySession[session]?[id] = nil
                if state.bySession[session]?.isEmpty == true { state.bySession[session] = nil }
            }
        }
    }

    func cancel(session: String) {
        let cancels = state.withLockedValue { $0.bySession.removeValue(forKey: session) } ?? [:]
        for cancel in cancels.values { cancel() }
    }
}

struct FixedSessionID: SessionIDGenerator {
    let id: String
    func generateSessionID() -> String { id }
}

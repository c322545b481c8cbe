import Foundation
import GatehouseCore
import HTTPGateway
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Identity
import Logging
import Metrics
import NIOCore
import PostgresGateway

/// Request context that remembers the peer address, so audit events say where a request came from.
struct AdminRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// The operator's HTTP listener: health, readiness, Prometheus metrics, the development issuer's
/// discovery and keys (when enabled), and an identity check endpoint that verifies a bearer token
/// and records the attempt, which is the smallest complete trip through identity and audit.
struct AdminListener {
    let gateway: Gateway

    func application(onRunning: @escaping @Sendable (Int) async -> Void) throws -> some ApplicationProtocol {
        let router = Router(context: AdminRequestContext.self)
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { _, _ in
            let checks = await gateway.readiness()
            let ready = checks.values.allSatisfy { $0 }
            return try ProblemResponse.json(["ready": .bool(ready), "checks": .object(checks.mapValues { .bool($0) })], status: ready ? .ok : .serviceUnavailable)
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: GatehouseMetrics.exposition())))
        }
        if let dev = gateway.devIssuer {
            router.get("/dev/.well-known/openid-configuration") { _, _ in try ProblemResponse.json(dev.discoveryDocument) }
            router.get("/dev/jwks.json") { _, _ in try ProblemResponse.json(dev.jwks) }
        }
        router.get("/v1/whoami") { request, context in
            try await whoami(request, context: context)
        }
        ReviewAPI(gateway: gateway, board: gateway.reviewBoard).register(on: router)
        let listen = gateway.config.admin.listen
        var server = HTTPServerBuilder.http1()
        if let tls = try Gateway.adminServerTLS(gateway.config.admin) {
            server = try .tls(server, tlsConfiguration: tls)
        }
        return Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "gatehouse"),
            onServerRunning: { channel in
                await onRunning(channel.localAddress?.port ?? listen.port)
            },
            logger: gateway.logger)
    }

    /// Verifies the bearer token, records the attempt, and answers with the Principal. A client
    /// learns only "authentication failed"; the reason goes to the audit trail.
    private func whoami(_ request: Request, context: AdminRequestContext) async throws -> Response {
        let started = ContinuousClock.now
        let client = ClientInfo(
            address: context.remoteAddress.map(peerDescription),
            application: request.headers[.userAgent].map { $0.truncated(toUTF8Bytes: 256).text })
        let credential = HTTPProxy.bearerToken(request.headers[.authorization])
        let result = await gateway.verifier.verify(credential ?? "", client: client)
        let operation = AuditRecord.Operation(
            kind: "identity.verify",
            text: "GET /v1/whoami",
            intent: request.headers[HTTPField.Name("Gatehouse-Intent")!].map { $0.truncated(toUTF8Bytes: 1024).text })
        let session = UUID().uuidString.lowercased()
        var decisionLabel = "error"
        defer {
            Counter(label: "gatehouse_requests_total", dimensions: [("protocol", "admin"), ("decision", decisionLabel)]).increment()
            Metrics.Timer(label: "gatehouse_request_duration_seconds", dimensions: [("protocol", "admin")])
                .recordNanoseconds((ContinuousClock.now - started).inNanoseconds)
        }
        switch result {
        case .success(let principal):
            let bytes = try ProblemResponse.bytes(Self.describe(principal))
            let body = String(buffer: bytes)
            do {
                try await gateway.record(
                    session: session, principal: principal, client: client, operation: operation,
                    decision: .allow(rule: "identity", reason: "token verified"),
                    outcome: .init(status: "200", bytes: Int64(body.utf8.count)),
                    payload: body)
            } catch {
                return try ProblemResponse.make(.serviceUnavailable, "audit trail unavailable; request refused")
            }
            decisionLabel = "allow"
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: bytes))
        case .failure(let rejection):
            do {
                try await gateway.record(
                    session: session, principal: nil, client: client, operation: operation,
                    decision: .deny(rule: "identity", reason: rejection.description),
                    outcome: .init(status: "401", errorCode: rejection.reason.rawValue))
            } catch {
                return try ProblemResponse.make(.serviceUnavailable, "audit trail unavailable; request refused")
            }
            decisionLabel = "deny"
            var response = try ProblemResponse.make(.unauthorized, TokenRejection.clientMessage)
            response.headers[.wwwAuthenticate] = #"Bearer realm="gatehouse", error="invalid_token""#
            return response
        }
    }

    static func describe(_ principal: Principal) -> [String: JSONValue] {
        var object: [String: JSONValue] = [
            "subject": .string(principal.subject),
            "issuer": .string(principal.issuer),
            "auth_method": .string(principal.authMethod.rawValue),
            "groups": .array(principal.groups.map { .string($0) }),
            "actors": .array(principal.actors.map { .string($0.subject) }),
        ]
        if let email = principal.email { object["email"] = .string(email) }
        if let agent = principal.agent { object["agent"] = .string(agent) }
        return object
    }
}

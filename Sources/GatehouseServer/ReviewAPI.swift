import Foundation
import GatehouseCore
import HTTPGateway
import HTTPTypes
import Hummingbird
import Identity
import NIOCore
import Reviews

/// The reviewers' HTTP API on the admin listener, used by `gatehouse reviews` and `gatehouse
/// access`: every call carries a bearer token, verified like any other. Approvers see every review;
/// anyone else only their own. A GET never decides anything, so the links a chat tool previews
/// (and fetches) cannot approve on their own.
struct ReviewAPI {
    let gateway: Gateway
    let board: ReviewBoard

    func register(on router: Router<AdminRequestContext>) {
        router.get("/v1/reviews") { request, context in
            try await authenticated(request, context) { principal, _ in
                let state = request.uri.queryParameters.get("state").flatMap(Review.State.init(rawValue:))
                let visible = await board.reviews(state: state).filter { canSee($0, principal) }
                return try ProblemResponse.json(encoding: ReviewList(reviews: visible.map { view($0) }))
            }
        }
        router.get("/v1/reviews/:id") { request, context in
            try await authenticated(request, context) { principal, _ in
                let id = context.parameters.get("id") ?? ""
                guard let review = await board.review(id), canSee(review, principal) else {
                    return try ProblemResponse.make(.notFound, "no review \(Self.printable(id))")
                }
                return try ProblemResponse.json(encoding: view(review))
            }
        }
        for action in ["approve", "deny"] {
            router.get("/v1/reviews/:id/\(action)") { _, context in
                let id = Self.printable(context.parameters.get("id") ?? "")
                let page = """
                    <!doctype html><meta charset="utf-8"><title>Gatehouse review \(id)</title>
                    <p>To \(action) review <b>\(id)</b>, run <code>gatehouse reviews \(action) \(id)</code> with your token
                    (<code>GATEHOUSE_TOKEN</code>), or POST to this address with <code>Authorization: Bearer …</code>.
                    <p>Opening this link decides nothing.
                    """
                return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: page)))
            }
            router.post("/v1/reviews/:id/\(action)") { request, context in
                try await authenticated(request, context) { principal, client in
                    let id = context.parameters.get("id") ?? ""
                    let input = try await Self.decisionInput(request)
                    // Who may not see a review learns nothing of it, not even that it exists.
                    if let review = await board.review(id), !canSee(review, principal) {
                        if let agent = principal.agent {
                            return try Self.problem(ReviewRefusal(.agent, "agents cannot decide reviews; a person must (the token names agent \(agent))"))
                        }
                        return try ProblemResponse.make(.notFound, "no review \(Self.printable(id))")
                    }
                    do {
                        let review = action == "approve"
                            ? try await board.approve(id, by: principal, client: client, comment: input.comment, digest: input.digest)
                            : try await board.deny(id, by: principal, client: client, reason: input.reason ?? input.comment)
                        return try ProblemResponse.json(encoding: view(review))
                    } catch let refusal as ReviewRefusal {
                        return try Self.problem(refusal)
                    }
                }
            }
        }
        router.post("/v1/access/requests") { request, context in
            try await authenticated(request, context) { principal, client in
                let input = try await Self.accessInput(request)
                guard let connection = input.connection, gateway.config.connections.contains(where: { $0.name == connection }) else {
                    return try ProblemResponse.make(.notFound, "no connection \(Self.printable(input.connection ?? ""))")
                }
                do {
                    let review = try await board.requestAccess(
                        connection: connection, minutes: input.minutes ?? 60, includeAgents: input.includeAgents ?? false,
                        reason: input.reason.map { $0.truncated(toUTF8Bytes: 1024).text }, requester: principal, client: client)
                    return try ProblemResponse.json(encoding: view(review), status: .created)
                } catch let refusal as ReviewRefusal {
                    return try Self.problem(refusal)
                }
            }
        }
        router.post("/v1/access/grants/:id/revoke") { request, context in
            try await authenticated(request, context) { principal, client in
                let input = try await Self.decisionInput(request)
                do {
                    let grant = try await board.revokeGrant(context.parameters.get("id") ?? "", by: principal, client: client, reason: input.reason)
                    return try ProblemResponse.json(encoding: GrantList(grants: [grant]))
                } catch let refusal as ReviewRefusal {
                    return try Self.problem(refusal)
                }
            }
        }
        router.get("/v1/access/grants") { request, context in
            try await authenticated(request, context) { principal, _ in
                let mine = board.grants.all.filter { isApprover(principal) || ($0.subject == principal.subject && $0.issuer == principal.issuer) }
                return try ProblemResponse.json(encoding: GrantList(grants: mine))
            }
        }
    }

    // MARK: Who

    private func isApprover(_ principal: Principal) -> Bool {
        principal.agent == nil && principal.groups.contains(where: board.settings.approverGroups.contains)
    }

    private func canSee(_ review: Review, _ principal: Principal) -> Bool {
        ReviewEligibility.canSee(review, principal, approverGroups: board.settings.approverGroups)
    }

    /// Verifies the bearer token; a failure is recorded and answered 401, like every endpoint.
    private func authenticated(
        _ request: Request, _ context: AdminRequestContext, _ body: (Principal, ClientInfo) async throws -> Response
    ) async throws -> Response {
        let client = ClientInfo(
            address: context.remoteAddress.map(peerDescription),
            application: request.headers[.userAgent].map { $0.truncated(toUTF8Bytes: 256).text })
        let credential = HTTPProxy.bearerToken(request.headers[.authorization])
        switch await gateway.verifier.verify(credential ?? "", client: client) {
        case .success(let principal):
            return try await body(principal, client)
        case .failure(let rejection):
            do {
                try await gateway.record(
                    session: UUID().uuidString.lowercased(), principal: nil, client: client,
                    operation: .init(kind: "review.api", text: "\(request.method.rawValue) \((request.uri.path).truncated(toUTF8Bytes: 256).text)"),
                    decision: .deny(rule: "identity", reason: rejection.description), outcome: .init(status: "401", errorCode: rejection.reason.rawValue))
            } catch {
                return try ProblemResponse.make(.serviceUnavailable, "audit trail unavailable; request refused")
            }
            var response = try ProblemResponse.make(.unauthorized, TokenRejection.clientMessage)
            response.headers[.wwwAuthenticate] = #"Bearer realm="gatehouse", error="invalid_token""#
            return response
        }
    }

    // MARK: Shapes

    struct ReviewView: Encodable {
        var review: Review
        var approveURL: String
        var denyURL: String

        enum CodingKeys: String, CodingKey {
            case id, kind, state, session, connection, operation, intent, digest, requester, agent, rule, reason
            case approvalsRequired = "approvals_required", approvals, approverGroups = "approver_groups"
            case createdAt = "created_at", expiresAt = "expires_at", closedAt = "closed_at", closedBy = "closed_by"
            case closeReason = "close_reason", grantMinutes = "grant_minutes", grantIncludesAgents = "grant_includes_agents"
            case approveURL = "approve_url", denyURL = "deny_url"
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(review.id, forKey: .id)
            try c.encode(review.kind.rawValue, forKey: .kind)
            try c.encode(review.state.rawValue, forKey: .state)
            try c.encode(review.session, forKey: .session)
            try c.encode(review.connection, forKey: .connection)
            try c.encode(review.operation, forKey: .operation)
            try c.encodeIfPresent(review.intent, forKey: .intent)
            try c.encode(review.digest, forKey: .digest)
            try c.encode(review.requester.subject, forKey: .requester)
            try c.encodeIfPresent(review.requester.agent, forKey: .agent)
            try c.encodeIfPresent(review.rule, forKey: .rule)
            try c.encodeIfPresent(review.reason, forKey: .reason)
            try c.encode(review.approvalsRequired, forKey: .approvalsRequired)
            try c.encode(review.approvals.map { ["subject": $0.subject, "time": Self.time($0.time), "comment": $0.comment ?? ""] }, forKey: .approvals)
            try c.encode(review.approverGroups, forKey: .approverGroups)
            try c.encode(Self.time(review.createdAt), forKey: .createdAt)
            try c.encode(Self.time(review.expiresAt), forKey: .expiresAt)
            try c.encodeIfPresent(review.closedAt.map(Self.time), forKey: .closedAt)
            try c.encodeIfPresent(review.closedBy, forKey: .closedBy)
            try c.encodeIfPresent(review.closeReason, forKey: .closeReason)
            try c.encodeIfPresent(review.grantMinutes, forKey: .grantMinutes)
            try c.encodeIfPresent(review.grantIncludesAgents, forKey: .grantIncludesAgents)
            try c.encode(approveURL, forKey: .approveURL)
            try c.encode(denyURL, forKey: .denyURL)
        }

        static func time(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }
    }

    struct ReviewList: Encodable {
        var reviews: [ReviewView]
    }

    struct GrantList: Encodable {
        var grants: [AccessGrant]
    }

    func view(_ review: Review) -> ReviewView {
        let base = gateway.reviewLinkBase
        return ReviewView(review: review, approveURL: "\(base)/v1/reviews/\(review.id)/approve", denyURL: "\(base)/v1/reviews/\(review.id)/deny")
    }

    static func problem(_ refusal: ReviewRefusal) throws -> Response {
        let status: HTTPResponse.Status = switch refusal.code {
        case .notFound: .notFound
        case .closed, .alreadyApproved, .digestMismatch: .conflict
        case .ownRequest, .notApprover, .agent: .forbidden
        case .auditUnavailable: .serviceUnavailable
        case .invalid: .badRequest
        }
        return try ProblemResponse.make(status, refusal.message)
    }

    // MARK: Input

    struct DecisionInput: Decodable {
        var comment: String?
        var reason: String?
        var digest: String?
    }

    struct AccessInput: Decodable {
        var connection: String?
        var minutes: Int?
        var reason: String?
        var includeAgents: Bool?

        enum CodingKeys: String, CodingKey {
            case connection, minutes, reason
            case includeAgents = "include_agents"
        }
    }

    static func decisionInput(_ request: Request) async throws -> DecisionInput {
        let body = try await request.body.collect(upTo: 16 * 1024)
        guard body.readableBytes > 0 else { return DecisionInput() }
        guard var input = try? JSONDecoder().decode(DecisionInput.self, from: Data(body.readableBytesView)) else {
            throw HTTPError(.badRequest, message: "the body must be a JSON object with comment, reason or digest")
        }
        input.comment = input.comment.map { $0.truncated(toUTF8Bytes: 1024).text }
        input.reason = input.reason.map { $0.truncated(toUTF8Bytes: 1024).text }
        return input
    }

    static func accessInput(_ request: Request) async throws -> AccessInput {
        let body = try await request.body.collect(upTo: 16 * 1024)
        guard let input = try? JSONDecoder().decode(AccessInput.self, from: Data(body.readableBytesView)) else {
            throw HTTPError(.badRequest, message: "the body must be a JSON object with connection and minutes")
        }
        return input
    }

    /// Text from a client, safe to echo in a message.
    static func printable(_ text: String) -> String {
        String(text.truncated(toUTF8Bytes: 128).text.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F && $0 != "<" && $0 != ">" && $0 != "&" })
    }
}

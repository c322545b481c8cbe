import AsyncHTTPClient
import Audit
import Crypto
import Foundation
import GatehouseCore
import HTTPTypes
import Hummingbird
import Identity
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import Policy
import Reviews

/// Request context that remembers the peer address, so audit events say where a request came from.
public struct HTTPGatewayContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The client's connection, watched while a request waits for approval.
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }
}

/// The reverse proxy: identity, policy and audit in front of every configured HTTP connection.
///
/// Per request: find the connection (`/c/NAME/...` or a configured Host name), verify the bearer
/// token, decide (who may use the connection, then its request rules), commit the request event,
/// forward with the connection's credential, and stream the response back (masked, when the
/// policy's mask rules apply: see ResponseMasking.swift) while keeping its first bytes, as sent,
/// for the response event. Every refusal is a problem document (RFC 9457) and is recorded.
public final class HTTPProxy: Sendable {
    static let intentHeader = HTTPField.Name("Gatehouse-Intent")!
    static let sessionHeader = HTTPField.Name("Gatehouse-Session")!

    let settings: HTTPGatewaySettings
    private let verifier: TokenVerifier
    let auditLog: AuditLog
    private let logger: Logger
    private let targetsByName: [String: HTTPTarget]
    private let targetsByHost: [String: HTTPTarget]
    private let clients: [String: HTTPClient]
    private let commandsByName: [String: CommandTarget]
    let reviews: ReviewBoard?

    public init(settings: HTTPGatewaySettings, verifier: TokenVerifier, auditLog: AuditLog, logger: Logger, reviews: ReviewBoard? = nil) {
        self.settings = settings
        self.reviews = reviews
        self.verifier = verifier
        self.auditLog = auditLog
        self.logger = logger
        var byName: [String: HTTPTarget] = [:]
        var byHost: [String: HTTPTarget] = [:]
        var clients: [String: HTTPClient] = [:]
        for target in settings.targets {
            byName[target.name] = target
            for host in target.hosts { byHost[host] = target }
            var configuration = HTTPClient.Configuration(
                tlsConfiguration: target.tls,
                redirectConfiguration: .disallow,
                timeout: .init(connect: .nanoseconds(target.connectTimeout.inNanoseconds), read: .nanoseconds(target.readTimeout.inNanoseconds)),
                connectionPool: .init(idleTimeout: .seconds(60)),
                ignoreUncleanSSLShutdown: false,
                decompression: .disabled)
            configuration.httpVersion = HTTPClient.Configuration.HTTPVersion.automatic
            // The trail is the record of each request; spans from the bootstrapped no-op tracer
            // would cost a measurable share of every forward for nothing.
            configuration.tracing.tracer = nil
            clients[target.name] = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        }
        self.targetsByName = byName
        self.commandsByName = Dictionary(settings.commands.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.targetsByHost = byHost
        self.clients = clients
    }

    /// Closes every upstream connection pool.
    public func shutdown() async {
        for client in clients.values {
            try? await client.shutdown()
        }
    }

    // MARK: One request

    public func respond(to request: Request, context: HTTPGatewayContext) async throws -> Response {
        let started = ContinuousClock.now
        var exchange = Exchange(request: request, remoteAddress: context.remoteAddress, node: settings.node)

        // The token is checked before anything about the connection is revealed.
        guard let token = Self.bearerToken(request.headers[.authorization]) else {
            return try await refuse(&exchange, .unauthorized, "a bearer token is required",
                                    decision: .deny(rule: "identity", reason: "no bearer token"), errorCode: "missing-token",
                                    challenge: #"Bearer realm="gatehouse""#)
        }
        exchange.session = Self.sessionID(token: token, label: request.headers[Self.sessionHeader])
        switch await verifier.verify(token, client: exchange.client) {
        case .failure(let rejection):
            return try await refuse(&exchange, .unauthorized, TokenRejection.clientMessage,
                                    decision: .deny(rule: "identity", reason: rejection.description),
                                    errorCode: rejection.reason.rawValue,
                                    challenge: #"Bearer realm="gatehouse", error="invalid_token""#)
        case .success(let principal):
            exchange.principal = principal
        }

        if let (command, rest) = commandRoute(request), !isHostRouted(request) {
            return try await runCommand(request, &exchange, target: command, rest: rest, context: context)
        }
        guard let (target, rawPath) = route(request) else {
            return try await refuse(&exchange, .notFound, "no such connection",
                                    decision: .deny(rule: "route", reason: "no connection for \(exchange.text)"),
                                    errorCode: "unknown-connection")
        }
        exchange.connection = target.name
        exchange.redactedQueryNames = target.credentialQueryParameter.map { QueryShaping.sensitiveNames.union([$0.lowercased()]) }
            ?? QueryShaping.sensitiveNames
        // TRACE echoes the request, injected credential included; CONNECT opens a tunnel past every check.
        guard request.method != .trace, request.method != .connect else {
            return try await refuse(&exchange, .methodNotAllowed, "\(request.method.rawValue) is not forwarded",
                                    decision: .deny(rule: "method", reason: "\(request.method.rawValue) is never forwarded"),
                                    errorCode: "method-not-forwarded")
        }
        let path: CanonicalPath
        do {
            path = try CanonicalPath(raw: rawPath)
        } catch {
            return try await refuse(&exchange, .badRequest, error.description,
                                    decision: .deny(rule: "path", reason: error.description), errorCode: "bad-path")
        }
        exchange.path = path.decoded
        let principal = exchange.principal!

        var access = target.access.decide(for: principal)
        if access.effect != .allow, let grant = reviews?.grants.grant(for: principal, connection: target.name) {
            access = grant.decision
        }
        guard access.effect == .allow else {
            let ask = reviews == nil || principal.agent != nil ? "" : "; ask for time-boxed access with `gatehouse access request \(target.name) --minutes N`"
            return try await refuse(&exchange, .forbidden, (access.reason ?? "not allowed") + ask, decision: access, errorCode: "connection-denied")
        }
        let evaluation = settings.policy.evaluate(
            principal: principal, connection: target.name, operation: .http(method: request.method.rawValue, path: path.decoded))
        var decision = evaluation.decision
        let body = RequestBodyRest(request.body.makeAsyncIterator())
        var heldBody: BodyPrefix?
        if decision.effect == .review {
            switch try await hold(request, &exchange, target: target, body: body, decision: decision, approval: evaluation.approval, context: context) {
            case .approved(let approval, let whole):
                decision = approval
                heldBody = whole
            case .refused(let response):
                return response
            }
        }
        guard decision.effect == .allow else {
            return try await refuse(&exchange, .forbidden, decision.reason ?? "not allowed", decision: decision, errorCode: "request-denied")
        }
        // Mask rules shape the response; one the gateway cannot apply stops the request here.
        let maskRules = ResponseMaskRules.forResponses(evaluation.masks)
        if let unreadable = maskRules?.unreadablePath {
            return try await refuse(&exchange, .internalServerError, "a mask rule for this request cannot be applied",
                                    decision: .deny(rule: unreadable.rule, reason: "mask rule \(unreadable.rule) has a JSON path the gateway cannot read (\(unreadable.pattern))"),
                                    errorCode: "mask-rule-unreadable")
        }

        // The request event, with the first body bytes, is committed before anything is forwarded.
        var prefix = BodyPrefix(limit: settings.maxRecordedBodyBytes)
        if let heldBody {
            // Read whole while it waited: forwarded exactly as approved.
            prefix.buffers = heldBody.buffers
            prefix.bytes = heldBody.bytes
            prefix.complete = true
        } else {
            do {
                prefix = try await readBody(request, body, upTo: settings.maxRecordedBodyBytes, target: target)
            } catch {
                return try await refuseSlowBody(&exchange, target: target)
            }
        }
        let requestEvent: AuditEvent
        do {
            let record = exchange.record(
                kind: "http.request", decision: decision,
                payload: Self.payload(headers: exchange.recordedRequestHeaders(target), body: prefix.recorded, truncated: prefix.truncated,
                                      maxBytes: settings.maxPayloadBytes))
            // A quick local commit on this task costs less than the hop to the writer thread and back.
            requestEvent = auditLog.appendsAreQuick ? try auditLog.appendNow(record) : try await auditLog.append(record)
        } catch {
            HTTPMetrics.count("audit-unavailable")
            return try ProblemResponse.make(.serviceUnavailable, "the audit trail cannot be written; request refused")
        }
        HTTPMetrics.count("allow")

        let upstreamRequest: HTTPClientRequest
        let scrubber: SecretScrubber
        do {
            (upstreamRequest, scrubber) = try makeUpstreamRequest(
                request, target: target, path: path, exchange: exchange,
                body: ForwardedBody(prefix: prefix.buffers, rest: body, complete: prefix.complete), masking: maskRules != nil)
        } catch {
            logger.error("upstream credential unavailable", metadata: ["connection": "\(target.name)", "error": "\(error)"])
            recordResponse(exchange, event: requestEvent, started: started, status: "502", bytes: 0, headers: [], body: .init(limit: 0),
                           error: "the connection's credential could not be read", errorCode: "credential-unavailable",
                           scrubber: SecretScrubber(secrets: []))
            return try ProblemResponse.make(.badGateway, "the gateway cannot reach this connection's upstream", connection: target.name)
        }

        let upstream: HTTPClientResponse
        do {
            upstream = try await clients[target.name]!.execute(upstreamRequest, deadline: .now() + .nanoseconds(target.totalTimeout.inNanoseconds))
        } catch {
            let timedOut = Self.isTimeout(error)
            let status: HTTPResponse.Status = timedOut ? .gatewayTimeout : .badGateway
            let reason = timedOut ? "the upstream did not answer in time" : "the upstream could not be reached"
            recordResponse(exchange, event: requestEvent, started: started, status: String(status.code), bytes: 0, headers: [],
                           body: .init(limit: 0), error: reason + " (\(Self.describe(error)))", errorCode: timedOut ? "upstream-timeout" : "upstream-unreachable",
                           scrubber: scrubber)
            return try ProblemResponse.make(status, reason, connection: target.name)
        }

        // An upstream that echoes the credential (a redirect to a URL carrying it, a debug header)
        // must not hand it to the client through the gateway's headers.
        var responseFields = HeaderShaping.downstream(upstream: upstream.headers.map { ($0.name, scrubber.scrub($0.value)) })
        let contentLength = upstream.headers.first(name: "content-length").flatMap(Int.init)
        let isHead = request.method == .head
        var maskMode = ResponseMaskMode.untouched
        var headerTally: MaskTally?
        if let maskRules {
            maskMode = ResponseMasking.mode(
                status: Int(upstream.status.code), contentType: upstream.headers.first(name: "content-type"),
                contentEncodings: upstream.headers["content-encoding"], transferEncodings: upstream.headers["transfer-encoding"],
                declaredLength: contentLength, hasDetectors: !maskRules.detectors.isEmpty, hasPaths: !maskRules.paths.isEmpty)
            var tally = MaskTally(rules: maskRules.names.count)
            responseFields = ResponseMasking.downstreamFields(
                responseFields, rewritingBody: maskMode.rewritesBody, rules: maskRules, masker: settings.masker, tally: &tally)
            headerTally = tally
        }
        let recordedHeaders = HeaderShaping.recorded(responseFields)
        if case .withhold(let reason) = maskMode, let maskRules {
            // Unread, the upstream's body is dropped with its connection; nothing of it is sent.
            HTTPMetrics.count("withheld")
            recordResponse(exchange, event: requestEvent, started: started, status: "502", bytes: 0, headers: recordedHeaders,
                           body: .init(limit: 0), error: "the upstream answered \(upstream.status.code), and \(reason)",
                           errorCode: "response-unmaskable", scrubber: scrubber, decision: maskRules.withheld(reason))
            return try ProblemResponse.make(
                .badGateway, "the upstream's response could not be masked (\(reason)), so it was withheld",
                rule: maskRules.names.joined(separator: ","), connection: target.name)
        }
        var headers = HTTPFields()
        for field in responseFields {
            if let name = HTTPField.Name(field.name) { headers.append(HTTPField(name: name, value: field.value)) }
        }
        // A rewritten body has a length of its own: it is sent chunked.
        let declaredLength = maskMode.rewritesBody ? nil : contentLength
        if isHead, let declaredLength { headers[.contentLength] = String(declaredLength) }
        let status = HTTPResponse.Status(code: Int(upstream.status.code), reasonPhrase: upstream.status.reasonPhrase)
        let limit = settings.maxRecordedBodyBytes
        let forwarded = exchange
        let masker = settings.masker
        let responseBody = ResponseBody(contentLength: isHead ? nil : declaredLength) { [self, maskMode, headerTally] writer in
            var kept = RecordedBody(limit: limit)
            var bytes: Int64 = 0
            var masking = maskRules.flatMap { rules in
                maskMode.rewritesBody ? ResponseMasker(json: maskMode == .json, rules: rules, masker: masker, tally: headerTally) : nil
            }
            // What the trail says of masking: which rules masked what, or that nothing was found.
            func decision() -> Decision? {
                guard let maskRules else { return nil }
                return maskRules.decision(after: masking?.tally ?? headerTally ?? MaskTally(rules: 0), request: requestEvent.record.decision)
            }
            // Only masked bytes are sent and kept: the trail holds what the client received.
            func send(_ buffer: ByteBuffer) async throws {
                guard buffer.readableBytes > 0 else { return }
                kept.append(buffer)
                bytes += Int64(buffer.readableBytes)
                try await writer.write(buffer)
            }
            do {
                for try await chunk in upstream.body {
                    if masking != nil {
                        try await send(ByteBuffer(bytes: try masking!.feed(chunk.readableBytesView)))
                    } else {
                        try await send(chunk)
                    }
                }
                if masking != nil { try await send(ByteBuffer(bytes: try masking!.finish())) }
                try await writer.finish(nil)
            } catch let error as ResponseMaskingError {
                // Throwing aborts the body: the client sees a cut response, never unmasked bytes.
                recordResponse(forwarded, event: requestEvent, started: started, status: String(status.code), bytes: bytes,
                               headers: recordedHeaders, body: kept, error: "the response was cut off: it could not be masked (\(error))",
                               errorCode: "masking-failed", scrubber: scrubber, decision: decision())
                throw error
            } catch {
                recordResponse(forwarded, event: requestEvent, started: started, status: String(status.code), bytes: bytes,
                               headers: recordedHeaders, body: kept, error: "the response was cut off (\(Self.describe(error)))",
                               errorCode: "stream-interrupted", scrubber: scrubber, decision: decision())
                throw error
            }
            recordResponse(forwarded, event: requestEvent, started: started, status: String(status.code), bytes: bytes,
                           headers: recordedHeaders, body: kept, error: nil, errorCode: nil, scrubber: scrubber, decision: decision())
        }
        return Response(status: status, headers: headers, body: responseBody)
    }

    // MARK: Routing and the upstream request

    /// Whether a configured Host name claims the request (its whole path then goes to that connection).
    private func isHostRouted(_ request: Request) -> Bool {
        request.head.authority.map { targetsByHost[Self.hostName($0)] != nil } ?? false
    }

    /// The command connection named by `/c/NAME/...`, and the rest of the raw path.
    private func commandRoute(_ request: Request) -> (CommandTarget, Substring)? {
        guard !commandsByName.isEmpty else { return nil }
        let rawPath = Self.rawPath(request.head.path ?? "/")
        guard rawPath.hasPrefix("/c/") else { return nil }
        let name = rawPath.dropFirst(3).prefix { $0 != "/" }
        guard let target = commandsByName[String(name)] else { return nil }
        return (target, rawPath.dropFirst(3 + name.count))
    }

    /// The connection and the rest of the raw path: a configured Host name takes the whole path,
    /// otherwise `/c/NAME/rest`.
    private func route(_ request: Request) -> (HTTPTarget, Substring)? {
        let rawPath = Self.rawPath(request.head.path ?? "/")
        if let authority = request.head.authority {
            let host = Self.hostName(authority)
            if let target = targetsByHost[host] { return (target, rawPath) }
        }
        guard rawPath.hasPrefix("/c/") else { return nil }
        let afterPrefix = rawPath.dropFirst(3)
        let name = afterPrefix.prefix { $0 != "/" }
        guard let target = targetsByName[String(name)] else { return nil }
        return (target, afterPrefix.dropFirst(name.count))
    }

    private func makeUpstreamRequest(
        _ request: Request, target: HTTPTarget, path: CanonicalPath, exchange: Exchange, body: ForwardedBody, masking: Bool
    ) throws -> (HTTPClientRequest, SecretScrubber) {
        let credential = try target.credential?()
        var query = Self.query(request.head.path ?? "")
        var credentialHeader: (name: String, value: String)?
        switch credential {
        case .header(let name, let value): credentialHeader = (name, value)
        case .queryParameter(let name, let value): query = QueryShaping.inject(into: query, name: name, value: value)
        case nil: break
        }
        var base = target.baseURL.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        var upstream = HTTPClientRequest(url: base + path.encoded + (query.map { "?" + $0 } ?? ""))
        upstream.method = HTTPMethod(rawValue: request.method.rawValue)
        var fields = HeaderShaping.upstream(
            client: request.headers.map { ($0.name.rawName, $0.value) },
            credentialHeader: credentialHeader,
            clientAddress: exchange.client.address.map(Self.addressWithoutPort),
            clientHost: request.head.authority,
            clientProtocol: settings.tls == nil ? "http" : "https")
        // A response to mask must come back readable: no compression, no byte ranges.
        if masking { fields = ResponseMasking.upstreamFields(fields) }
        for field in fields { upstream.headers.add(name: field.name, value: field.value) }
        let declaredLength = request.headers[.contentLength].flatMap(Int64.init)
        let chunked = request.headers[.transferEncoding] != nil
        if declaredLength.map({ $0 > 0 }) ?? chunked {
            upstream.body = .stream(body, length: declaredLength.map { .known($0) } ?? .unknown)
        }
        return (upstream, SecretScrubber(credential))
    }

    // MARK: Recording

    /// The first `limit` bytes of the body (all of it when shorter: `complete`), within the
    /// connection's read timeout.
    private func readBody(_ request: Request, _ body: RequestBodyRest, upTo limit: Int, target: HTTPTarget) async throws -> BodyPrefix {
        // Only a body can keep the gateway waiting; a deadline costs two tasks, so bodiless
        // requests (most of them) go without.
        guard Self.hasBody(request) else {
            var empty = BodyPrefix(limit: limit)
            empty.complete = true
            return empty
        }
        return try await withDeadline(target.readTimeout, code: "http.body-timeout", what: "the request body") {
            try await Self.readPrefix(of: body, upTo: limit)
        }
    }

    private func refuseSlowBody(_ exchange: inout Exchange, target: HTTPTarget) async throws -> Response {
        try await refuse(&exchange, .requestTimeout, "the request body did not arrive in time",
                         decision: .deny(rule: "body", reason: "the request body did not arrive within \(target.readTimeout)"),
                         errorCode: "body-timeout")
    }

    enum HoldOutcome {
        /// Run it, recorded under this decision, with this body (read whole).
        case approved(Decision, BodyPrefix)
        case refused(Response)
    }

    /// Holds a request the policy wants a person to approve: its body is read whole (an approval
    /// is for these exact bytes), a review is opened, and the client waits without a byte sent
    /// until a decision, the review's timeout, or its own departure, which abandons the review.
    private func hold(
        _ request: Request, _ exchange: inout Exchange, target: HTTPTarget, body: RequestBodyRest, decision: Decision,
        approval: ApprovalRequirement?, context: HTTPGatewayContext
    ) async throws -> HoldOutcome {
        let whole: BodyPrefix
        do {
            whole = try await readBody(request, body, upTo: settings.maxHeldBodyBytes, target: target)
        } catch {
            return .refused(try await refuseSlowBody(&exchange, target: target))
        }
        guard whole.complete else {
            return .refused(try await refuse(
                &exchange, .contentTooLarge, "a request held for approval may carry at most \(settings.maxHeldBodyBytes) bytes",
                decision: .deny(rule: decision.rule, reason: "needs approval, and its body is larger than \(settings.maxHeldBodyBytes) bytes"),
                errorCode: "review-body-too-large"))
        }
        var bytes: [UInt8] = []
        for buffer in whole.buffers { bytes.append(contentsOf: buffer.readableBytesView) }
        let principal = exchange.principal!
        var shown = exchange.text
        // Headers that change what the request does are part of what is approved.
        let meaningful = ["content-type", "content-encoding", "x-http-method-override", "x-method-override", "if-match", "if-none-match"]
        var headerLines: [String] = []
        for name in meaningful {
            for value in request.headers[values: HTTPField.Name(name)!] { headerLines.append("\(name): \(value)") }
        }
        if !headerLines.isEmpty { shown += "\n" + headerLines.joined(separator: "\n") }
        if !bytes.isEmpty { shown += "\n\n" + RecordedBody.text(bytes) }
        let exact = request.method.rawValue + " " + (request.head.path ?? "/") + "\n" + headerLines.joined(separator: "\n")
        let reviewRequest = ReviewRequest(
            session: exchange.session, connection: target.name, protocolName: "http", operation: shown, intent: exchange.intent,
            digest: ReviewDigest.of(protocolName: "http", connection: target.name, principal: principal, operation: exact, body: bytes),
            requester: principal, client: exchange.client, decision: decision,
            approvals: approval?.approvals ?? 1, approverGroups: approval?.approverGroups ?? [])
        switch try await waitForReview(reviewRequest, decision: decision, &exchange, context: context) {
        case .approved(let approval): return .approved(approval, whole)
        case .refused(let response): return .refused(response)
        }
    }

    enum ReviewWait {
        case approved(Decision)
        case refused(Response)
    }

    /// Opens the review and waits for its end while watching the client: leaving abandons it.
    func waitForReview(
        _ reviewRequest: ReviewRequest, decision: Decision, _ exchange: inout Exchange, context: HTTPGatewayContext
    ) async throws -> ReviewWait {
        guard let reviews else {
            return .refused(try await refuse(&exchange, .forbidden, (decision.reason ?? "approval required") + "; approvals are not configured on this gateway",
                                             decision: .deny(rule: decision.rule, reason: "approvals are not configured"), errorCode: "review-unavailable"))
        }
        HTTPMetrics.count("review")
        let review: Review
        do {
            review = try await reviews.open(reviewRequest)
        } catch {
            let message = (error as? ReviewRefusal)?.message ?? "the review could not be opened"
            return .refused(try await refuse(&exchange, .forbidden, "this operation needs approval, and \(message)",
                                             decision: .deny(rule: decision.rule, reason: "needs approval; \(message)"), errorCode: "review-unavailable"))
        }
        // The client leaving (connection closed, or its sending side shut) abandons the review.
        let id = review.id
        let hangup = Self.onHangup(of: context) { Task { await reviews.abandon(id, reason: "the client disconnected") } }
        defer { hangup.end() }
        switch await reviews.wait(review.id) {
        case .approved(let approved) where approved.digest == reviewRequest.digest:
            // Claimed for its one run before it is sent; a review abandoned in the meantime (the
            // client left, the gateway is stopping) does not run.
            guard await reviews.executed(approved.id, client: exchange.client) else {
                let reason = "review \(approved.id) was abandoned before the request could run"
                return .refused(try await refuse(&exchange, .forbidden, reason, decision: .deny(rule: "review:\(approved.id)", reason: reason),
                                                 errorCode: "review-abandoned"))
            }
            let names = approved.approvals.map(\.subject).joined(separator: ", ")
            return .approved(.allow(rule: "review:\(approved.id)", reason: "approved by \(names) (\(decision.rule.map { "rule \($0)" } ?? "review"))"))
        case .approved(let other):
            return .refused(try await refuse(&exchange, .forbidden, "the approval is for another operation",
                                             decision: .deny(rule: "review:\(other.id)", reason: "digest mismatch"), errorCode: "review-mismatch"))
        case .refused(let closed):
            let reason = "review \(closed.id) " + (closed.state == .expired ? "expired: " : closed.state == .abandoned ? "was abandoned: " : "was ")
                + (closed.closeReason ?? closed.state.rawValue)
            return .refused(try await refuse(&exchange, .forbidden, reason, decision: .deny(rule: "review:\(closed.id)", reason: reason),
                                             errorCode: "review-\(closed.state.rawValue)"))
        }
    }

    /// Runs `callback` once the client of this request has gone (its connection closed, or its
    /// sending side shut), at once if it already has. The request ends the returned observation
    /// when it is done with it.
    public static func onHangup(of context: HTTPGatewayContext, _ callback: @escaping @Sendable () -> Void) -> HangupObservation {
        HangupObservation.start(on: context.channel, callback)
    }

    func refuse(
        _ exchange: inout Exchange, _ status: HTTPResponse.Status, _ detail: String, decision: Decision, errorCode: String,
        challenge: String? = nil
    ) async throws -> Response {
        HTTPMetrics.count("deny")
        let record = exchange.record(
            kind: exchange.requestKind, decision: decision, outcome: .init(status: String(status.code), errorCode: errorCode),
            payload: Self.payload(headers: exchange.recordedRequestHeaders(nil), body: nil, truncated: false, maxBytes: settings.maxPayloadBytes))
        do {
            _ = try await auditLog.append(record)
        } catch {
            return try ProblemResponse.make(.serviceUnavailable, "the audit trail cannot be written; request refused")
        }
        var response = try ProblemResponse.make(status, detail, rule: decision.rule, connection: exchange.connection)
        if let challenge { response.headers[.wwwAuthenticate] = challenge }
        return response
    }

    private func recordResponse(
        _ exchange: Exchange, event: AuditEvent, started: ContinuousClock.Instant, status: String, bytes: Int64,
        headers: [(String, String)], body: RecordedBody, error: String?, errorCode: String?, scrubber: SecretScrubber,
        decision: Decision? = nil
    ) {
        let duration = ContinuousClock.now - started
        HTTPMetrics.duration.recordNanoseconds(duration.inNanoseconds)
        var operation = AuditRecord.Operation(kind: "http.response", text: "response to event \(event.seq)")
        operation.intent = exchange.intent
        // The upstream may echo the injected credential; the trail must not keep it.
        let payload = Self.payload(
            headers: headers.map { ($0.0, scrubber.scrub($0.1)) }, body: body.text.map(scrubber.scrub), truncated: body.truncated,
            maxBytes: settings.maxPayloadBytes)
        auditLog.appendEventually(AuditRecord(
            node: exchange.node, session: exchange.session, principal: exchange.principal, client: exchange.client,
            connection: exchange.connection, operation: operation, decision: decision ?? event.record.decision,
            outcome: .init(status: status, bytes: bytes, errorCode: errorCode, error: error, durationMicros: duration.inNanoseconds / 1000),
            payload: payload.text, payloadTruncated: payload.truncated ? true : nil))
    }

    /// The recorded request or response: headers (credentials redacted) and the first body bytes,
    /// always valid JSON within `maxBytes` (the body is cut further if the headers leave no room).
    static func payload(headers: [(String, String)], body: String?, truncated: Bool, maxBytes: Int) -> (text: String, truncated: Bool) {
        let whole = write(headers, body: body, bodyCut: truncated, headersCut: false)
        if whole.utf8.count <= maxBytes { return (whole, truncated) }
        // Too large: headers get at most half the room, so padding them cannot push the body out.
        var kept = headers
        var headersCut = false
        while !kept.isEmpty, write(kept, body: nil, bodyCut: false, headersCut: true).utf8.count > maxBytes / 2 {
            kept.removeLast(max(1, kept.count / 4))
            headersCut = true
        }
        let full = write(kept, body: body, bodyCut: truncated, headersCut: headersCut)
        if full.utf8.count <= maxBytes { return (full, truncated || headersCut) }
        let withoutBody = write(kept, body: "", bodyCut: true, headersCut: headersCut)
        guard let body, withoutBody.utf8.count < maxBytes else { return (write([], body: nil, bodyCut: true, headersCut: true), true) }
        // Escaping can grow the text up to 6x; cut until the document fits.
        var keep = maxBytes - withoutBody.utf8.count
        while keep > 0 {
            let text = write(kept, body: body.truncated(toUTF8Bytes: keep).text, bodyCut: true, headersCut: headersCut)
            if text.utf8.count <= maxBytes { return (text, true) }
            keep = keep * 3 / 4
        }
        return (withoutBody, true)
    }

    private static func write(_ headers: [(String, String)], body: String?, bodyCut: Bool, headersCut: Bool) -> String {
        var writer = JSONWriter()
        writer.beginObject()
        writer.member("body", body)
        if bodyCut { writer.member("body_truncated", true) }
        writer.key("headers")
        writer.beginArray()
        for (name, value) in headers {
            writer.beginArray()
            writer.string(name)
            writer.string(value)
            writer.endArray()
        }
        writer.endArray()
        if headersCut { writer.member("headers_truncated", true) }
        writer.endObject()
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    // MARK: Small pieces

    public static func bearerToken(_ header: String?) -> String? {
        // Byte-level on purpose: this runs on every request, and Foundation's trimming and
        // case-folding cost more than the rest of the routing together.
        guard let header else { return nil }
        let bytes = header.utf8
        guard bytes.count > 7 else { return nil }
        let scheme = bytes.prefix(7).map { $0 | 0x20 }
        guard scheme == Array("bearer ".utf8) else { return nil }
        let token = bytes.dropFirst(7).drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        var end = token.endIndex
        while end > token.startIndex, case let last = bytes[bytes.index(before: end)], last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") {
            end = bytes.index(before: end)
        }
        let trimmed = token[token.startIndex..<end]
        return trimmed.isEmpty ? nil : String(decoding: trimmed, as: UTF8.self)
    }

    /// Requests made with one token form one session (a client label from `Gatehouse-Session`
    /// splits it further). The token itself is never recorded, only a digest of it.
    public static func sessionID(token: String, label: String?) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var digestBytes: [UInt8] = []
        digestBytes.reserveCapacity(16)
        for byte in SHA256.hash(data: Data(token.utf8)).prefix(8) {
            digestBytes.append(hex[Int(byte >> 4)])
            digestBytes.append(hex[Int(byte & 0x0f)])
        }
        let digest = String(decoding: digestBytes, as: UTF8.self)
        guard let label else { return "http-" + digest }
        let clean = label.unicodeScalars.filter { CharacterSet.alphanumerics.contains($0) || "-_.:".unicodeScalars.contains($0) }
        let kept = String(String.UnicodeScalarView(clean.prefix(64)))
        return kept.isEmpty ? "http-" + digest : "http-\(digest)-\(kept)"
    }

    static func rawPath(_ target: String) -> Substring {
        target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "/"
    }

    static func query(_ target: String) -> String? {
        guard let mark = target.firstIndex(of: "?") else { return nil }
        let query = target[target.index(after: mark)...]
        return query.isEmpty ? nil : String(query)
    }

    static func hostName(_ authority: String) -> String {
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            return String(authority[...close]).lowercased()
        }
        return String(authority.split(separator: ":", maxSplits: 1).first ?? "").lowercased()
    }

    static func addressWithoutPort(_ address: String) -> String {
        if address.hasPrefix("["), let close = address.firstIndex(of: "]") {
            return String(address[address.index(after: address.startIndex)..<close])
        }
        return String(address.split(separator: ":").first ?? Substring(address))
    }

    /// Whether the request announces a body: a positive Content-Length or any Transfer-Encoding.
    static func hasBody(_ request: Request) -> Bool {
        if request.headers[.transferEncoding] != nil { return true }
        guard let length = request.headers[.contentLength] else { return false }
        return Int64(length).map { $0 > 0 } ?? true
    }

    static func readPrefix(of body: RequestBodyRest, upTo limit: Int) async throws -> BodyPrefix {
        var prefix = BodyPrefix(limit: limit)
        while prefix.wantsMore, let chunk = try await body.next() {
            prefix.append(chunk)
        }
        if prefix.wantsMore { prefix.complete = true }
        return prefix
    }

    static func isTimeout(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError {
            return error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout
        }
        return false
    }

    /// A short, secret-free reason for the audit trail: the error's kind, not its full text.
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return String(describing: error).truncated(toUTF8Bytes: 200).text }
        return String(describing: type(of: error))
    }
}

/// What is known about one request while it is decided and forwarded.
struct Exchange: Sendable {
    let node: String
    let method: String
    let target: String
    var intent: String?
    /// What the operation is, when it is not `METHOD path` (a command line), and its event kind.
    var overrideText: String?
    var requestKind = "http.request"
    var client: ClientInfo
    var session: String
    var principal: Principal?
    var connection: String?
    var path: String?
    var query: String?
    /// Query parameters whose values are recorded as `[redacted]`.
    var redactedQueryNames = QueryShaping.sensitiveNames
    let requestFields: HeaderShaping.Fields

    init(request: Request, remoteAddress: SocketAddress?, node: String) {
        self.node = node
        method = request.method.rawValue
        target = (request.head.path ?? "/").truncated(toUTF8Bytes: 2048).text
        intent = request.headers[HTTPProxy.intentHeader].map { $0.truncated(toUTF8Bytes: 1024).text }
        client = ClientInfo(
            address: remoteAddress.map(peerDescription),
            application: request.headers[.userAgent].map { $0.truncated(toUTF8Bytes: 256).text })
        session = "http-anonymous"
        query = HTTPProxy.query(request.head.path ?? "")
        requestFields = request.headers.map { ($0.name.rawName, $0.value) }
    }

    /// `METHOD /path?query`: the decided path once known, the raw target before.
    var text: String {
        if let overrideText { return overrideText }
        guard let path else {
            let raw = HTTPProxy.rawPath(target)
            return "\(method) \(raw)" + (query.map { "?" + QueryShaping.redacted($0, names: redactedQueryNames) } ?? "")
        }
        return "\(method) \(path)" + (query.map { "?" + QueryShaping.redacted($0, names: redactedQueryNames) } ?? "")
    }

    func recordedRequestHeaders(_ target: HTTPTarget?) -> [(String, String)] {
        HeaderShaping.recorded(requestFields, alsoRedacting: target?.credentialHeader.map { [$0] } ?? [])
    }

    func record(kind: String, decision: Decision, outcome: AuditRecord.Outcome? = nil, payload: (text: String, truncated: Bool)) -> AuditRecord {
        AuditRecord(
            node: node, session: session, principal: principal, client: client, connection: connection,
            operation: .init(kind: kind, text: text.truncated(toUTF8Bytes: 4096).text, intent: intent),
            decision: decision, outcome: outcome, payload: payload.text, payloadTruncated: payload.truncated ? true : nil)
    }
}

/// The first bytes of a request body, kept for the audit trail and then forwarded first.
struct BodyPrefix: Sendable {
    let limit: Int
    var buffers: [ByteBuffer] = []
    var bytes = 0
    /// The whole body was read.
    var complete = false

    init(limit: Int) { self.limit = limit }

    var wantsMore: Bool { bytes <= limit }

    mutating func append(_ chunk: ByteBuffer) {
        buffers.append(chunk)
        bytes += chunk.readableBytes
    }

    var truncated: Bool { bytes > limit }

    /// The body as text for the record (bodies that are not UTF-8 are recorded as base64).
    var recorded: String? {
        guard bytes > 0 else { return nil }
        var joined = ByteBuffer()
        for buffer in buffers { joined.writeImmutableBuffer(buffer) }
        return RecordedBody.text(Array(joined.readableBytesView.prefix(limit)))
    }
}

/// The first bytes of a response body, kept while the body streams to the client.
struct RecordedBody: Sendable {
    let limit: Int
    private(set) var kept: [UInt8] = []
    private(set) var truncated = false

    init(limit: Int) { self.limit = limit }

    mutating func append(_ chunk: ByteBuffer) {
        let room = limit - kept.count
        guard room > 0 else {
            if chunk.readableBytes > 0 { truncated = true }
            return
        }
        kept.append(contentsOf: chunk.readableBytesView.prefix(room))
        if chunk.readableBytes > room { truncated = true }
    }

    var text: String? { kept.isEmpty ? nil : Self.text(kept) }

    static func text(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        return "base64:" + Data(bytes).base64EncodedString()
    }
}

/// The rest of the client's request body after the recorded prefix; consumed by exactly one reader
/// (the HTTP client sending it upstream).
final class RequestBodyRest: @unchecked Sendable {
    // Read by one task at a time: first the prefix reader (awaited), then the HTTP client.
    private var iterator: RequestBody.AsyncIterator

    init(_ iterator: RequestBody.AsyncIterator) {
        self.iterator = iterator
    }

    func next() async throws -> ByteBuffer? {
        try await iterator.next()
    }
}

/// The request body as forwarded: the prefix already read, then the rest as it arrives.
struct ForwardedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let prefix: [ByteBuffer]
    let rest: RequestBodyRest
    let complete: Bool

    struct AsyncIterator: AsyncIteratorProtocol {
        var prefix: IndexingIterator<[ByteBuffer]>
        let rest: RequestBodyRest
        let complete: Bool

        mutating func next() async throws -> ByteBuffer? {
            if let buffer = prefix.next() { return buffer }
            return complete ? nil : try await rest.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(prefix: prefix.makeIterator(), rest: rest, complete: complete)
    }
}

enum HTTPMetrics {
    static let duration = Metrics.Timer(label: "gatehouse_request_duration_seconds", dimensions: [("protocol", "http")])

    static func count(_ decision: String) {
        Counter(label: "gatehouse_requests_total", dimensions: [("protocol", "http"), ("decision", decision)]).increment()
    }
}

/// Replaces the injected credential, in the forms an upstream might echo it, with `[credential]`.
struct SecretScrubber: Sendable {
    private let secrets: [String]

    init(secrets: [String]) {
        self.secrets = Self.normalized(secrets)
    }

    /// The values worth looking for, once each, longest first (so a secret that contains another
    /// is replaced whole). Very short values would turn ordinary text into noise; real credentials
    /// are longer.
    static func normalized(_ secrets: [String]) -> [String] {
        Array(Set(secrets.filter { $0.utf8.count >= 6 })).sorted { $0.utf8.count > $1.utf8.count }
    }

    init(_ credential: UpstreamCredential?) {
        switch credential {
        case .header(_, let value)?:
            // `Bearer abc` is echoed whole or as `abc`; `Basic b64` likewise, and the decoded pair.
            var forms = [value]
            let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            if parts.count == 2 {
                forms.append(String(parts[1]))
                if let decoded = Data(base64Encoded: String(parts[1])).flatMap({ String(data: $0, encoding: .utf8) }) {
                    forms.append(decoded)
                    if let colon = decoded.firstIndex(of: ":") { forms.append(String(decoded[decoded.index(after: colon)...])) }
                }
            }
            self.init(secrets: forms)
        case .queryParameter(_, let value)?:
            self.init(secrets: [value, QueryShaping.encode(value)])
        case nil:
            self.init(secrets: [])
        }
    }

    func scrub(_ text: String) -> String {
        guard !secrets.isEmpty else { return text }
        var text = text
        for secret in secrets where Self.occurs(secret, in: text) {
            text = Self.replacing(secret, in: text)
        }
        return text
    }

    /// A byte search (memchr, memcmp): this runs for every header and body the trail keeps, where
    /// Foundation's `contains` bridges through NSString and the standard library's generic
    /// search allocates a searcher per call.
    static func occurs(_ secret: String, in text: String) -> Bool {
        var text = text
        var secret = secret
        return text.withUTF8 { haystack in
            secret.withUTF8 { needle in
                guard let needleStart = needle.baseAddress, let base = haystack.baseAddress, needle.count > 0,
                      haystack.count >= needle.count else { return false }
                let lastStart = haystack.count - needle.count
                var start = 0
                while start <= lastStart {
                    guard let found = memchr(base + start, Int32(needleStart[0]), lastStart - start + 1) else { return false }
                    let offset = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
                    if memcmp(base + offset, needleStart, needle.count) == 0 { return true }
                    start = offset + 1
                }
                return false
            }
        }
    }

    /// Every occurrence of `secret`'s bytes replaced, whatever follows them (a Unicode-aware
    /// replace would leave one followed by a combining mark in place).
    static func replacing(_ secret: String, in text: String) -> String {
        let needle = Array(secret.utf8)
        let haystack = Array(text.utf8)
        guard !needle.isEmpty else { return text }
        var result: [UInt8] = []
        result.reserveCapacity(haystack.count)
        var index = 0
        while index < haystack.count {
            if haystack.count - index >= needle.count, haystack[index..<(index + needle.count)].elementsEqual(needle) {
                result.append(contentsOf: "[credential]".utf8)
                index += needle.count
            } else {
                result.append(haystack[index])
                index += 1
            }
        }
        return String(decoding: result, as: UTF8.self)
    }
}

import AsyncHTTPClient
import Foundation
import GatehouseCore
import HTTPGateway
import Identity
import MCP
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL
import Policy
import PostgresWire
import Reviews

/// Who is calling a tool: verified from the token of the very request that carries the call, so
/// a token that expires mid-session stops working at once.
struct Caller: Sendable {
    var principal: Principal
    var token: String
    var client: ClientInfo
    var session: String
    var clientName: String
}

/// What a tool call produced: the structured result, whether it is an error for the model, and
/// how the trail should record the decision.
struct ToolOutcome {
    var structured: Value
    var summary: String
    var isError: Bool
    var decision: Decision
    var connection: String?
    var operation: String
}

final class ClientInfoBox: Sendable {
    private let value = NIOLockedValueBox<MCP.Client.Info?>(nil)
    func set(_ info: MCP.Client.Info) { value.withLockedValue { $0 = info } }
    var info: MCP.Client.Info? { value.withLockedValue { $0 } }
}

extension MCPEndpoint {
    func makeServer(sessionID: String) async throws -> (Server, StatefulHTTPServerTransport) {
        // Host and Origin are not checked: every request must carry a bearer token, which a page
        // that rebinds a name to this address cannot have.
        let transport = StatefulHTTPServerTransport(
            sessionIDGenerator: FixedSessionID(id: sessionID),
            validationPipeline: StandardValidationPipeline(validators: [
                AcceptHeaderValidator(mode: .sseRequired), ContentTypeValidator(), ProtocolVersionValidator(), SessionValidator(),
            ]),
            logger: logger)
        let server = Server(
            name: "gatehouse", version: "1.0",
            instructions: "Gatehouse: the company's databases, APIs and tools, under your identity. Every call is recorded; state your intent.",
            capabilities: .init(tools: .init(listChanged: false)))
        let clientInfo = ClientInfoBox()
        await server.withMethodHandler(ListTools.self) { [weak self] _ in
            guard let self else { throw MCPError.internalError("the gateway is stopping") }
            let caller = try await self.caller(session: sessionID, clientInfo: clientInfo)
            return .init(tools: self.tools(for: caller.principal))
        }
        await server.withMethodHandler(CallTool.self) { [weak self, weak server] params in
            guard let self else { throw MCPError.internalError("the gateway is stopping") }
            let caller = try await self.caller(session: sessionID, clientInfo: clientInfo)
            let current = server
            // Progress, in order, growing by one step per thing the call waits for.
            let (messages, queue) = AsyncStream<String>.makeStream()
            let notifier = params._meta?.progressToken.map { token in
                Task {
                    var step = 0.0
                    for await message in messages {
                        step += 1
                        try? await current?.notify(ProgressNotification.message(.init(progressToken: token, progress: step, message: message)))
                    }
                }
            }
            defer { queue.finish() }
            let progress: @Sendable (String) -> Void = { message in
                if notifier != nil { queue.yield(message) }
            }
            // Run as a task of its own, cancelled if the client's connection or the session goes.
            let requestID = Server.currentHandlerContext?.httpContext?.header(Self.requestHeader)
            let call = Task { try await self.call(params, caller: caller, progress: progress) }
            let release = self.calls.start(request: requestID, session: sessionID) { call.cancel() }
            defer { release() }
            return try await withTaskCancellationHandler { try await call.value } onCancel: { call.cancel() }
        }
        try await server.start(transport: transport) { info, _ in clientInfo.set(info) }
        return (server, transport)
    }

    func caller(session: String, clientInfo: ClientInfoBox) async throws -> Caller {
        let request = Server.currentHandlerContext?.httpContext
        guard let token = HTTPProxy.bearerToken(request?.header("Authorization")) else {
            throw MCPError.invalidRequest("Unauthorized")
        }
        let info = clientInfo.info
        let name = info.map { "\($0.name)/\($0.version)" } ?? "unknown"
        let client = ClientInfo(address: request?.header(Self.peerHeader), application: "mcp \(name)".truncated(toUTF8Bytes: 256).text)
        switch await verifier.verify(token, client: client) {
        case .failure:
            throw MCPError.invalidRequest("Unauthorized: \(TokenRejection.clientMessage)")
        case .success(let principal):
            return Caller(principal: principal, token: token, client: client, session: "mcp-" + session, clientName: info?.name ?? "unknown")
        }
    }

    // MARK: Listing

    func usable(_ principal: Principal) -> [MCPConnection] {
        settings.connections.filter { connection in
            connection.access.decide(for: principal).effect == .allow
                || reviews?.grants.grant(for: principal, connection: connection.name) != nil
        }
    }

    func tools(for principal: Principal) -> [Tool] {
        let mine = usable(principal)
        func names(_ kind: MCPConnection.Kind?) -> Value {
            .array(mine.filter { kind == nil || $0.kind == kind }.map { .string($0.name) })
        }
        func has(_ kind: MCPConnection.Kind) -> Bool { mine.contains { $0.kind == kind } }
        let intent: Value = ["type": "string", "description": "Why you are doing this, in a sentence; recorded next to what you did."]
        var tools = [
            Tool(name: "list_connections", description: "The databases, APIs and tools you may use through Gatehouse.",
                 inputSchema: ["type": "object", "properties": [:]], annotations: .init(readOnlyHint: true)),
            Tool(name: "describe_connection",
                 description: "What a connection holds: for PostgreSQL its tables and columns (masked columns marked), for HTTP and command connections the rules that apply.",
                 inputSchema: ["type": "object", "properties": ["connection": ["type": "string", "enum": names(nil)]], "required": ["connection"]],
                 annotations: .init(readOnlyHint: true)),
        ]
        if has(.postgres) {
            tools.append(Tool(
                name: "query",
                description: "Run SQL on a PostgreSQL connection as yourself. Results are masked and row-limited by policy; some statements wait for a person's approval.",
                inputSchema: ["type": "object", "properties": [
                    "connection": ["type": "string", "enum": names(.postgres)], "sql": ["type": "string"], "intent": intent,
                ], "required": ["connection", "sql"]]))
        }
        if has(.http) {
            tools.append(Tool(
                name: "http_request",
                description: "Call an internal HTTP API as yourself; the gateway adds the API's credential. Responses are masked by policy.",
                inputSchema: ["type": "object", "properties": [
                    "connection": ["type": "string", "enum": names(.http)],
                    "method": ["type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]],
                    "path": ["type": "string", "description": "Path on the API, starting with /, with any query string."],
                    "headers": ["type": "object", "additionalProperties": ["type": "string"]],
                    "body": ["type": "string"], "intent": intent,
                ], "required": ["connection", "method", "path"]]))
        }
        if has(.command) {
            tools.append(Tool(
                name: "run_command",
                description: "Run a configured command-line tool with your arguments (no shell); the gateway holds its credentials. Output is masked by policy.",
                inputSchema: ["type": "object", "properties": [
                    "connection": ["type": "string", "enum": names(.command)],
                    "args": ["type": "array", "items": ["type": "string"]], "stdin": ["type": "string"], "intent": intent,
                ], "required": ["connection", "args"]]))
        }
        if reviews != nil {
            tools.append(Tool(
                name: "review_status", description: "The state of a review (an operation or access waiting for a person's approval).",
                inputSchema: ["type": "object", "properties": ["review": ["type": "string"]], "required": ["review"]],
                annotations: .init(readOnlyHint: true)))
        }
        return tools
    }

    // MARK: Calling

    func call(_ params: CallTool.Parameters, caller: Caller, progress: @escaping @Sendable (String) -> Void) async throws -> CallTool.Result {
        let arguments = params.arguments ?? [:]
        let started = ContinuousClock.now
        let outcome: ToolOutcome
        do {
            switch params.name {
            case "list_connections": outcome = listConnections(caller)
            case "describe_connection": outcome = try await describeConnection(arguments, caller: caller)
            case "query": outcome = try await query(arguments, caller: caller, progress: progress)
            case "http_request": outcome = try await httpRequest(arguments, caller: caller, progress: progress)
            case "run_command": outcome = try await runCommand(arguments, caller: caller, progress: progress)
            case "review_status": outcome = try await reviewStatus(arguments, caller: caller)
            default: throw MCPError.invalidParams("no tool named \(params.name)")
            }
        } catch let problem as ToolProblem {
            outcome = ToolOutcome(
                structured: ["error": .string(problem.message)], summary: problem.message, isError: true,
                decision: .deny(rule: "mcp", reason: problem.message), connection: arguments["connection"]?.stringValue,
                operation: "\(params.name) (refused: \(problem.message))")
        } catch {
            // Not a tool result (an unknown tool, a call whose client left): recorded all the same.
            let why = error is CancellationError ? "the client left before the call ended" : "\(error)"
            auditLog.appendEventually(AuditRecord(
                node: settings.node, session: caller.session, principal: caller.principal, client: caller.client,
                connection: arguments["connection"]?.stringValue,
                operation: .init(kind: "mcp.call", text: "\(params.name) (\(why))".truncated(toUTF8Bytes: 4096).text),
                decision: .deny(rule: "mcp", reason: why), outcome: .init(status: "error", error: why)))
            throw error
        }
        let text = Self.encode(outcome.structured)
        // One event per tool call: who, what they said they were doing, what ran, what came back (masked).
        let payload = text.truncated(toUTF8Bytes: 64 * 1024)
        auditLog.appendEventually(AuditRecord(
            node: settings.node, session: caller.session, principal: caller.principal, client: caller.client, connection: outcome.connection,
            operation: .init(kind: "mcp.call", text: "\(params.name): \(outcome.operation)".truncated(toUTF8Bytes: 4096).text,
                             intent: arguments["intent"]?.stringValue.map { $0.truncated(toUTF8Bytes: 1024).text }),
            decision: outcome.decision,
            outcome: .init(status: outcome.isError ? "error" : "ok", bytes: Int64(text.utf8.count),
                           durationMicros: (ContinuousClock.now - started).inNanoseconds / 1000),
            payload: payload.text, payloadTruncated: payload.truncated ? true : nil))
        let structured: Value? = outcome.structured
        return CallTool.Result(content: [.text(text: outcome.summary + "\n" + text, annotations: nil, _meta: nil)], structuredContent: structured,
                               isError: outcome.isError)
    }

    struct ToolProblem: Error {
        var message: String
    }

    private func connection(_ arguments: [String: Value], _ kind: MCPConnection.Kind?, caller: Caller) throws -> MCPConnection {
        guard let name = arguments["connection"]?.stringValue else { throw ToolProblem(message: "'connection' is required") }
        guard let connection = usable(caller.principal).first(where: { $0.name == name && (kind == nil || $0.kind == kind) }) else {
            throw ToolProblem(message: "no \(kind.map { "\($0.rawValue) " } ?? "")connection named \(name) that you may use")
        }
        return connection
    }

    private func string(_ arguments: [String: Value], _ key: String, required: Bool = true) throws -> String? {
        guard let value = arguments[key] else {
            if required { throw ToolProblem(message: "'\(key)' is required") }
            return nil
        }
        guard let text = value.stringValue else { throw ToolProblem(message: "'\(key)' must be a string") }
        return text
    }

    func listConnections(_ caller: Caller) -> ToolOutcome {
        let list: [Value] = usable(caller.principal).map { connection in
            var object: [String: Value] = ["name": .string(connection.name), "type": .string(connection.kind.rawValue)]
            if let description = connection.description { object["description"] = .string(description) }
            return .object(object)
        }
        return ToolOutcome(structured: ["connections": .array(list)], summary: "\(list.count) connection(s)", isError: false,
                           decision: .allow(rule: "mcp", reason: "listing"), connection: nil, operation: "list")
    }

    func describeConnection(_ arguments: [String: Value], caller: Caller) async throws -> ToolOutcome {
        let connection = try connection(arguments, nil, caller: caller)
        let masks = settings.policy.masks(principal: caller.principal, connection: connection.name)
        var result: [String: Value] = ["name": .string(connection.name), "type": .string(connection.kind.rawValue)]
        if let description = connection.description { result["description"] = .string(description) }
        let detectors = Set(masks.flatMap { $0.action.detectors.map(\.rawValue) }).sorted()
        if !detectors.isEmpty { result["masked_values"] = .string("values that look like \(detectors.joined(separator: ", ")) are masked") }
        let rules = settings.policy.rules.filter { ($0.connections.isEmpty || $0.connections.contains(connection.name)) && $0.who.mismatch(caller.principal) == nil }
        switch connection.kind {
        case .postgres:
            let sql = """
                SELECT coalesce(json_agg(json_build_array(table_schema, table_name, column_name, data_type) \
                ORDER BY table_schema, table_name, ordinal_position), '[]') FROM information_schema.columns \
                WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
                """
            let outcome = try await runSQL(sql, connection: connection.name, caller: caller, progress: { _ in })
            if let error = outcome.error { throw ToolProblem(message: "the catalog could not be read: \(error.message ?? "error")") }
            let json = outcome.statements.first?.rows.first?.first ?? "[]"
            let columns = (try? JSONSerialization.jsonObject(with: Data((json ?? "[]").utf8))) as? [[String]] ?? []
            var tables: [String: [Value]] = [:]
            var order: [String] = []
            for column in columns where column.count == 4 {
                let table = column[0] == "public" ? column[1] : "\(column[0]).\(column[1])"
                if tables[table] == nil { order.append(table) }
                var entry: [String: Value] = ["name": .string(column[2]), "type": .string(column[3])]
                if let rule = masks.first(where: { $0.action.columns.contains { $0.matches(schema: column[0], table: column[1], column: column[2]) } }) {
                    entry["masked"] = .bool(true)
                    entry["mask_rule"] = .string(rule.rule)
                }
                tables[table, default: []].append(.object(entry))
            }
            result["tables"] = .array(order.map { .object(["name": .string($0), "columns": .array(tables[$0] ?? [])]) })
        case .http:
            result["rules"] = .array(rules.filter { $0.http != nil }.map { rule in
                .object(["rule": .string(rule.name), "effect": .string(rule.effect.rawValue),
                         "methods": .array((rule.http?.methods.sorted() ?? []).map { .string($0) }),
                         "paths": .array((rule.http?.paths ?? []).map { .string($0.text) })])
            })
        case .command:
            result["rules"] = .array(rules.filter { $0.command != nil }.map { rule in
                .object(["rule": .string(rule.name), "effect": .string(rule.effect.rawValue),
                         "args": .array((rule.command?.patterns ?? []).map { .string($0.text) })])
            })
        }
        return ToolOutcome(structured: .object(result), summary: "connection \(connection.name)", isError: false,
                           decision: .allow(rule: "mcp", reason: "describe"), connection: connection.name, operation: "describe \(connection.name)")
    }

    func query(_ arguments: [String: Value], caller: Caller, progress: @escaping @Sendable (String) -> Void) async throws -> ToolOutcome {
        let connection = try connection(arguments, .postgres, caller: caller)
        guard let sql = try string(arguments, "sql"), !sql.isEmpty else { throw ToolProblem(message: "'sql' must not be empty") }
        // The wire carries SQL as a C string: a NUL would run less than what is recorded.
        guard !sql.utf8.contains(0) else { throw ToolProblem(message: "'sql' must not contain a NUL character") }
        var text = sql
        if let intent = try string(arguments, "intent", required: false) {
            // The gateway reads a leading intent comment; what opens or closes a comment (they
            // nest in PostgreSQL) cannot be in it.
            let flat = String(intent.unicodeScalars.map { $0 == "\n" || $0 == "\r" || $0 == "\u{0}" ? " " : Character($0) })
            let clean = flat.replacingOccurrences(of: "*/", with: "* /").replacingOccurrences(of: "/*", with: "/ *").truncated(toUTF8Bytes: 500).text
            text = "/* intent: \(clean) */ " + sql
        }
        let outcome = try await runSQL(text, connection: connection.name, caller: caller, progress: progress)
        var result: [String: Value] = [
            "connection": .string(connection.name),
            "statements": .array(outcome.statements.map { statement in
                .object([
                    "columns": .array(statement.columns.map { .string($0) }),
                    "rows": .array(statement.rows.map { row in .array(row.map { $0.map { .string($0) } ?? .null }) }),
                    "command_tag": statement.tag.map { .string($0) } ?? .null,
                ])
            }),
        ]
        if outcome.truncated { result["truncated"] = .string("more rows came than a tool result carries (\(settings.maxResultRows) rows, \(settings.maxResultBytes) bytes)") }
        if !outcome.notices.isEmpty { result["notices"] = .array(outcome.notices.map { .string($0) }) }
        var decision = Decision.allow(rule: "mcp", reason: "run through the PostgreSQL gateway")
        var summary = outcome.statements.last?.tag ?? "done"
        if let error = outcome.error {
            result["error"] = .object([
                "sqlstate": .string(error.sqlState ?? ""), "message": .string(error.message ?? ""),
                "detail": error.detail.map { .string($0) } ?? .null, "hint": error.hint.map { .string($0) } ?? .null,
            ])
            summary = "ERROR \(error.sqlState ?? ""): \(error.message ?? "")"
            if error.sqlState == "42501" || error.sqlState == "54000" {
                decision = .deny(rule: error.detail ?? "policy", reason: error.message ?? "refused")
            }
        }
        return ToolOutcome(structured: .object(result), summary: summary, isError: outcome.error != nil, decision: decision,
                           connection: connection.name, operation: "\(connection.name): \(sql)")
    }

    private func runSQL(
        _ sql: String, connection: String, caller: Caller, progress: @escaping @Sendable (String) -> Void
    ) async throws -> LoopbackPostgres.Outcome {
        guard let host = settings.postgresHost, let port = ports.get("postgres") else {
            throw ToolProblem(message: "this gateway does not serve PostgreSQL")
        }
        let client = LoopbackPostgres(host: host, port: port, tls: settings.postgresTLS)
        do {
            return try await client.run(
                connection: connection, user: caller.principal.subject, token: caller.token, application: "mcp \(caller.clientName)",
                sql: sql, maxRows: settings.maxResultRows, maxBytes: settings.maxResultBytes, deadline: settings.callTimeout,
                onNotice: { fields in
                    if let message = fields.message, message.hasPrefix("waiting for approval") { progress(message) }
                })
        } catch let failure as LoopbackPostgres.Failure {
            switch failure {
            case .refused(let fields): throw ToolProblem(message: fields.message ?? "refused")
            case .connection(let reason): throw ToolProblem(message: reason)
            }
        }
    }

    func httpRequest(_ arguments: [String: Value], caller: Caller, progress: @escaping @Sendable (String) -> Void) async throws -> ToolOutcome {
        let connection = try connection(arguments, .http, caller: caller)
        let method = (try string(arguments, "method") ?? "GET").uppercased()
        guard ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].contains(method) else { throw ToolProblem(message: "method \(method) is not offered") }
        guard let path = try string(arguments, "path"), path.hasPrefix("/") else { throw ToolProblem(message: "'path' must start with /") }
        var request = HTTPClientRequest(url: try loopbackURL() + "/c/" + connection.name + path)
        request.method = HTTPMethod(rawValue: method)
        let hopByHop: Set<String> = ["authorization", "host", "connection", "content-length", "transfer-encoding", "gatehouse-session", "gatehouse-intent"]
        for (name, value) in arguments["headers"]?.objectValue ?? [:] {
            guard let value = value.stringValue else { throw ToolProblem(message: "header \(name) must be a string") }
            if !hopByHop.contains(name.lowercased()) { request.headers.add(name: name, value: value) }
        }
        request.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(caller.token)")
        request.headers.replaceOrAdd(name: "User-Agent", value: caller.client.application ?? "mcp")
        request.headers.replaceOrAdd(name: "Gatehouse-Session", value: caller.session)
        if let intent = try string(arguments, "intent", required: false) {
            request.headers.replaceOrAdd(name: "Gatehouse-Intent", value: intent.truncated(toUTF8Bytes: 1024).text.replacingOccurrences(of: "\n", with: " "))
        }
        if let body = try string(arguments, "body", required: false) { request.body = .bytes(ByteBuffer(string: body)) }
        let watcher = reviewWatcher(caller: caller, progress: progress)
        defer { watcher.cancel() }
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await loopbackClient.execute(request, timeout: .nanoseconds(settings.callTimeout.inNanoseconds))
            body = try await response.body.collect(upTo: settings.maxResultBytes + 1)
        } catch let error as NIOTooManyBytesError {
            _ = error
            throw ToolProblem(message: "the response is larger than a tool result carries (\(settings.maxResultBytes) bytes)")
        } catch {
            try Task.checkCancellation()
            throw ToolProblem(message: "the gateway's HTTP listener could not be reached")
        }
        let text = String(buffer: body)
        let status = Int(response.status.code)
        var headers: [String: Value] = [:]
        for header in response.headers where ["content-type", "location", "etag", "retry-after"].contains(header.name.lowercased()) {
            headers[header.name.lowercased()] = .string(header.value)
        }
        let structured: Value = ["status": .int(status), "headers": .object(headers), "body": .string(text)]
        let refused = status == 401 || status == 403
        let problem = refused ? ((try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]) : nil
        let decision = refused
            ? Decision.deny(rule: problem?["rule"] as? String ?? "policy", reason: problem?["detail"] as? String ?? "refused")
            : .allow(rule: "mcp", reason: "run through the HTTP gateway")
        return ToolOutcome(structured: structured, summary: "HTTP \(status)", isError: status >= 400, decision: decision,
                           connection: connection.name, operation: "\(connection.name): \(method) \(path)")
    }

    func runCommand(_ arguments: [String: Value], caller: Caller, progress: @escaping @Sendable (String) -> Void) async throws -> ToolOutcome {
        let connection = try connection(arguments, .command, caller: caller)
        guard let args = arguments["args"]?.arrayValue else { throw ToolProblem(message: "'args' must be an array of strings") }
        let strings = try args.map { value -> String in
            guard let text = value.stringValue else { throw ToolProblem(message: "'args' must be an array of strings") }
            return text
        }
        var body: [String: Any] = ["args": strings]
        if let stdin = try string(arguments, "stdin", required: false) { body["stdin"] = stdin }
        if let intent = try string(arguments, "intent", required: false) { body["intent"] = intent }
        var request = HTTPClientRequest(url: try loopbackURL() + "/c/" + connection.name + "/exec")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(caller.token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: caller.client.application ?? "mcp")
        request.headers.add(name: "Gatehouse-Session", value: caller.session)
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        let watcher = reviewWatcher(caller: caller, progress: progress)
        defer { watcher.cancel() }
        let response: HTTPClientResponse
        let answer: ByteBuffer
        do {
            response = try await loopbackClient.execute(request, timeout: .nanoseconds(settings.callTimeout.inNanoseconds))
            answer = try await response.body.collect(upTo: 128 << 20)
        } catch {
            try Task.checkCancellation()
            throw ToolProblem(message: "the gateway's HTTP listener could not be reached")
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(answer.readableBytesView))) as? [String: Any] ?? [:]
        var structured = (try? JSONDecoder().decode(Value.self, from: Data(answer.readableBytesView))) ?? .object([:])
        // One tool result carries at most maxResultBytes of output; the rest is cut and said.
        if var fields = structured.objectValue {
            let half = settings.maxResultBytes / 2
            for key in ["stdout", "stderr"] {
                if let text = fields[key]?.stringValue, text.utf8.count > half {
                    fields[key] = .string(text.truncated(toUTF8Bytes: half).text)
                    fields["truncated"] = .string("the output is longer than a tool result carries (\(settings.maxResultBytes) bytes)")
                }
            }
            structured = .object(fields)
        }
        let status = Int(response.status.code)
        let commandLine = strings.joined(separator: " ")
        guard status == 200 else {
            let detail = object["detail"] as? String ?? "HTTP \(status)"
            return ToolOutcome(structured: structured, summary: "refused: \(detail)", isError: true,
                               decision: .deny(rule: object["rule"] as? String ?? "policy", reason: detail),
                               connection: connection.name, operation: "\(connection.name): \(commandLine)")
        }
        let exitCode = object["exit_code"] as? Int
        let failed = exitCode != 0 || object["timed_out"] as? Bool == true || object["output_truncated"] as? Bool == true
        let summary = exitCode.map { "exit \($0)" } ?? (object["error"] as? String ?? "ended")
        return ToolOutcome(structured: structured, summary: summary, isError: failed,
                           decision: .allow(rule: "mcp", reason: "run through the command gateway"),
                           connection: connection.name, operation: "\(connection.name): \(commandLine)")
    }

    func reviewStatus(_ arguments: [String: Value], caller: Caller) async throws -> ToolOutcome {
        guard let id = try string(arguments, "review"), let reviews, let review = await reviews.review(id),
              ReviewEligibility.canSee(review, caller.principal, approverGroups: reviews.settings.approverGroups) else {
            throw ToolProblem(message: "no review \(arguments["review"]?.stringValue ?? "") that you may see")
        }
        var result: [String: Value] = [
            "id": .string(review.id), "state": .string(review.state.rawValue), "connection": .string(review.connection),
            "operation": .string(review.operation), "approvals": .int(review.approvals.count), "approvals_required": .int(review.approvalsRequired),
            "expires_at": .string(ISO8601DateFormatter().string(from: review.expiresAt)),
        ]
        if let reason = review.closeReason { result["close_reason"] = .string(reason) }
        return ToolOutcome(structured: .object(result), summary: "review \(review.id) is \(review.state.rawValue)", isError: false,
                           decision: .allow(rule: "mcp", reason: "review status"), connection: review.connection, operation: "review \(review.id)")
    }

    /// While an HTTP request or command run waits, its review appears on the board under this MCP
    /// session: the caller hears of it (its id, how to approve) as progress.
    private func reviewWatcher(caller: Caller, progress: @escaping @Sendable (String) -> Void) -> Task<Void, Never> {
        guard let reviews else { return Task {} }
        let session = HTTPProxy.sessionID(token: caller.token, label: caller.session)
        return Task {
            var told: Set<String> = []
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                for review in await reviews.pending(session: session) where !told.contains(review.id) {
                    told.insert(review.id)
                    progress("waiting for approval: review \(review.id), approve with `gatehouse reviews approve \(review.id)`")
                }
            }
        }
    }

    private func loopbackURL() throws -> String {
        guard let port = ports.get("http") else { throw ToolProblem(message: "the gateway's HTTP listener is not running") }
        let host = settings.httpHost.contains(":") ? "[\(settings.httpHost)]" : settings.httpHost
        return (settings.httpTLS ? "https://" : "http://") + "\(host):\(port)"
    }

    static func encode(_ value: Value) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

import Audit
import SQLInspection
import Foundation
import GatehouseCore
import Identity
import Logging
import Masking
import NIOCore
import NIOPosix
import NIOSSL
import Policy
import PostgresWire
import Reviews

/// One client connection: TLS negotiation, token authentication, the upstream login with the
/// gateway's own credentials, then relaying in both directions while every statement is recorded
/// before it is forwarded. Lives on the client channel's event loop; the upstream channel uses the
/// same loop, so no state is shared across threads.
final class ClientSession: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ClientInbound
    typealias OutboundOut = ByteBuffer

    private enum State {
        case awaitingStartup
        case awaitingPassword(StartupMessage)
        case authenticating
        case connectingUpstream
        case upstreamLogin(UpstreamLogin)
        /// Reading the database's catalog for column masks before the client is told it is ready.
        case loadingCatalog(ready: PostgresFrame, snapshot: CatalogSnapshot)
        case relaying
        case closed
    }

    private struct UpstreamLogin {
        var scram: SCRAMSHA256Client?
        /// Set once the server's SCRAM signature checked out.
        var serverVerified = false
    }

    private let environment: SessionEnvironment
    private let logger: Logger
    private var state = State.awaitingStartup
    private var context: ChannelHandlerContext?
    private var usesTLS = false

    private let sessionID = UUID().uuidString.lowercased()
    private var client = ClientInfo()
    private var principal: Principal?
    private var target: UpstreamTarget?
    /// Why this principal may use this connection; every statement event carries it.
    private var accessDecision = Decision.allow()
    private var upstream: Channel?
    private var cancelKey: CancelRegistry.Key?
    private var startupParameters: [StartupParameter] = []

    /// Client frames wait here while the one ahead of them is held (inspected off the loop, its
    /// request event being committed, or waiting for a review); order is preserved and the client
    /// is not read from until the queue drains.
    private var pending: [PostgresFrame] = []
    /// True while a frame is held and later ones queue behind it.
    private var holdingInput = false
    /// `application_name = 'intent: ...'`: the intent of every statement that states none itself.
    /// Follows `SET application_name` through the server's ParameterStatus reports.
    private var applicationIntent: String?
    /// Back-pressure: a slow reader on either side stops reading from the other, so a large result
    /// or COPY streams through with bounded memory instead of piling up in the gateway.
    private var upstreamWritable = true
    private var clientReading = true

    /// Extended protocol: what each prepared statement and portal will run, for the trail, and
    /// what the policy said about it.
    private struct Prepared {
        var sql: String
        var parameterTypes: [UInt32]
        var controls: StatementControls
        /// Tells a redefinition after a Close apart from the statement the Close removes.
        var generation = 0
    }

    /// The mask rules for this principal on this connection, and the catalog they are resolved in.
    private var masks: [NamedMask] = []
    private var catalog: CatalogSnapshot?
    /// Closes of prepared statements sent and not yet confirmed, by name and the generation
    /// they close: a Parse of the same name behind them defines a new statement.
    private var pendingCloses: [String: Int] = [:]
    /// The record a Parse replaced behind a pending Close, restored if that Parse fails.
    private var superseded: [String: Prepared] = [:]
    /// Between the server's CopyInResponse and the client's CopyDone or CopyFail: the server
    /// ignores Sync then, and takes nothing but copy data.
    private var copyingIn = false
    private var nextGeneration = 0
    /// The mask plan of each statement whose rows are passing, by statement id.
    private var maskPlans: [Int: ResultMaskPlan?] = [:]
    /// A mask rule lets the trail keep the unmasked rows, sealed: the first rows of each
    /// statement as the database sent them, by statement id.
    private var keepsUnmasked = false
    private var unmaskedRows: [Int: [[String?]]] = [:]

    private var statements: [String: Prepared] = [:]
    /// Statements prepared with SQL (`PREPARE name AS …`), so an `EXECUTE name` is decided as what
    /// it runs.
    private var sqlPrepared: [String: SQLStatement] = [:]
    /// Cursors declared with SQL, so a FETCH is decided and masked as the query it reads from.
    private var sqlCursors: [String: SQLStatement] = [:]
    /// Statements the policy refused, by id: the server's error for the stand-in that was sent in
    /// their place is replaced by this one.
    private var refusals: [Int: Refusal] = [:]
    private struct Portal {
        var formats: [Int16]
        var controls: StatementControls
        /// The statement id whose request event (recorded at Bind) covers this portal's executions.
        var statementID: Int
    }

    private var portals: [String: Portal] = [:]
    /// The review the statement at the head of the queue waits for.
    private var heldReview: String?
    /// The access review whose grant admitted this session: revoked, the session ends.
    private var grantReview: String?
    /// Rows passed to the client per statement (all executions of a portal count together).
    private var rowsSent: [Int: Int] = [:]
    /// Rows passed to the client per SQL cursor: paging through a cursor with FETCH is one read.
    private var cursorRowsSent: [String: Int] = [:]
    /// A result being stopped at its row limit.
    private var cut: RowLimitCut?
    /// The gateway is stopping: nothing more is read from the client, and the session ends once
    /// what it already sent is answered.
    private var stopping = false
    /// The last client message relayed ended what the server answers as a whole (a Query, a
    /// Sync, a function call, the end of COPY data): nothing the client began waits for more input.
    private var atMessageBoundary = true
    /// Statements answered in this read, with their request events' sequence numbers: their
    /// result events are built after the answer is flushed to the client.
    private var outcomesToRecord: [(StatementTracker.Outcome, Int64)] = []
    /// Server messages held after a cut until the cancel sent for it has arrived.
    private var heldUntilCancelled: [PostgresFrame]?
    private var heldReady: PostgresFrame?
    private var tracker: StatementTracker
    private var nextStatementID = 0
    /// Request events committed whose statements have not finished yet, by statement id.
    private var committedSeqs: [Int: Int64] = [:]
    /// Statements that finished before their request event was committed.
    private var finishedBeforeCommit: [Int: StatementTracker.Outcome] = [:]

    private let loginState: LoginState
    static let refusedStartupParameters: Set<String> = ["options", "role", "session_authorization", "replication"]

    /// What goes upstream: the client's settings, minus its own identity, with the text encoding
    /// pinned to UTF-8 so the server runs exactly the text the gateway recorded, and standard
    /// conforming strings on, the way the gateway's SQL parser reads backslashes in literals.
    static func upstreamParameters(_ parameters: [StartupParameter]) -> [StartupParameter] {
        let pinned = ["client_encoding": "UTF8", "standard_conforming_strings": "on"]
        return parameters.filter { !["user", "database"].contains($0.name.lowercased()) && pinned[$0.name.lowercased()] == nil }
            + pinned.sorted { $0.key < $1.key }.map { StartupParameter(name: $0.key, value: $0.value) }
    }

    /// Prepared statements (and, separately, named portals) one session may hold in the gateway's memory.
    static let maxPreparedStatements = 10_000
    /// How long a client may take from connecting to being ready for queries.
    static let loginDeadline = TimeAmount.seconds(30)
    /// How long a refused client gets to read its error before the connection is cut anyway.
    static let closeDeadline = TimeAmount.seconds(5)

    init(environment: SessionEnvironment, login: LoginState, logger: Logger) {
        self.environment = environment
        self.loginState = login
        self.tracker = StatementTracker(maxRecordedRows: environment.settings.maxRecordedRows)
        var logger = logger
        logger[metadataKey: "session"] = "\(sessionID)"
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        client.address = context.channel.remoteAddress.map(peerDescription)
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.loginDeadline) {
            switch self.state {
            case .relaying, .closed: break
            default: self.fatal(sqlState: "08006", message: "login did not complete in time")
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        close(reason: "client disconnected")
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is GatewayStopping else { return context.fireUserInboundEventTriggered(event) }
        stopping = true
        // A client that keeps sending (pipelining, batches) would otherwise never be idle.
        updateClientReading()
        endIfStoppingAndIdle()
    }

    /// A stopping gateway lets each session finish what it has started, so a statement in flight
    /// (or one whose review was just closed) gets its own answer, then ends it the way PostgreSQL
    /// ends sessions when it shuts down.
    private func endIfStoppingAndIdle() {
        guard stopping else { return }
        switch state {
        case .closed: return
        case .relaying:
            guard heldReview == nil, !holdingInput, pending.isEmpty, tracker.inFlight == 0,
                  heldUntilCancelled == nil, heldReady == nil else { return }
        default: break
        }
        fatal(sqlState: "57P01", message: "terminating connection because the gateway is shutting down")
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Malformed or oversized input ends this one session, with a reason, never the process.
        let message = (error as? PostgresWireError)?.description ?? "protocol error"
        fatal(sqlState: "08P01", message: message)
    }

    // MARK: - Client input

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .startup(let packet):
            handleStartup(packet, context: context)
        case .frame(let frame):
            handleFrame(frame)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        upstream?.flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        if let upstream {
            upstream.setOption(ChannelOptions.autoRead, value: writable).whenComplete { _ in }
            if writable { upstream.read() }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Called by the upstream handler when the database stops (or resumes) taking our writes.
    func upstreamWritabilityChanged(_ writable: Bool, channel: Channel) {
        guard isCurrentUpstream(channel) else { return }
        upstreamWritable = writable
        updateClientReading()
    }

    private func updateClientReading() {
        guard let context else { return }
        // Stopping, the client is still read up to the end of what it has begun (an extended-protocol
        // batch up to its Sync, COPY data up to its end), so what is in flight can be answered.
        let shouldRead = !holdingInput && upstreamWritable && !(stopping && atMessageBoundary && !copyingIn)
        guard shouldRead != clientReading else { return }
        clientReading = shouldRead
        context.channel.setOption(ChannelOptions.autoRead, value: shouldRead).whenComplete { _ in }
        if shouldRead { context.read() }
    }

    private func handleStartup(_ packet: StartupPacket, context: ChannelHandlerContext) {
        guard case .awaitingStartup = state else {
            return fatal(sqlState: "08P01", message: "unexpected startup packet")
        }
        switch packet {
        case .sslRequest:
            guard !usesTLS, let tls = environment.settings.tls else {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "N")), promise: nil)
                return
            }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "S")), promise: nil)
            // Added in front of the decoder: the client sends its TLS hello only after reading "S".
            do {
                try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
                usesTLS = true
            } catch {
                fatal(sqlState: "08P01", message: "TLS could not be started")
            }
        case .gssEncRequest:
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "N")), promise: nil)
        case .cancel(let processID, let secretKey):
            forwardCancel(CancelRegistry.Key(processID: processID, secretKey: secretKey))
            context.close(promise: nil)
            state = .closed
        case .startup(let message):
            if environment.settings.requireTLS && !usesTLS {
                return fatal(sqlState: "28000", message: "this gateway requires TLS (sslmode=require)")
            }
            if message["replication"].map({ $0 != "false" && $0 != "0" }) ?? false {
                return fatal(sqlState: "0A000", message: "replication connections are not supported through the gateway")
            }
            // These would change who the session runs as, or set arbitrary server options, behind
            // the trail's back; the same settings made with SQL are recorded like any statement.
            if let refused = message.parameters.first(where: { Self.refusedStartupParameters.contains($0.name.lowercased()) }) {
                return fatal(sqlState: "08P01", message: "startup parameter \(refused.name) is not allowed through the gateway; use SET after connecting")
            }
            client.application = message["application_name"].map { $0.truncated(toUTF8Bytes: 256).text }
            applicationIntent = message["application_name"].flatMap(Self.intent(inApplicationName:))
            var buffer = context.channel.allocator.buffer(capacity: 64)
            // Newer clients may ask for protocol 3.x or `_pq_.` extensions; the gateway speaks 3.0
            // and says so, rather than failing the connection.
            let extensions = message.parameters.filter { $0.name.hasPrefix("_pq_.") }
            var message = message
            if message.minorVersion > 0 || !extensions.isEmpty {
                PostgresEncoder.negotiateProtocolVersion(newestMinorVersion: 0, unrecognizedOptions: extensions.map(\.name), into: &buffer)
                message.parameters.removeAll { $0.name.hasPrefix("_pq_.") }
            }
            state = .awaitingPassword(message)
            PostgresEncoder.backend(.authentication(.cleartextPassword), into: &buffer)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
    }

    private func handleFrame(_ frame: PostgresFrame) {
        switch state {
        case .awaitingPassword(let startup):
            guard frame.type == UInt8(ascii: "p"), let token = try? FrontendMessage.parsePasswordMessage(frame.body) else {
                return fatal(sqlState: "08P01", message: "expected a password message carrying the token")
            }
            state = .authenticating
            authenticate(token: token, startup: startup)
        case .relaying:
            if holdingInput {
                pending.append(frame)
            } else {
                relay(frame)
            }
        case .closed:
            break
        default:
            fatal(sqlState: "08P01", message: "unexpected message before the session was ready")
        }
    }

    // MARK: - Authentication and upstream login

    private func authenticate(token: String, startup: StartupMessage) {
        guard let context else { return }
        let environment = self.environment
        let client = self.client
        let database = startup["database"] ?? startup["user"] ?? ""
        let sessionID = self.sessionID
        let applicationIntent = self.applicationIntent
        context.eventLoop.makeFutureWithTask { () -> Result<(Principal, UpstreamTarget, Decision, Date?), SessionRefusal> in
            let verified = await environment.verifier.verify(token, client: client)
            let refusal: SessionRefusal
            switch verified {
            case .failure(let rejection):
                refusal = SessionRefusal(sqlState: "28P01", message: TokenRejection.clientMessage, principal: nil,
                                         decision: .deny(rule: "identity", reason: rejection.description), errorCode: rejection.reason.rawValue)
            case .success(let principal):
                guard let target = environment.settings.connections[database] else {
                    refusal = SessionRefusal(sqlState: "3D000", message: "connection \"\(Self.printable(database))\" is not configured on this gateway",
                                             principal: principal, decision: .deny(rule: "connection", reason: "unknown connection"), errorCode: "3D000")
                    break
                }
                var decision = target.access.decide(for: principal)
                var grantEnds: Date?
                if decision.effect != .allow, let grant = environment.reviews?.grants.grant(for: principal, connection: target.name) {
                    decision = grant.decision
                    grantEnds = grant.expiresAt
                }
                guard decision.effect == .allow else {
                    let ask = environment.reviews == nil || principal.agent != nil
                        ? "" : "; ask for time-boxed access with `gatehouse access request \(target.name) --minutes N`"
                    refusal = SessionRefusal(sqlState: "42501", message: "\(principal.subject) may not use connection \(target.name)\(ask)",
                                             principal: principal, decision: decision, errorCode: "42501")
                    break
                }
                do {
                    let settings = Self.upstreamParameters(startup.parameters).map { "\($0.name)=\($0.value)" }.joined(separator: " ")
                    _ = try await environment.auditLog.append(Self.connectRecord(
                        environment, sessionID, principal, client, target.name, decision, settings: settings, intent: applicationIntent))
                } catch {
                    return .failure(SessionRefusal.auditUnavailable)
                }
                return .success((principal, target, decision, grantEnds))
            }
            // A refused attempt is recorded too; if even that cannot be written, the answer stays no.
            _ = try? await environment.auditLog.append(Self.connectRecord(
                environment, sessionID, refusal.principal, client, database.isEmpty ? nil : Self.printable(database), refusal.decision,
                outcome: .init(status: "refused", errorCode: refusal.errorCode)))
            return .failure(refusal)
        }.assumeIsolated().whenSuccess { result in
            // The session may have ended while the token was being checked (client gone, FATAL sent).
            guard case .authenticating = self.state else { return }
            switch result {
            case .failure(let refusal):
                PostgresMetrics.deniedSessions.increment()
                self.fatal(sqlState: refusal.sqlState, message: refusal.message)
            case .success(let (principal, target, decision, grantEnds)):
                PostgresMetrics.allowedSessions.increment()
                if let grantEnds {
                    // Access through a grant lasts as long as the grant, not as long as the session.
                    let rule = decision.rule ?? "grant"
                    self.grantReview = rule.hasPrefix("grant:") ? String(rule.dropFirst(6)) : nil
                    context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(max(0, grantEnds.timeIntervalSinceNow) * 1000))) {
                        self.fatal(sqlState: "42501", message: "access to connection \(target.name) through \(rule) has ended")
                    }
                }
                self.principal = principal
                self.target = target
                self.accessDecision = decision
                self.startupParameters = Self.upstreamParameters(startup.parameters)
                self.connectUpstream(target)
            }
        }
    }

    private func connectUpstream(_ target: UpstreamTarget) {
        guard let context else { return }
        state = .connectingUpstream
        // The database is trusted more than clients, but its frames are still bounded: by PostgreSQL's
        // own limit on one message.
        let maxFrame = max(environment.settings.maxFrameBytes, 1 << 30)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let tlsReady = context.eventLoop.makePromise(of: Void.self)
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(.seconds(10))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = target.tls {
                        try channel.pipeline.syncOperations.addHandler(UpstreamTLSNegotiator(tls: tls, ready: tlsReady))
                    } else {
                        tlsReady.succeed()
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(PostgresFrameDecoder(maximumFrameLength: maxFrame)))
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler(session: bound))
                }
            }
            .connect(host: target.host, port: target.port)
            .flatMap { channel in tlsReady.futureResult.map { channel } }
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    tlsReady.fail(error)
                    self.logger.warning("upstream connection failed", metadata: ["connection": "\(target.name)", "error": "\(error)"])
                    self.fatal(sqlState: "08006", message: "the database behind connection \(target.name) is unreachable")
                case .success(let channel):
                    guard case .connectingUpstream = self.state else {
                        channel.close(promise: nil)
                        return
                    }
                    self.upstream = channel
                    self.state = .upstreamLogin(UpstreamLogin())
                    var parameters = [StartupParameter(name: "user", value: target.username), StartupParameter(name: "database", value: target.database)]
                    parameters += self.startupParameters
                    var buffer = channel.allocator.buffer(capacity: 128)
                    PostgresEncoder.startup(StartupMessage(protocolVersion: 196_608, parameters: parameters), into: &buffer)
                    channel.writeAndFlush(buffer, promise: nil)
                }
            }
    }

    /// Server messages during the upstream login. Authentication requests are answered with the
    /// gateway's credential and never shown to the client; the rest of the startup (parameter
    /// status, key data, ready) is passed on, with the gateway's own cancel key.
    private func upstreamLoginMessage(_ frame: PostgresFrame, login: inout UpstreamLogin) {
        guard let upstream, let target, let context else { return }
        let message: BackendMessage
        do {
            message = try BackendMessage.parse(frame)
        } catch {
            return fatal(sqlState: "08P01", message: "the database sent a malformed message")
        }
        func password() -> String? {
            (try? target.password()) ?? nil
        }
        var reply = upstream.allocator.buffer(capacity: 128)
        switch message {
        case .authentication(.ok):
            // A server that began SCRAM must prove it knows the password before it is believed.
            if login.scram != nil && !login.serverVerified {
                return fatal(sqlState: "28000", message: "the database for connection \(target.name) failed to prove its identity")
            }
            var ok = context.channel.allocator.buffer(capacity: 9)
            PostgresEncoder.backend(.authentication(.ok), into: &ok)
            context.write(wrapOutboundOut(ok), promise: nil)
            return
        case .authentication(.cleartextPassword):
            guard let secret = password() else { return fatal(sqlState: "28000", message: "the gateway has no credential for connection \(target.name)") }
            PostgresEncoder.password(secret, into: &reply)
        case .authentication(.md5Password(let salt)):
            guard let secret = password() else { return fatal(sqlState: "28000", message: "the gateway has no credential for connection \(target.name)") }
            PostgresEncoder.password(MD5Authentication.response(user: target.username, password: secret, salt: salt), into: &reply)
        case .authentication(.sasl(let mechanisms)):
            guard mechanisms.contains(SCRAMSHA256Client.mechanism), let secret = password() else {
                return fatal(sqlState: "28000", message: "the database for connection \(target.name) asks for an unsupported login method")
            }
            var scram = SCRAMSHA256Client(password: secret)
            PostgresEncoder.saslInitialResponse(mechanism: SCRAMSHA256Client.mechanism, data: scram.clientFirstMessage(), into: &reply)
            login.scram = scram
        case .authentication(.saslContinue(let data)):
            guard var scram = login.scram, let final = try? scram.handleServerFirst(Array(buffer: data)) else {
                return fatal(sqlState: "28000", message: "the gateway could not log in to connection \(target.name)")
            }
            login.scram = scram
            PostgresEncoder.saslResponse(final, into: &reply)
        case .authentication(.saslFinal(let data)):
            // The server proves it knows the password too; a server that cannot is not the database.
            guard let scram = login.scram, (try? scram.verifyServerFinal(Array(buffer: data))) != nil else {
                return fatal(sqlState: "28000", message: "the database for connection \(target.name) failed to prove its identity")
            }
            login.serverVerified = true
            return
        case .authentication:
            return fatal(sqlState: "28000", message: "the database for connection \(target.name) asks for an unsupported login method")
        case .errorResponse(let fields):
            logger.warning("upstream login failed", metadata: ["connection": "\(target.name)", "sqlstate": "\(fields.sqlState ?? "")"])
            return fatal(sqlState: fields.sqlState ?? "28000", message: "the gateway could not log in to connection \(target.name)")
        case .backendKeyData(let processID, let secretKey):
            let key = environment.cancels.register(.init(
                host: target.host, port: target.port, processID: processID, secretKey: secretKey,
                session: sessionID, principal: principal, connection: target.name))
            cancelKey = key
            var buffer = context.channel.allocator.buffer(capacity: 13)
            PostgresEncoder.backend(.backendKeyData(processID: key.processID, secretKey: key.secretKey), into: &buffer)
            context.write(wrapOutboundOut(buffer), promise: nil)
            return
        case .readyForQuery:
            masks = environment.settings.policy.masks(principal: principal!, connection: target.name)
            keepsUnmasked = environment.settings.auditSeal != nil && masks.contains { $0.action.keepUnmaskedForAudit }
            if masks.contains(where: { !$0.action.columns.isEmpty }) {
                if let cached = environment.catalogs.fresh(target.name) {
                    catalog = cached
                } else {
                    // Column rules name tables and columns; results name table OIDs. The map
                    // between them is read once a minute per connection, before the client may
                    // run anything.
                    state = .loadingCatalog(ready: frame, snapshot: CatalogSnapshot())
                    var query = upstream.allocator.buffer(capacity: CatalogSnapshot.query.utf8.count + 6)
                    PostgresEncoder.frontend(.query(CatalogSnapshot.query), into: &query)
                    upstream.writeAndFlush(query, promise: nil)
                    return
                }
            }
            becomeReady(frame)
            return
        default:
            writeToClient(frame)
            return
        }
        upstream.writeAndFlush(reply, promise: nil)
    }

    private func becomeReady(_ ready: PostgresFrame) {
        state = .relaying
        loginState.loggedIn = true
        writeToClient(ready)
        context?.flush()
    }

    /// The catalog query's answer, during login.
    private func catalogMessage(_ frame: PostgresFrame, ready: PostgresFrame, snapshot: inout CatalogSnapshot) {
        guard let target else { return }
        switch frame.type {
        case UInt8(ascii: "D"):
            guard case .dataRow(let row)? = try? BackendMessage.parse(frame),
                  snapshot.add(row: row, patterns: columnPatterns(of: target.name)) else {
                return fatal(sqlState: "58000", message: "the gateway could not read the catalog it needs to mask columns")
            }
            if snapshot.tables.count + snapshot.maskable.count > CatalogSnapshot.maximumColumns {
                return fatal(sqlState: "54000", message: "the database's catalog is larger than the gateway reads for column masks")
            }
        case UInt8(ascii: "E"):
            logger.warning("catalog query for column masks failed", metadata: ["connection": "\(target.name)"])
            // Without the map, masked columns could not be recognised: no session.
            fatal(sqlState: "58000", message: "the gateway could not read the catalog it needs to mask columns")
        case UInt8(ascii: "Z"):
            environment.catalogs.store(snapshot, for: target.name)
            catalog = snapshot
            becomeReady(ready)
        default:
            break
        }
    }

    /// Every column pattern of every mask rule on the connection: the shared snapshot serves
    /// every principal.
    private func columnPatterns(of connection: String) -> [ColumnPattern] {
        environment.settings.policy.rules
            .filter { $0.effect == .mask && ($0.connections.isEmpty || $0.connections.contains(connection)) }
            .flatMap { $0.mask?.columns ?? [] }
    }

    // MARK: - Relaying

    /// Client → server. Statements are recorded in the audit trail before they are forwarded.
    private func relay(_ frame: PostgresFrame) {
        guard let upstream else { return }
        switch frame.type {
        case UInt8(ascii: "Q"), UInt8(ascii: "S"), UInt8(ascii: "F"), UInt8(ascii: "c"), UInt8(ascii: "f"): atMessageBoundary = true
        default: atMessageBoundary = false
        }
        // A grant's end is checked on the messages that run something (not on every COPY data
        // frame); the task scheduled at login closes the session when the grant runs out anyway.
        if let grantReview, Self.runsSomething(frame.type), environment.reviews?.grants.isActive(grantReview) != true {
            return fatal(sqlState: "42501", message: "access to connection \(target?.name ?? "") through grant:\(grantReview) has ended")
        }
        let now = ContinuousClock.now
        if copyingIn, ![UInt8(ascii: "d"), UInt8(ascii: "c"), UInt8(ascii: "f"), UInt8(ascii: "S"), UInt8(ascii: "H"), UInt8(ascii: "X")].contains(frame.type) {
            // The server would take it as a broken COPY and leave it unanswered; the gateway
            // could no longer tell which answer belongs to which statement.
            return fatal(sqlState: "08P01", message: "only COPY data may be sent during COPY FROM STDIN")
        }
        switch frame.type {
        case UInt8(ascii: "Q"):
            guard case .query(let sql) = try? FrontendMessage.parse(frame) else { return malformed() }
            inspectThen(sql) { inspection in self.relayQuery(frame, sql: sql, inspection: inspection, now: now) }
            return
        case UInt8(ascii: "P"):
            guard case .parse(let parse) = try? FrontendMessage.parse(frame) else { return malformed() }
            inspectThen(parse.query) { inspection in self.relayParse(frame, parse, inspection: inspection, now: now) }
            return
        case UInt8(ascii: "B"):
            guard case .bind(let bind) = try? FrontendMessage.parse(frame) else { return malformed() }
            let statement = statements[bind.statementName] ?? unknownPrepared(bind.statementName)
            let sql = statement.sql
            let parameters = bind.parameters.enumerated().map { index, value -> String? in
                let binary = bind.isBinary(parameter: index)
                let type = index < statement.parameterTypes.count ? statement.parameterTypes[index] : 0
                return value.map { binary ? BinaryValue.text($0, typeOID: type) : StatementTracker.text($0, binary: false) }
            }
            guard bind.portalName.isEmpty || portals[bind.portalName] != nil || portals.count < Self.maxPreparedStatements else {
                return fatal(sqlState: "54000", message: "too many open portals in this session (limit \(Self.maxPreparedStatements))")
            }
            // Recorded here, not at Execute: binding already runs code on the server (type input
            // functions, domain checks, planning), so nothing bound may reach it unrecorded.
            let controls = statement.controls
            if let decision = controls.decision, decision.effect == .review {
                // Held with its values: what is approved is this execution, not the statement. The
                // reviewer sees every value whole and the approval is bound to their exact bytes.
                guard let values = Self.reviewedValues(bind, parameterTypes: statement.parameterTypes) else {
                    return refuseBind(Refusal(decision: .deny(
                        rule: decision.rule,
                        reason: "this statement needs approval, and its values are too large to be shown to a reviewer (at most \(Self.maxReviewedValueBytes) bytes)")),
                        bind, sql: sql, parameters: parameters)
                }
                return hold(
                    decision, approval: controls.approval ?? controls.evaluation?.approval, text: sql, parameters: values.shown,
                    exactParameters: values.exact,
                    onRefused: { refusal in self.refuseBind(refusal, bind, sql: sql, parameters: parameters) },
                    onApproved: { approval in
                        var approved = controls
                        approved.decision = approval
                        self.forwardBind(frame, bind, sql: sql, parameters: parameters, controls: approved, now: .now)
                    })
            }
            forwardBind(frame, bind, sql: sql, parameters: parameters, controls: controls, now: now)
            return
        case UInt8(ascii: "E"):
            guard case .execute(let portalName, let maxRows) = try? FrontendMessage.parse(frame) else { return malformed() }
            if let portal = portals[portalName] {
                tracker.executeSent(.init(id: portal.statementID, started: now, resultFormats: portal.formats, controls: portal.controls))
                if let limit = portal.controls.rowLimit {
                    // Ask the server for no more than the limit and one row (the one that shows
                    // there are more): a cut then needs no cancel.
                    let allowed = Int32(clamping: max(limit.maxRows - rowsSent[portal.statementID, default: 0], 0) + 1)
                    if maxRows <= 0 || maxRows > allowed {
                        return writeToUpstream(PostgresFrame.frontend(.execute(portalName: portalName, maxRows: allowed), allocator: upstream.allocator), upstream: upstream)
                    }
                }
            } else {
                // A portal the gateway did not see bound (a cursor declared in SQL): recorded now,
                // and decided as the query the cursor was declared for.
                let cursor = sqlCursors[portalName]
                var controls = StatementControls(statement: cursor, evaluation: cursor.map { evaluate(.sql($0)) })
                controls.cursorName = portalName
                if let refusal = Refusal(controls.decision ?? evaluate(.sql(SQLStatement(text: "", utf8Range: 0..<0, kind: .unknown, writes: true))).decision) {
                    return refuse(refusal, statements: [("FETCH FROM PORTAL \"\(portalName)\"", nil)], kind: "sql.execute", now: now)
                }
                recordThenForward(frame, sql: "FETCH FROM PORTAL \"\(portalName)\"", parameters: nil, kind: "sql.execute", decision: controls.decision) { id in
                    self.tracker.executeSent(.init(id: id, started: now, controls: controls))
                }
                return
            }
        case UInt8(ascii: "C"):
            guard case .close(let target, let name) = try? FrontendMessage.parse(frame) else { return malformed() }
            // Forgotten when the server confirms it: a Close skipped after an error closes nothing.
            if target == .statement, let generation = statements[name]?.generation { pendingCloses[name] = generation }
            tracker.closeSent(target, name)
        case UInt8(ascii: "F"):
            // The fast-path function call runs a function by OID, without SQL: the gateway cannot
            // tell which, so the policy sees a statement it could not classify.
            let (oid, arguments) = Self.functionCall(frame.body)
            let text = "function call (oid \(oid))"
            let call = SQLStatement(text: text, utf8Range: 0..<0, kind: .unknown, writes: true)
            let evaluation = evaluate(.sql(call))
            if let refusal = Refusal(maskingRefusal([call]) ?? evaluation.decision) {
                return refuse(refusal, statements: [(text, arguments)], kind: "sql.function-call", now: now)
            }
            recordThenForward(frame, sql: text, parameters: arguments, kind: "sql.function-call", decision: evaluation.decision) { id in
                self.tracker.querySent(.init(id: id, started: now))
            }
            return
        case UInt8(ascii: "D"):
            guard case .describe(let target, let name) = try? FrontendMessage.parse(frame) else { return malformed() }
            // A portal's description is not kept: a portal can be a SQL cursor of the same name,
            // and its columns must not become those of the statement the gateway remembers.
            let box = target == .statement ? statements[name]?.controls.description : nil
            tracker.describeSent(box, injected: false)
        case UInt8(ascii: "d"):
            tracker.copyDataSent(bytes: frame.body.readableBytes)
        case UInt8(ascii: "c"), UInt8(ascii: "f"):
            copyingIn = false
        case UInt8(ascii: "S"):
            // During COPY FROM STDIN the server ignores a Sync: it gets no answer.
            if !copyingIn { tracker.syncSent() }
        case UInt8(ascii: "H"):
            break
        case UInt8(ascii: "X"):
            close(reason: "client terminated")
            return
        default:
            break
        }
        writeToUpstream(frame, upstream: upstream)
    }

    // MARK: - Policy

    private func evaluate(_ operation: Policy.Operation) -> PolicyEvaluation {
        environment.settings.policy.evaluate(principal: principal!, connection: target!.name, operation: operation)
    }

    /// Inspects SQL, then continues. Small texts (nearly all) are parsed right here; a large one is
    /// parsed off the event loop, with the session's later frames queued behind it in order.
    private func inspectThen(_ sql: String, _ body: @escaping (SQLInspection) -> Void) {
        guard sql.utf8.count > Self.inlineInspectionBytes, let context else { return body(SQLInspector.inspect(sql)) }
        holdingInput = true
        updateClientReading()
        context.eventLoop.makeFutureWithTask { SQLInspector.inspect(sql) }
            .assumeIsolated()
            .whenSuccess { inspection in
                guard case .relaying = self.state else { return }
                self.holdingInput = false
                body(inspection)
                if !self.holdingInput { self.drainPending() }
            }
    }

    /// A simple Query: each statement decided; one refused statement refuses the whole text (the
    /// server would otherwise run the ones before it).
    private func relayQuery(_ frame: PostgresFrame, sql: String, inspection: SQLInspection, now: ContinuousClock.Instant) {
        let (decided, evaluations, overall) = decide(inspection)
        let split = inspection.failure == nil && inspection.statements.count > 1
        let texts = split ? inspection.statements.map(\.text) : [sql]
        var controls = split
            ? zip(decided, evaluations).map { StatementControls(statement: $0, evaluation: $1) }
            : [StatementControls(statement: decided.count == 1 ? decided[0] : nil, evaluation: evaluations.count == 1 ? evaluations[0] : nil, decision: overall)]
        if split || inspection.statements.count == 1 {
            for (index, statement) in inspection.statements.enumerated() {
                controls[index].sessionEffect = Self.changesSessionState(statement) ? statement : nil
                if statement.kind == .cursor, statement.innerStatement == nil { controls[index].cursorName = statement.objectName }
            }
        }
        if overall.effect == .review {
            // An EXECUTE or FETCH is decided as what it runs: the reviewer sees that too.
            let resolved = zip(inspection.statements, decided).compactMap { original, runs -> String? in
                original.text == runs.text ? nil : "\n-- \(Self.printable(String(original.text.prefix(60)))) runs: \(runs.text)"
            }.joined()
            return hold(
                overall, approval: SQLPolicyEvaluation(statements: evaluations).approval, text: sql, parameters: nil,
                resolved: resolved.isEmpty ? nil : resolved,
                onRefused: { refusal in self.refuse(refusal, statements: texts.map { ($0, nil) }, kind: "sql.query", now: .now) },
                onApproved: { approval in
                    for index in controls.indices where controls[index].decision?.effect == .review { controls[index].decision = approval }
                    self.forwardQuery(frame, texts: texts, controls: controls, now: .now)
                })
        }
        if let refusal = Refusal(overall) {
            return refuse(refusal, statements: texts.map { ($0, nil) }, kind: "sql.query", now: now)
        }
        forwardQuery(frame, texts: texts, controls: controls, now: now)
    }

    private func forwardQuery(_ frame: PostgresFrame, texts: [String], controls: [StatementControls], now: ContinuousClock.Instant) {
        recordThenForward(frame, statements: texts.map { ($0, nil) }, kind: "sql.query", decisions: controls.compactMap { $0.decision }) { ids in
            self.tracker.querySent(zip(ids, controls).map { .init(id: $0, started: now, controls: $1) })
        }
    }

    private func forwardBind(
        _ frame: PostgresFrame, _ bind: FrontendMessage.Bind, sql: String, parameters: [String?], controls: StatementControls,
        now: ContinuousClock.Instant
    ) {
        let portalName = bind.portalName
        let formats = bind.resultFormats
        recordThenForward(frame, sql: sql, parameters: parameters, kind: "sql.execute", decision: controls.decision) { id in
            self.portals[portalName] = Portal(formats: formats, controls: controls, statementID: id)
            // An error for the Bind is this statement's outcome; each Execute is tracked on its own.
            self.tracker.bindSent(.init(id: id, started: now, resultFormats: formats, controls: controls))
        }
    }

    /// A Bind that must not run: sent with more parameters than formats, which the server rejects
    /// before it looks at anything else, whatever statement it names. Its Executes are skipped by
    /// the server up to the Sync, as after any failed Bind.
    private func refuseBind(_ refusal: Refusal, _ bind: FrontendMessage.Bind, sql: String, parameters: [String?]) {
        guard let upstream else { return }
        PostgresMetrics.deniedStatements.increment()
        let now = ContinuousClock.now
        let standIn = FrontendMessage.Bind(
            portalName: bind.portalName, statementName: bind.statementName, parameterFormats: [0, 0], parameters: [nil, nil, nil],
            resultFormats: [])
        let controls = StatementControls(decision: refusal.decision)
        let portalName = bind.portalName
        recordThenForward(
            PostgresFrame.frontend(.bind(standIn), allocator: upstream.allocator), sql: sql, parameters: parameters, kind: "sql.execute",
            decision: refusal.decision
        ) { id in
            self.refusals[id] = refusal
            self.portals[portalName] = Portal(formats: [], controls: controls, statementID: id)
            self.tracker.bindSent(.init(id: id, started: now, controls: controls))
        }
    }

    // MARK: - Review

    /// Holds a statement the policy wants a person to approve. The client is told at once (a
    /// notice naming the review) and its later messages queue behind the held one, unread; the
    /// statement then runs as approved, or is refused with the reviewer's reason, and the session
    /// goes on either way. A held statement never outlives its session: closing abandons it.
    private func hold(
        _ decision: Decision, approval: ApprovalRequirement?, text: String, parameters: [String?]?, exactParameters: [String?]? = nil,
        resolved: String? = nil, onRefused: @escaping (Refusal) -> Void, onApproved: @escaping (Decision) -> Void
    ) {
        guard let context, let principal, let target else { return }
        guard let board = environment.reviews else {
            return onRefused(Refusal(decision: .deny(
                rule: decision.rule, reason: (decision.reason ?? "approval required") + "; approvals are not configured on this gateway")))
        }
        PostgresMetrics.heldStatements.increment()
        holdingInput = true
        updateClientReading()
        let request = ReviewRequest(
            session: sessionID, connection: target.name, protocolName: "postgres",
            operation: Self.describe(sql: text, parameters: parameters) + (resolved ?? ""), intent: Self.intent(in: text) ?? applicationIntent,
            digest: ReviewDigest.of(
                protocolName: "postgres", connection: target.name, principal: principal, operation: text + (resolved ?? ""),
                parameters: exactParameters ?? parameters),
            requester: principal, client: client, decision: decision,
            approvals: approval?.approvals ?? 1, approverGroups: approval?.approverGroups ?? [])
        let resume = { (body: () -> Void) in
            self.holdingInput = false
            body()
            if !self.holdingInput { self.drainPending() }
        }
        context.eventLoop.makeFutureWithTask { () -> Result<Review, ReviewRefusal> in
            do {
                return .success(try await board.open(request))
            } catch {
                return .failure(error as? ReviewRefusal ?? ReviewRefusal(.invalid, "the review could not be opened"))
            }
        }.assumeIsolated().whenSuccess { opened in
            let review: Review
            switch opened {
            case .failure(let refusal):
                guard case .relaying = self.state else { return }
                return resume {
                    onRefused(Refusal(decision: .deny(rule: decision.rule, reason: "this statement needs approval, and \(refusal.message)")))
                }
            case .success(let value):
                review = value
            }
            guard case .relaying = self.state else {
                Task { await board.abandon(review.id, reason: "the client disconnected") }
                return
            }
            self.heldReview = review.id
            if let key = self.cancelKey { self.environment.cancels.hold(key, review: review.id) }
            self.writeToClient(Self.waitingNotice(review, decision: decision, timeout: board.settings.timeout))
            self.context?.flush()
            let client = self.client
            context.eventLoop.makeFutureWithTask { () -> ReviewOutcome in
                let outcome = await board.wait(review.id)
                // Claimed for its one run before it is sent: abandoned in the meantime (the
                // client left or cancelled, the gateway is stopping), it does not run.
                if case .approved(let approved) = outcome, approved.digest == request.digest {
                    guard await board.executed(approved.id, client: client) else {
                        return .refused(await board.review(approved.id) ?? approved)
                    }
                }
                return outcome
            }.assumeIsolated().whenSuccess { outcome in
                self.heldReview = nil
                if let key = self.cancelKey { self.environment.cancels.release(key) }
                // A closed session abandoned the review when it closed.
                guard case .relaying = self.state else { return }
                switch outcome {
                case .approved(let approved) where approved.digest == request.digest:
                    let names = approved.approvals.map(\.subject).joined(separator: ", ")
                    resume {
                        onApproved(.allow(rule: "review:\(approved.id)", reason: "approved by \(names) (\(decision.rule.map { "rule \($0)" } ?? "review"))"))
                    }
                case .approved(let other):
                    resume { onRefused(Refusal(decision: .deny(rule: "review:\(other.id)", reason: "the approval is for another operation"))) }
                case .refused(let closed):
                    resume { onRefused(Refusal(closed: closed)) }
                }
            }
        }
    }

    static let maxReviewedValueBytes = 64 * 1024

    /// A Bind's values for a review: as the reviewer reads them (text values whole, binary ones
    /// decoded by type and in hex) and exactly (format and every byte, for the digest). Nil when
    /// they are too large to show.
    static func reviewedValues(_ bind: FrontendMessage.Bind, parameterTypes: [UInt32]) -> (shown: [String?], exact: [String?])? {
        var total = 0
        var shown: [String?] = []
        var exact: [String?] = []
        for (index, value) in bind.parameters.enumerated() {
            let binary = bind.isBinary(parameter: index)
            guard let value else {
                shown.append(nil)
                exact.append(nil)
                continue
            }
            total += value.readableBytes
            guard total <= maxReviewedValueBytes else { return nil }
            let hex = BinaryValue.hex(value)
            exact.append((binary ? "b:" : "t:") + hex)
            if binary {
                let type = index < parameterTypes.count ? parameterTypes[index] : 0
                // Small values decoded by type; larger ones (which the decoder would cut) in full hex.
                shown.append(value.readableBytes <= StatementTracker.maxValueBytes / 2 ? BinaryValue.text(value, typeOID: type) : hex)
            } else {
                shown.append(String(decoding: value.readableBytesView, as: UTF8.self))
            }
        }
        return (shown, exact)
    }

    static func waitingNotice(_ review: Review, decision: Decision, timeout: Duration) -> PostgresFrame {
        let minutes = Int(timeout.components.seconds / 60)
        let wait = minutes >= 1 && timeout.components.seconds % 60 == 0 ? "\(minutes) minute\(minutes == 1 ? "" : "s")" : "\(timeout.components.seconds) seconds"
        let approvals = review.approvalsRequired > 1 ? " (\(review.approvalsRequired) approvals needed)" : ""
        let fields = ErrorFields(
            severity: "NOTICE", sqlState: "01000",
            message: "waiting for approval: review \(review.id), approve with `gatehouse reviews approve \(review.id)`\(approvals)",
            detail: (decision.reason ?? "rule \(decision.rule ?? "?") requires approval") + ".",
            hint: "The statement runs once approved; it is refused if denied, or if nobody decides within \(wait).")
        return PostgresFrame.backend(.noticeResponse(fields), allocator: ByteBufferAllocator())
    }

    /// A Parse: decided like the same text sent as a query, so a prepared statement can never run
    /// what the policy refuses as text. What Bind adds later are values, which cannot change what
    /// the statement is.
    private func relayParse(_ frame: PostgresFrame, _ parse: FrontendMessage.Parse, inspection: SQLInspection, now: ContinuousClock.Instant) {
        guard let upstream else { return }
        let decided = decide(inspection)
        // A statement that needs approval is held when it is bound, with its values.
        if let refusal = Refusal(decided.overall, canHold: true) {
            PostgresMetrics.deniedStatements.increment()
            var standIn = parse
            standIn.query = Refusal.standInSQL
            recordThenForward(PostgresFrame.frontend(.parse(standIn), allocator: upstream.allocator), sql: parse.query, parameters: nil, kind: "sql.parse", decision: refusal.decision) { id in
                self.refusals[id] = refusal
                // Its error is the statement's outcome; the server then skips to Sync.
                self.tracker.parseSent(refused: .init(id: id, started: now))
            }
            return
        }
        let name = parse.statementName
        // The server refuses to redefine a named statement without Close (so does the record of
        // it), unless a Close of it is on its way ahead of this Parse.
        var registered: String?
        if name.isEmpty || statements[name] == nil || pendingCloses[name] != nil {
            guard statements.count < Self.maxPreparedStatements else {
                return fatal(sqlState: "54000", message: "too many prepared statements in this session (limit \(Self.maxPreparedStatements))")
            }
            let single = decided.statements.count == 1
            var controls = StatementControls(
                statement: single ? decided.statements[0] : nil, evaluation: single ? decided.evaluations[0] : nil,
                decision: decided.overall)
            controls.description = RowDescriptionBox()
            if decided.overall.effect == .review { controls.approval = SQLPolicyEvaluation(statements: decided.evaluations).approval }
            if single, let original = inspection.statements.first {
                controls.sessionEffect = Self.changesSessionState(original) ? original : nil
                if original.kind == .cursor, original.innerStatement == nil { controls.cursorName = original.objectName }
            }
            nextGeneration += 1
            if let previous = statements[name], !name.isEmpty { superseded[name] = previous }
            statements[name] = Prepared(sql: parse.query, parameterTypes: parse.parameterTypes, controls: controls, generation: nextGeneration)
            pendingCloses[name] = nil
            registered = name.isEmpty ? nil : name
            writeToUpstream(frame, upstream: upstream)
            tracker.parseSent(name: registered)
            if !masks.isEmpty {
                // Rows of an extended-protocol statement come without a description unless the
                // client asks for one; masking needs the columns' origins and types, so the
                // gateway asks right after the Parse (and keeps the answer to itself).
                writeToUpstream(PostgresFrame.frontend(.describe(.statement, name), allocator: upstream.allocator), upstream: upstream)
                tracker.describeSent(controls.description, injected: true)
            }
            return
        }
        writeToUpstream(frame, upstream: upstream)
        tracker.parseSent()
    }

    /// Each statement as the policy decides it (EXECUTE as what it runs), its evaluation, and the
    /// decision for the whole text: the strictest, or a refusal masking needs.
    private func decide(_ inspection: SQLInspection) -> (statements: [SQLStatement], evaluations: [PolicyEvaluation], overall: Decision) {
        let decided = inspection.statements.map(decidedAs)
        let evaluations = decided.map { evaluate(.sql($0, failure: inspection.failure)) }
        let overall = maskingRefusal(decided) ?? SQLPolicyEvaluation(statements: evaluations).decision
        return (decided, evaluations, overall)
    }

    /// Records the refused statements with the decision, then sends a stand-in that the server
    /// is certain to reject without running anything; its error (replaced by the refusal) and the
    /// server's own handling of it (a failed transaction, skipping to Sync) are what the client
    /// would have seen had the database itself refused.
    private func refuse(_ refusal: Refusal, statements: [(sql: String, parameters: [String?]?)], kind: String, now: ContinuousClock.Instant) {
        guard let upstream else { return }
        PostgresMetrics.deniedStatements.increment()
        let standIn = PostgresFrame.frontend(.query(Refusal.standInSQL), allocator: upstream.allocator)
        recordThenForward(standIn, statements: statements, kind: kind, decisions: statements.map { _ in refusal.decision }) { ids in
            self.refusals[ids[0]] = refusal
            self.tracker.querySent(ids.map { .init(id: $0, started: now) })
        }
    }

    private func maskingRefusal(_ statements: [SQLStatement]) -> Decision? {
        Policy.maskingRefusal(statements, masks: masks)
    }

    /// `EXECUTE name` is decided as the statement prepared under that name, and `FETCH` from a
    /// cursor as the query the cursor was declared for; one the gateway did not see succeed cannot
    /// be known.
    private func decidedAs(_ statement: SQLStatement) -> SQLStatement {
        switch statement.kind {
        case .execute:
            if let name = statement.objectName, let prepared = sqlPrepared[name] ?? statements[name]?.controls.statement { return prepared }
            return SQLStatement(text: statement.text, utf8Range: statement.utf8Range, kind: .unknown, writes: true)
        case .cursor where statement.innerStatement == nil:
            if let name = statement.objectName, let query = sqlCursors[name] { return query }
            // A FETCH (or MOVE, CLOSE) of a cursor the gateway did not see declared: what it reads
            // cannot be known.
            return SQLStatement(text: statement.text, utf8Range: statement.utf8Range, kind: .unknown, writes: true)
        default:
            return statement
        }
    }

    /// PREPARE, DEALLOCATE, DECLARE and DISCARD ALL change what later statements refer to.
    static func changesSessionState(_ statement: SQLStatement) -> Bool {
        switch statement.kind {
        case .prepare, .deallocate: true
        case .cursor: statement.innerStatement != nil
        case .utility: statement.flags.contains(.changesRole)
        default: false
        }
    }

    /// Applied once the server has run the statement: a failed PREPARE defines nothing. SQL and
    /// protocol-level prepared statements share one namespace on the server, and so here.
    private func applySessionEffect(_ statement: SQLStatement) {
        switch statement.kind {
        case .prepare:
            if let name = statement.objectName, let inner = statement.innerStatement,
               sqlPrepared[name] != nil || sqlPrepared.count < Self.maxPreparedStatements {
                sqlPrepared[name] = inner
            }
        case .deallocate:
            if let name = statement.objectName {
                sqlPrepared[name] = nil
                statements[name] = nil
            } else {
                sqlPrepared.removeAll()
                statements = statements.filter { $0.key.isEmpty }
            }
        case .cursor:
            if let name = statement.objectName, let inner = statement.innerStatement,
               sqlCursors[name] != nil || sqlCursors.count < Self.maxPreparedStatements {
                sqlCursors[name] = inner
                cursorRowsSent[name] = nil
                // A portal of the same name the gateway remembers is gone: this cursor is it now.
                portals[name] = nil
            }
        case .utility:
            // DISCARD ALL deallocates every prepared statement and closes every cursor.
            sqlPrepared.removeAll()
            sqlCursors.removeAll()
            statements = statements.filter { $0.key.isEmpty }
            portals.removeAll()
        default:
            break
        }
    }

    /// A statement the gateway has no record of (prepared with SQL, or out of step): decided
    /// and limited as something that could not be classified, its rows NULLed under masks.
    private func unknownPrepared(_ name: String) -> Prepared {
        let statement = sqlPrepared[name] ?? SQLStatement(text: "", utf8Range: 0..<0, kind: .unknown, writes: true)
        return Prepared(sql: sqlPrepared[name]?.text ?? "", parameterTypes: [],
                        controls: StatementControls(statement: statement, evaluation: evaluate(.sql(statement))))
    }


    /// Texts larger than this are parsed off the event loop (about 0.5 ms per KiB).
    static let inlineInspectionBytes = 16 * 1024

    /// The function's OID and its arguments, rendered like bound parameters.
    static func functionCall(_ body: ByteBuffer) -> (oid: String, arguments: [String?]) {
        var body = body
        guard let oid = body.readInteger(as: UInt32.self), let formatCount = body.readInteger(as: Int16.self), formatCount >= 0 else {
            return ("?", [])
        }
        var formats: [Int16] = []
        for _ in 0..<Int(formatCount) {
            guard let format = body.readInteger(as: Int16.self) else { return (String(oid), []) }
            formats.append(format)
        }
        guard let argumentCount = body.readInteger(as: Int16.self), argumentCount >= 0 else { return (String(oid), []) }
        var arguments: [String?] = []
        for index in 0..<Int(argumentCount) {
            guard let length = body.readInteger(as: Int32.self) else { break }
            if length < 0 {
                arguments.append(nil)
                continue
            }
            guard let value = body.readSlice(length: Int(length)) else { break }
            let binary = FrontendMessage.Bind.isBinary(parameter: index, formats: formats)
            arguments.append(StatementTracker.text(value, binary: binary))
        }
        return (String(oid), arguments)
    }

    /// A statement bound but never executed leaves its entry behind; far older ones can go.
    private func forgetAbandonedStatements() {
        guard committedSeqs.count > 2 * Self.maxPreparedStatements else { return }
        let oldest = nextStatementID - Self.maxPreparedStatements
        committedSeqs = committedSeqs.filter { $0.key >= oldest }
        finishedBeforeCommit = finishedBeforeCommit.filter { $0.key >= oldest }
    }

    private static func runsSomething(_ type: UInt8) -> Bool {
        switch type {
        case UInt8(ascii: "Q"), UInt8(ascii: "P"), UInt8(ascii: "B"), UInt8(ascii: "E"), UInt8(ascii: "F"): true
        default: false
        }
    }

    private func malformed() {
        fatal(sqlState: "08P01", message: "malformed message")
    }

    /// Commits the request event, then forwards; while waiting, later frames queue behind it. The
    /// statement is tracked from now on: frames sent ahead of it (Parse, Bind) may already fail.
    private func recordThenForward(
        _ frame: PostgresFrame, sql: String, parameters: [String?]?, kind: String, decision: Decision? = nil, track: (Int) -> Void
    ) {
        recordThenForward(frame, statements: [(sql, parameters)], kind: kind, decisions: decision.map { [$0] }) { ids in track(ids[0]) }
    }

    /// The same for a frame that carries several statements (a simple Query the parser split):
    /// one request event each, committed together, before the frame is forwarded once.
    private func recordThenForward(
        _ frame: PostgresFrame, statements: [(sql: String, parameters: [String?]?)], kind: String, decisions: [Decision]? = nil,
        track: ([Int]) -> Void
    ) {
        guard let context, !statements.isEmpty else { return }
        let ids = Array(nextStatementID..<(nextStatementID + statements.count))
        nextStatementID += statements.count
        track(ids)
        let records = statements.enumerated().map { index, statement in
            sessionRecord(
                .init(
                    kind: kind, text: Self.describe(sql: statement.sql, parameters: statement.parameters),
                    intent: Self.intent(in: statement.sql) ?? applicationIntent),
                decision: decisions.flatMap { index < $0.count ? $0[index] : nil })
        }
        let auditLog = environment.auditLog
        holdingInput = true
        if auditLog.appendsAreQuick {
            // A local SQLite commit, shared with the loop's other statements of this tick, costs
            // less on the loop than two thread hops to the writer thread and back.
            let batcher = environment.statementBatchers.batcher(on: context.eventLoop)
            let collected = CollectedEvents(expected: records.count)
            for (index, record) in records.enumerated() {
                batcher.append(record) { result in
                    if let all = collected.add(result, at: index) {
                        self.statementsRecorded(all, ids: ids, frame: frame)
                    }
                }
            }
            return
        }
        updateClientReading()
        context.eventLoop.makeFutureWithTask { () -> [AuditEvent] in
            var events: [AuditEvent] = []
            for record in records { events.append(try await auditLog.append(record)) }
            return events
        }
        .assumeIsolated()
        .whenComplete { result in
            switch result {
            case .success(let events): self.statementsRecorded(events.map { .success($0) }, ids: ids, frame: frame)
            case .failure(let error): self.statementsRecorded(ids.map { _ in .failure(error) }, ids: ids, frame: frame)
            }
        }
    }

    private func statementsRecorded(_ results: [Result<AuditEvent, any Error>], ids: [Int], frame: PostgresFrame) {
        var events: [AuditEvent] = []
        for result in results {
            guard case .success(let event) = result else {
                PostgresMetrics.refusedStatements.increment(by: results.count)
                return fatal(sqlState: "58000", message: "the audit trail cannot be written; statement refused")
            }
            events.append(event)
        }
        PostgresMetrics.statements.increment(by: events.count)
        guard let upstream else { return }
        for (id, event) in zip(ids, events) {
            if let outcome = finishedBeforeCommit.removeValue(forKey: id) {
                recordPendingOutcomes()
                recordOutcome(outcome, requestSeq: event.seq)
                if outcome.suspended { committedSeqs[id] = event.seq }
            } else {
                committedSeqs[id] = event.seq
                forgetAbandonedStatements()
            }
        }
        writeToUpstream(frame, upstream: upstream)
        holdingInput = false
        drainPending()
    }

    private func drainPending() {
        while !holdingInput, !pending.isEmpty, case .relaying = state {
            relay(pending.removeFirst())
        }
        upstream?.flush()
        updateClientReading()
        endIfStoppingAndIdle()
    }

    private func writeToUpstream(_ frame: PostgresFrame, upstream: Channel) {
        var buffer = upstream.allocator.buffer(capacity: frame.body.readableBytes + 5)
        PostgresEncoder.frame(frame, into: &buffer)
        upstream.write(buffer, promise: nil)
    }

    /// Server → client, called by the upstream handler on this loop.
    /// A host with several addresses gets several connection attempts; only the one the session
    /// adopted may speak for the database.
    private func isCurrentUpstream(_ channel: Channel) -> Bool {
        upstream.map { $0 === channel } ?? false
    }

    func upstreamRead(_ frame: PostgresFrame, channel: Channel) {
        guard isCurrentUpstream(channel) else { return }
        switch state {
        case .upstreamLogin(var login):
            upstreamLoginMessage(frame, login: &login)
            if case .upstreamLogin = state { state = .upstreamLogin(login) }
        case .loadingCatalog(let ready, var snapshot):
            catalogMessage(frame, ready: ready, snapshot: &snapshot)
            if case .loadingCatalog = state { state = .loadingCatalog(ready: ready, snapshot: snapshot) }
        case .relaying:
            relayFromUpstream(frame, allocator: channel.allocator)
        default:
            break
        }
    }

    /// Server → client while relaying: refusals explained, row limits enforced, then tracked and
    /// passed on.
    private func relayFromUpstream(_ frame: PostgresFrame, allocator: ByteBufferAllocator) {
        if heldUntilCancelled != nil {
            heldUntilCancelled?.append(frame)
            return
        }
        // The answer to a Describe: the statement's columns (kept for masking its rows); the
        // answer to one the gateway sent itself stays here.
        if let describing = tracker.frontDescribe {
            switch frame.type {
            case UInt8(ascii: "t"):
                if !describing.injected { writeToClient(frame) }
                return
            case UInt8(ascii: "T"), UInt8(ascii: "n"):
                track(frame)
                if !describing.injected { writeToClient(frame) }
                return
            default:
                break
            }
        }
        let front = tracker.frontStatement
        let cutting = cut != nil && cut?.statementID == front?.id
        var frame = frame
        if !masks.isEmpty {
            switch frame.type {
            case UInt8(ascii: "T"):
                if let front, case .rowDescription(let fields)? = try? BackendMessage.parse(frame) {
                    maskPlans[front.id] = ResultMaskPlan(
                        fields: fields, resultFormats: nil, masks: masks, catalog: catalog, statement: front.controls?.statement)
                }
            case UInt8(ascii: "D"):
                if let front {
                    if let masked = maskRow(frame.body, statement: front, allocator: allocator) {
                        frame = PostgresFrame(type: frame.type, body: masked)
                    }
                } else {
                    // Rows the gateway cannot place: nothing in them is passed on.
                    frame = PostgresFrame(type: frame.type, body: Self.nullRow(frame.body, allocator: allocator))
                }
            case UInt8(ascii: "E"), UInt8(ascii: "N"):
                if let masked = maskError(frame, statement: front, allocator: allocator) { frame = masked }
            case UInt8(ascii: "A"), UInt8(ascii: "S"):
                if let masked = maskAsynchronous(frame, allocator: allocator) { frame = masked }
            default:
                break
            }
        }
        switch frame.type {
        case UInt8(ascii: "E") where tracker.frontRefusalID.map({ refusals[$0] != nil }) ?? false:
            // The stand-in failed as it always does; the client is told why its statement was refused.
            let replaced = refusals.removeValue(forKey: tracker.frontRefusalID!)!.errorFrame(allocator: allocator)
            track(replaced)
            writeToClient(replaced)
            return
        case UInt8(ascii: "D"), UInt8(ascii: "d"):
            if cutting || cut?.swallowing == true { return }  // beyond the limit: neither counted nor kept
            if let front, let limit = front.controls?.rowLimit {
                let cursor = front.controls?.cursorName
                let sent = cursor.map { cursorRowsSent[$0, default: 0] } ?? rowsSent[front.id, default: 0]
                guard sent < limit.maxRows else {
                    return startCut(front, limit: limit)
                }
                if let cursor {
                    // Past the number of cursors counted, a new one is not let run uncounted.
                    guard cursorRowsSent[cursor] != nil || cursorRowsSent.count < Self.maxPreparedStatements else {
                        return startCut(front, limit: limit)
                    }
                    cursorRowsSent[cursor] = sent + 1
                } else {
                    rowsSent[front.id] = sent + 1
                }
            }
        case UInt8(ascii: "C") where cutting && cut?.swallowing == false,
             UInt8(ascii: "E") where cutting && cut?.swallowing == false,
             UInt8(ascii: "s") where cutting && cut?.swallowing == false:
            // The end of the statement that was cut: the client gets the limit's error instead,
            // and nothing more until the server is ready again (the client skips to there too).
            // The server's own answers are still followed, as the server sent them.
            let error = cut!.errorFrame(allocator: allocator)
            cut?.swallowing = true
            if frame.type == UInt8(ascii: "E") {
                // The server did fail it (the cancel): recorded as the limit that caused it.
                track(error)
            } else {
                tracker.markFailed(sqlState: "54000", message: "stopped at the row limit of rule \(cut!.limit.rule)")
                track(frame)
            }
            writeToClient(error)
            return
        case UInt8(ascii: "Z") where cut != nil:
            let finished = cut!
            cut = nil
            track(frame)
            if finished.cancelInFlight {
                // Held until the cancel has reached the server, so it cannot hit a later statement;
                // what arrives meanwhile waits behind it.
                heldReady = frame
                heldUntilCancelled = []
                return
            }
        case UInt8(ascii: "G") where cut?.swallowing == true:
            // A COPY FROM the client never sees started (it skipped everything after the error).
            let extended = tracker.frontIsExecute
            track(frame)
            if let upstream {
                var buffer = upstream.allocator.buffer(capacity: 64)
                PostgresEncoder.frontend(.copyFail("skipped after a row limit"), into: &buffer)
                if extended {
                    // The client's Sync arrived while the server was copying, so it was ignored:
                    // the gateway sends the one the server now waits for.
                    PostgresEncoder.frontend(.sync, into: &buffer)
                    tracker.syncSent()
                }
                upstream.writeAndFlush(buffer, promise: nil)
            }
            return
        case UInt8(ascii: "G"):
            copyingIn = true
            if stopping { updateClientReading() }
        case UInt8(ascii: "C") where copyingIn, UInt8(ascii: "E") where copyingIn, UInt8(ascii: "Z") where copyingIn:
            // The server left copy mode (done, or failed): copy data the client still sends is dropped.
            copyingIn = false
            track(frame)
            writeToClient(frame)
            return
        case UInt8(ascii: "S"), UInt8(ascii: "N"), UInt8(ascii: "A"):
            break
        default:
            if cut?.swallowing == true {
                track(frame)
                return
            }
        }
        track(frame)
        writeToClient(frame)
    }

    /// A DataRow with its masked values rewritten; nil when nothing in it is masked.
    private func maskRow(_ body: ByteBuffer, statement: StatementTracker.Statement, allocator: ByteBufferAllocator) -> ByteBuffer? {
        let plan: ResultMaskPlan?
        if let known = maskPlans[statement.id] {
            plan = known
        } else if let fields = statement.controls?.description?.fields {
            plan = ResultMaskPlan(
                fields: fields, resultFormats: statement.resultFormats, masks: masks, catalog: catalog,
                statement: statement.controls?.statement)
            maskPlans[statement.id] = .some(plan)
        } else {
            // Rows whose columns the gateway never learnt: nothing in them can be told apart, so
            // nothing is passed on.
            return Self.nullRow(body, allocator: allocator)
        }
        guard let plan else { return nil }
        if keepsUnmasked, unmaskedRows[statement.id, default: []].count < environment.settings.maxRecordedRows,
           case .dataRow(let values)? = try? BackendMessage.parse(PostgresFrame(type: UInt8(ascii: "D"), body: body)) {
            unmaskedRows[statement.id, default: []].append(values.enumerated().map { index, value in
                value.map { StatementTracker.text($0, binary: index < plan.binary.count && plan.binary[index]) }
            })
        }
        return plan.apply(to: body, masker: environment.settings.masker, allocator: allocator)
    }

    /// A DataRow of as many NULLs as the row has values.
    static func nullRow(_ body: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var copy = body
        let count = Int(copy.readInteger(as: Int16.self) ?? 0)
        return ResultMaskPlan.encode(Array(repeating: nil, count: max(count, 0)), allocator: allocator)
    }

    /// NOTIFY payloads and reported settings can carry values too (`pg_notify('c', email)`,
    /// `set_config('application_name', email, false)`): the detectors run over them.
    private func maskAsynchronous(_ frame: PostgresFrame, allocator: ByteBufferAllocator) -> PostgresFrame? {
        let detectors = masks.reduce(into: Set<Detector>()) { $0.formUnion($1.action.detectors) }
        let strategy = masks.first { !$0.action.detectors.isEmpty }?.action.strategy ?? .redact
        guard !detectors.isEmpty, let message = try? BackendMessage.parse(frame) else { return nil }
        let masker = environment.settings.masker
        switch message {
        case .notification(let processID, let channel, let payload):
            guard let masked = masker.maskDetected(in: payload, detectors: detectors, strategy: strategy) else { return nil }
            return .backend(.notification(processID: processID, channel: channel, payload: masked), allocator: allocator)
        case .parameterStatus(let name, let value):
            guard let masked = masker.maskDetected(in: value, detectors: detectors, strategy: strategy) else { return nil }
            return .backend(.parameterStatus(name: name, value: masked), allocator: allocator)
        default:
            return nil
        }
    }

    private func maskError(_ frame: PostgresFrame, statement: StatementTracker.Statement?, allocator: ByteBufferAllocator) -> PostgresFrame? {
        let parsed = try? BackendMessage.parse(frame)
        let fields: ErrorFields
        switch parsed {
        case .errorResponse(let value)?, .noticeResponse(let value)?: fields = value
        default: return nil
        }
        let touches = ResultMaskPlan.maskedColumnSource(statement?.controls?.statement, masks: masks) != nil
        guard let masked = ErrorMasking.mask(fields, masks: masks, statementTouchesMaskedColumns: touches, masker: environment.settings.masker) else {
            return nil
        }
        return .backend(frame.type == UInt8(ascii: "E") ? .errorResponse(masked) : .noticeResponse(masked), allocator: allocator)
    }

    /// Stops a result at the row limit: later rows are dropped, a simple query is cancelled on the
    /// server (an extended one was already asked for no more than the limit and one row).
    private func startCut(_ statement: StatementTracker.Statement, limit: RowLimit) {
        var newCut = RowLimitCut(statementID: statement.id, limit: limit)
        PostgresMetrics.limitedStatements.increment()
        if !tracker.frontIsExecute, let cancelKey, let upstreamInfo = environment.cancels.lookup(cancelKey), let context {
            newCut.cancelInFlight = true
            Self.sendCancel(to: upstreamInfo, on: context.eventLoop)
                .assumeIsolated()
                .whenComplete { _ in self.cancelDelivered() }
        }
        cut = newCut
    }

    private func cancelDelivered() {
        if cut?.cancelInFlight == true {
            cut?.cancelInFlight = false
            return
        }
        guard let held = heldUntilCancelled else { return }
        heldUntilCancelled = nil
        // The ReadyForQuery was tracked when it arrived; it is only passed on now.
        if let ready = heldReady { writeToClient(ready) }
        heldReady = nil
        for frame in held { relayFromUpstream(frame, allocator: context?.channel.allocator ?? ByteBufferAllocator()) }
        context?.flush()
        recordPendingOutcomes()
    }

    func upstreamReadComplete(channel: Channel) {
        guard isCurrentUpstream(channel) else { return }
        context?.flush()
        recordPendingOutcomes()
        endIfStoppingAndIdle()
    }

    func upstreamFailed(_ error: Error, channel: Channel) {
        guard isCurrentUpstream(channel), let target else { return }
        logger.warning("upstream connection error", metadata: ["connection": "\(target.name)", "error": "\(error)"])
        if error is NIOSSLError || error is BoringSSLError {
            fatal(sqlState: "08006", message: "TLS to the database behind connection \(target.name) failed; its certificate is not trusted")
        } else {
            fatal(sqlState: "08006", message: "the connection to the database behind connection \(target.name) failed")
        }
    }

    func upstreamClosed(channel: Channel) {
        guard isCurrentUpstream(channel) else { return }
        if case .closed = state { return }
        fatal(sqlState: "08006", message: "the database closed the connection")
    }

    /// At ReadyForQuery outside a transaction every portal and every cursor without HOLD is gone;
    /// what the session keeps about them goes too (a held cursor's FETCH is then not known).
    private func forgetTransactionState(_ frame: PostgresFrame) {
        guard frame.type == UInt8(ascii: "Z"), frame.body.getInteger(at: frame.body.readerIndex, as: UInt8.self) == UInt8(ascii: "I"),
              tracker.inFlight == 0 else { return }
        portals.removeAll(keepingCapacity: true)
        sqlCursors.removeAll(keepingCapacity: true)
        cursorRowsSent.removeAll(keepingCapacity: true)
        rowsSent.removeAll(keepingCapacity: true)
        maskPlans.removeAll(keepingCapacity: true)
        unmaskedRows.removeAll(keepingCapacity: true)
    }

    private func track(_ frame: PostgresFrame) {
        let now = ContinuousClock.now
        let finished: [StatementTracker.Outcome]
        switch frame.type {
        case UInt8(ascii: "D") where !tracker.wantsRowValues:
            tracker.countRow()
            return
        case UInt8(ascii: "S"):
            if case .parameterStatus(let name, let value)? = try? BackendMessage.parse(frame), name == "application_name" {
                applicationIntent = Self.intent(inApplicationName: value)
            }
            return
        case UInt8(ascii: "T"), UInt8(ascii: "D"), UInt8(ascii: "C"), UInt8(ascii: "E"), UInt8(ascii: "Z"),
             UInt8(ascii: "I"), UInt8(ascii: "s"), UInt8(ascii: "G"), UInt8(ascii: "1"), UInt8(ascii: "2"),
             UInt8(ascii: "3"), UInt8(ascii: "n"), UInt8(ascii: "t"):
            guard let message = try? BackendMessage.parse(frame) else { return }
            finished = tracker.receive(message, now: now)
        default:
            return
        }
        for event in tracker.takeEvents() {
            switch event {
            case .parseFailed(let name):
                // A Parse that replaced a record (behind a Close the server then skipped) leaves
                // the server with the statement it had.
                statements[name] = superseded.removeValue(forKey: name)
            case .closed(.statement, let name):
                if let generation = pendingCloses[name] {
                    if statements[name]?.generation == generation { statements[name] = nil }
                    pendingCloses[name] = nil
                }
                sqlPrepared[name] = nil
                superseded[name] = nil
            case .closed(.portal, let name):
                portals[name] = nil
                sqlCursors[name] = nil
                cursorRowsSent[name] = nil
            case .closeSkipped(.statement, let name):
                pendingCloses[name] = nil
            case .closeSkipped(.portal, _):
                break
            }
        }
        for var outcome in finished {
            let id = outcome.statement.id
            if let effect = outcome.statement.controls?.sessionEffect, outcome.sqlState == nil, !outcome.skipped, !outcome.suspended {
                applySessionEffect(effect)
            }
            refusals[id] = nil
            if !outcome.suspended {
                rowsSent[id] = nil
                maskPlans[id] = nil
            }
            outcome.unmaskedRows = outcome.suspended ? unmaskedRows[id] : unmaskedRows.removeValue(forKey: id)
            if let seq = committedSeqs[id] {
                // A suspended portal will be executed again under the same request event.
                if !outcome.suspended { committedSeqs[id] = nil }
                // Recorded once the answer has been flushed to the client (upstreamReadComplete):
                // building the result event is off the client's wait.
                outcomesToRecord.append((outcome, seq))
            } else {
                finishedBeforeCommit[id] = outcome
            }
        }
        forgetTransactionState(frame)
    }

    private func recordPendingOutcomes() {
        guard !outcomesToRecord.isEmpty else { return }
        for (outcome, seq) in outcomesToRecord { recordOutcome(outcome, requestSeq: seq) }
        outcomesToRecord.removeAll(keepingCapacity: true)
    }

    /// The result event: written after the fact and not waited for, linked to its request event.
    private func recordOutcome(_ outcome: StatementTracker.Outcome, requestSeq: Int64) {
        let duration = (outcome.finished ?? ContinuousClock.now) - outcome.statement.started
        PostgresMetrics.statementDuration.recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        let payload = Self.payload(outcome, maxBytes: environment.settings.maxPayloadBytes)
        let status: String = outcome.skipped ? "skipped" : outcome.sqlState != nil ? "error" : outcome.suspended ? "suspended" : "ok"
        let record = sessionRecord(
            .init(kind: "sql.result", text: "result of event \(requestSeq)"),
            outcome: .init(
                status: outcome.commandTags.isEmpty ? status : outcome.commandTags.joined(separator: "; "),
                rows: outcome.rows,
                bytes: outcome.copiedBytes > 0 ? outcome.copiedBytes : nil,
                errorCode: outcome.sqlState,
                error: outcome.errorMessage.map { String($0.prefix(1024)) },
                durationMicros: Int64(duration.components.seconds) * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000),
            payload: payload.text,
            payloadTruncated: payload.truncated ? true : nil,
            sealedPayload: sealedPayload(outcome))
        environment.auditLog.appendEventually(record)
    }

    /// The unmasked first rows, sealed, when a mask rule lets the trail keep them.
    private func sealedPayload(_ outcome: StatementTracker.Outcome) -> String? {
        guard let rows = outcome.unmaskedRows, !rows.isEmpty, let seal = environment.settings.auditSeal else { return nil }
        var unmasked = outcome
        unmasked.recordedRows = rows
        guard let text = Self.payload(unmasked, maxBytes: environment.settings.maxPayloadBytes).text else { return nil }
        return seal.seal(text)
    }

    private func writeToClient(_ frame: PostgresFrame) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: frame.body.readableBytes + 5)
        PostgresEncoder.frame(frame, into: &buffer)
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    // MARK: - Ending

    /// Sends the client a FATAL error and ends the session.
    private func fatal(sqlState: String, message: String) {
        if case .closed = state { return }
        if let context, context.channel.isActive {
            var buffer = context.channel.allocator.buffer(capacity: 64 + message.utf8.count)
            PostgresEncoder.errorResponse(severity: "FATAL", sqlState: sqlState, message: message, into: &buffer)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
            // A client that stopped reading would never see the write complete.
            context.eventLoop.scheduleTask(in: Self.closeDeadline) { channel.close(promise: nil) }
        }
        close(reason: message, closeClient: false)
    }

    private func close(reason: String, closeClient: Bool = true) {
        if case .closed = state { return }
        // Every session whose connect was recorded gets its end recorded too, also when the
        // upstream login failed after the client was admitted.
        let connectRecorded = target != nil
        state = .closed
        if let cancelKey { environment.cancels.remove(cancelKey) }
        if let heldReview, let board = environment.reviews {
            self.heldReview = nil
            Task { await board.abandon(heldReview, reason: reason) }
        }
        if let upstream {
            var buffer = upstream.allocator.buffer(capacity: 5)
            PostgresEncoder.terminate(into: &buffer)
            upstream.writeAndFlush(buffer).whenComplete { _ in upstream.close(promise: nil) }
            upstream.eventLoop.scheduleTask(in: Self.closeDeadline) { upstream.close(promise: nil) }
        }
        upstream = nil
        recordPendingOutcomes()
        if connectRecorded {
            environment.auditLog.appendEventually(sessionRecord(.init(kind: "pg.disconnect", text: reason)))
        }
        if closeClient, let context, context.channel.isActive {
            context.close(promise: nil)
        }
    }

    /// A cancel arrives on a new, unauthenticated connection; holding the session's key is its
    /// credential. Unknown keys are dropped silently, as PostgreSQL does; a matching one is recorded
    /// in the session it cancels.
    private func forwardCancel(_ key: CancelRegistry.Key) {
        guard let context, let upstream = environment.cancels.lookup(key) else { return }
        if let review = environment.cancels.heldReview(key), let board = environment.reviews {
            // Nothing runs upstream yet: the cancel closes the review, and the statement fails as cancelled.
            Task { await board.abandon(review, reason: "the client cancelled the statement") }
            return
        }
        let record = AuditRecord(
            node: environment.settings.node, session: upstream.session, principal: upstream.principal, client: client,
            connection: upstream.connection, operation: .init(kind: "pg.cancel", text: "cancel the running statement"),
            decision: .allow(rule: "cancel-key", reason: "the request carried the session's cancel key"))
        environment.auditLog.appendEventually(record)
        _ = Self.sendCancel(to: upstream, on: context.eventLoop)
    }

    /// Sends a CancelRequest on a connection of its own. Succeeds once the server has closed that
    /// connection (it has signalled the backend by then), or after five seconds at most.
    static func sendCancel(to upstream: CancelRegistry.Upstream, on eventLoop: EventLoop) -> EventLoopFuture<Void> {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(5))
            .connect(host: upstream.host, port: upstream.port)
            .flatMap { channel in
                var buffer = channel.allocator.buffer(capacity: 16)
                PostgresEncoder.cancelRequest(processID: upstream.processID, secretKey: upstream.secretKey, into: &buffer)
                channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
                return channel.writeAndFlush(buffer).flatMap { channel.closeFuture }
            }
    }

    // MARK: - Records

    /// An event of this session: who, from where, on which connection, under which decision.
    private func sessionRecord(
        _ operation: AuditRecord.Operation, decision: Decision? = nil, outcome: AuditRecord.Outcome? = nil, payload: String? = nil,
        payloadTruncated: Bool? = nil, sealedPayload: String? = nil
    ) -> AuditRecord {
        AuditRecord(
            node: environment.settings.node, session: sessionID, principal: principal, client: client,
            connection: target?.name, operation: operation, decision: decision ?? accessDecision, outcome: outcome,
            payload: payload, payloadTruncated: payloadTruncated, sealedPayload: sealedPayload)
    }

    private static func connectRecord(
        _ environment: SessionEnvironment, _ session: String, _ principal: Principal?, _ client: ClientInfo,
        _ connection: String?, _ decision: Decision, outcome: AuditRecord.Outcome? = nil, settings: String? = nil,
        intent: String? = nil
    ) -> AuditRecord {
        let text = "connect to \(connection ?? "(none)")" + (settings.map { " with \($0)" } ?? "")
        return AuditRecord(
            node: environment.settings.node, session: session, principal: principal, client: client,
            connection: connection, operation: .init(kind: "pg.connect", text: text.truncated(toUTF8Bytes: 4096).text, intent: intent),
            decision: decision, outcome: outcome)
    }

    /// The statement as recorded: its SQL, then the bound parameter values, if any.
    static func describe(sql: String, parameters: [String?]?) -> String {
        guard let parameters, !parameters.isEmpty else { return sql }
        let values = parameters.enumerated().map { index, value in
            "$\(index + 1)=" + (value.map { "'" + $0.replacingOccurrences(of: "'", with: "''") + "'" } ?? "NULL")
        }
        return sql + "\n-- parameters: " + values.joined(separator: ", ")
    }

    /// A leading `/* intent: ... */` comment: why the agent says it runs the statement.
    static func intent(in sql: String) -> String? {
        let trimmed = sql.drop { $0.isWhitespace }
        guard trimmed.hasPrefix("/*") else { return nil }
        // The closing marker is searched after the opening one: in "/*/" the "*" belongs to "/*".
        let body = trimmed.dropFirst(2)
        guard let end = body.range(of: "*/") else { return nil }
        let comment = body[..<end.lowerBound].trimmingCharacters(in: .whitespaces)
        guard comment.lowercased().hasPrefix("intent:") else { return nil }
        return String(comment.dropFirst("intent:".count).trimmingCharacters(in: .whitespaces).prefix(1024))
    }

    /// `application_name` of the form `intent: ...`.
    static func intent(inApplicationName name: String) -> String? {
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        guard trimmed.lowercased().hasPrefix("intent:") else { return nil }
        let intent = trimmed.dropFirst("intent:".count).trimmingCharacters(in: .whitespaces)
        return intent.isEmpty ? nil : String(intent.prefix(1024))
    }

    /// The recorded result: `{"columns":[...],"rows":[[...]]}`, cut at the payload cap.
    static func payload(_ outcome: StatementTracker.Outcome, maxBytes: Int) -> (text: String?, truncated: Bool) {
        guard !outcome.recordedRows.isEmpty else { return (nil, false) }
        var json = JSONWriter(capacity: 256)
        json.beginObject()
        json.key("columns")
        json.beginArray()
        for column in outcome.columns { json.string(column) }
        json.endArray()
        json.key("rows")
        json.beginArray()
        for row in outcome.recordedRows {
            json.beginArray()
            for value in row {
                if let value { json.string(value) } else { json.null() }
            }
            json.endArray()
            if json.bytes.count > maxBytes { break }
        }
        json.endArray()
        json.endObject()
        let kept = String(decoding: json.bytes, as: UTF8.self).truncated(toUTF8Bytes: maxBytes)
        return (kept.text, kept.truncated || Int64(outcome.recordedRows.count) < outcome.rows)
    }


    static func printable(_ value: String) -> String {
        String(value.unicodeScalars.filter { $0.properties.isAlphabetic || $0.properties.numericType != nil || "-_.".unicodeScalars.contains($0) }.prefix(64).map(Character.init))
    }
}

/// Why a client was turned away: what it is told, and what the trail records.
struct SessionRefusal: Error, Sendable {
    var sqlState: String
    var message: String
    var principal: Principal?
    var decision: Decision
    var errorCode: String

    static let auditUnavailable = SessionRefusal(
        sqlState: "58000", message: "the audit trail cannot be written; connection refused", principal: nil,
        decision: .deny(rule: "audit", reason: "audit trail unavailable"), errorCode: "audit-unavailable")
}

/// The upstream channel's end: frames go to the session, on the same event loop.
final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = PostgresFrame

    private let session: NIOLoopBound<ClientSession>

    init(session: NIOLoopBound<ClientSession>) {
        self.session = session
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        session.value.upstreamRead(unwrapInboundIn(data), channel: context.channel)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        session.value.upstreamReadComplete(channel: context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.value.upstreamClosed(channel: context.channel)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        session.value.upstreamWritabilityChanged(context.channel.isWritable, channel: context.channel)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        session.value.upstreamFailed(error, channel: context.channel)
        context.close(promise: nil)
    }
}

/// Results of several request events appended together, in order, handed over once all are in.
private final class CollectedEvents {
    private var results: [Result<AuditEvent, any Error>?]
    private var missing: Int

    init(expected: Int) {
        results = Array(repeating: nil, count: expected)
        missing = expected
    }

    func add(_ result: Result<AuditEvent, any Error>, at index: Int) -> [Result<AuditEvent, any Error>]? {
        results[index] = result
        missing -= 1
        return missing == 0 ? results.compactMap { $0 } : nil
    }
}

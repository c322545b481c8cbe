import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresWire

/// Runs one SQL text through the gateway's own PostgreSQL listener, as the caller (their token is
/// the password), so an MCP `query` meets exactly the checks a psql session meets: access, policy,
/// review, masking, row limits, the audit trail. A client of a few messages: startup, password,
/// one simple Query, Terminate.
struct LoopbackPostgres: Sendable {
    var host: String
    var port: Int
    /// The listener speaks TLS: the loopback connection asks for it (the listener may require it).
    var tls: Bool

    struct Statement: Sendable {
        var columns: [String] = []
        var rows: [[String?]] = []
        var tag: String?
    }

    struct Outcome: Sendable {
        var statements: [Statement] = []
        var error: ErrorFields?
        var notices: [String] = []
        /// More rows came than the MCP answer carries.
        var truncated = false
    }

    enum Failure: Error, CustomStringConvertible {
        case refused(ErrorFields)
        case connection(String)

        var description: String {
            switch self {
            case .refused(let fields): "\(fields.sqlState ?? "?"): \(fields.message ?? "refused")"
            case .connection(let reason): reason
            }
        }
    }

    /// Events the handler hands to the async side.
    enum Event: Sendable {
        /// TLS is up: the startup message can go.
        case tlsReady
        case message(BackendMessage)
        case failed(String)
    }

    func run(
        connection: String, user: String, token: String, application: String, sql: String, maxRows: Int, maxBytes: Int,
        deadline: Duration, onNotice: @escaping @Sendable (ErrorFields) -> Void
    ) async throws -> Outcome {
        let (events, continuation) = AsyncStream<Event>.makeStream()
        let tlsContext = tls ? try Self.clientTLS() : nil
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(LoopbackHandler(events: continuation, tls: tlsContext))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw Failure.connection("the gateway's PostgreSQL listener cannot be reached")
        }
        defer { channel.close(promise: nil) }
        // A cancelled call (its MCP client left) closes the session: a held statement's review is
        // abandoned and nothing runs later.
        return try await withTaskCancellationHandler {
            try await converse(channel: channel, events: events, continuation: continuation, tls: tlsContext != nil, connection: connection,
                               user: user, token: token, application: application, sql: sql, maxRows: maxRows, maxBytes: maxBytes,
                               deadline: deadline, onNotice: onNotice)
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    private func converse(
        channel: Channel, events: AsyncStream<Event>, continuation: AsyncStream<Event>.Continuation, tls: Bool, connection: String,
        user: String, token: String, application: String, sql: String, maxRows: Int, maxBytes: Int, deadline: Duration,
        onNotice: @escaping @Sendable (ErrorFields) -> Void
    ) async throws -> Outcome {
        let timeout = Task {
            try await Task.sleep(for: deadline)
            continuation.yield(.failed("no answer within \(deadline)"))
        }
        defer { timeout.cancel() }

        func send(_ write: (inout ByteBuffer) -> Void) {
            var buffer = channel.allocator.buffer(capacity: 256)
            write(&buffer)
            channel.writeAndFlush(buffer, promise: nil)
        }
        let startup = StartupMessage(parameters: [
            .init(name: "user", value: user), .init(name: "database", value: connection),
            .init(name: "application_name", value: application), .init(name: "client_encoding", value: "UTF8"),
        ])
        if tls {
            send { PostgresEncoder.sslRequest(into: &$0) }
        } else {
            send { PostgresEncoder.startup(startup, into: &$0) }
        }

        var outcome = Outcome()
        var current: Statement?
        var bytes = 0
        var loggedIn = false
        var cancelKey: (processID: Int32, secretKey: Int32)?
        var cancelSent = false
        for await event in events {
            let message: BackendMessage
            switch event {
            case .tlsReady:
                send { PostgresEncoder.startup(startup, into: &$0) }
                continue
            case .failed(let reason):
                throw Failure.connection(reason)
            case .message(let value):
                message = value
            }
            switch message {
            case .authentication(.cleartextPassword):
                send { PostgresEncoder.password(token, into: &$0) }
            case .backendKeyData(let processID, let secretKey):
                cancelKey = (processID, secretKey)
            case .authentication(.ok), .parameterStatus, .notification, .negotiateProtocolVersion:
                break
            case .authentication:
                throw Failure.connection("the listener asked for an authentication the gateway does not offer")
            case .readyForQuery:
                if !loggedIn {
                    loggedIn = true
                    send { PostgresEncoder.frontend(.query(sql), into: &$0) }
                } else {
                    send { PostgresEncoder.terminate(into: &$0) }
                    return outcome
                }
            case .errorResponse(let fields):
                if !loggedIn { throw Failure.refused(fields) }
                if let statement = current { outcome.statements.append(statement) }
                current = nil
                outcome.error = fields
                if cancelSent && fields.sqlState == "57014" {
                    outcome.error = ErrorFields(
                        severity: "ERROR", sqlState: "57014",
                        message: "the result is larger than a tool result carries, so the statement was stopped",
                        detail: "The rows up to the cap are returned. In a text of several statements the database rolled back the whole text.",
                        hint: "Narrow the query (WHERE, LIMIT) or page through the data.")
                }
            case .noticeResponse(let fields):
                outcome.notices.append(fields.message ?? "")
                onNotice(fields)
            case .rowDescription(let fields):
                current = Statement(columns: fields.map(\.name))
            case .dataRow(let values):
                guard current != nil else { break }
                let row = values.map { $0.map { String(buffer: $0) } }
                let size = row.reduce(0) { $0 + ($1?.utf8.count ?? 0) }
                if current!.rows.count >= maxRows || bytes + size > maxBytes {
                    // Enough for one tool result: the statement is cancelled (the gateway passes
                    // the cancel on), the rows still in flight are dropped, and the statements
                    // around it end as the database ends them, so every tag is reported.
                    outcome.truncated = true
                    if !cancelSent, let cancelKey {
                        cancelSent = true
                        Self.sendCancel(host: host, port: port, key: cancelKey)
                    }
                } else {
                    bytes += size
                    current!.rows.append(row)
                }
            case .commandComplete(let tag):
                var statement = current ?? Statement()
                statement.tag = tag
                outcome.statements.append(statement)
                current = nil
            case .emptyQueryResponse:
                current = nil
            case .copyInResponse, .copyOutResponse, .copyBothResponse:
                // COPY needs a client that speaks it; end it and say why.
                send { PostgresEncoder.frontend(.copyFail("COPY is not available through the MCP query tool"), into: &$0) }
            default:
                break
            }
        }
        try Task.checkCancellation()
        throw Failure.connection("the gateway closed the connection")
    }

    /// A CancelRequest on a connection of its own, not waited for.
    static func sendCancel(host: String, port: Int, key: (processID: Int32, secretKey: Int32)) {
        ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: host, port: port)
            .whenSuccess { channel in
                var buffer = channel.allocator.buffer(capacity: 16)
                PostgresEncoder.cancelRequest(processID: key.processID, secretKey: key.secretKey, into: &buffer)
                channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
            }
    }

    static func clientTLS() throws -> NIOSSLContext {
        // The gateway's own listener on loopback: the token is protected by TLS where the listener
        // wants it, and there is no one in between to verify against.
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        return try NIOSSLContext(configuration: configuration)
    }
}

/// Frames in, events out; answers the SSL negotiation by putting TLS in front of itself.
private final class LoopbackHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let events: AsyncStream<LoopbackPostgres.Event>.Continuation
    private let tls: NIOSSLContext?
    private var awaitingSSLAnswer: Bool
    private var decoder = PostgresFrameDecoder(maximumFrameLength: 64 << 20)
    private var buffered: ByteBuffer?

    init(events: AsyncStream<LoopbackPostgres.Event>.Continuation, tls: NIOSSLContext?) {
        self.events = events
        self.tls = tls
        awaitingSSLAnswer = tls != nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if awaitingSSLAnswer {
            awaitingSSLAnswer = false
            guard bytes.readInteger(as: UInt8.self) == UInt8(ascii: "S"), let tls else {
                events.yield(.failed("the PostgreSQL listener does not speak TLS"))
                return
            }
            do {
                try context.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: nil), position: .before(self))
            } catch {
                events.yield(.failed("TLS to the gateway's listener failed"))
                return
            }
            events.yield(.tlsReady)
            return
        }
        if buffered == nil { buffered = bytes } else { buffered!.writeBuffer(&bytes) }
        do {
            while let frame = try decoder.decode(buffer: &buffered!) {
                events.yield(.message(try BackendMessage.parse(frame)))
            }
            buffered!.discardReadBytes()
        } catch {
            events.yield(.failed("the gateway sent a message that could not be read"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        events.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        events.yield(.failed("the connection to the gateway's listener failed"))
        context.close(promise: nil)
    }
}

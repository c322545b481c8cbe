import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A reverse proxy on SwiftNIO's HTTP/1 codec alone, without Hummingbird or AsyncHTTPClient: each
/// client connection gets one keep-alive upstream connection on its own event loop, requests are
/// forwarded one at a time with the header injected and Authorization dropped, responses relayed
/// part by part. What a hand-written data path on NIO could reach.
enum NIOHTTPProxy {
    static func run(port: Int, upstreamHost: String, upstreamPort: Int, header: String, value: String) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true).flatMap {
                    channel.pipeline.addHandler(ClientSide(
                        upstreamHost: upstreamHost, upstreamPort: upstreamPort, header: header, value: value))
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .get()
        FileHandle.standardOutput.write(Data("ready\n".utf8))
        try await server.closeFuture.get()
    }
}

private final class ClientSide: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let upstreamHost: String
    private let upstreamPort: Int
    private let header: String
    private let value: String
    private var upstream: Channel?
    private var connecting: [HTTPClientRequestPart] = []
    private var isConnecting = false
    private var context: ChannelHandlerContext?

    init(upstreamHost: String, upstreamPort: Int, header: String, value: String) {
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        self.header = header
        self.value = value
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            var upstreamHead = HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri)
            for (name, fieldValue) in head.headers where !["authorization", "connection", "host"].contains(name.lowercased()) {
                upstreamHead.headers.add(name: name, value: fieldValue)
            }
            upstreamHead.headers.add(name: "Host", value: "\(upstreamHost):\(upstreamPort)")
            upstreamHead.headers.add(name: header, value: value)
            send(.head(upstreamHead))
        case .body(let body):
            send(.body(.byteBuffer(body)))
        case .end:
            send(.end(nil))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream?.close(promise: nil)
        context.fireChannelInactive()
    }

    private func send(_ part: HTTPClientRequestPart) {
        if let upstream {
            upstream.write(part, promise: nil)
            if case .end = part { upstream.flush() }
            return
        }
        connecting.append(part)
        guard !isConnecting, let context else { return }
        isConnecting = true
        let loop = context.eventLoop
        ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.pipeline.addHTTPClientHandlers().flatMap {
                    channel.pipeline.addHandler(UpstreamSide(client: self))
                }
            }
            .connect(host: upstreamHost, port: upstreamPort)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    self.isConnecting = false
                    self.upstream = channel
                    for part in self.connecting { channel.write(part, promise: nil) }
                    self.connecting = []
                    channel.flush()
                case .failure:
                    self.context?.close(promise: nil)
                }
            }
    }

    /// The upstream went away: the next request opens a new connection; one cut mid-response
    /// ends the client's connection too.
    func upstreamClosed(_ channel: Channel) {
        guard upstream === channel else { return }
        upstream = nil
        if responding { context?.close(promise: nil) }
    }

    private var responding = false

    func relay(_ part: HTTPClientResponsePart) {
        guard let context else { return }
        switch part {
        case .head(let head):
            responding = true
            var headers = head.headers
            headers.remove(name: "connection")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: head.status, headers: headers))), promise: nil)
        case .body(let body):
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        case .end:
            responding = false
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

private final class UpstreamSide: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    private let client: ClientSide

    init(client: ClientSide) { self.client = client }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        client.relay(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        client.upstreamClosed(context.channel)
        context.fireChannelInactive()
    }
}

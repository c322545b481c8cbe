// The floor of the stack Gatehouse is built on, for the benchmarks: what a proxy written with the
// same libraries costs when it does nothing but relay. Not part of the product: no identity, no
// policy, no recording, so nothing but a benchmark should ever point at it.
//
//   gatehouse-baseline tcp-relay  LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
//       SwiftNIO, bytes copied both ways with back-pressure: any PostgreSQL client works through it.
//   gatehouse-baseline recording-relay LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT JOURNAL_FILE
//       The same relay, but each batch of client bytes is appended to a hash-chained journal file
//       with one write before it is forwarded: the floor of recording before forwarding.
//   gatehouse-baseline http-proxy LISTEN_PORT UPSTREAM_BASE_URL HEADER_NAME ENV_VAR_HOLDING_VALUE
//       Hummingbird in, AsyncHTTPClient out (pooled), the header injected and the client's
//       Authorization dropped, the response streamed back.
//   gatehouse-baseline nio-http-proxy LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT HEADER_NAME ENV_VAR
//       The same on SwiftNIO's HTTP/1 codec alone: one keep-alive upstream connection per client.
// All listen on 127.0.0.1 only and print "ready" once bound.

import Foundation

let arguments = CommandLine.arguments

func usage() -> Never {
    FileHandle.standardError.write(Data(
        "usage: gatehouse-baseline tcp-relay PORT HOST PORT | recording-relay PORT HOST PORT FILE | http-proxy PORT URL HEADER ENV_VAR | nio-http-proxy PORT HOST PORT HEADER ENV_VAR\n".utf8))
    exit(2)
}

guard arguments.count >= 2 else { usage() }
switch (arguments[1], arguments.count) {
case ("tcp-relay", 5):
    guard let port = Int(arguments[2]), let upstreamPort = Int(arguments[4]) else { usage() }
    try await TCPRelay.run(port: port, upstreamHost: arguments[3], upstreamPort: upstreamPort)
case ("recording-relay", 6):
    guard let port = Int(arguments[2]), let upstreamPort = Int(arguments[4]) else { usage() }
    try await RecordingRelay.run(port: port, upstreamHost: arguments[3], upstreamPort: upstreamPort, journalPath: arguments[5])
case ("http-proxy", 6):
    guard let port = Int(arguments[2]), let value = ProcessInfo.processInfo.environment[arguments[5]] else { usage() }
    try await HTTPBaseline.run(port: port, upstream: arguments[3], header: arguments[4], value: value)
case ("nio-http-proxy", 7):
    guard let port = Int(arguments[2]), let upstreamPort = Int(arguments[4]),
          let value = ProcessInfo.processInfo.environment[arguments[6]] else { usage() }
    try await NIOHTTPProxy.run(port: port, upstreamHost: arguments[3], upstreamPort: upstreamPort, header: arguments[5], value: value)
default:
    usage()
}

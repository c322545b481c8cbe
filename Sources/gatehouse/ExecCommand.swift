import ArgumentParser
import AsyncHTTPClient
import Foundation
import GatehouseConfig
import NIOCore

/// `gatehouse exec NAME -- ARGS...`: runs a command connection's tool through the gateway, as the
/// person the token names, under the same policy, review and audit as any other caller.
struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command connection's tool through the gateway.",
        discussion: "Example: gatehouse exec kubectl-prod -- get pods -n web. The exit status is the tool's (124 when it timed out).")

    @OptionGroup var options: ConfigOption

    @Option(help: "The gateway's HTTP URL (default: from the configuration's http.listen).")
    var gateway: String?

    @Option(help: "A PEM file of CA certificates to trust for the HTTP listener, besides the system's and the configured certificate.")
    var cacert: String?

    @OptionGroup var credential: TokenOption

    @Option(help: "Why you run it; recorded with the run.")
    var intent: String?

    @Flag(help: "Send standard input to the tool.")
    var input = false

    @Argument(help: "Connection name.")
    var connection: String

    @Argument(parsing: .postTerminator, help: "The tool's arguments, after --.")
    var arguments: [String] = []

    func run() async throws {
        let base: String
        // The HTTP listener's configured certificate is trusted besides the system's roots.
        let certificate: String?
        if let gateway {
            base = gateway.hasSuffix("/") ? String(gateway.dropLast()) : gateway
            certificate = (try? options.load())?.http.tlsCertificate
        } else {
            let loaded = try options.load()
            guard let listen = loaded.http.listen else {
                throw fail("\(options.config) has no HTTP listener (http.listen); pass --gateway URL")
            }
            base = "\(loaded.http.scheme)://\(listen.local)"
            certificate = loaded.http.tlsCertificate
        }
        let bearer = try credential.bearer()
        var body: [String: Any] = ["args": arguments]
        if input { body["stdin"] = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
        if let intent { body["intent"] = intent }
        // Connection names are letters, digits, '-' and '_': nothing to encode, nothing to inject.
        guard !connection.isEmpty, connection.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw fail("'\(connection)' is not a connection name")
        }
        var request = HTTPClientRequest(url: base + "/c/" + connection + "/exec")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(bearer)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "gatehouse-cli")
        // Output as the tool writes it: one JSON line per piece, then how it ended.
        request.headers.add(name: "Accept", value: "application/x-ndjson")
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        var object: [String: Any] = [:]
        do {
            object = try await GatewayClient.with(trusting: [certificate, cacert].compactMap { $0 }) { client in
                var last: [String: Any] = [:]
                // Long enough for a review to be decided and the tool to run.
                let response = try await client.execute(request, timeout: .hours(2))
                guard response.status.code == 200 else {
                    let bytes = try await response.body.collect(upTo: 1 << 20)
                    let problem = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any]
                    throw fail(problem?["detail"] as? String ?? "HTTP \(response.status.code)")
                }
                var pending: [UInt8] = []
                for try await chunk in response.body {
                    pending += chunk.readableBytesView
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = Data(pending[..<newline])
                        pending.removeFirst(newline + 1)
                        guard let entry = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any] else { continue }
                        if let data = entry["data"] as? String {
                            let handle = entry["stream"] as? String == "stderr" ? FileHandle.standardError : FileHandle.standardOutput
                            handle.write(Data(data.utf8))
                        } else {
                            last = entry
                        }
                    }
                }
                return last
            }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw fail("cannot reach the gateway at \(base): \(error)")
        }
        if let error = object["error"] as? String { printError("gatehouse: \(error)") }
        if object["timed_out"] as? Bool == true { throw ExitCode(124) }
        if let code = object["exit_code"] as? Int { throw ExitCode(Int32(code)) }
        throw ExitCode(1)
    }
}

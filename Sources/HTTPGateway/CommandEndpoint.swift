import Commands
import Foundation
import GatehouseCore
import HTTPTypes
import Hummingbird
import Identity
import Masking
import NIOConcurrencyHelpers
import NIOCore
import Policy
import Reviews

/// One configured command connection: a tool the gateway runs with credentials only it holds.
public struct CommandTarget: Sendable {
    public var name: String
    public var access: ConnectionAccess
    public var executable: String
    /// Fixed leading arguments; the caller's come after them.
    public var arguments: [String]
    public var environment: [String: String]
    /// Environment variables set to a secret's value, and to the path of a file holding one;
    /// resolved on every run so a rotated secret applies without a restart.
    public var secrets: [String: @Sendable () throws -> String]
    public var secretFiles: [String: @Sendable () throws -> String]
    public var workingDirectory: String?
    public var timeout: Duration
    public var maxOutputBytes: Int
    public var maxInputBytes: Int
    public var forbiddenOptions: [String]
    /// Runs in progress, against `maxConcurrent`.
    let running: RunCounter

    public init(
        name: String, access: ConnectionAccess, executable: String, arguments: [String] = [], environment: [String: String] = [:],
        secrets: [String: @Sendable () throws -> String] = [:], secretFiles: [String: @Sendable () throws -> String] = [:],
        workingDirectory: String? = nil, timeout: Duration = .seconds(30), maxOutputBytes: Int = 1 << 20, maxInputBytes: Int = 1 << 20,
        forbiddenOptions: [String] = [], maxConcurrent: Int = 8
    ) {
        self.forbiddenOptions = forbiddenOptions
        self.running = RunCounter(limit: maxConcurrent)
        self.name = name
        self.access = access
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.secrets = secrets
        self.secretFiles = secretFiles
        self.workingDirectory = workingDirectory
        self.timeout = timeout
        self.maxOutputBytes = maxOutputBytes
        self.maxInputBytes = maxInputBytes
    }
}

/// How many runs of one connection are in progress.
final class RunCounter: Sendable {
    private let count = NIOLockedValueBox(0)
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func enter() -> Bool {
        count.withLockedValue { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() { count.withLockedValue { $0 -= 1 } }
}

/// An option the caller may not pass, in any of the forms a getopt-style tool reads: `--server`,
/// `--server=x`, an unambiguous abbreviation (`--serv`), `-s`, `-sx`.
func forbiddenOption(in arguments: [String], forbidden: [String]) -> String? {
    for argument in arguments where argument.hasPrefix("-") && argument != "-" {
        if argument == "--" { return nil }  // the rest are operands
        for option in forbidden {
            if option.hasPrefix("--") {
                guard argument.hasPrefix("--") else { continue }
                let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
                if name == option || (name.count >= 3 && option.hasPrefix(name)) { return option }
            } else if !argument.hasPrefix("--"), let letter = option.dropFirst().first {
                // A cluster of short options (`-vs x`) carries the letter too.
                if argument.dropFirst().contains(letter) { return option }
            }
        }
    }
    return nil
}

/// What a caller sends to `POST /c/NAME/exec`.
struct CommandCall: Decodable {
    var args: [String]
    var stdin: String?
    var intent: String?

    static let maxArguments = 256
    static let maxArgumentBytes = 8192

    /// Nil when the call can be run, else why not (for the client).
    var problem: String? {
        if args.count > Self.maxArguments { return "at most \(Self.maxArguments) arguments" }
        if let long = args.first(where: { $0.utf8.count > Self.maxArgumentBytes }) {
            return "an argument is longer than \(Self.maxArgumentBytes) bytes (\(long.utf8.count))"
        }
        // Arguments travel to the tool as C strings: a NUL would silently cut one short.
        if args.contains(where: { $0.utf8.contains(0) }) { return "an argument contains a NUL byte" }
        return nil
    }
}

extension HTTPProxy {
    /// `POST /c/NAME/exec` on a command connection: identity (already checked), access, the
    /// policy on the caller's arguments (review holds the run), the request event committed, the
    /// tool run without a shell, its output masked (the connection's secrets scrubbed, then the
    /// mask rules' detectors) and recorded, the answer as JSON.
    func runCommand(
        _ request: Request, _ exchange: inout Exchange, target: CommandTarget, rest: Substring, context: HTTPGatewayContext
    ) async throws -> Response {
        let started = ContinuousClock.now
        exchange.connection = target.name
        exchange.requestKind = "command.exec"
        let principal = exchange.principal!
        guard rest == "/exec" else {
            return try await refuse(&exchange, .notFound, "a command connection has one endpoint: POST /c/\(target.name)/exec",
                                    decision: .deny(rule: "route", reason: "no such endpoint"), errorCode: "unknown-endpoint")
        }
        guard request.method == .post else {
            var response = try await refuse(&exchange, .methodNotAllowed, "use POST", decision: .deny(rule: "method", reason: "exec takes POST"),
                                            errorCode: "method-not-allowed")
            response.headers[.allow] = "POST"
            return response
        }
        var access = target.access.decide(for: principal)
        if access.effect != .allow, let grant = reviews?.grants.grant(for: principal, connection: target.name) {
            access = grant.decision
        }
        guard access.effect == .allow else {
            return try await refuse(&exchange, .forbidden, access.reason ?? "not allowed", decision: access, errorCode: "connection-denied")
        }
        let call: CommandCall
        do {
            let body = try await request.body.collect(upTo: target.maxInputBytes * 2 + 64 * 1024)
            call = try JSONDecoder().decode(CommandCall.self, from: Data(body.readableBytesView))
        } catch {
            return try await refuse(&exchange, .badRequest, "the body must be JSON: {\"args\": [\"…\"], \"stdin\": \"…\"} within the size limit",
                                    decision: .deny(rule: "body", reason: "unreadable exec request"), errorCode: "bad-request")
        }
        if let problem = call.problem {
            return try await refuse(&exchange, .badRequest, problem, decision: .deny(rule: "body", reason: problem), errorCode: "bad-request")
        }
        let input = Array((call.stdin ?? "").utf8)
        guard input.count <= target.maxInputBytes else {
            return try await refuse(&exchange, .contentTooLarge, "stdin is larger than \(target.maxInputBytes) bytes",
                                    decision: .deny(rule: "body", reason: "stdin too large"), errorCode: "input-too-large")
        }
        if let option = forbiddenOption(in: call.args, forbidden: target.forbiddenOptions) {
            return try await refuse(&exchange, .forbidden, "the option \(option) may not be passed to \(target.name)",
                                    decision: .deny(rule: "connection:\(target.name):options", reason: "\(option) is a forbidden option of \(target.name)"),
                                    errorCode: "forbidden-option")
        }
        let commandLine = Self.commandLine([target.executable] + target.arguments + call.args)
        exchange.overrideText = commandLine
        if let intent = call.intent { exchange.intent = intent.truncated(toUTF8Bytes: 1024).text }

        let evaluation = settings.policy.evaluate(principal: principal, connection: target.name, operation: .command(arguments: call.args))
        var decision = evaluation.decision
        if decision.effect == .review {
            let reviewRequest = ReviewRequest(
                session: exchange.session, connection: target.name, protocolName: "command",
                operation: commandLine + (input.isEmpty ? "" : "\n\nstdin: " + (call.stdin ?? "").truncated(toUTF8Bytes: 2048).text),
                intent: exchange.intent,
                digest: ReviewDigest.of(protocolName: "command", connection: target.name, principal: principal,
                                        operation: target.executable, parameters: target.arguments + call.args, body: input),
                requester: principal, client: exchange.client, decision: decision,
                approvals: evaluation.approval?.approvals ?? 1, approverGroups: evaluation.approval?.approverGroups ?? [])
            switch try await waitForReview(reviewRequest, decision: decision, &exchange, context: context) {
            case .approved(let approval): decision = approval
            case .refused(let response): return response
            }
        }
        guard decision.effect == .allow else {
            return try await refuse(&exchange, .forbidden, decision.reason ?? "not allowed", decision: decision, errorCode: "request-denied")
        }

        let requestEvent: AuditEvent
        do {
            let payload = Self.json(["args": .array(call.args.map { .string($0) }), "stdin": .string((call.stdin ?? "").truncated(toUTF8Bytes: settings.maxRecordedBodyBytes).text)])
            requestEvent = try await auditLog.append(exchange.record(kind: exchange.requestKind, decision: decision, payload: (payload, input.count > settings.maxRecordedBodyBytes)))
        } catch {
            HTTPMetrics.count("audit-unavailable")
            return try ProblemResponse.make(.serviceUnavailable, "the audit trail cannot be written; request refused")
        }
        HTTPMetrics.count("allow")

        guard target.running.enter() else {
            recordCommandResult(exchange, event: requestEvent, started: started, status: "not started", errorCode: "busy",
                                error: "\(target.running.limit) runs of this tool are in progress", stdout: "", stderr: "", truncated: false)
            var response = try ProblemResponse.make(.tooManyRequests, "\(target.running.limit) runs of \(target.name) are in progress; try again shortly",
                                                    connection: target.name)
            response.headers[.retryAfter] = "1"
            return response
        }
        // Held for the whole run: a streamed run ends after this function has returned.
        var slotHandedOn = false
        defer { if !slotHandedOn { target.running.leave() } }
        var environment = target.environment
        var files: [String: String] = [:]
        var secretValues: [String] = []
        do {
            for (name, value) in target.secrets {
                environment[name] = try value()
                secretValues.append(environment[name]!)
            }
            for (name, value) in target.secretFiles {
                files[name] = try value()
                secretValues.append(contentsOf: files[name]!.split(whereSeparator: \.isNewline).map(String.init))
            }
        } catch {
            recordCommandResult(exchange, event: requestEvent, started: started, status: "not started", errorCode: "credential-unavailable",
                                error: "the connection's credential could not be read", stdout: "", stderr: "", truncated: false)
            return try ProblemResponse.make(.badGateway, "the gateway cannot run this connection's tool", connection: target.name)
        }
        // The caller leaving stops the run.
        let cancellation = CommandCancellation()
        let hangup = Self.onHangup(of: context) { cancellation.cancel() }
        let masks = settings.policy.masks(principal: principal, connection: target.name)
        var spec = CommandSpec(
            executable: target.executable, arguments: target.arguments + call.args, environment: environment, files: files,
            workingDirectory: target.workingDirectory, input: input, timeout: target.timeout, maxOutputBytes: target.maxOutputBytes,
            cancellation: cancellation)
        let finishedExchange = exchange
        // What leaves the gateway, and what the trail keeps: the tool's output, as it is read,
        // with the connection's own secrets replaced, then masked as the policy says (values
        // split across pieces included). Streamed or answered whole, it is the same output.
        let outputs = StreamingOutput(secrets: secretValues, masks: masks, masker: settings.masker)
        if Self.wantsStream(request) {
            // One JSON line per piece, then a last line with how it ended.
            let (lines, continuation) = AsyncStream<ByteBuffer>.makeStream()
            spec.onOutput = { stream, bytes in
                let text = outputs.feed(stream, bytes)
                if !text.isEmpty { continuation.yield(Self.line(["stream": .string(stream.rawValue), "data": .string(text)])) }
            }
            slotHandedOn = true
            Task {
                defer { target.running.leave() }
                let result = await CommandRunner.run(spec)
                hangup.end()
                for stream in [CommandOutputStream.stdout, .stderr] {
                    let rest = outputs.finish(stream)
                    if !rest.isEmpty { continuation.yield(Self.line(["stream": .string(stream.rawValue), "data": .string(rest)])) }
                }
                let (answer, _) = self.finishRun(result, target: target, exchange: finishedExchange, event: requestEvent, started: started,
                                                 stdout: outputs.text(.stdout), stderr: outputs.text(.stderr), includeOutput: false)
                continuation.yield(Self.line(answer))
                continuation.finish()
            }
            return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody(asyncSequence: lines))
        }
        spec.onOutput = { stream, bytes in _ = outputs.feed(stream, bytes) }
        let result = await CommandRunner.run(spec)
        hangup.end()
        _ = outputs.finish(.stdout)
        _ = outputs.finish(.stderr)
        let (answer, ran) = finishRun(result, target: target, exchange: finishedExchange, event: requestEvent, started: started,
                                      stdout: outputs.text(.stdout), stderr: outputs.text(.stderr), includeOutput: true)
        if !ran {
            return try ProblemResponse.make(.badGateway, "the gateway could not start this connection's tool", connection: target.name)
        }
        return try ProblemResponse.json(answer)
    }

    static func wantsStream(_ request: Request) -> Bool {
        request.headers[values: .accept].contains { $0.lowercased().contains("application/x-ndjson") }
    }

    /// One JSON document on one line (ProblemResponse ends each document with a newline).
    static func line(_ object: [String: JSONValue]) -> ByteBuffer {
        (try? ProblemResponse.bytes(object)) ?? ByteBuffer(string: "{}\n")
    }

    /// How the run ended, for the caller (JSON) and the trail (the result event). The second
    /// value is false when the tool never started.
    private func finishRun(
        _ result: CommandResult, target: CommandTarget, exchange: Exchange, event: AuditEvent, started: ContinuousClock.Instant,
        stdout: String, stderr: String, includeOutput: Bool
    ) -> ([String: JSONValue], Bool) {
        var answer: [String: JSONValue] = [
            "connection": .string(target.name),
            "duration_ms": .number(Double(result.duration.components.seconds * 1000 + result.duration.components.attoseconds / 1_000_000_000_000_000)),
            "output_truncated": .bool(result.ending == .outputTooLarge),
            "timed_out": .bool(result.ending == .timedOut),
        ]
        if includeOutput {
            answer["stdout"] = .string(stdout)
            answer["stderr"] = .string(stderr)
        }
        let status: String
        var errorCode: String?
        var error: String?
        var ran = true
        switch result.ending {
        case .exited(let code):
            answer["exit_code"] = .number(Double(code))
            status = "exited \(code)"
            if code != 0 { errorCode = "exit-\(code)" }
        case .signalled(let signal):
            answer["signal"] = .number(Double(signal))
            status = "killed by signal \(signal)"
            errorCode = "signal-\(signal)"
        case .timedOut:
            status = "timed out"
            errorCode = "timeout"
            error = "the tool ran past \(target.timeout) and was killed with its children"
        case .outputTooLarge:
            status = "output too large"
            errorCode = "output-too-large"
            error = "the tool's output passed \(target.maxOutputBytes) bytes; it was stopped and the output cut"
        case .cancelled:
            status = "cancelled"
            errorCode = "cancelled"
            error = "the caller went away; the tool was killed with its children"
        case .failedToStart(let reason):
            status = "not started"
            errorCode = "start-failed"
            error = reason
            ran = false
        }
        if let error { answer["error"] = .string(error) }
        recordCommandResult(exchange, event: event, started: started, status: status, errorCode: errorCode, error: error,
                            stdout: stdout, stderr: stderr, truncated: result.ending == .outputTooLarge)
        return (answer, ran)
    }

    private func recordCommandResult(
        _ exchange: Exchange, event: AuditEvent, started: ContinuousClock.Instant, status: String, errorCode: String?, error: String?,
        stdout: String, stderr: String, truncated: Bool
    ) {
        let duration = ContinuousClock.now - started
        HTTPMetrics.duration.recordNanoseconds(duration.inNanoseconds)
        let half = settings.maxPayloadBytes / 2
        let payload = Self.json(["stdout": .string(stdout.truncated(toUTF8Bytes: half).text), "stderr": .string(stderr.truncated(toUTF8Bytes: half).text)])
        let record = AuditRecord(
            node: settings.node, session: exchange.session, principal: exchange.principal, client: exchange.client, connection: exchange.connection,
            operation: .init(kind: "command.result", text: "result of event \(event.seq)", intent: exchange.intent),
            decision: event.record.decision,
            outcome: .init(status: status, bytes: Int64(stdout.utf8.count + stderr.utf8.count), errorCode: errorCode, error: error,
                           durationMicros: duration.inNanoseconds / 1000),
            payload: payload, payloadTruncated: truncated || stdout.utf8.count > half || stderr.utf8.count > half ? true : nil)
        auditLog.appendEventually(record)
    }

    static func json(_ object: [String: JSONValue]) -> String {
        (try? ProblemResponse.bytes(object)).map { String(buffer: $0).trimmingCharacters(in: .newlines) } ?? "{}"
    }

    /// The command as a person would type it, each argument quoted when it needs to be (for
    /// display and the trail only: nothing is ever run through a shell).
    static func commandLine(_ argv: [String]) -> String {
        argv.map { argument in
            let plain = !argument.isEmpty && argument.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "-_./=:,@%+".unicodeScalars.contains($0)
            }
            return plain ? argument : "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }
}

/// Replaces secrets in a stream of bytes, a secret split across pieces included: the bytes that
/// could still be the start of one are held until the next piece shows whether they are.
struct StreamingScrubber {
    private let secrets: [[UInt8]]
    private let longest: Int
    private var pending: [UInt8] = []

    init(secrets: [String]) {
        self.secrets = SecretScrubber.normalized(secrets).map { Array($0.utf8) }
        longest = self.secrets.first?.count ?? 0
    }

    mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        guard longest > 0 else { return bytes }
        pending += bytes
        return drain(final: false)
    }

    mutating func finish() -> [UInt8] {
        drain(final: true)
    }

    /// Emits what is decided: at each position where every secret would fit whole (anywhere, at
    /// the end), the longest secret starting there is replaced, as the whole-text scrubber does.
    private mutating func drain(final: Bool) -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        let decidable = final ? pending.count : pending.count - (longest - 1)
        while index < decidable {
            if let secret = secrets.first(where: { secret in
                index + secret.count <= pending.count && pending[index..<(index + secret.count)].elementsEqual(secret)
            }) {
                out += Array("[credential]".utf8)
                index += secret.count
            } else {
                out.append(pending[index])
                index += 1
            }
        }
        pending.removeFirst(min(index, pending.count))
        return out
    }
}

/// stdout and stderr of one run: each scrubbed, masked by detectors and cut at whole characters
/// as it comes; the masked text kept (no more than the runner's output cap) for the answer and
/// the trail. Fed from the runner's thread only, one piece at a time, and read after the run.
final class StreamingOutput: @unchecked Sendable {
    private struct Pipeline {
        var scrubber: StreamingScrubber
        var masker: TextStreamMasker?
        var partial: [UInt8] = []
        var kept = ""
    }

    private var pipelines: [CommandOutputStream: Pipeline] = [:]

    init(secrets: [String], masks: [NamedMask], masker: ValueMasker) {
        let rules = ResponseMaskRules.forResponses(masks)
        for stream in [CommandOutputStream.stdout, .stderr] {
            pipelines[stream] = Pipeline(
                scrubber: StreamingScrubber(secrets: secrets),
                masker: rules.flatMap { $0.detectors.isEmpty ? nil : TextStreamMasker(rules: $0, masker: masker) })
        }
    }

    func feed(_ stream: CommandOutputStream, _ bytes: [UInt8]) -> String {
        var pipeline = pipelines[stream]!
        var out = pipeline.scrubber.feed(bytes)
        if pipeline.masker != nil { out = (try? pipeline.masker!.feed(out)) ?? Array("[output withheld: it could not be masked]".utf8) }
        let text = Self.wholeCharacters(&pipeline.partial, out)
        pipeline.kept += text
        pipelines[stream] = pipeline
        return text
    }

    func finish(_ stream: CommandOutputStream) -> String {
        var pipeline = pipelines[stream]!
        var out = pipeline.scrubber.finish()
        if pipeline.masker != nil {
            out = ((try? pipeline.masker!.feed(out)) ?? []) + pipeline.masker!.finish()
        }
        let text = String(decoding: pipeline.partial + out, as: UTF8.self)
        pipeline.partial = []
        pipeline.kept += text
        pipelines[stream] = pipeline
        return text
    }

    func text(_ stream: CommandOutputStream) -> String { pipelines[stream]!.kept }

    /// The bytes as text up to the last whole UTF-8 character; the rest waits for the next piece.
    static func wholeCharacters(_ partial: inout [UInt8], _ bytes: [UInt8]) -> String {
        let all = partial + bytes
        var end = all.count
        // Back over continuation bytes to the lead byte of the last character, and keep that
        // character back if it is incomplete.
        var index = all.count - 1
        var continuation = 0
        while index >= 0, all[index] & 0xC0 == 0x80, continuation < 3 {
            continuation += 1
            index -= 1
        }
        if index >= 0 {
            let lead = all[index]
            let length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
            if length > continuation + 1 { end = index }
        }
        partial = Array(all[end...])
        return String(decoding: all[..<end], as: UTF8.self)
    }
}

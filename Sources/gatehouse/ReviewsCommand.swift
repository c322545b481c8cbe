import ArgumentParser
import AsyncHTTPClient
import Foundation
import GatehouseConfig
import NIOCore
import NIOHTTP1

/// Who is asking: the person (or agent) the token names.
struct TokenOption: ParsableArguments {
    @Option(help: "Bearer token (default: the GATEHOUSE_TOKEN environment variable).")
    var token: String?

    func bearer() throws -> String {
        guard let value = token ?? ProcessInfo.processInfo.environment["GATEHOUSE_TOKEN"], !value.isEmpty else {
            throw fail("a token is needed: --token or GATEHOUSE_TOKEN")
        }
        return value
    }
}

/// Where the gateway's admin API is and who is asking: every reviews and access command acts as
/// the person its token names, so the gateway can tell a requester from an approver.
struct AdminClientOptions: ParsableArguments {
    @OptionGroup var options: ConfigOption

    @Option(help: "The gateway's admin URL (default: from the configuration's admin.listen).")
    var gateway: String?

    @Option(help: "A PEM file of CA certificates to trust for the admin listener, besides the system's and the configured certificate.")
    var cacert: String?

    @OptionGroup var credential: TokenOption

    /// The admin URL, and what to trust for it besides the system's roots: the configured
    /// certificate (also under another name given with --gateway, when the configuration can be
    /// read) and --cacert.
    func target() throws -> (base: String, certificates: [String]) {
        if let gateway {
            let configured = (try? options.load())?.admin.tlsCertificate
            return (gateway.hasSuffix("/") ? String(gateway.dropLast()) : gateway, [configured, cacert].compactMap { $0 })
        }
        let admin = try options.load().admin
        return (admin.localURL, [admin.tlsCertificate, cacert].compactMap { $0 })
    }

    /// Calls the admin API; a problem document becomes the command's error message and exit 1.
    func call(_ method: HTTPMethod, _ path: String, body: [String: Any]? = nil) async throws -> Any {
        let (base, certificates) = try target()
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(try credential.bearer())")
        request.headers.add(name: "User-Agent", value: "gatehouse-cli")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            (response, bytes) = try await GatewayClient.with(trusting: certificates) { client in
                let response = try await client.execute(request, timeout: .seconds(30))
                return (response, try await response.body.collect(upTo: 8 << 20))
            }
        } catch {
            throw fail("cannot reach the gateway at \(base): \(error)")
        }
        let object = try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))
        guard (200..<300).contains(Int(response.status.code)) else {
            let detail = (object as? [String: Any])?["detail"] as? String ?? "HTTP \(response.status.code)"
            throw fail(detail)
        }
        guard let object else { throw fail("the gateway's answer was not JSON") }
        return object
    }
}

struct ReviewsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reviews",
        abstract: "See and decide operations waiting for approval.",
        subcommands: [List.self, Show.self, Approve.self, Deny.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List reviews (pending by default).")

        @OptionGroup var client: AdminClientOptions

        @Option(help: "pending, approved, denied, expired, abandoned, executed, granted, or all.")
        var state: String = "pending"

        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            let query = state == "all" ? "" : "?state=\(state)"
            let answer = try await client.call(.GET, "/v1/reviews\(query)")
            if json { return printJSON(answer) }
            let reviews = (answer as? [String: Any])?["reviews"] as? [[String: Any]] ?? []
            if reviews.isEmpty { printError("no \(state == "all" ? "" : state + " ")reviews") }
            for review in reviews {
                let who = (review["agent"] as? String).map { "\($0) for \(review["requester"] as? String ?? "?")" } ?? (review["requester"] as? String ?? "?")
                let operation = terminalSafe(review["operation"] as? String ?? "").replacingOccurrences(of: "\n", with: " ")
                print(terminalSafe("\(review["id"] as? String ?? "?")  \(review["state"] as? String ?? "?")  \(review["connection"] as? String ?? "?")  \(who)  \(approvals(review))  ") + operation.prefix(160) + (operation.count > 160 ? " …" : ""))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one review in full.")

        @OptionGroup var client: AdminClientOptions

        @Argument(help: "Review id.")
        var id: String

        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            let answer = try await client.call(.GET, "/v1/reviews/\(escaped(id))")
            if json { return printJSON(answer) }
            guard let review = answer as? [String: Any] else { return }
            describe(review)
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Approve a review; the held operation runs once it has every approval it needs.")

        @OptionGroup var client: AdminClientOptions

        @Argument(help: "Review id.")
        var id: String

        @Option(help: "A comment, recorded with the approval.")
        var comment: String?

        @Option(help: "Approve only if the operation's digest is this one (from `reviews show`).")
        var digest: String?

        func run() async throws {
            var body: [String: Any] = [:]
            if let comment { body["comment"] = comment }
            if let digest { body["digest"] = digest }
            let answer = try await client.call(.POST, "/v1/reviews/\(escaped(id))/approve", body: body)
            guard let review = answer as? [String: Any] else { return }
            let state = review["state"] as? String ?? "?"
            switch state {
            case "approved": print("approved review \(id): the operation runs now")
            case "granted": print("approved review \(id): access granted")
            default: print("approved review \(id): \(approvals(review)) approvals, waiting for more")
            }
        }
    }

    struct Deny: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deny a review; the client is told the reason.")

        @OptionGroup var client: AdminClientOptions

        @Argument(help: "Review id.")
        var id: String

        @Option(help: "Why; the waiting client sees it.")
        var reason: String?

        func run() async throws {
            var body: [String: Any] = [:]
            if let reason { body["reason"] = reason }
            _ = try await client.call(.POST, "/v1/reviews/\(escaped(id))/deny", body: body)
            print("denied review \(id)")
        }
    }
}

struct AccessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access",
        abstract: "Ask for time-boxed access to a connection, and see the grants in force.",
        subcommands: [Request.self, Grants.self, Revoke.self]
    )

    struct Request: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask an approver for access to a connection for some minutes.")

        @OptionGroup var client: AdminClientOptions

        @Argument(help: "Connection name.")
        var connection: String

        @Option(help: "How long the access lasts once granted.")
        var minutes: Int = 60

        @Option(help: "Why you need it; the approver sees it.")
        var reason: String?

        @Flag(help: "Let agents acting for you use the grant too.")
        var includeAgents = false

        @Flag(help: "Wait until the request is decided.")
        var wait = false

        func run() async throws {
            var body: [String: Any] = ["connection": connection, "minutes": minutes, "include_agents": includeAgents]
            if let reason { body["reason"] = reason }
            let answer = try await client.call(.POST, "/v1/access/requests", body: body)
            guard let review = answer as? [String: Any], let id = review["id"] as? String else { return }
            print("access request \(id) is waiting for approval: `gatehouse reviews approve \(id)`")
            guard wait else { return }
            while true {
                try await Task.sleep(for: .seconds(1))
                let current = try await client.call(.GET, "/v1/reviews/\(id)") as? [String: Any] ?? [:]
                switch current["state"] as? String {
                case "pending": continue
                case "granted":
                    print("access to \(connection) granted for \(minutes) minutes")
                    return
                case let state:
                    throw fail("access request \(id) was \(state ?? "closed"): \(current["close_reason"] as? String ?? "")")
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a grant before its time (approvers).")

        @OptionGroup var client: AdminClientOptions

        @Argument(help: "The review that granted it.")
        var id: String

        @Option(help: "Why; recorded.")
        var reason: String?

        func run() async throws {
            _ = try await client.call(.POST, "/v1/access/grants/\(escaped(id))/revoke", body: reason.map { ["reason": $0] } ?? [:])
            print("revoked the grant of review \(id)")
        }
    }

    struct Grants: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the grants in force (yours, or all for approvers).")

        @OptionGroup var client: AdminClientOptions

        func run() async throws {
            let answer = try await client.call(.GET, "/v1/access/grants")
            let grants = (answer as? [String: Any])?["grants"] as? [[String: Any]] ?? []
            if grants.isEmpty { printError("no grants in force") }
            for grant in grants {
                print("\(grant["review"] as? String ?? "?")  \(grant["subject"] as? String ?? "?")  \(grant["connection"] as? String ?? "?")  until \(grant["expiresAt"] ?? "?")  by \((grant["grantedBy"] as? [String] ?? []).joined(separator: ","))")
            }
        }
    }
}

/// What an agent wrote, made safe for a reviewer's terminal: control characters (escape
/// sequences, carriage returns) and bidirectional overrides shown as code points, not obeyed.
func terminalSafe(_ text: String) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        let bidi = (0x202A...0x202E).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value)
        if scalar == "\n" || scalar == "\t" || (scalar.value >= 0x20 && scalar.value != 0x7F && !(0x80...0x9F).contains(scalar.value) && !bidi) {
            out.unicodeScalars.append(scalar)
        } else {
            out += String(format: "\\u{%04X}", scalar.value)
        }
    }
    return out
}

private func approvals(_ review: [String: Any]) -> String {
    "\((review["approvals"] as? [Any])?.count ?? 0)/\(review["approvals_required"] as? Int ?? 1)"
}

private func escaped(_ id: String) -> String {
    id.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? id
}

private func printJSON(_ value: Any) {
    if let data = try? JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) {
        print(String(decoding: data, as: UTF8.self))
    }
}

private func describe(_ review: [String: Any]) {
    let keys = ["id", "kind", "state", "connection", "requester", "agent", "rule", "reason", "intent", "approvals_required",
                "created_at", "expires_at", "closed_at", "closed_by", "close_reason", "digest", "session"]
    for key in keys {
        if let value = review[key] { print("\(key): " + terminalSafe("\(value)")) }
    }
    let approvals = (review["approvals"] as? [[String: Any]] ?? []).map { "\($0["subject"] ?? "?") at \($0["time"] ?? "?")" }
    print("approvals: \(approvals.isEmpty ? "none" : approvals.joined(separator: "; "))")
    print("operation:\n  " + terminalSafe(review["operation"] as? String ?? "").replacingOccurrences(of: "\n", with: "\n  "))
}

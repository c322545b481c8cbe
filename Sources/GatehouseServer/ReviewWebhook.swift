import AsyncHTTPClient
import Foundation
import GatehouseConfig
import GatehouseCore
import Identity
import NIOCore
import Reviews

/// Announces each new review to a chat tool: a Slack-compatible message (`text`, and `blocks`
/// with Approve and Deny buttons that link to the review) plus the review itself under `review`.
/// A failed delivery is logged and recorded, never retried into a storm, and never holds the
/// review up: the CLI and the API work without it.
struct ReviewWebhook: Sendable {
    let webhook: GatehouseConfig.Reviews.Webhook
    let linkBase: String
    let client: HTTPClient

    /// Slack reads `<...>` as links and mentions and `&` as an entity: what an agent wrote (its
    /// statement, its intent) must not become an "Approve" link of its own or an @channel.
    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    func payload(_ review: Review) -> [String: JSONValue] {
        let approve = "\(linkBase)/v1/reviews/\(review.id)/approve"
        let deny = "\(linkBase)/v1/reviews/\(review.id)/deny"
        let who = Self.escaped(review.requester.agent.map { "agent \($0) for \(review.requester.subject)" } ?? review.requester.subject)
        var operation = webhook.includeOperation ? review.operation.truncated(toUTF8Bytes: 1000).text : "(not shown; see `gatehouse reviews show \(review.id)`)"
        operation = Self.escaped(operation.replacingOccurrences(of: "```", with: "'''"))
        let headline = review.kind == .access
            ? "Gatehouse review \(review.id): \(who) asks for access to \(review.connection) for \(review.grantMinutes ?? 0) minutes"
            : "Gatehouse review \(review.id): \(who) wants to run on \(review.connection)"
        var details = "*Rule:* \(Self.escaped(review.rule ?? "-")) — \(Self.escaped(review.reason ?? ""))"
        if let intent = review.intent {
            details += "\n*Intent:* `\(Self.escaped(intent.truncated(toUTF8Bytes: 300).text.replacingOccurrences(of: "`", with: "'")))`"
        }
        details += "\n*Approvals needed:* \(review.approvalsRequired) · *expires* \(ISO8601DateFormatter().string(from: review.expiresAt))"
        details += "\n`gatehouse reviews approve \(review.id)` or `gatehouse reviews deny \(review.id) --reason …`"
        let button = { (text: String, url: String, style: String) -> JSONValue in
            .object(["type": .string("button"), "text": .object(["type": .string("plain_text"), "text": .string(text)]),
                     "url": .string(url), "style": .string(style), "action_id": .string(text.lowercased())])
        }
        var reviewObject: [String: JSONValue] = [
            "id": .string(review.id), "kind": .string(review.kind.rawValue), "connection": .string(review.connection),
            "requester": .string(review.requester.subject), "rule": review.rule.map { .string($0) } ?? .null,
            "reason": review.reason.map { .string($0) } ?? .null, "digest": .string(review.digest),
            "approvals_required": .number(Double(review.approvalsRequired)),
            "expires_at": .string(ISO8601DateFormatter().string(from: review.expiresAt)),
            "approve_url": .string(approve), "deny_url": .string(deny),
        ]
        if let agent = review.requester.agent { reviewObject["agent"] = .string(agent) }
        if webhook.includeOperation { reviewObject["operation"] = .string(operation) }
        return [
            "text": .string("\(headline): \(operation) — approve: \(approve) · deny: \(deny)"),
            "blocks": .array([
                .object(["type": .string("section"), "text": .object(["type": .string("mrkdwn"), "text": .string("*\(headline)*\n```\(operation)```")])]),
                .object(["type": .string("section"), "text": .object(["type": .string("mrkdwn"), "text": .string(details)])]),
                .object(["type": .string("actions"), "elements": .array([button("Approve", approve, "primary"), button("Deny", deny, "danger")])]),
            ]),
            "review": .object(reviewObject),
        ]
    }

    /// Posts the message; returns a secret-free description of what happened.
    func deliver(_ review: Review) async -> (delivered: Bool, detail: String) {
        let url: String
        switch webhook.target {
        case .url(let value): url = value.absoluteString
        case .secret(let reference):
            guard let value = try? reference.resolve() else { return (false, "the webhook URL \(reference) cannot be read") }
            url = value
        }
        do {
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "User-Agent", value: "gatehouse")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            request.body = .bytes(ByteBuffer(bytes: try encoder.encode(payload(review))))
            let response = try await client.execute(request, timeout: .seconds(10))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            let ok = (200..<300).contains(Int(response.status.code))
            return (ok, "the webhook answered \(response.status.code)")
        } catch {
            // The URL may be a credential: the error's type only, never its text.
            return (false, "the webhook could not be reached (\(type(of: error)))")
        }
    }
}

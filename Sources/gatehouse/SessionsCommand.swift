import ArgumentParser
import Audit
import Foundation
import GatehouseCore
import GatehouseServer

struct SessionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sessions",
        abstract: "Sessions (one per client connection) as recorded in the audit trail.",
        subcommands: [List.self, Replay.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One line per session: when, who, where, how many statements.")

        @OptionGroup var options: ConfigOption

        @Option(help: "Only sessions with events at or after this time (ISO 8601 or an age like 2h).")
        var since: String?

        @Option(help: "Only sessions of this subject.")
        var subject: String?

        func run() async throws {
            let config = try options.load()
            let sinceDate = try since.map { text in
                guard let date = AuditCommand.List.parseSince(text) else { throw fail("--since must be an ISO 8601 time or an age like 2h") }
                return date
            }
            let store = try Gateway.openAuditStore(config)
            var summaries: [String: Summary] = [:]
            var order: [String] = []
            var afterSeq: Int64?
            // Paged, so a long trail is never held in memory at once.
            while true {
                let page = try await store.events(AuditQuery(since: sinceDate, subject: subject, afterSeq: afterSeq, limit: 5000))
                guard let last = page.last else { break }
                afterSeq = last.seq
                for event in page {
                    let id = event.record.session
                    if summaries[id] == nil {
                        summaries[id] = Summary(first: event)
                        order.append(id)
                    }
                    summaries[id]?.add(event)
                }
            }
            try? await store.close()
            for id in order {
                guard let summary = summaries[id] else { continue }
                print(summary.line(id: id))
            }
        }

        struct Summary {
            var start: Date
            var end: Date
            var who: String
            var connection: String
            var statements = 0
            var denied = 0

            init(first event: AuditEvent) {
                start = event.record.time
                end = event.record.time
                who = Replay.who(event.record.principal)
                connection = event.record.connection ?? "-"
            }

            mutating func add(_ event: AuditEvent) {
                end = event.record.time
                if who == "-" { who = Replay.who(event.record.principal) }
                if connection == "-", let name = event.record.connection { connection = name }
                if Replay.isRequest(event.record.operation.kind) { statements += 1 }
                if event.record.decision.effect == .deny { denied += 1 }
            }

            func line(id: String) -> String {
                "\(id)  \(start.formatted(.iso8601))  \(Int(end.timeIntervalSince(start)))s  \(who)  \(connection)  \(statements) operation(s)\(denied > 0 ? ", \(denied) denied" : "")"
            }
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A session as it happened: who, when, each statement and its recorded result, in order.")

        @OptionGroup var options: ConfigOption

        @Argument(help: "Session id (from `gatehouse sessions list`).")
        var session: String

        @Flag(help: "One JSON object a line (the raw events).")
        var json = false

        @Option(help: "Result rows shown per statement.")
        var rows: Int = 10

        func run() async throws {
            let config = try options.load()
            let store = try Gateway.openAuditStore(config)
            let events = try await store.events(AuditQuery(session: session))
            try? await store.close()
            guard !events.isEmpty else { throw fail("no session \(session) in the audit trail") }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                for event in events { print(String(decoding: try encoder.encode(event), as: UTF8.self)) }
                return
            }
            let first = events[0].record
            print("session \(session)")
            print("  who:    \(Self.who(events.first { $0.record.principal != nil }?.record.principal))")
            print("  client: \(first.client.address ?? "-")\(first.client.application.map { " (\($0))" } ?? "")")
            print("  where:  \(first.connection ?? "-") on node \(first.node)")
            for event in events {
                print(Self.describe(event, rows: rows))
            }
        }

        static func who(_ principal: Principal?) -> String {
            guard let principal else { return "-" }
            return principal.agent.map { "\(principal.subject) via agent \($0)" } ?? principal.subject
        }

        /// Events that ask for something (a statement, an HTTP request), as opposed to results.
        static func isRequest(_ kind: String) -> Bool {
            (kind.hasPrefix("sql.") && kind != "sql.result") || kind == "http.request"
        }

        static func describe(_ event: AuditEvent, rows: Int) -> String {
            let record = event.record
            let time = record.time.formatted(.iso8601.time(includingFractionalSeconds: true))
            let decision = record.decision.effect == .allow ? "" : " [\(record.decision.effect.rawValue)\(record.decision.rule.map { " by \($0)" } ?? "")]"
            switch record.operation.kind {
            case "sql.result":
                let outcome = record.outcome
                var line = "           → \(outcome?.status ?? "?")"
                if let rowCount = outcome?.rows, rowCount > 0 { line += ", \(rowCount) row(s)" }
                if let micros = outcome?.durationMicros { line += ", \(String(format: "%.2f", Double(micros) / 1000)) ms" }
                if let code = outcome?.errorCode { line += ", SQLSTATE \(code): \(outcome?.error ?? "")" }
                if let payload = record.payload, rows > 0 { line += "\n" + resultLines(payload, rows: rows, truncated: record.payloadTruncated == true) }
                return line
            case "http.response":
                let outcome = record.outcome
                var line = "           → HTTP \(outcome?.status ?? "?")"
                if let bytes = outcome?.bytes { line += ", \(bytes) byte(s)" }
                if let micros = outcome?.durationMicros { line += ", \(String(format: "%.2f", Double(micros) / 1000)) ms" }
                if let error = outcome?.error { line += ", \(error)" }
                if let payload = record.payload, rows > 0, let body = httpBody(payload)?.trimmingCharacters(in: .whitespacesAndNewlines), !body.isEmpty {
                    line += "\n             " + body.prefix(300).replacingOccurrences(of: "\n", with: "\n             ")
                        + (body.count > 300 || record.payloadTruncated == true ? " …" : "")
                }
                return line
            case let kind where kind.hasPrefix("review."):
                // Each step of an approval, with the person who took it.
                let who = record.principal.map { ($0.agent.map { "agent \($0) for " } ?? "") + $0.subject } ?? "the gateway"
                var line = "\(time) #\(event.seq) \(kind) by \(who): \(record.operation.text)"
                if let reason = record.decision.reason { line += "\n           \(reason)" }
                return line
            default:
                var line = "\(time) #\(event.seq) \(record.operation.kind)\(decision): \(record.operation.text)"
                if let intent = record.operation.intent { line += "\n           intent: \(intent)" }
                if let reason = record.decision.reason, record.decision.effect != .allow { line += "\n           reason: \(reason)" }
                return line
            }
        }

        /// The recorded body of an HTTP request or response event.
        static func httpBody(_ payload: String) -> String? {
            guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any] else { return nil }
            return object["body"] as? String
        }

        /// The recorded result rows as an indented table.
        static func resultLines(_ payload: String, rows limit: Int, truncated: Bool) -> String {
            guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
                  let columns = object["columns"] as? [String], let rows = object["rows"] as? [[Any]] else {
                return "             " + payload.prefix(200) + (truncated ? " …" : "")
            }
            var lines = ["             " + columns.joined(separator: " | ")]
            for row in rows.prefix(limit) {
                lines.append("             " + row.map { ($0 as? String) ?? "NULL" }.joined(separator: " | "))
            }
            if rows.count > limit || truncated { lines.append("             …") }
            return lines.joined(separator: "\n")
        }
    }
}

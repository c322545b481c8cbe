import ArgumentParser
import Audit
import Foundation
import GatehouseConfig
import GatehouseCore
import GatehouseServer

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Inspect and verify the audit trail.",
        subcommands: [Verify.self, List.self, Unseal.self]
    )

    struct Unseal: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the unmasked result a mask rule let the trail keep, sealed (needs the gateway's mask key).",
            discussion: "Reading it is itself recorded in the trail (kind audit.unseal), with the operating-system user.")

        @OptionGroup var options: ConfigOption

        @Argument(help: "The event's sequence number (a sql.result event).")
        var seq: Int64

        func run() async throws {
            let config = try options.load()
            let store = try Gateway.openAuditStore(config)
            let events = try await store.events(AuditQuery(afterSeq: seq - 1, limit: 1))
            guard let event = events.first, event.seq == seq else {
                try? await store.close()
                throw fail("there is no event \(seq)")
            }
            guard let sealed = event.record.sealedPayload else {
                try? await store.close()
                throw fail("event \(seq) holds no sealed value")
            }
            let text: String
            do {
                text = try AuditSeal(maskKey: try MaskKey.load(config, create: false)).open(sealed)
            } catch {
                try? await store.close()
                throw fail("\(error)")
            }
            // The account the kernel says runs this, not an environment variable anyone can set.
            let uid = getuid()
            let user = getpwuid(uid).flatMap { $0.pointee.pw_name.map { String(cString: $0) } }.map { "\($0) (uid \(uid))" } ?? "uid \(uid)"
            // The reading is recorded before anything is shown.
            let record = AuditRecord(
                node: config.gateway.node, session: "cli-unseal", principal: nil,
                client: ClientInfo(application: "gatehouse audit unseal"), connection: event.record.connection,
                operation: .init(kind: "audit.unseal", text: "unsealed event \(seq) (operating-system user \(user))"),
                decision: .allow(rule: "mask-key", reason: "the reader holds the gateway's mask key"))
            do {
                _ = try store.append([record])
            } catch {
                try? await store.close()
                throw fail("the reading cannot be recorded, so it is not shown: \(error)")
            }
            try? await store.close()
            print(text)
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the whole trail: hash chain, sequence and signed checkpoints.",
            discussion: "Exit 0 when the trail is whole; exit 1 naming the first event that was changed, removed, inserted or reordered."
        )

        @OptionGroup var options: ConfigOption

        func run() async throws {
            let config = try options.load()
            guard FileManager.default.fileExists(atPath: config.audit.path) else {
                throw fail("no audit trail at \(config.audit.path)")
            }
            // The key comes from the gateway's key file, never from the store being checked.
            let verifier: AuditSignatureVerifier
            do {
                verifier = try AuditSigner.load(path: config.audit.signingKeyPath).verifier
            } catch {
                throw fail("cannot read the audit signing key: \(error)")
            }
            let store = try Gateway.openAuditStore(config)
            let result = try await store.verify(verifier: verifier)
            try? await store.close()
            if let problem = result.problem {
                print("audit trail NOT intact: \(problem.message)")
                throw ExitCode(1)
            }
            print(Self.summary(result))
        }

        /// `N events, chain intact, last checkpoint signed at TIME (event S)`, plus what is not yet
        /// covered by a signature.
        static func summary(_ result: AuditVerification) -> String {
            var text = "\(result.eventCount) events, chain intact"
            if let checkpoint = result.lastCheckpoint {
                let time = Date(timeIntervalSince1970: Double(checkpoint.timeMillis) / 1000).formatted(.iso8601)
                text += ", last checkpoint signed at \(time) (event \(checkpoint.seq), node \(checkpoint.node))"
            } else {
                text += ", no signed checkpoint yet"
            }
            if result.uncheckpointedTail > 0 {
                text += "; \(result.uncheckpointedTail) newer event(s) not yet covered by a checkpoint"
            }
            return text
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List audit events, oldest first.")

        @OptionGroup var options: ConfigOption

        @Flag(help: "One JSON object a line.")
        var json = false

        @Option(help: "Only events at or after this time: ISO 8601 (2026-11-29T10:00:00Z) or an age (30m, 2h, 7d).")
        var since: String?

        @Option(help: "Only events of this subject (person or service account).")
        var subject: String?

        @Option(help: "At most this many events.")
        var limit: Int?

        func run() async throws {
            let config = try options.load()
            var sinceDate: Date?
            if let since {
                guard let parsed = Self.parseSince(since) else {
                    throw fail("--since must be an ISO 8601 time or an age like 30m, 2h, 7d")
                }
                sinceDate = parsed
            }
            let store = try Gateway.openAuditStore(config)
            let events = try await store.events(AuditQuery(since: sinceDate, subject: subject, limit: limit))
            try? await store.close()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            for event in events {
                if json {
                    print(String(decoding: try encoder.encode(event), as: UTF8.self))
                } else {
                    print(Self.line(event))
                }
            }
        }

        static func line(_ event: AuditEvent) -> String {
            let record = event.record
            let time = record.time.formatted(.iso8601)
            let who = record.principal.map { principal in
                principal.agent.map { "\(principal.subject) via \($0)" } ?? principal.subject
            } ?? "-"
            var text = "\(event.seq) \(time) \(who) \(record.operation.kind) \(record.decision.effect.rawValue)"
            if let rule = record.decision.rule { text += " [\(rule)]" }
            if let reason = record.decision.reason, record.decision.effect != .allow { text += " \(reason)" }
            text += " \(record.operation.text)"
            return text
        }

        static func parseSince(_ text: String) -> Date? {
            if let unit = text.last, let amount = Double(text.dropLast()), amount >= 0 {
                let seconds: Double? = switch unit {
                case "s": 1
                case "m": 60
                case "h": 3600
                case "d": 86400
                default: nil
                }
                if let seconds { return Date().addingTimeInterval(-amount * seconds) }
            }
            return try? Date(text, strategy: .iso8601)
        }
    }
}

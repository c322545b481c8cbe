import ArgumentParser
import Foundation
import GatehouseConfig
import GatehouseCore
import Policy
import SQLInspection

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Test the policy before it is deployed.",
        subcommands: [Explain.self])

    struct Explain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the decision for an operation, and every rule that contributed.",
            discussion: """
                Examples:
                  gatehouse policy explain --config gatehouse.yaml --as alice --group dev --agent claude-code \\
                      --connection demo --sql 'DROP TABLE customers'
                  gatehouse policy explain --as alice --connection config-api --http 'DELETE /config/db'
                With --expect, the exit status is 1 when the decision differs (for policy tests in CI).
                """)

        @OptionGroup var options: ConfigOption

        @Option(name: .customLong("as"), help: "The subject (person or service account) making the request.")
        var subject: String

        @Option(name: .customLong("group"), help: "A group of the subject (repeat for several).")
        var groups: [String] = []

        @Option(help: "The agent acting for the subject, if any.")
        var agent: String?

        @Option(help: "The connection the operation is for.")
        var connection: String

        @Option(help: "SQL text (one or several statements).")
        var sql: String?

        @Option(help: "An HTTP request: 'METHOD /path'.")
        var http: String?

        @Option(help: "Exit 1 unless the decision is this (allow, deny, review).")
        var expect: Decision.Effect?

        func validate() throws {
            if (sql == nil) == (http == nil) {
                throw ValidationError("give exactly one of --sql and --http")
            }
        }

        func run() async throws {
            let config = try options.load()
            guard let kind = config.connections.first(where: { $0.name == connection })?.kind else {
                throw fail("no connection is named \(connection) in \(options.config)")
            }
            let principal = Principal(
                subject: subject, groups: groups, issuer: "gatehouse:explain", authMethod: .oidc,
                actors: agent.map { [Actor(subject: $0)] } ?? [])
            var lines: [String] = []
            let decision: Decision
            if let sql {
                guard kind == .postgres else { throw fail("connection \(connection) is an http connection; use --http") }
                let inspection = SQLInspector.inspect(sql)
                let evaluation = config.policy.evaluate(principal: principal, connection: connection, inspection: inspection)
                // As the session decides: a refusal masking needs comes first.
                let masks = config.policy.masks(principal: principal, connection: connection)
                decision = Policy.maskingRefusal(inspection.statements, masks: masks) ?? evaluation.decision
                lines += Self.header(decision)
                if inspection.statements.contains(where: { $0.kind == .execute || ($0.kind == .cursor && $0.innerStatement == nil) }) {
                    lines.append("note: EXECUTE and FETCH are decided in a session as what was prepared or declared there; here they are shown as written")
                }
                if let failure = inspection.failure {
                    lines.append("the SQL could not be read completely: \(failure)")
                }
                for (index, (statement, result)) in zip(inspection.statements, evaluation.statements).enumerated() {
                    lines.append("")
                    lines.append("statement \(index + 1): \(Self.oneLine(statement.text))")
                    lines.append("  " + Self.describe(statement))
                    lines += Self.body(result)
                }
            } else {
                guard kind == .http else { throw fail("connection \(connection) is a postgres connection; use --sql") }
                let parts = (http ?? "").split(separator: " ", maxSplits: 1).map(String.init)
                guard parts.count == 2, parts[1].hasPrefix("/") else { throw fail("--http takes 'METHOD /path'") }
                let evaluation = config.policy.evaluate(
                    principal: principal, connection: connection, operation: .http(method: parts[0].uppercased(), path: parts[1]))
                decision = evaluation.decision
                lines += Self.header(decision)
                lines += Self.body(evaluation)
            }
            print(lines.joined(separator: "\n"))
            if let expect, expect != decision.effect {
                throw fail("expected \(expect.rawValue), the policy decides \(decision.effect.rawValue)")
            }
        }

        static func header(_ decision: Decision) -> [String] {
            ["decision: \(decision.effect.rawValue)" + (decision.rule.map { " (rule \($0))" } ?? ""),
             "reason:   \(decision.reason ?? "-")"]
        }

        static func body(_ evaluation: PolicyEvaluation) -> [String] {
            var lines = ["  rules:"]
            if evaluation.checks.isEmpty { lines.append("    (the policy has no rules)") }
            for check in evaluation.checks {
                let mark = check.applies ? "applies " : "no      "
                lines.append("    \(mark) \(check.effect.rawValue.padding(toLength: 6, withPad: " ", startingAt: 0)) \(check.rule): \(check.why)")
            }
            if let fallback = evaluation.fallback { lines.append("  fallback: \(fallback)") }
            for mask in evaluation.masks {
                var parts: [String] = []
                if !mask.action.columns.isEmpty { parts.append("columns \(mask.action.columns.map(\.text).joined(separator: ", "))") }
                if !mask.action.jsonPaths.isEmpty { parts.append("json paths \(mask.action.jsonPaths.joined(separator: ", "))") }
                if !mask.action.detectors.isEmpty { parts.append("detectors \(mask.action.detectors.map(\.rawValue).sorted().joined(separator: ", "))") }
                lines.append("  masked by \(mask.rule): \(parts.joined(separator: "; ")) (\(mask.action.strategy))")
            }
            if let limit = evaluation.rowLimit {
                lines.append("  row limit: \(limit.maxRows) rows per statement (rule \(limit.rule))")
            }
            if let approval = evaluation.approval {
                let groups = approval.approverGroups.map { "one of \($0.joined(separator: ", "))" }.joined(separator: "; and ")
                lines.append("  held for approval: \(approval.approvals) approval\(approval.approvals == 1 ? "" : "s") from people in reviews.approvers"
                             + (groups.isEmpty ? "" : ", also in \(groups)") + ", never the requester")
            }
            return lines
        }

        static func describe(_ statement: SQLStatement) -> String {
            var parts = ["kind \(statement.kind.policyName)" + (statement.innerStatement.map { " of \($0.kind.policyName)" } ?? "")]
            parts.append(statement.writes ? "may write" : "reads only")
            if !statement.relations.isEmpty { parts.append("relations: " + statement.relations.map(\.description).joined(separator: ", ")) }
            if !statement.functions.isEmpty { parts.append("functions: " + statement.functions.joined(separator: ", ")) }
            if !statement.flags.isEmpty { parts.append("flags: " + statement.flags.map(\.policyName).sorted().joined(separator: ", ")) }
            return parts.joined(separator: "; ")
        }

        static func oneLine(_ text: String) -> String {
            let flat = text.split(whereSeparator: \.isNewline).joined(separator: " ")
            return flat.count > 200 ? String(flat.prefix(200)) + "…" : flat
        }
    }
}

extension Decision.Effect: ExpressibleByArgument {}

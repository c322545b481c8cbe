import Foundation
import GatehouseCore
import Masking
import Policy
import SQLInspection
import Yams

/// The `policy` section, and the `requests` rules of HTTP connections, as one `Policy`.
///
/// Besides the shape of each rule, it refuses rules that can never match (an unknown connection,
/// SQL rules for HTTP-only connections, contradictions): a guardrail that silently never applies
/// is worse than a config that does not load.
extension ConfigLoader {
    static func buildPolicy(
        _ section: ConfigSection?, connections: [GatehouseConfig.Connection], reader: ConfigReader,
        statePath: (String?, String) -> String
    ) -> (policy: Policy, maskKey: SecretReference?, maskKeyPath: String) {
        var policy = Policy()
        if let effect = section?.choice("default", as: DefaultEffect.self) { policy.defaultEffect = effect.decision }
        if let unknown = section?.section("unknown") {
            if let effect = unknown.choice("agents", as: FallbackEffect.self) { policy.unknownForAgents = effect.decision }
            if let effect = unknown.choice("people", as: FallbackEffect.self) { policy.unknownForPeople = effect.decision }
            unknown.finish()
        }
        let maskKey = section?.secret("mask_key")
        let maskKeyPath = statePath(nil, "mask.key")
        // A name used twice is already a reported problem; the first one counts here.
        let kinds = Dictionary(connections.map { ($0.name, $0.kind) }, uniquingKeysWith: { first, _ in first })
        var names: [String: Int] = [:]

        func add(_ rule: PolicyRule, line: Int, path: String) {
            if let first = names[rule.name] {
                reader.report(line: line, "\(path): rule name '\(rule.name)' is already used on line \(first)")
            } else {
                names[rule.name] = line
            }
            for problem in neverMatches(rule, connections: kinds) {
                reader.report(line: line, "\(path) (\(rule.name)) can never match: \(problem)")
            }
            policy.rules.append(rule)
        }

        for (path, node) in section?.sequence("rules") ?? [] {
            guard let entry = ConfigSection(node, path: path, reader: reader) else { continue }
            if let rule = buildRule(entry, path: path, reader: reader) {
                add(rule, line: entry.line, path: path)
            }
            entry.finish()
        }
        section?.finish()

        // A connection's own request rules are policy rules scoped to it.
        for connection in connections {
            for request in connection.http?.requests ?? [] {
                let rule = PolicyRule(
                    name: request.name, effect: request.effect == .deny ? .deny : .allow,
                    who: PrincipalMatch(groups: request.groups, subjects: request.subjects, agents: request.agents),
                    connections: [connection.name], http: HTTPMatch(methods: request.methods, paths: request.paths),
                    origin: "\(reader.file):\(request.line)")
                add(rule, line: request.line, path: "connection \(connection.name) request rule")
            }
        }
        return (policy, maskKey, maskKeyPath)
    }

    private enum DefaultEffect: String, CaseIterable {
        case allow, deny
        var decision: Decision.Effect { self == .allow ? .allow : .deny }
    }

    private enum FallbackEffect: String, CaseIterable {
        case allow, deny, review
        var decision: Decision.Effect { Decision.Effect(rawValue: rawValue) ?? .deny }
    }

    private enum StrategyName: String, CaseIterable {
        case redact, partial, hash
    }

    private static func buildRule(_ entry: ConfigSection, path: String, reader: ConfigReader) -> PolicyRule? {
        let name = entry.string("name", required: true)
        let effect = entry.choice("effect", as: PolicyRule.Effect.self, required: true)
        let who = PrincipalMatch(
            groups: entry.strings("groups") ?? [], subjects: entry.strings("subjects") ?? [],
            agents: entry.strings("agents") ?? [], callers: entry.choice("callers", as: PrincipalMatch.Callers.self))
        let connections = entry.strings("connections") ?? []
        let message = entry.string("message")

        var sql: SQLMatch?
        if let section = entry.section("sql") {
            sql = SQLMatch(
                kinds: names(section, "kinds", SQLStatementKind.self, path: path, reader: reader),
                relations: section.strings("relations") ?? [],
                functions: (section.strings("functions") ?? []).map { $0.lowercased() },
                flags: names(section, "flags", SQLStatementFlag.self, path: path, reader: reader),
                writes: section.bool("writes"))
            section.finish()
        }
        var http: HTTPMatch?
        if let section = entry.section("http") {
            let (methods, paths) = section.httpMatchers()
            http = HTTPMatch(methods: methods, paths: paths)
            section.finish()
        }

        var approvals = 1
        var approvers: [String] = []
        if effect == .review {
            approvals = entry.int("approvals", in: 1...5) ?? 1
            approvers = entry.strings("approvers") ?? []
        } else {
            for key in ["approvals", "approvers"] where entry.has(key) {
                reader.report(line: entry.lineOf(key), "\(path).\(key) belongs to a review rule, and this rule's effect is \(effect?.rawValue ?? "missing")")
                _ = entry.node(key)
            }
        }
        var command: CommandMatch?
        if let section = entry.section("command") {
            let patterns = section.strings("args") ?? []
            if patterns.isEmpty {
                reader.report(line: section.line, "\(path).command needs args: argument patterns such as \"get *\"")
            }
            command = CommandMatch(arguments: patterns)
            section.finish()
        }
        var mask: MaskAction?
        var maxRows: Int?
        let maskKeys = ["columns", "json_paths", "detectors", "strategy", "keep", "keep_unmasked_for_audit"]
        switch effect {
        case .mask?:
            let columns = entry.strings("columns") ?? []
            let jsonPaths = entry.strings("json_paths") ?? []
            var detectors: [Detector] = []
            for name in entry.strings("detectors") ?? [] {
                if let detector = Detector(rawValue: name) {
                    detectors.append(detector)
                } else {
                    reader.report(line: entry.lineOf("detectors"), "\(path).detectors: '\(name)' is not a detector (one of: \(Detector.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
            }
            for pattern in jsonPaths where JSONPathPattern(pattern) == nil {
                reader.report(line: entry.lineOf("json_paths"), "\(path).json_paths: '\(pattern)' is not a JSON path (like $.customers[*].email or $..ssn)")
            }
            if columns.isEmpty && jsonPaths.isEmpty && !entry.has("detectors") {
                reader.report(line: entry.line, "\(path): a mask rule needs columns, json_paths or detectors")
            }
            let keep = entry.int("keep", in: 1...64) ?? 4
            let strategy: MaskStrategy = switch entry.choice("strategy", as: StrategyName.self) ?? .redact {
            case .redact: .redact
            case .partial: .partial(keep: keep)
            case .hash: .keyedHash
            }
            mask = MaskAction(
                columns: columns, jsonPaths: jsonPaths, detectors: detectors, strategy: strategy,
                keepUnmaskedForAudit: entry.bool("keep_unmasked_for_audit") ?? false)
        case .limit?:
            maxRows = entry.int("max_rows", in: 0...1_000_000_000)
            if maxRows == nil && !entry.has("max_rows") {
                reader.report(line: entry.line, "\(path): a limit rule needs max_rows")
            }
        default:
            for key in maskKeys + ["max_rows"] where entry.has(key) {
                reader.report(line: entry.lineOf(key), "\(path).\(key) belongs to \(key == "max_rows" ? "a limit" : "a mask") rule, and this rule's effect is \(effect?.rawValue ?? "missing")")
                _ = entry.node(key)
            }
        }
        guard let name, let effect else { return nil }
        return PolicyRule(
            name: name, effect: effect, who: who, connections: connections, sql: sql, http: http, command: command, mask: mask,
            maxRows: maxRows, approvals: approvals, approvers: approvers, message: message, origin: "\(reader.file):\(entry.line)")
    }

    /// Enum values written in snake case (`copy_to`, `update_or_delete_without_where`).
    private static func names<T: RawRepresentable & CaseIterable>(
        _ section: ConfigSection, _ key: String, _ type: T.Type, path: String, reader: ConfigReader
    ) -> [T] where T.RawValue == String {
        var values: [T] = []
        let known = Dictionary(uniqueKeysWithValues: T.allCases.map { (PolicyNames.snakeCase($0.rawValue), $0) })
        for text in section.strings(key) ?? [] {
            if let value = known[text.lowercased()] {
                values.append(value)
            } else {
                reader.report(line: section.lineOf(key), "\(path).sql.\(key): '\(text)' is not one of: \(known.keys.sorted().joined(separator: ", "))")
            }
        }
        return values
    }

    /// Why a rule can never match anything, if it cannot.
    static func neverMatches(_ rule: PolicyRule, connections: [String: GatehouseConfig.Connection.Kind]) -> [String] {
        var problems: [String] = []
        let unknown = rule.connections.filter { connections[$0] == nil }.sorted()
        if !unknown.isEmpty {
            problems.append("no connection is named \(unknown.joined(separator: ", "))")
        }
        let scope = rule.connections.isEmpty ? Array(connections.keys) : rule.connections.filter { connections[$0] != nil }
        let kinds = Set(scope.compactMap { connections[$0] })
        let needsSQL = rule.sql != nil || !(rule.mask?.columns.isEmpty ?? true)
        let needsHTTP = rule.http != nil || !(rule.mask?.jsonPaths.isEmpty ?? true)
        let namedKinds = [needsSQL, needsHTTP, rule.command != nil].filter { $0 }.count
        if namedKinds > 1 && rule.mask == nil {
            problems.append("it names operations of more than one kind (SQL, HTTP, command), and an operation is one of them")
        }
        if unknown.count < rule.connections.count || rule.connections.isEmpty {
            if rule.sql != nil && !kinds.contains(.postgres) {
                problems.append("it is about SQL and none of its connections is a postgres connection")
            }
            if rule.http != nil && !kinds.contains(.http) {
                problems.append("it is about HTTP requests and none of its connections is an http connection")
            }
            if rule.command != nil && !kinds.contains(.command) {
                problems.append("it is about commands and none of its connections is a command connection")
            }
        }
        if let sql = rule.sql {
            if sql.kinds.contains(.unknown) && sql.kinds.count == 1
                && (!sql.relations.isEmpty || !sql.functions.isEmpty || !sql.flags.isEmpty || sql.writes == false) {
                problems.append("statements of kind unknown have no known relations, functions or flags, and always count as writing")
            }
            let alwaysWrite: Set<SQLStatementKind> = [.insert, .update, .delete, .merge, .create, .alter, .drop, .truncate,
                                                      .copyFrom, .copyProgram, .grant, .doBlock, .call, .execute, .unknown]
            if sql.writes == false, !sql.kinds.isEmpty, sql.kinds.isSubset(of: alwaysWrite) {
                problems.append("'writes: false' excludes every statement of the kinds it names")
            }
            if sql.flags.isSubset(of: [.copyToProgram, .copyFromProgram]), !sql.flags.isEmpty, !sql.kinds.isEmpty,
               !sql.kinds.contains(.copyProgram), !sql.kinds.contains(.explainAnalyze), !sql.kinds.contains(.prepare) {
                problems.append("only COPY … PROGRAM statements (kind copy_program) have the flags \(sql.flags.map(\.policyName).sorted().joined(separator: ", "))")
            }
        }
        if rule.who.callers == .people, rule.who.groups.isEmpty, rule.who.subjects.isEmpty, !rule.who.agents.isEmpty {
            problems.append("it is for people acting directly, yet names only agents")
        }
        return problems
    }
}

import GatehouseCore
import SQLInspection

/// The one policy of the gateway: every rule, for every protocol, decided the same way.
///
/// For an operation, the rules whose principal, connection and operation match are collected.
/// Deny beats review beats allow. If none of those decides:
/// - an operation the gateway could not classify (SQL of kind `unknown`, or that did not parse)
///   gets `unknownForAgents` or `unknownForPeople` (deny unless configured otherwise: a guardrail
///   must not be stepped around by making a statement unreadable, padding it past the size the
///   gateway parses, say);
///   only rules that name the kind `unknown` match such statements, so a broad allow rule never
///   lets through what could not be read;
/// - otherwise, if the connection has allow rules for this protocol (whoever they are for), the
///   operation is denied: it is on an allow-list and not on it;
/// - otherwise `defaultEffect` decides.
/// Mask and limit rules never decide; they shape what an allowed operation returns.
public struct Policy: Sendable {
    public var rules: [PolicyRule]
    public var defaultEffect: Decision.Effect
    public var unknownForAgents: Decision.Effect
    public var unknownForPeople: Decision.Effect

    public init(
        rules: [PolicyRule] = [], defaultEffect: Decision.Effect = .allow, unknownForAgents: Decision.Effect = .deny,
        unknownForPeople: Decision.Effect = .deny
    ) {
        self.rules = rules
        self.defaultEffect = defaultEffect
        self.unknownForAgents = unknownForAgents
        self.unknownForPeople = unknownForPeople
    }

    public enum Operation: Sendable {
        /// One SQL statement; `failure` says why the text it came from could not be read.
        case sql(SQLStatement, failure: SQLInspectionFailure? = nil)
        /// An HTTP request: upper-case method, canonical decoded path.
        case http(method: String, path: String)
        /// A run of a command connection, with the caller's arguments.
        case command(arguments: [String])

        var describe: String {
            switch self {
            case .command(let arguments): "command '\(arguments.joined(separator: " ").prefix(200))'"
            case .sql(let statement, _): statement.isUnknown ? "an unclassified statement" : "a \(statement.kind.policyName) statement"
            case .http(let method, let path): "\(method) \(path)"
            }
        }
    }

    public func evaluate(principal: Principal, connection: String, operation: Operation) -> PolicyEvaluation {
        var checks: [RuleCheck] = []
        var decisive: [PolicyRule] = []
        var masks: [PolicyRule] = []
        var limits: [PolicyRule] = []
        for rule in rules {
            let mismatch = Self.mismatch(rule, principal: principal, connection: connection, operation: operation)
            checks.append(RuleCheck(rule: rule.name, effect: rule.effect, applies: mismatch == nil, why: mismatch ?? Self.matchReason(rule, operation)))
            guard mismatch == nil else { continue }
            switch rule.effect {
            case .allow, .deny, .review: decisive.append(rule)
            case .mask: masks.append(rule)
            case .limit: limits.append(rule)
            }
        }
        let operationText = operation.describe
        var decision: Decision
        var fallback: String?
        if let deny = decisive.first(where: { $0.effect == .deny }) {
            decision = .deny(rule: deny.name, reason: deny.message ?? "rule \(deny.name) denies \(operationText) on \(connection)")
        } else if let review = decisive.first(where: { $0.effect == .review }) {
            decision = Decision(effect: .review, rule: review.name, reason: review.message ?? "rule \(review.name) requires approval for \(operationText) on \(connection)")
        } else if let allow = decisive.first(where: { $0.effect == .allow }) {
            decision = .allow(rule: allow.name, reason: "rule \(allow.name) allows \(operationText)")
        } else if case .sql(let statement, let failure) = operation, statement.isUnknown {
            let effect = principal.agent != nil ? unknownForAgents : unknownForPeople
            let who = principal.agent != nil ? "agents" : "people"
            let why = failure.map(Self.describe) ?? "the statement could not be classified"
            fallback = "\(why); the default for unclassified statements from \(who) is \(effect.rawValue)"
            decision = Decision(effect: effect, rule: "policy:unknown", reason: "\(why); unclassified statements are \(effect == .deny ? "refused" : effect.rawValue) for \(who)")
        } else if let listed = rules.first(where: { $0.effect == .allow && Self.coversProtocol($0, operation) && ($0.connections.isEmpty || $0.connections.contains(connection)) }) {
            fallback = "connection \(connection) has allow rules (\(listed.name) and maybe others) and none matches"
            decision = .deny(rule: "policy:allow-list", reason: "no rule allows \(operationText) on \(connection) for \(principal.agent.map { "agent \($0) of " } ?? "")\(principal.subject)")
        } else {
            fallback = "no rule decides; the policy default is \(defaultEffect.rawValue)"
            decision = Decision(effect: defaultEffect, rule: "policy:default", reason: "no rule decides \(operationText); the default is \(defaultEffect.rawValue)")
        }
        // A row limit stops an export. A statement that writes (DELETE … RETURNING) has done its
        // work by the time its rows come back; cutting its answer would only hide what it did.
        var limit = limits.compactMap { rule in rule.maxRows.map { (rule: rule.name, rows: $0) } }.min { $0.rows < $1.rows }
        if case .sql(let statement, _) = operation, statement.writes, !statement.isUnknown { limit = nil }
        if decision.effect != .deny {
            // The trail says what shapes the answer, next to what allowed it.
            if !masks.isEmpty { decision.reason = (decision.reason ?? "") + "; masked by \(masks.map(\.name).joined(separator: ", "))" }
            if let limit { decision.reason = (decision.reason ?? "") + "; at most \(limit.rows) rows (\(limit.rule))" }
        }
        // Every review rule that matched has its say: the most approvals any asks for, and each
        // one's approver groups.
        let reviewers = decisive.filter { $0.effect == .review }
        let approval = decision.effect == .review
            ? ApprovalRequirement(approvals: reviewers.map(\.approvals).max() ?? 1, approverGroups: reviewers.map(\.approvers).filter { !$0.isEmpty })
            : nil
        return PolicyEvaluation(
            decision: decision, checks: checks, fallback: fallback, approval: approval,
            masks: decision.effect == .deny ? [] : masks.compactMap { rule in rule.mask.map { NamedMask(rule: rule.name, action: $0) } },
            rowLimit: decision.effect == .deny ? nil : limit.map { RowLimit(rule: $0.rule, maxRows: $0.rows) })
    }

    /// Every statement of a SQL text, and the decision for the whole text: the strictest of its
    /// statements' (a query that holds one denied statement runs none of them).
    public func evaluate(principal: Principal, connection: String, inspection: SQLInspection) -> SQLPolicyEvaluation {
        let statements = inspection.statements.map {
            evaluate(principal: principal, connection: connection, operation: .sql($0, failure: inspection.failure))
        }
        return SQLPolicyEvaluation(statements: statements)
    }

    /// The mask rules that apply to a principal on a connection, whatever the operation: masking
    /// of a result does not depend on how the statement was phrased.
    public func masks(principal: Principal, connection: String) -> [NamedMask] {
        rules.compactMap { rule in
            guard rule.effect == .mask, let mask = rule.mask,
                  rule.connections.isEmpty || rule.connections.contains(connection),
                  rule.who.mismatch(principal) == nil else { return nil }
            return NamedMask(rule: rule.name, action: mask)
        }
    }

    /// What masking cannot allow: COPY … TO sends rows as one stream of text the gateway does not
    /// take apart, and a statement that could not be classified (a fast-path call, a text too
    /// large to read) could return masked columns any way it likes. With masks in force, both
    /// are refused.
    public static func maskingRefusal(_ statements: [SQLStatement], masks: [NamedMask]) -> Decision? {
        guard let first = masks.first else { return nil }
        let rules = masks.map(\.rule).joined(separator: ", ")
        if statements.contains(where: { $0.kind == .copyTo || $0.innerStatement?.kind == .copyTo }) {
            return .deny(rule: first.rule, reason: "COPY … TO cannot be masked, and mask rules (\(rules)) apply to this session; use SELECT")
        }
        if statements.contains(where: \.isUnknown) {
            return .deny(rule: first.rule, reason: "the statement could not be classified, and mask rules (\(rules)) apply to this session")
        }
        // Column statistics hold sample values of every column (most common values, histograms).
        let statistics: Set<String> = ["pg_stats", "pg_statistic", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic_ext_data"]
        if masks.contains(where: { !$0.action.columns.isEmpty }),
           statements.contains(where: { $0.relations.contains { statistics.contains($0.relation.name) } }) {
            return .deny(rule: first.rule, reason: "column statistics hold sample values, and mask rules (\(rules)) apply to this session")
        }
        // Writing masked values under another name (CREATE TABLE AS, INSERT … SELECT, UPDATE … SET
        // x = email) would let them be read back unmasked.
        let copying: Set<SQLStatementKind> = [.insert, .update, .merge, .create]
        for statement in statements where copying.contains(statement.kind) || copying.contains(statement.innerStatement?.kind ?? .select) {
            let touches = statement.referencesWholeRows || masks.contains { mask in
                statement.columnReferences.contains { name in mask.action.columns.contains { $0.matches(schema: nil, table: nil, column: name) } }
            }
            if touches && masks.contains(where: { !$0.action.columns.isEmpty }) {
                return .deny(rule: first.rule, reason: "the statement writes using masked columns, which could copy their values where they are not masked; mask rules (\(rules)) apply to this session")
            }
        }
        return nil
    }

    static func mismatch(_ rule: PolicyRule, principal: Principal, connection: String, operation: Operation) -> String? {
        if !rule.connections.isEmpty && !rule.connections.contains(connection) {
            return "it is for connection \(rule.connections.sorted().joined(separator: "/")), not \(connection)"
        }
        if let mismatch = rule.who.mismatch(principal) { return mismatch }
        switch operation {
        case .sql(let statement, _):
            // Mask rules follow the data, whatever statement reads it.
            if rule.effect == .mask { return nil }
            if statement.isUnknown {
                if rule.sql?.kinds.contains(.unknown) == true { return nil }
                return rule.namesNoOperation && rule.effect != .allow
                    ? nil : "the statement could not be classified, and only rules naming kind 'unknown' match such statements"
            }
            if rule.sql == nil && rule.http != nil { return "it is about HTTP requests" }
            if rule.sql == nil && rule.command != nil { return "it is about commands" }
            return rule.sql?.mismatch(statement)
        case .http(let method, let path):
            if rule.http == nil && rule.sql != nil { return "it is about SQL statements" }
            if rule.http == nil && rule.command != nil { return "it is about commands" }
            return rule.http?.mismatch(method: method, path: path)
        case .command(let arguments):
            if rule.effect == .mask { return nil }
            if rule.command == nil && rule.sql != nil { return "it is about SQL statements" }
            if rule.command == nil && rule.http != nil { return "it is about HTTP requests" }
            return rule.command?.mismatch(arguments)
        }
    }

    /// Whether an allow rule puts operations of this protocol on an allow-list.
    static func coversProtocol(_ rule: PolicyRule, _ operation: Operation) -> Bool {
        switch operation {
        case .sql: rule.sql != nil || rule.namesNoOperation
        case .http: rule.http != nil || rule.namesNoOperation
        case .command: rule.command != nil || rule.namesNoOperation
        }
    }

    static func matchReason(_ rule: PolicyRule, _ operation: Operation) -> String {
        switch (operation, rule.effect) {
        case (_, .mask): "masks what this principal reads on the connection"
        case (.sql(let statement, _), _) where statement.isUnknown && rule.sql?.kinds.contains(.unknown) != true:
            "it names no operation, so it covers statements that could not be classified"
        case (_, _) where rule.namesNoOperation: "it names no operation, so it covers every one"
        default: "the operation matches"
        }
    }

    static func describe(_ failure: SQLInspectionFailure) -> String {
        switch failure {
        case .tooLarge(let bytes, let limit): "the SQL text is \(bytes) bytes, more than the \(limit) the gateway inspects"
        case .containsNUL: "the SQL text contains a NUL character"
        case .syntaxError(let message, _): "the SQL text does not parse (\(message))"
        case .nestedTooDeeply: "the SQL text nests deeper than the gateway inspects"
        case .unreadableParseTree: "the SQL parser's output could not be read"
        }
    }
}

/// The outcome for one operation, with the reasoning an explanation prints.
public struct PolicyEvaluation: Sendable, Equatable {
    public var decision: Decision
    /// Every rule, in order, whether it applies and why (or why not).
    public var checks: [RuleCheck]
    /// How the decision was reached when no rule decided it.
    public var fallback: String?
    /// For a review decision: who must approve, and how many.
    public var approval: ApprovalRequirement?
    /// Mask rules in force for what the operation returns.
    public var masks: [NamedMask]
    public var rowLimit: RowLimit?
}

public struct ApprovalRequirement: Sendable, Equatable {
    public var approvals: Int
    /// For each rule that names groups: the approver must be in one of them.
    public var approverGroups: [[String]]

    public init(approvals: Int = 1, approverGroups: [[String]] = []) {
        self.approvals = approvals
        self.approverGroups = approverGroups
    }

    /// Several statements of one text held as one: the strictest of their requirements.
    public func merged(with other: ApprovalRequirement) -> ApprovalRequirement {
        ApprovalRequirement(approvals: max(approvals, other.approvals), approverGroups: approverGroups + other.approverGroups.filter { !approverGroups.contains($0) })
    }
}

public struct RuleCheck: Sendable, Equatable {
    public var rule: String
    public var effect: PolicyRule.Effect
    public var applies: Bool
    public var why: String
}

public struct NamedMask: Sendable, Equatable {
    public var rule: String
    public var action: MaskAction

    public init(rule: String, action: MaskAction) {
        self.rule = rule
        self.action = action
    }
}

public struct RowLimit: Sendable, Equatable {
    public var rule: String
    public var maxRows: Int

    public init(rule: String, maxRows: Int) {
        self.rule = rule
        self.maxRows = maxRows
    }
}

/// Every statement of one SQL text, and what that means for the text as a whole.
public struct SQLPolicyEvaluation: Sendable, Equatable {
    public var statements: [PolicyEvaluation]

    public init(statements: [PolicyEvaluation]) {
        self.statements = statements
    }

    /// The strictest decision: a denied statement, else one waiting for review, else the first.
    public var decision: Decision {
        statements.first { $0.decision.effect == .deny }?.decision
            ?? statements.first { $0.decision.effect == .review }?.decision
            ?? statements.first?.decision
            ?? .allow(rule: "policy:empty", reason: "the text holds no statement")
    }

    /// What approving the whole text takes, when it is held.
    public var approval: ApprovalRequirement? {
        statements.compactMap(\.approval).reduce(nil) { $0?.merged(with: $1) ?? $1 }
    }
}

import GatehouseCore
import Masking
import SQLInspection

/// One rule of the policy: who it is about, which connections, which operations, and what it
/// does to them. Every list left empty means "any"; every field given must match (and within a
/// list, any entry may).
public struct PolicyRule: Sendable, Equatable {
    public enum Effect: String, Sendable, CaseIterable, Codable {
        /// The operation may run (once a connection has allow rules for a protocol, an operation
        /// of that protocol must match one of them).
        case allow
        /// The operation is refused. Beats every other effect.
        case deny
        /// The operation waits for a person's approval. Beats allow.
        case review
        /// Whatever is allowed has these values masked on the way back.
        case mask
        /// Whatever is allowed may return at most `maxRows` rows per statement.
        case limit
    }

    public var name: String
    public var effect: Effect
    public var who: PrincipalMatch
    /// Connection names; empty means every connection.
    public var connections: Set<String>
    /// Only SQL operations that match this; nil means the rule does not look at SQL.
    public var sql: SQLMatch?
    /// Only HTTP requests that match this; nil means the rule does not look at HTTP.
    public var http: HTTPMatch?
    /// Only command runs whose arguments match this; nil means the rule does not look at commands.
    public var command: CommandMatch?
    /// For `mask` rules.
    public var mask: MaskAction?
    /// For `limit` rules.
    public var maxRows: Int?
    /// For `review` rules: approvals needed (at least one), and the groups approvers must be in
    /// (empty: the gateway's approver groups alone).
    public var approvals: Int
    public var approvers: [String]
    /// Shown to a refused client instead of the generated reason.
    public var message: String?
    /// Where the rule is written, for `gatehouse check` and explanations.
    public var origin: String?

    public init(
        name: String, effect: Effect, who: PrincipalMatch = PrincipalMatch(), connections: [String] = [],
        sql: SQLMatch? = nil, http: HTTPMatch? = nil, command: CommandMatch? = nil, mask: MaskAction? = nil, maxRows: Int? = nil,
        approvals: Int = 1, approvers: [String] = [], message: String? = nil, origin: String? = nil
    ) {
        self.approvals = approvals
        self.approvers = approvers
        self.name = name
        self.effect = effect
        self.who = who
        self.connections = Set(connections)
        self.sql = sql
        self.http = http
        self.command = command
        self.mask = mask
        self.maxRows = maxRows
        self.message = message
        self.origin = origin
    }

    /// A rule that names no operation applies to every operation of every protocol.
    var namesNoOperation: Bool { sql == nil && http == nil && command == nil }
}

/// Who a rule is about. Empty lists mean everyone; otherwise a principal matching any list is in.
/// `callers` narrows further: only people acting directly, or only agents acting for someone.
public struct PrincipalMatch: Sendable, Equatable {
    public enum Callers: String, Sendable, CaseIterable {
        case people
        case agents
    }

    public var groups: Set<String>
    public var subjects: Set<String>
    /// Agent names; `*` stands for any agent.
    public var agents: Set<String>
    public var callers: Callers?

    public init(groups: [String] = [], subjects: [String] = [], agents: [String] = [], callers: Callers? = nil) {
        self.groups = Set(groups)
        self.subjects = Set(subjects)
        self.agents = Set(agents)
        self.callers = callers
    }

    public var isEveryone: Bool { groups.isEmpty && subjects.isEmpty && agents.isEmpty && callers == nil }

    /// Nil when the principal matches, else why not.
    public func mismatch(_ principal: Principal) -> String? {
        let isAgent = principal.agent != nil
        switch callers {
        case .people? where isAgent: return "it is for people acting directly, and \(principal.agent ?? "") is an agent"
        case .agents? where !isAgent: return "it is for agents, and \(principal.subject) acts directly"
        default: break
        }
        if groups.isEmpty && subjects.isEmpty && agents.isEmpty { return nil }
        if subjects.contains(principal.subject) { return nil }
        if principal.groups.contains(where: groups.contains) { return nil }
        let actors = principal.actors.map(\.subject)
        if agents.contains("*") && !actors.isEmpty { return nil }
        if actors.contains(where: agents.contains) { return nil }
        return "it names other subjects, groups or agents"
    }
}

/// Which SQL statements a rule is about. `kinds` match the statement's kind or, for EXPLAIN
/// ANALYZE, PREPARE and DECLARE, the kind of the statement inside it.
public struct SQLMatch: Sendable, Equatable {
    public var kinds: Set<SQLStatementKind>
    public var relations: [NamePattern]
    public var functions: [NamePattern]
    public var flags: Set<SQLStatementFlag>
    /// true: only statements that may write; false: only statements known not to.
    public var writes: Bool?

    public init(
        kinds: [SQLStatementKind] = [], relations: [String] = [], functions: [String] = [],
        flags: [SQLStatementFlag] = [], writes: Bool? = nil
    ) {
        self.kinds = Set(kinds)
        self.relations = relations.map(NamePattern.init)
        self.functions = functions.map(NamePattern.init)
        self.flags = Set(flags)
        self.writes = writes
    }

    /// Nil when the statement matches, else why not.
    public func mismatch(_ statement: SQLStatement) -> String? {
        if !kinds.isEmpty {
            let statementKinds = [statement.kind] + (statement.innerStatement.map { [$0.kind] } ?? [])
            if !statementKinds.contains(where: kinds.contains) {
                return "the statement is \(statement.kind.policyName), not \(kinds.map(\.policyName).sorted().joined(separator: "/"))"
            }
        }
        if !relations.isEmpty, !statement.relations.contains(where: { access in relations.contains { $0.matches(access.relation) } }) {
            return "it names none of the relations \(relations.map(\.text).joined(separator: ", "))"
        }
        if !functions.isEmpty, !statement.functions.contains(where: { name in functions.contains { $0.matches(function: name) } }) {
            return "it calls none of the functions \(functions.map(\.text).joined(separator: ", "))"
        }
        if !flags.isEmpty, flags.isDisjoint(with: statement.flags) {
            return "it has none of the flags \(flags.map(\.policyName).sorted().joined(separator: ", "))"
        }
        if let writes, writes != statement.writes {
            return writes ? "the statement does not write" : "the statement may write"
        }
        return nil
    }
}

/// Which HTTP requests a rule is about: methods (none listed: every method) and path patterns.
public struct HTTPMatch: Sendable, Equatable {
    public var methods: Set<String>
    public var paths: [PathPattern]

    public init(methods: [String] = [], paths: [String] = ["/**"]) {
        self.methods = Set(methods.map { $0.uppercased() })
        self.paths = paths.map(PathPattern.init)
    }

    public func mismatch(method: String, path: String) -> String? {
        if !methods.isEmpty && !methods.contains(method) {
            return "\(method) is not \(methods.sorted().joined(separator: "/"))"
        }
        if !paths.contains(where: { $0.matches(path) }) {
            return "\(path) matches none of \(paths.map(\.text).joined(separator: ", "))"
        }
        return nil
    }
}

/// Which runs of a command connection a rule is about, by the caller's arguments (the
/// connection's fixed leading arguments are not part of them). A pattern is words separated by
/// spaces: each word matches exactly one argument (`*` in a word matches any characters of it, `?`
/// one), and a word that is only `*` matches any number of arguments, none included. So `get *`
/// matches `get`, `get pods` and `get pods -A`; `* delete *` matches a delete anywhere.
public struct CommandMatch: Sendable, Equatable {
    public var patterns: [ArgumentPattern]

    public init(arguments: [String]) {
        patterns = arguments.map(ArgumentPattern.init)
    }

    public func mismatch(_ arguments: [String]) -> String? {
        patterns.contains { $0.matches(arguments) }
            ? nil : "the arguments match none of \(patterns.map { "'\($0.text)'" }.joined(separator: ", "))"
    }
}

public struct ArgumentPattern: Sendable, Equatable {
    public var text: String
    private var words: [String]

    public init(_ text: String) {
        self.text = text
        words = text.split(whereSeparator: \.isWhitespace).map(String.init)
    }

    public func matches(_ arguments: [String]) -> Bool {
        Self.match(words[...], arguments[...])
    }

    private static func match(_ words: ArraySlice<String>, _ arguments: ArraySlice<String>) -> Bool {
        guard let word = words.first else { return arguments.isEmpty }
        if word == "*" {
            // Any number of arguments: try each split (patterns and argument lists are short).
            var rest = arguments
            while true {
                if match(words.dropFirst(), rest) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        }
        guard let argument = arguments.first, glob(Array(word.unicodeScalars)[...], Array(argument.unicodeScalars)[...]) else { return false }
        return match(words.dropFirst(), arguments.dropFirst())
    }

    /// `*` any run of characters, `?` one character, anything else itself.
    static func glob(_ pattern: ArraySlice<Unicode.Scalar>, _ text: ArraySlice<Unicode.Scalar>) -> Bool {
        var p = pattern.startIndex, t = text.startIndex
        var star: Int?, resume = text.startIndex
        while t < text.endIndex {
            if p < pattern.endIndex, pattern[p] == "?" || pattern[p] == text[t] {
                p += 1
                t += 1
            } else if p < pattern.endIndex, pattern[p] == "*" {
                star = p
                resume = t
                p += 1
            } else if let star {
                p = star + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.endIndex, pattern[p] == "*" { p += 1 }
        return p == pattern.endIndex
    }
}

/// What a `mask` rule masks and how.
public struct MaskAction: Sendable, Equatable {
    /// Result columns by name (`email`, `customers.email`, `public.customers.card_*`).
    public var columns: [ColumnPattern]
    /// JSON response fields (`$.customers[*].email`, `$..ssn`); checked by the HTTP gateway.
    public var jsonPaths: [String]
    /// Value detectors run over every text value the rule covers.
    public var detectors: Set<Detector>
    public var strategy: MaskStrategy
    /// The unmasked value may be kept in the audit trail, encrypted with the gateway's key.
    public var keepUnmaskedForAudit: Bool

    public init(
        columns: [String] = [], jsonPaths: [String] = [], detectors: [Detector] = [], strategy: MaskStrategy = .redact,
        keepUnmaskedForAudit: Bool = false
    ) {
        self.columns = columns.map(ColumnPattern.init)
        self.jsonPaths = jsonPaths
        self.detectors = Set(detectors)
        self.strategy = strategy
        self.keepUnmaskedForAudit = keepUnmaskedForAudit
    }
}

/// A glob over a dotted name: `*` matches any run of characters within one part. A pattern with
/// fewer parts than the name matches its last parts (`customers` matches `public.customers`);
/// a pattern naming a schema matches an unqualified name too, since the search path may resolve
/// it there. Names compare as PostgreSQL folds them: write lower case for unquoted identifiers.
public struct NamePattern: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    let parts: [Substring]

    public init(_ text: String) {
        self.text = text
        self.parts = text.split(separator: ".", omittingEmptySubsequences: false)
    }

    public var description: String { text }

    public func matches(_ relation: SQLRelation) -> Bool {
        matches(parts: [relation.schema, relation.name].compactMap { $0 }[...])
    }

    /// A function name as the inspector reports it: lower case, schema-qualified when written so.
    public func matches(function name: String) -> Bool {
        matches(parts: name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)[...])
    }

    func matches(parts name: ArraySlice<String>) -> Bool {
        guard let last = name.last, let lastPattern = parts.last, Glob.matches(lastPattern, last) else { return false }
        // Compare the qualifiers both sides give, from the right; missing ones are unknown (they
        // could be anything the search path holds), so they do not prevent a match.
        var patternQualifiers = parts.dropLast()
        var nameQualifiers = name.dropLast()
        while let pattern = patternQualifiers.last, let part = nameQualifiers.last {
            guard Glob.matches(pattern, part) else { return false }
            patternQualifiers = patternQualifiers.dropLast()
            nameQualifiers = nameQualifiers.dropLast()
        }
        return true
    }
}

/// A result column pattern: `column`, `table.column` or `schema.table.column`, each part a glob.
public struct ColumnPattern: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    let name: NamePattern

    public init(_ text: String) {
        self.text = text
        self.name = NamePattern(text)
    }

    public var description: String { text }

    /// Matches a column of a table (as the catalog names it) or, with `table` nil, a column
    /// known only by name (a reference in SQL text).
    public func matches(schema: String?, table: String?, column: String) -> Bool {
        if table == nil {
            // Known only by name: the column part decides; the table could be any.
            guard let last = name.parts.last else { return false }
            return Glob.matches(last, column)
        }
        return name.matches(parts: [schema, table, column].compactMap { $0 }[...])
    }

    /// The column-name part of the pattern.
    public var columnPart: String { name.parts.last.map(String.init) ?? "" }
}

enum Glob {
    /// `*` matches any run of characters; everything else matches itself.
    static func matches(_ pattern: some StringProtocol, _ text: some StringProtocol) -> Bool {
        let pattern = Array(pattern.utf8)
        let text = Array(text.utf8)
        var p = 0
        var t = 0
        var star = -1
        var resume = 0
        while t < text.count {
            if p < pattern.count, pattern[p] == UInt8(ascii: "*") {
                star = p
                resume = t
                p += 1
            } else if p < pattern.count, pattern[p] == text[t] {
                p += 1
                t += 1
            } else if star >= 0 {
                p = star + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}

/// Names as the configuration writes them: `copy_to`, `update_or_delete_without_where`.
public enum PolicyNames {
    /// `copyTo` → `copy_to`; a run of capitals is one word (`dynamicSQL` → `dynamic_sql`).
    public static func snakeCase(_ camel: String) -> String {
        var result = ""
        var previousWasLower = false
        for character in camel {
            if character.isUppercase && previousWasLower { result += "_" }
            result += character.lowercased()
            previousWasLower = character.isLowercase || character.isNumber
        }
        return result
    }
}

extension SQLStatementKind {
    public var policyName: String { PolicyNames.snakeCase(rawValue) }
}

extension SQLStatementFlag {
    public var policyName: String { PolicyNames.snakeCase(rawValue) }
}

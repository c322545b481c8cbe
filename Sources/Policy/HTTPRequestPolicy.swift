import GatehouseCore

/// A path pattern for HTTP rules: `*` matches within one path segment (no `/`), `**` matches
/// across segments, everything else matches itself. `/config/*` matches `/config/db` but not
/// `/config/db/url`; `/export*` matches `/export` and `/exports.csv`; `/**` matches every path;
/// a trailing `/**` also matches the path without it (`/admin/**` matches `/admin`).
/// Patterns are matched against the normalized, percent-decoded path, never the raw one, and a
/// trailing slash of the path is ignored (`/exact` matches `/exact/`), so a deny rule cannot be
/// stepped around by adding one.
public struct PathPattern: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    private let pattern: [UInt8]

    public init(_ text: String) {
        self.text = text
        self.pattern = Array(text.utf8)
    }

    public var description: String { text }

    public func matches(_ path: String) -> Bool {
        var bytes = Array(path.utf8)[...]
        if bytes.count > 1, bytes.last == UInt8(ascii: "/") { bytes = bytes.dropLast() }
        if Self.match(pattern[...], bytes) { return true }
        // `/admin/**` covers `/admin` itself.
        if pattern.count > 3, pattern.suffix(3).elementsEqual("/**".utf8) {
            return Self.match(pattern.dropLast(3), bytes)
        }
        return false
    }

    private static func match(_ pattern: ArraySlice<UInt8>, _ path: ArraySlice<UInt8>) -> Bool {
        var pattern = pattern
        var path = path
        while let first = pattern.first {
            if first == UInt8(ascii: "*") {
                let crossesSegments = pattern.dropFirst().first == UInt8(ascii: "*")
                let rest = pattern.dropFirst(crossesSegments ? 2 : 1)
                // Try every split point; paths and patterns are short (bounded by the listener).
                var candidate = path
                while true {
                    if match(rest, candidate) { return true }
                    guard let next = candidate.first, crossesSegments || next != UInt8(ascii: "/") else { return false }
                    candidate = candidate.dropFirst()
                }
            }
            guard path.first == first else { return false }
            pattern = pattern.dropFirst()
            path = path.dropFirst()
        }
        return path.isEmpty
    }
}

/// One rule about HTTP requests on a connection: who (groups, subjects, agents; none listed means
/// everyone), which methods (none listed means every method) and which paths, and whether it
/// allows or denies.
public struct HTTPRequestRule: Sendable, Equatable {
    public enum Effect: String, Sendable, CaseIterable {
        case allow
        case deny
    }

    public var name: String
    public var effect: Effect
    public var methods: Set<String>
    public var paths: [PathPattern]
    public var groups: Set<String>
    public var subjects: Set<String>
    /// Agent names; `*` stands for any agent (a request made by an agent on someone's behalf).
    public var agents: Set<String>

    public init(
        name: String, effect: Effect = .allow, methods: [String] = [], paths: [String] = ["/**"],
        groups: [String] = [], subjects: [String] = [], agents: [String] = []
    ) {
        self.name = name
        self.effect = effect
        self.methods = Set(methods.map { $0.uppercased() })
        self.paths = paths.map(PathPattern.init)
        self.groups = Set(groups)
        self.subjects = Set(subjects)
        self.agents = Set(agents)
    }

    func applies(to principal: Principal) -> Bool {
        if groups.isEmpty && subjects.isEmpty && agents.isEmpty { return true }
        if subjects.contains(principal.subject) { return true }
        if principal.groups.contains(where: groups.contains) { return true }
        let actors = principal.actors.map(\.subject)
        if agents.contains("*") && !actors.isEmpty { return true }
        return actors.contains(where: agents.contains)
    }

    func matches(method: String, path: String) -> Bool {
        (methods.isEmpty || methods.contains(method)) && paths.contains { $0.matches(path) }
    }
}

/// The request rules of one HTTP connection.
///
/// A matching `deny` rule refuses the request, whatever else matches. If the connection has any
/// `allow` rule, a request must match one of them; with only `deny` rules (or none), everything
/// they do not deny is allowed. Who may use the connection at all is `ConnectionAccess`'s job,
/// decided before this.
public struct HTTPRequestPolicy: Sendable, Equatable {
    public var connection: String
    public var rules: [HTTPRequestRule]

    public init(connection: String, rules: [HTTPRequestRule]) {
        self.connection = connection
        self.rules = rules
    }

    public func decide(principal: Principal, method: String, path: String) -> Decision {
        let method = method.uppercased()
        let applicable = rules.filter { $0.applies(to: principal) && $0.matches(method: method, path: path) }
        if let deny = applicable.first(where: { $0.effect == .deny }) {
            return .deny(rule: deny.name, reason: "rule \(deny.name) denies \(method) \(path) on \(connection)")
        }
        if let allow = applicable.first(where: { $0.effect == .allow }) {
            return .allow(rule: allow.name, reason: "rule \(allow.name) allows \(method) \(path)")
        }
        if rules.contains(where: { $0.effect == .allow }) {
            return .deny(
                rule: "connection:\(connection):requests",
                reason: "no rule of connection \(connection) allows \(method) \(path) for \(principal.subject)")
        }
        return .allow(rule: "connection:\(connection):requests", reason: "no rule denies \(method) \(path)")
    }
}

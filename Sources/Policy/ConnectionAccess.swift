import GatehouseCore

/// Who may use a connection at all: allow-lists by group, subject or agent. Anyone matching any
/// list is allowed; a connection with empty lists admits nobody, so a forgotten `allow` fails
/// closed rather than open.
public struct ConnectionAccess: Sendable, Equatable {
    public var connection: String
    public var groups: Set<String>
    public var subjects: Set<String>
    public var agents: Set<String>

    public init(connection: String, groups: [String] = [], subjects: [String] = [], agents: [String] = []) {
        self.connection = connection
        self.groups = Set(groups)
        self.subjects = Set(subjects)
        self.agents = Set(agents)
    }

    public var rule: String { "connection:\(connection):allow" }

    public func decide(for principal: Principal) -> Decision {
        if subjects.contains(principal.subject) {
            return .allow(rule: rule, reason: "subject \(principal.subject) is allowed")
        }
        if let group = principal.groups.first(where: groups.contains) {
            return .allow(rule: rule, reason: "group \(group) is allowed")
        }
        if let agent = principal.actors.map(\.subject).first(where: agents.contains) {
            return .allow(rule: rule, reason: "agent \(agent) is allowed")
        }
        return .deny(rule: rule, reason: "\(principal.subject) is not allowed to use connection \(connection)")
    }
}

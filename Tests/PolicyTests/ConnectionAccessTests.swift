import GatehouseCore
import Testing

@testable import Policy

@Suite("Connection access")
struct ConnectionAccessTests {
    func principal(_ subject: String, groups: [String] = [], agent: String? = nil) -> Principal {
        Principal(subject: subject, groups: groups, issuer: "https://idp", authMethod: .oidc, actors: agent.map { [Actor(subject: $0)] } ?? [])
    }

    @Test func aMatchingSubjectGroupOrAgentIsAllowed() {
        let access = ConnectionAccess(connection: "prod", groups: ["dba"], subjects: ["alice"], agents: ["claude-code"])
        #expect(access.decide(for: principal("alice")).effect == .allow)
        #expect(access.decide(for: principal("bob", groups: ["dev", "dba"])).effect == .allow)
        #expect(access.decide(for: principal("bob", agent: "claude-code")).effect == .allow)
    }

    @Test func anyoneElseIsDeniedWithTheRuleNamed() {
        let access = ConnectionAccess(connection: "prod", groups: ["dba"])
        let decision = access.decide(for: principal("mallory", groups: ["dev"], agent: "other-agent"))
        #expect(decision.effect == .deny)
        #expect(decision.rule == "connection:prod:allow")
    }

    @Test func anEmptyAllowListAdmitsNobody() {
        let access = ConnectionAccess(connection: "prod")
        #expect(access.decide(for: principal("alice", groups: ["dba"], agent: "claude-code")).effect == .deny)
    }
}

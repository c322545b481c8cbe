import Foundation
import GatehouseCore
import Masking
import Policy
import Testing

@testable import GatehouseConfig

@Suite("Policy configuration")
struct PolicyConfigTests {
    static let connections = """
        connections:
          - name: demo
            type: postgres
            upstream: postgres://127.0.0.1:5432/app
            username: gh
            allow: { groups: [dev] }
          - name: api
            type: http
            upstream: http://127.0.0.1:9100
            allow: { groups: [dev] }
            requests:
              - name: api-reads
                methods: [GET]
        """

    func load(_ yaml: String) throws(ConfigError) -> GatehouseConfig {
        try loadConfig(Self.connections + "\n" + yaml)
    }

    func problems(_ yaml: String) -> [String] {
        configProblems(Self.connections + "\n" + yaml)
    }

    @Test func reviewsAreConfiguredWithApproversAndAWebhookWhoseURLMayBeASecret() throws {
        let config = try load("""
            reviews:
              approvers: [dba, security]
              timeout_seconds: 120
              public_url: https://gatehouse.example.com/
              webhook:
                url: env:SLACK_WEBHOOK_URL
                include_operation: false
              max_grant_minutes: 60
              access_approvals: 2
            policy:
              rules:
                - name: deletes
                  effect: review
                  sql: { kinds: [delete] }
            """)
        #expect(config.reviews.approvers == ["dba", "security"])
        #expect(config.reviews.timeoutSeconds == 120)
        #expect(config.reviews.publicURL == "https://gatehouse.example.com")
        #expect(config.reviews.maxGrantMinutes == 60 && config.reviews.accessApprovals == 2)
        guard case .secret(.environment("SLACK_WEBHOOK_URL"))? = config.reviews.webhook?.target else {
            Issue.record("the webhook URL should be a secret reference")
            return
        }
        #expect(config.reviews.webhook?.includeOperation == false)
        #expect(config.reviews.path.hasSuffix("reviews.sqlite"))
    }

    @Test func aReviewNobodyMayApproveIsAProblem() {
        let rule = """
            policy:
              rules:
                - name: deletes
                  effect: review
                  sql: { kinds: [delete] }
            """
        #expect(problems(rule).contains { $0.contains("review rule 'deletes' has no approvers") })
        #expect(problems("policy:\n  unknown: { agents: review }").contains { $0.contains("unclassified statements go to review") })
        #expect(problems(rule + "\n      approvers: [dba]").isEmpty)
        #expect(problems("""
            policy:
              rules:
                - name: deletes
                  effect: deny
                  approvals: 2
            """).contains { $0.contains("approvals belongs to a review rule") })
    }

    @Test func everyKindOfRule() throws {
        let config = try load("""
            policy:
              default: allow
              unknown: { agents: review, people: deny }
              mask_key: env:MASK_KEY
              rules:
                - name: no-ddl-for-agents
                  effect: deny
                  agents: ["*"]
                  sql: { kinds: [drop, truncate, alter, copy_program] }
                  message: DDL is for people
                - name: no-unbounded-writes
                  effect: deny
                  connections: [demo]
                  sql: { flags: [update_or_delete_without_where] }
                - name: pii
                  effect: mask
                  columns: [customers.email, "*.card_number"]
                  json_paths: ["$..email"]
                  detectors: [email, card]
                  strategy: partial
                  keep: 2
                - name: bulk-export
                  effect: limit
                  callers: agents
                  max_rows: 500
                - name: export-review
                  effect: review
                  approvals: 2
                  approvers: [security]
                  http: { methods: [get], paths: ["/export*"] }
            reviews:
              approvers: [dba]
            """)
        let policy = config.policy
        #expect(policy.unknownForAgents == .review)
        #expect(policy.unknownForPeople == .deny)
        #expect(config.maskKey != nil)
        #expect(policy.rules.map(\.name) == ["no-ddl-for-agents", "no-unbounded-writes", "pii", "bulk-export", "export-review", "api-reads"])
        #expect(policy.rules[0].sql?.kinds == [.drop, .truncate, .alter, .copyProgram])
        #expect(policy.rules[0].message == "DDL is for people")
        #expect(policy.rules[1].sql?.flags == [.updateOrDeleteWithoutWhere])
        #expect(policy.rules[2].mask?.strategy == .partial(keep: 2))
        #expect(policy.rules[2].mask?.detectors == [.email, .paymentCard])
        #expect(policy.rules[3].maxRows == 500)
        #expect(policy.rules[3].who.callers == .agents)
        #expect(policy.rules[4].http?.methods == ["GET"])
        #expect(policy.rules[4].approvals == 2 && policy.rules[4].approvers == ["security"])
        #expect(policy.rules[5].connections == ["api"], "a connection's request rules are policy rules scoped to it")
    }

    @Test func mistakesAreReportedWithTheirLines() {
        let found = problems("""
            policy:
              rules:
                - name: bad-kind
                  effect: deny
                  sql: { kinds: [dropp] }
                - name: bad-effect
                  effect: block
                - name: mask-without-target
                  effect: mask
                - name: limit-without-rows
                  effect: limit
                - name: rows-on-deny
                  effect: deny
                  max_rows: 3
                - name: bad-detector
                  effect: mask
                  detectors: [emails]
            """)
        #expect(found.contains { $0.hasPrefix("gatehouse.yaml:18: policy.rules[0].sql.kinds: 'dropp' is not one of:") })
        #expect(found.contains { $0.hasPrefix("gatehouse.yaml:20: policy.rules[1].effect must be one of: allow, deny, review, mask, limit") })
        #expect(found.contains("gatehouse.yaml:21: policy.rules[2]: a mask rule needs columns, json_paths or detectors"))
        #expect(found.contains("gatehouse.yaml:23: policy.rules[3]: a limit rule needs max_rows"))
        #expect(found.contains("gatehouse.yaml:27: policy.rules[4].max_rows belongs to a limit rule, and this rule's effect is deny"))
        #expect(found.contains { $0.hasPrefix("gatehouse.yaml:30: policy.rules[5].detectors: 'emails' is not a detector") })
    }

    @Test func rulesThatCanNeverMatchAreRefused() {
        let found = problems("""
            policy:
              rules:
                - name: typo-connection
                  effect: deny
                  connections: [dmeo]
                - name: sql-on-http
                  effect: deny
                  connections: [api]
                  sql: { kinds: [drop] }
                - name: http-on-postgres
                  effect: deny
                  connections: [demo]
                  http: { methods: [DELETE] }
                - name: both
                  effect: deny
                  sql: { kinds: [drop] }
                  http: { methods: [DELETE] }
                - name: reads-that-write
                  effect: allow
                  sql: { kinds: [insert, delete], writes: false }
                - name: people-agents
                  effect: deny
                  callers: people
                  agents: [claude-code]
                - name: api-reads
                  effect: deny
            """)
        #expect(found.contains("gatehouse.yaml:16: policy.rules[0] (typo-connection) can never match: no connection is named dmeo"))
        #expect(found.contains("gatehouse.yaml:19: policy.rules[1] (sql-on-http) can never match: it is about SQL and none of its connections is a postgres connection"))
        #expect(found.contains("gatehouse.yaml:23: policy.rules[2] (http-on-postgres) can never match: it is about HTTP requests and none of its connections is an http connection"))
        #expect(found.contains("gatehouse.yaml:27: policy.rules[3] (both) can never match: it names operations of more than one kind (SQL, HTTP, command), and an operation is one of them"))
        #expect(found.contains("gatehouse.yaml:31: policy.rules[4] (reads-that-write) can never match: 'writes: false' excludes every statement of the kinds it names"))
        #expect(found.contains("gatehouse.yaml:34: policy.rules[5] (people-agents) can never match: it is for people acting directly, yet names only agents"))
        #expect(found.contains("gatehouse.yaml:12: connection api request rule: rule name 'api-reads' is already used on line 38"))
    }

    @Test func withoutAPolicySectionEverythingAccessAllowsIsAllowed() throws {
        let config = try load("")
        #expect(config.policy.defaultEffect == .allow)
        #expect(config.policy.unknownForAgents == .deny, "unclassified statements from agents are refused unless configured otherwise")
        #expect(config.maskKeyPath.hasSuffix("/mask.key"))
    }
}

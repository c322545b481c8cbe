import Foundation
import Testing

@testable import GatehouseConfig

@Suite("HTTP connection configuration")
struct HTTPConfigTests {
    func load(_ yaml: String) throws(ConfigError) -> GatehouseConfig {
        try loadConfig(yaml)
    }

    func problems(_ yaml: String) -> [String] {
        configProblems(yaml)
    }

    @Test func anHTTPConnectionWithEveryOption() throws {
        let config = try load("""
            http:
              listen: 127.0.0.1:8080
              max_recorded_body_bytes: 1024
            connections:
              - name: config-api
                type: http
                upstream: https://config.internal/v1
                ca_file: ca.pem
                credential:
                  basic:
                    username: svc
                    password: file:secrets/config.pw
                hosts: [Config.Internal]
                timeouts:
                  connect_seconds: 2
                  read_seconds: 30
                  total_seconds: 600
                allow:
                  groups: [dev]
                requests:
                  - name: read
                    methods: [get, HEAD]
                  - name: no-delete
                    effect: deny
                    methods: [DELETE]
                    paths: ["/config/*"]
                    agents: ["*"]
            """)
        #expect(config.http.listen == ListenAddress(host: "127.0.0.1", port: 8080))
        #expect(config.http.maxRecordedBodyBytes == 1024)
        let connection = try #require(config.connections.first)
        #expect(connection.upstreamTLS == .verifyFull, "https upstreams are verified unless the config says otherwise")
        #expect(connection.caFile == "/etc/gatehouse/ca.pem")
        let http = try #require(connection.http)
        guard case .basic(let username, .file(let path))? = http.credential else {
            Issue.record("expected basic credentials from a file")
            return
        }
        #expect(username == "svc" && path == "/etc/gatehouse/secrets/config.pw")
        #expect(http.hosts == ["config.internal"])
        #expect((http.connectTimeoutSeconds, http.readTimeoutSeconds, http.totalTimeoutSeconds) == (2, 30, 600))
        #expect(http.requests.map(\.name) == ["read", "no-delete"])
        #expect(http.requests[0].methods == ["GET", "HEAD"])
        #expect(http.requests[0].paths == ["/**"], "a rule without paths covers every path")
        #expect(http.requests[1].effect == .deny)
    }

    @Test func eachCredentialFormIsRead() throws {
        for (yaml, check) in [
            ("header: X-Api-Key\n      value: env:KEY", { (c: GatehouseConfig.Connection.Credential?) -> Bool in
                if case .header("X-Api-Key", .environment("KEY"))? = c { true } else { false } }),
            ("bearer: env:TOKEN", { if case .bearer(.environment("TOKEN"))? = $0 { true } else { false } }),
            ("query: api_key\n      value: env:KEY", { if case .query("api_key", .environment("KEY"))? = $0 { true } else { false } }),
        ] {
            let config = try load("""
                connections:
                  - name: api
                    type: http
                    upstream: http://127.0.0.1:9000
                    credential:
                      \(yaml)
                """)
            #expect(check(config.connections[0].http?.credential), "\(yaml)")
        }
    }

    @Test func credentialMistakesAreReported() {
        #expect(problems("""
            connections:
              - name: api
                type: http
                upstream: http://127.0.0.1:9000
                credential:
                  header: X-Api-Key
                  value: sk-live-123
            """) == ["gatehouse.yaml:7: connections[0].credential.value is a secret and must be a reference (env:NAME or file:PATH), not a literal value"])
        #expect(problems("""
            connections:
              - name: api
                type: http
                upstream: http://127.0.0.1:9000
                credential:
                  bearer: env:A
                  query: key
                  value: env:B
            """) == ["gatehouse.yaml:6: connections[0].credential needs exactly one of: header (with value), bearer, basic (username, password), query (with value)"])
    }

    @Test func aCredentialHeaderMustBeAHeaderName() {
        #expect(problems("""
            connections:
              - name: api
                type: http
                upstream: http://127.0.0.1:9000
                credential:
                  header: "X-Api Key:"
                  value: env:KEY
            """) == ["gatehouse.yaml:6: connections[0].credential.header 'X-Api Key:' is not a valid header name"])
    }

    @Test func optionsOfTheOtherKindAreReported() {
        let found = problems("""
            connections:
              - name: db
                type: postgres
                upstream: postgres://db.internal/app
                username: gatehouse
                hosts: [db.internal]
              - name: api
                type: http
                upstream: http://127.0.0.1:9000
                password: env:PW
            """)
        #expect(found == [
            "gatehouse.yaml:6: connections[0].hosts is only for http connections",
            "gatehouse.yaml:10: connections[1].password is for postgres connections; an http connection injects 'credential'",
        ])
    }

    @Test func hostsAreBareAndUnique() {
        let found = problems("""
            connections:
              - name: a
                type: http
                upstream: http://127.0.0.1:9000
                hosts: [api.internal, "api.internal:8080"]
              - name: b
                type: http
                upstream: http://127.0.0.1:9001
                hosts: [API.internal]
            """)
        #expect(found == [
            "gatehouse.yaml:5: connections[0].hosts: 'api.internal:8080' must be a bare host name (no port, scheme or path)",
            "gatehouse.yaml:9: host 'api.internal' already routes to the connection on line 5",
        ])
    }

    @Test func anEmptyPathListIsReported() {
        #expect(problems("""
            connections:
              - name: a
                type: http
                upstream: http://127.0.0.1:9000
                requests:
                  - name: never
                    effect: deny
                    paths: []
            """) == ["gatehouse.yaml:8: connections[0].requests[0].paths must not be empty (leave it out to cover every path)"])
    }

    @Test func badRulesAreReported() {
        let found = problems("""
            connections:
              - name: api
                type: http
                upstream: http://127.0.0.1:9000
                requests:
                  - name: r
                    methods: ["GET /x"]
                    paths: ["config/*"]
                    effect: review
                  - name: r
            """)
        #expect(found.contains("gatehouse.yaml:7: connections[0].requests[0].methods: 'GET /X' is not an HTTP method"))
        #expect(found.contains("gatehouse.yaml:8: connections[0].requests[0].paths: 'config/*' must start with '/'"))
        #expect(found.contains { $0.hasPrefix("gatehouse.yaml:9: connections[0].requests[0].effect must be one of: allow, deny") })
        #expect(found.contains("gatehouse.yaml:10: request rule name 'r' is used twice in connections[0]"))
    }
}

import Foundation
import Testing

@testable import GatehouseConfig

@Suite("Configuration loading")
struct ConfigLoaderTests {
    let environment = ["DB_HOST": "db.internal", "ADMIN_PORT": "9191"]

    func load(_ yaml: String) throws(ConfigError) -> GatehouseConfig {
        try loadConfig(yaml, environment: environment)
    }

    func problems(_ yaml: String) -> [String] {
        configProblems(yaml, environment: environment)
    }

    @Test func aValidConfigurationLoadsWithDefaultsAndResolvedPaths() throws {
        let config = try load("""
            gateway:
              node: gw-1
            admin:
              listen: 127.0.0.1:${ADMIN_PORT}
            identity:
              issuers:
                - name: corp
                  issuer: https://idp.example.com/realms/corp
                  audiences: [gatehouse]
                  agents:
                    claude-client: claude-code
            audit:
              path: /var/lib/gatehouse/audit.sqlite
              durability: fsync
            connections:
              - name: prod-db
                type: postgres
                upstream: postgres://${DB_HOST}:5432/app
                username: gatehouse
                password: env:PROD_DB_PASSWORD
            """)
        #expect(config.gateway.node == "gw-1")
        #expect(config.admin.listen == ListenAddress(host: "127.0.0.1", port: 9191))
        #expect(config.identity.issuers.first?.agents == ["claude-client": "claude-code"])
        #expect(config.identity.issuers.first?.groupsClaim == "groups")
        #expect(config.audit.durability == .fsync)
        #expect(config.audit.signingKeyPath == "/etc/gatehouse/var/audit-signing.key")
        #expect(config.connections.first?.upstream.host == "db.internal")
        #expect(config.connections.first?.password == .environment("PROD_DB_PASSWORD"))
        #expect(config.dev == false)
    }

    @Test func unknownKeysAreReportedWithTheirLine() {
        let found = problems("""
            admin:
              listen: 127.0.0.1:9090
              lisen: 127.0.0.1:9091
            audti:
              path: x
            """)
        #expect(found.contains { $0.hasPrefix("gatehouse.yaml:3: unknown key 'lisen' in admin") })
        #expect(found.contains { $0.hasPrefix("gatehouse.yaml:4: unknown key 'audti' in configuration") })
    }

    @Test func missingRequiredFieldsAreReported() {
        let found = problems("""
            identity:
              issuers:
                - name: corp
                  audiences: [gatehouse]
            """)
        #expect(found == ["gatehouse.yaml:3: identity.issuers[0] is missing required key 'issuer'"])
    }

    @Test func badURLsAreReported() {
        let found = problems("""
            identity:
              issuers:
                - name: corp
                  issuer: not a url
                  audiences: [gatehouse]
                - name: plain
                  issuer: http://idp.example.com
                  audiences: [gatehouse]
            connections:
              - name: api
                type: http
                upstream: ftp://files.internal/
            """)
        #expect(found.contains("gatehouse.yaml:4: identity.issuers[0].issuer must be an absolute http or https URL with a host"))
        #expect(found.contains("gatehouse.yaml:7: identity.issuers[1].issuer must use https (plain http is allowed only on loopback)"))
        #expect(found.contains("gatehouse.yaml:12: connections[0].upstream must be an absolute http or https URL with a host"))
    }

    @Test func keysMustNotTravelOverPlainHTTPOffLoopback() {
        let found = problems("""
            identity:
              issuers:
                - name: corp
                  issuer: https://idp.example.com
                  discovery_url: http://idp.example.com/.well-known/openid-configuration
                  audiences: [gatehouse]
                - name: local
                  issuer: http://127.0.0.1:4593/api/oidc
                  audiences: [gatehouse]
                - name: tricky
                  issuer: http://127.attacker.example
                  audiences: [gatehouse]
            """)
        #expect(found == [
            "gatehouse.yaml:5: identity.issuers[0].discovery_url must use https (plain http is allowed only on loopback)",
            "gatehouse.yaml:11: identity.issuers[2].issuer must use https (plain http is allowed only on loopback)",
        ])
    }

    @Test func issuersAreUniqueAndTheDevNameIsReserved() {
        let found = problems("""
            identity:
              issuers:
                - name: dev
                  issuer: https://a.example.com
                  audiences: [gatehouse]
                - name: b
                  issuer: https://a.example.com
                  audiences: [gatehouse]
            """)
        #expect(found == [
            "gatehouse.yaml:3: issuer name 'dev' is reserved for the development issuer",
            "gatehouse.yaml:7: issuer https://a.example.com is already configured on line 4",
        ])
    }

    @Test func relativeSecretFilesAreRelativeToTheConfigFile() throws {
        let config = try load("""
            connections:
              - name: db
                type: postgres
                upstream: postgres://db.internal/app
                username: gatehouse
                password: file:secrets/db-password
            """)
        #expect(config.connections.first?.password == .file("/etc/gatehouse/secrets/db-password"))
    }

    @Test func aLiteralSecretIsRefusedWithoutEchoingIt() {
        let found = problems("""
            connections:
              - name: prod-db
                type: postgres
                upstream: postgres://db.internal/app
                username: gatehouse
                password: hunter2-very-secret
            """)
        #expect(found == ["gatehouse.yaml:6: connections[0].password is a secret and must be a reference (env:NAME or file:PATH), not a literal value"])
        #expect(!found.joined().contains("hunter2"))
    }

    @Test func aSecretExpandedFromTheEnvironmentIsStillALiteral() {
        let found = problems("""
            connections:
              - name: prod-db
                type: postgres
                upstream: postgres://db.internal/app
                username: gatehouse
                password: ${DB_HOST}
            """)
        #expect(found.count == 1)
        #expect(!found.joined().contains("db.internal"))
    }

    @Test func aConnectionNameUsedTwiceIsReportedAtTheSecondUse() {
        let found = problems("""
            connections:
              - name: prod-db
                type: postgres
                upstream: postgres://db1.internal/app
                username: gatehouse
              - name: prod-db
                type: postgres
                upstream: postgres://db2.internal/app
                username: gatehouse
            """)
        #expect(found == ["gatehouse.yaml:6: connection name 'prod-db' is already used on line 2"])
    }

    @Test func aPostgresConnectionNamesTheRoleTheGatewayUses() {
        let found = problems("""
            connections:
              - name: prod-db
                type: postgres
                upstream: postgres://db1.internal/app
            """)
        #expect(found == ["gatehouse.yaml:2: connections[0] needs 'username': the role the gateway logs in as"])
    }

    @Test func everyProblemIsReportedNotJustTheFirst() {
        let found = problems("""
            admin:
              listen: nowhere
            audit:
              checkpoint_every: 0
              durability: sometimes
            identity:
              clock_skew_seconds: lots
            """)
        #expect(found.count == 4)
        #expect(found.map { $0.split(separator: ":")[1] } == ["2", "4", "5", "7"])
    }

    @Test func anUnsetEnvironmentVariableIsReported() {
        let found = problems("""
            admin:
              listen: 127.0.0.1:${NO_SUCH_PORT}
            """)
        #expect(found == ["gatehouse.yaml:2: admin.listen: environment variable NO_SUCH_PORT is not set"])
    }

    @Test func aDefaultAppliesWhenAVariableIsUnset() throws {
        let config = try load("""
            admin:
              listen: 127.0.0.1:${NO_SUCH_PORT:-9300}
            """)
        #expect(config.admin.listen.port == 9300)
    }

    @Test func environmentValuesCannotInjectStructure() throws {
        let config = try ConfigLoader.parse(
            yaml: "gateway:\n  node: ${NODE}\n",
            file: "gatehouse.yaml",
            baseDirectory: "/",
            environment: ["NODE": "a\ndev: true"])
        #expect(config.gateway.node == "a\ndev: true")
        #expect(config.dev == false)
    }

    @Test func devModeIsRefusedOffLoopback() {
        let found = problems("""
            dev: true
            admin:
              listen: 0.0.0.0:9090
            """)
        #expect(found == [
            "gatehouse.yaml:3: admin.listen 0.0.0.0:9090 is reachable from other machines and needs admin.tls (certificate and key)",
            "gatehouse.yaml:3: dev: true is allowed only when every listener is on loopback; admin.listen is 0.0.0.0:9090",
        ])
    }

    /// Approvers' tokens travel in every reviews API call: off loopback, the admin listener needs
    /// TLS, and its URL (links, the CLI) says https.
    @Test func theAdminListenerNeedsTLSOffLoopback() throws {
        #expect(problems("""
            admin:
              listen: 0.0.0.0:9443
            """) == ["gatehouse.yaml:2: admin.listen 0.0.0.0:9443 is reachable from other machines and needs admin.tls (certificate and key)"])
        let config = try load("""
            admin:
              listen: 0.0.0.0:9443
              tls:
                certificate: /etc/gatehouse/admin.pem
                key: /etc/gatehouse/admin.key
            """)
        #expect(config.admin.url == "https://0.0.0.0:9443")
        #expect(config.admin.localURL == "https://127.0.0.1:9443", "the CLI on this machine dials loopback")
        #expect(config.admin.tlsKey == "/etc/gatehouse/admin.key")
        #expect(problems("""
            admin:
              listen: 0.0.0.0:9443
              tls:
                certificate: /etc/gatehouse/admin.pem
                key: /etc/gatehouse/admin.key
            reviews:
              webhook:
                url: https://hooks.example.com/x
            """) == ["gatehouse.yaml:7: review links need reviews.public_url (how approvers reach 0.0.0.0:9443); the admin listener's own address names no host"])
        #expect(try load("admin:\n  listen: 127.0.0.1:9090\n").admin.url == "http://127.0.0.1:9090")
        #expect(problems("""
            dev: true
            admin:
              listen: 127.0.0.1:9090
              tls:
                certificate: a.pem
                key: a.key
            """) == ["gatehouse.yaml:4: dev: true keeps the admin listener on plain HTTP on loopback; remove admin.tls or dev"])
    }

    @Test func yamlSyntaxErrorsCarryALine() {
        let found = problems("""
            admin:
              listen: 127.0.0.1:9090
             bad: [unclosed
            """)
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("gatehouse.yaml:") == true)
        #expect(found.first?.contains("YAML syntax error") == true)
    }

    @Test func duplicateKeysAreReported() {
        let found = problems("""
            admin:
              listen: 127.0.0.1:9090
              listen: 127.0.0.1:9091
            """)
        #expect(found == ["gatehouse.yaml:3: key 'listen' appears more than once in the same mapping"])
    }

    @Test func secretReferencesResolveFromEnvironmentAndFiles() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gatehouse-secret-\(UUID().uuidString)")
        try "s3cret\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(try SecretReference(reference: "file:\(file.path)")?.resolve() == "s3cret")
        #expect(try SecretReference(reference: "env:TOKEN")?.resolve(environment: ["TOKEN": "abc"]) == "abc")
        #expect(throws: (any Error).self) { try SecretReference(reference: "env:MISSING")?.resolve(environment: [:]) }
        #expect(SecretReference(reference: "plaintext") == nil)
    }
}

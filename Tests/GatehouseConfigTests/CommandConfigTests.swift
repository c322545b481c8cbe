import Testing

@testable import GatehouseConfig

@Suite("Command connections")
struct CommandConfigTests {
    static let base = """
        http:
          listen: 127.0.0.1:8080
        connections:
          - name: kube
            type: command
            command:
              executable: /usr/bin/kubectl
              args: [--context, prod]
              environment: { KUBECACHEDIR: /tmp/kube }
              secrets: { KUBE_TOKEN: env:KUBE_TOKEN }
              secret_files: { KUBECONFIG: file:kubeconfig }
              working_directory: tools
              timeout_seconds: 20
              max_output_bytes: 4096
            allow: { groups: [sre] }
        """

    @Test func aCommandConnectionWithItsCredentialsAndBounds() throws {
        let config = try loadConfig(Self.base + """

            policy:
              rules:
                - name: kube-reads
                  effect: allow
                  connections: [kube]
                  command: { args: ["get *", "describe *"] }
            """)
        let options = try #require(config.connections.first?.command)
        #expect(options.executable == "/usr/bin/kubectl")
        #expect(options.arguments == ["--context", "prod"])
        #expect(options.environment == ["KUBECACHEDIR": "/tmp/kube"])
        #expect(options.secrets == ["KUBE_TOKEN": .environment("KUBE_TOKEN")])
        #expect(options.secretFiles == ["KUBECONFIG": .file("/etc/gatehouse/kubeconfig")])
        #expect(options.workingDirectory == "/etc/gatehouse/tools")
        #expect(options.timeoutSeconds == 20 && options.maxOutputBytes == 4096)
        #expect(config.policy.rules.first?.command?.patterns.map(\.text) == ["get *", "describe *"])
    }

    @Test func mistakesAreReported() {
        let problems = configProblems("""
            connections:
              - name: kube
                type: command
                upstream: https://example.com
                command:
                  executable: kubectl
                  secrets: { "bad-name": env:X, TOKEN: literal-token }
                allow: { groups: [sre] }
            policy:
              rules:
                - name: sql-on-a-tool
                  effect: deny
                  connections: [kube]
                  sql: { kinds: [drop] }
                - name: empty
                  effect: allow
                  command: { args: [] }
            """)
        #expect(problems.contains { $0.contains("executable must be an absolute path") })
        #expect(problems.contains { $0.contains("upstream is not for command connections") })
        #expect(problems.contains { $0.contains("bad-name is not an environment variable name") })
        #expect(problems.contains { $0.contains("must be a reference") })
        #expect(problems.contains { $0.contains("is served on the HTTP listener") })
        #expect(problems.contains { $0.contains("none of its connections is a postgres connection") })
        #expect(problems.contains { $0.contains("command needs args") })
    }
}

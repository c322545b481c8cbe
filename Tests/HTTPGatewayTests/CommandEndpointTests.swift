import Testing

@testable import HTTPGateway

@Suite("Command endpoint")
struct CommandEndpointTests {
    static let forbidden = ["--server", "-s", "--kubeconfig"]

    @Test(arguments: [
        (["get", "pods", "--server=https://elsewhere"], "--server"),
        (["get", "pods", "--server", "https://elsewhere"], "--server"),
        (["get", "pods", "--serv=x"], "--server"),
        (["get", "--kubeconfig", "/etc/other"], "--kubeconfig"),
        (["get", "-s", "x"], "-s"),
        (["get", "-shttps://x"], "-s"),
        (["get", "-As", "x"], "-s"),
    ] as [([String], String)])
    func forbiddenOptionsAreFoundInEveryForm(arguments: [String], option: String) {
        #expect(forbiddenOption(in: arguments, forbidden: Self.forbidden) == option)
    }

    @Test func otherOptionsAndOperandsPass() {
        #expect(forbiddenOption(in: ["get", "pods", "-n", "web", "-o", "yaml"], forbidden: Self.forbidden) == nil)
        #expect(forbiddenOption(in: ["get", "--", "--server"], forbidden: Self.forbidden) == nil, "after -- arguments are operands")
        #expect(forbiddenOption(in: ["get", "--se"], forbidden: Self.forbidden) == "--server", "getopt takes an unambiguous abbreviation")
        #expect(forbiddenOption(in: ["get", "--sort-by=.metadata.name"], forbidden: Self.forbidden) == nil)
        #expect(forbiddenOption(in: ["logs", "-"], forbidden: Self.forbidden) == nil)
    }

    @Test func theCommandLineIsShownAsAPersonWouldTypeIt() {
        #expect(HTTPProxy.commandLine(["/usr/bin/kubectl", "get", "pods", "-l", "app=web"]) == "/usr/bin/kubectl get pods -l app=web")
        #expect(HTTPProxy.commandLine(["tool", "a b", "it's", ""]) == #"tool 'a b' 'it'\''s' ''"#)
    }
}

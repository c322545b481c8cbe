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

    @Test func aSecretSplitAcrossPiecesIsStillReplaced() {
        var scrubber = StreamingScrubber(secrets: ["s3cr3t-value"])
        var out: [UInt8] = []
        for piece in ["token s3c", "r3t-va", "lue done, and s3cr3t-value again", " end"] { out += scrubber.feed(Array(piece.utf8)) }
        out += scrubber.finish()
        #expect(String(decoding: out, as: UTF8.self) == "token [credential] done, and [credential] again end")
    }

    @Test func textIsHandedOnInWholeCharacters() {
        var partial: [UInt8] = []
        let euro = Array("€".utf8)  // three bytes
        #expect(StreamingOutput.wholeCharacters(&partial, Array("a".utf8) + euro.prefix(2)) == "a")
        #expect(StreamingOutput.wholeCharacters(&partial, Array(euro.suffix(1)) + Array("b".utf8)) == "€b")
        #expect(partial.isEmpty)
    }

    @Test func theLongestSecretWinsAsInTheWholeTextScrubber() {
        var scrubber = StreamingScrubber(secrets: ["passw0rd", "passw0rd-and-more"])
        var out: [UInt8] = []
        for piece in ["x passw0", "rd-an", "d-more y"] { out += scrubber.feed(Array(piece.utf8)) }
        out += scrubber.finish()
        #expect(String(decoding: out, as: UTF8.self) == "x [credential] y")
    }
}


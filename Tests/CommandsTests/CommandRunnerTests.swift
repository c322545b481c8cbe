import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

@testable import Commands

/// Real processes: what a caller gets back, and what the runner never lets happen (a shell
/// reading the arguments, a tool outliving its timeout, output past the cap).
@Suite("Command runner")
struct CommandRunnerTests {
    @Test func argumentsReachTheToolVerbatimWithoutAShell() async {
        let result = await CommandRunner.run(CommandSpec(
            executable: "/usr/bin/printf", arguments: ["%s|", "a b", "$(id)", "; rm -rf /", "*"]))
        #expect(result.ending == .exited(0))
        #expect(String(decoding: result.stdout, as: UTF8.self) == "a b|$(id)|; rm -rf /|*|")
    }

    @Test func onlyTheGivenEnvironmentAndCredentialFilesReachTheTool() async throws {
        setenv("GATEHOUSE_TEST_LEAK", "leaked", 1)
        let result = await CommandRunner.run(CommandSpec(
            executable: "/bin/sh", arguments: ["-c", "echo \"$TOKEN|${GATEHOUSE_TEST_LEAK:-none}\"; cat \"$KEY_FILE\"; echo; stat -c %a \"$KEY_FILE\""],
            environment: ["TOKEN": "t0ken"], files: ["KEY_FILE": "secret-key"]))
        #expect(result.ending == .exited(0))
        let lines = String(decoding: result.stdout, as: UTF8.self).split(separator: "\n")
        #expect(lines == ["t0ken|none", "secret-key", "600"])
    }

    @Test func theCredentialFileIsGoneAfterTheRun() async {
        let result = await CommandRunner.run(CommandSpec(executable: "/bin/sh", arguments: ["-c", "printf %s \"$F\""], files: ["F": "x"]))
        let path = String(decoding: result.stdout, as: UTF8.self)
        #expect(!path.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func inputExitStatusAndWorkingDirectory() async {
        let result = await CommandRunner.run(CommandSpec(
            executable: "/bin/sh", arguments: ["-c", "pwd; tr a-z A-Z; echo oops >&2; exit 3"], workingDirectory: "/tmp",
            input: Array("hello\n".utf8)))
        #expect(result.ending == .exited(3))
        #expect(String(decoding: result.stdout, as: UTF8.self) == "/tmp\nHELLO\n")
        #expect(String(decoding: result.stderr, as: UTF8.self) == "oops\n")
    }

    @Test func aToolThatOutlivesItsTimeoutIsKilledWithItsChildren() async throws {
        let marker = NSTemporaryDirectory() + "gatehouse-child-\(UUID().uuidString)"
        let result = await CommandRunner.run(CommandSpec(
            executable: "/bin/sh", arguments: ["-c", "(sleep 4; touch \(marker)) & sleep 30"], timeout: .milliseconds(500)))
        #expect(result.ending == .timedOut)
        // Measured by the runner: the suite's other tests can keep this task from resuming.
        #expect(result.duration < .seconds(3.5))
        try await Task.sleep(for: .seconds(4.5))
        #expect(!FileManager.default.fileExists(atPath: marker), "the background child was killed with its group")
    }

    @Test func outputPastTheCapStopsTheRunAndIsCut() async {
        let result = await CommandRunner.run(CommandSpec(executable: "/usr/bin/yes", arguments: ["y"], maxOutputBytes: 10_000))
        #expect(result.ending == .outputTooLarge)
        #expect(result.stdout.count + result.stderr.count == 10_000)
    }

    @Test func theToolInheritsNoDescriptorOfTheGateway() async throws {
        // A descriptor of this process without close-on-exec, as NIO's sockets are.
        let leaked = open("/dev/null", O_RDONLY)
        defer { close(leaked) }
        #expect(leaked > 2)
        let result = await CommandRunner.run(CommandSpec(executable: "/bin/sh", arguments: ["-c", "ls /proc/$$/fd"]))
        #expect(String(decoding: result.stdout, as: UTF8.self).split(separator: "\n") == ["0", "1", "2"])
    }

    @Test func theToolStartsInAnEmptyPrivateDirectory() async {
        let result = await CommandRunner.run(CommandSpec(executable: "/bin/sh", arguments: ["-c", "ls -A; stat -c %a .."]))
        #expect(String(decoding: result.stdout, as: UTF8.self) == "700\n")
    }

    @Test func aToolThatExitsWhileSomethingItStartedHoldsItsOutputEndsPromptly() async {
        let result = await CommandRunner.run(CommandSpec(
            executable: "/bin/sh", arguments: ["-c", "setsid sleep 3 & echo done"], timeout: .seconds(10)))
        #expect(result.ending == .exited(0))
        #expect(String(decoding: result.stdout, as: UTF8.self) == "done\n")
        #expect(result.duration < .seconds(2.5))
    }

    @Test func aMissingExecutableSaysSo() async {
        let result = await CommandRunner.run(CommandSpec(executable: "/nonexistent/tool", arguments: []))
        guard case .failedToStart(let reason) = result.ending else {
            Issue.record("expected a start failure, got \(result.ending)")
            return
        }
        #expect(reason.contains("/nonexistent/tool"))
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation

// Both are in glibc (2.9 and 2.29) but behind _GNU_SOURCE, which Swift's Glibc module does not set.
@_silgen_name("pipe2")
private func systemPipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32
@_silgen_name("posix_spawn_file_actions_addchdir_np")
private func systemAddChdir(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ path: UnsafePointer<CChar>) -> Int32
// glibc 2.34: close every descriptor from this one up in the child, before exec.
@_silgen_name("posix_spawn_file_actions_addclosefrom_np")
private func systemAddCloseFrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ from: Int32) -> Int32

/// One run of a command-line tool: the executable and its whole argument list (fixed leading
/// arguments and the caller's), the environment it gets (nothing inherited), what it reads on
/// standard input, and its bounds.
public struct CommandSpec: Sendable {
    public var executable: String
    public var arguments: [String]
    public var environment: [String: String]
    /// Environment variables set to the path of a private file holding this content.
    public var files: [String: String]
    public var workingDirectory: String?
    public var input: [UInt8]
    public var timeout: Duration
    /// stdout and stderr together; past it the run is stopped.
    public var maxOutputBytes: Int
    /// Called on the runner's thread with each piece of output as it is read, in order.
    public var onOutput: (@Sendable (CommandOutputStream, [UInt8]) -> Void)?
    /// Set from anywhere to stop the run (its caller has gone).
    public var cancellation: CommandCancellation?

    public init(
        executable: String, arguments: [String], environment: [String: String] = [:], files: [String: String] = [:],
        workingDirectory: String? = nil, input: [UInt8] = [], timeout: Duration = .seconds(30), maxOutputBytes: Int = 1 << 20,
        onOutput: (@Sendable (CommandOutputStream, [UInt8]) -> Void)? = nil, cancellation: CommandCancellation? = nil
    ) {
        self.onOutput = onOutput
        self.cancellation = cancellation
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.files = files
        self.workingDirectory = workingDirectory
        self.input = input
        self.timeout = timeout
        self.maxOutputBytes = maxOutputBytes
    }
}

public enum CommandOutputStream: String, Sendable {
    case stdout, stderr
}

/// A flag the runner looks at while the tool runs: once set, the tool and its group are killed.
public final class CommandCancellation: Sendable {
    private let flag = ManagedAtomicFlag()

    public init() {}

    public func cancel() { flag.set() }
    public var isCancelled: Bool { flag.isSet }
}

/// A lock-protected boolean (no atomics package needed).
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// How the run ended.
public struct CommandResult: Sendable, Equatable {
    public enum Ending: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
        /// Killed, with every process of its group, at the timeout.
        case timedOut
        /// Killed, with its group, when its output passed the cap.
        case outputTooLarge
        /// Killed, with its group, because its caller went away.
        case cancelled
        /// It never ran; the reason is safe to show.
        case failedToStart(String)
    }

    public var ending: Ending
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    public var duration: Duration

    public var exitCode: Int32? {
        if case .exited(let code) = ending { return code }
        return nil
    }

    public var succeeded: Bool { ending == .exited(0) }
}

/// Runs a command without a shell, in a process group of its own, so that at the timeout (or when
/// its output passes the cap) the tool and every process it started are killed together; when it
/// exits, whatever it left running in its group is killed too. Output is read as it comes, so a
/// chatty tool never blocks on a full pipe, and bounded.
public enum CommandRunner {
    public static func run(_ spec: CommandSpec) async -> CommandResult {
        // A tool that closes its input early must cost the gateway an EPIPE, not its life.
        ignoreBrokenPipes
        return await withCheckedContinuation { continuation in
            // Blocking system calls: on a thread of their own, never on a Swift concurrency thread.
            Thread.detachNewThread {
                continuation.resume(returning: runBlocking(spec))
            }
        }
    }

    private static let ignoreBrokenPipes: Void = {
        signal(SIGPIPE, SIG_IGN)
    }()

    static func runBlocking(_ spec: CommandSpec) -> CommandResult {
        let started = ContinuousClock.now
        func failed(_ reason: String) -> CommandResult {
            CommandResult(ending: .failedToStart(reason), stdout: [], stderr: [], duration: ContinuousClock.now - started)
        }
        var environment = spec.environment
        // Every run gets a private directory (0700): the credential files live there, and it is
        // where the tool runs unless told otherwise, so it starts among nothing of the gateway's.
        guard let privateDirectory = makePrivateDirectory() else { return failed("cannot create a private directory for the run") }
        defer { removeDirectory(privateDirectory) }
        let secretsDirectory = privateDirectory + "/credentials"
        let workDirectory = privateDirectory + "/work"
        guard mkdir(secretsDirectory, 0o700) == 0, mkdir(workDirectory, 0o700) == 0 else { return failed("cannot create a private directory for the run") }
        for (index, (name, content)) in spec.files.sorted(by: { $0.key < $1.key }).enumerated() {
            let path = "\(secretsDirectory)/\(index)-\(name.lowercased())"
            guard writePrivateFile(path, content) else { return failed("cannot write a credential file") }
            environment[name] = path
        }

        var stdinPipe: [Int32] = [-1, -1], stdoutPipe: [Int32] = [-1, -1], stderrPipe: [Int32] = [-1, -1]
        // Close-on-exec from the start: a tool started at the same moment by another session must
        // not inherit this one's pipes.
        guard systemPipe2(&stdinPipe, O_CLOEXEC) == 0, systemPipe2(&stdoutPipe, O_CLOEXEC) == 0, systemPipe2(&stderrPipe, O_CLOEXEC) == 0 else {
            for fd in stdinPipe + stdoutPipe + stderrPipe where fd >= 0 { close(fd) }
            return failed("cannot create pipes")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
        _ = systemAddChdir(&actions, spec.workingDirectory ?? workDirectory)
        // Nothing of the gateway's reaches the tool: not its listening sockets, not its clients'
        // connections, not its upstream connections (NIO does not mark them close-on-exec).
        guard systemAddCloseFrom(&actions, 3) == 0 else {
            for fd in stdinPipe + stdoutPipe + stderrPipe { close(fd) }
            return failed("cannot isolate the tool from the gateway's descriptors")
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Its own process group (killed as one), default signal handling (the gateway ignores
        // SIGPIPE; the tool should not), nothing blocked.
        var defaults = sigset_t()
        sigfillset(&defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = [spec.executable] + spec.arguments
        let envp = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let spawned = withCStrings(argv) { argvPointers in
            withCStrings(envp) { envPointers in
                posix_spawn(&pid, spec.executable, &actions, &attributes, argvPointers, envPointers)
            }
        }
        close(stdinPipe[0])
        close(stdoutPipe[1])
        close(stderrPipe[1])
        guard spawned == 0 else {
            close(stdinPipe[1])
            close(stdoutPipe[0])
            close(stderrPipe[0])
            return failed("cannot start \(spec.executable): \(String(cString: strerror(spawned)))")
        }

        var stdout: [UInt8] = [], stderr: [UInt8] = []
        var input = spec.input[...]
        var inputFD: Int32 = stdinPipe[1]
        _ = fcntl(inputFD, F_SETFL, O_NONBLOCK)
        if input.isEmpty { close(inputFD); inputFD = -1 }
        var openOutputs: [Int32] = [stdoutPipe[0], stderrPipe[0]]
        let deadline = started + spec.timeout
        var ending: CommandResult.Ending?
        var status: Int32 = 0
        var exitedAt: ContinuousClock.Instant?
        var lastRead = ContinuousClock.now
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)

        while ending == nil {
            let remaining = deadline - ContinuousClock.now
            // A tool that has exited ended as it ended, even if the deadline or the caller's
            // departure comes while its last output is read.
            if remaining <= .zero {
                if exitedAt == nil { ending = .timedOut }
                break
            }
            if spec.cancellation?.isCancelled == true {
                if exitedAt == nil { ending = .cancelled }
                break
            }
            if exitedAt == nil, hasExited(pid) { exitedAt = .now }
            // The tool has exited: what it left behind may hold its output open (a daemon, a
            // process that left the group); output keeps being read while it comes, and the run
            // is over once it pauses for 200 ms.
            if let exitedAt, openOutputs.isEmpty || ContinuousClock.now - max(exitedAt, lastRead) > .milliseconds(200) { break }
            if openOutputs.isEmpty && inputFD < 0 {
                usleep(5000)
                continue
            }
            var fds = openOutputs.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if inputFD >= 0 { fds.append(pollfd(fd: inputFD, events: Int16(POLLOUT), revents: 0)) }
            // Short waits: the loop also watches for the tool's exit.
            let milliseconds = Int32(clamping: max(1, min(remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000, 50)))
            let ready = poll(&fds, nfds_t(fds.count), milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                ending = .failedToStart("waiting for the command failed")
                break
            }
            for entry in fds where entry.revents != 0 {
                if entry.fd == inputFD {
                    if entry.revents & Int16(POLLOUT) != 0 {
                        let written = input.withUnsafeBytes { write(inputFD, $0.baseAddress, min($0.count, 64 * 1024)) }
                        if written > 0 { input = input.dropFirst(written) }
                        if written < 0 && errno != EAGAIN && errno != EINTR { input = [][...] }
                    } else {
                        input = [][...]  // the tool closed its input: the rest is not wanted
                    }
                    if input.isEmpty {
                        close(inputFD)
                        inputFD = -1
                    }
                    continue
                }
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    lastRead = .now
                    let isStdout = entry.fd == stdoutPipe[0]
                    // What passes the cap is neither kept nor handed on.
                    let room = max(0, spec.maxOutputBytes - stdout.count - stderr.count)
                    let piece = Array(buffer[0..<min(count, room)])
                    if isStdout { stdout += piece } else { stderr += piece }
                    if !piece.isEmpty { spec.onOutput?(isStdout ? .stdout : .stderr, piece) }
                    if count > room {
                        ending = .outputTooLarge
                        break
                    }
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(entry.fd)
                    openOutputs.removeAll { $0 == entry.fd }
                }
            }
        }
        // Whatever is left of its group goes with it. The tool is not reaped before this, so its
        // process group id cannot have been reused by then; and the tool itself is killed too, in
        // case it moved to another group.
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        for fd in openOutputs { close(fd) }
        if inputFD >= 0 { close(inputFD) }
        if ending == nil {
            let signal = status & 0x7f
            ending = signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
        }
        return CommandResult(ending: ending!, stdout: stdout, stderr: stderr, duration: ContinuousClock.now - started)
    }

    /// Whether the child has exited, without reaping it (its pid, and so its group's id, stays
    /// taken until the group is killed).
    private static func hasExited(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_signo == SIGCHLD
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    private static func makePrivateDirectory() -> String? {
        var template = Array((NSTemporaryDirectory() + "gatehouse-run-XXXXXX").utf8CString)
        return template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!).map { String(cString: $0) }
        }
    }

    private static func writePrivateFile(_ path: String, _ content: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(content.utf8)
        return bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count
    }

    private static func removeDirectory(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }
}

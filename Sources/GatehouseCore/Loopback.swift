#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Whether a host is reachable only from this machine. Only IP literals and the exact name
/// `localhost` count: a name like `127.example.com` can resolve anywhere.
public enum Loopback {
    public static func contains(host: String) -> Bool {
        var host = host
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.lowercased() == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            // 127.0.0.0/8, in network byte order.
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { bytes in bytes.dropLast().allSatisfy { $0 == 0 } && bytes.last == 1 }
        }
        return false
    }
}

extension Duration {
    /// The whole duration in nanoseconds (saturating is not needed: gateway timeouts are minutes).
    public var inNanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}

/// Runs `operation`, or throws `GatehouseError(code, "<what> took longer than <deadline>")` once
/// `deadline` has passed (the operation is cancelled).
public func withDeadline<T: Sendable>(
    _ deadline: Duration,
    code: String,
    what: String,
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: deadline)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw GatehouseError(code, "\(what) took longer than \(deadline)")
        }
        return value
    }
}

import Foundation
import GatehouseCore

/// Where a secret lives. Config files name secrets, never contain them, so a config can be
/// committed, shared and printed, and the audit trail never sees a credential.
public enum SecretReference: Sendable, Equatable, CustomStringConvertible {
    case environment(String)
    case file(String)

    /// Parses `env:NAME` or `file:PATH`; anything else is treated as a literal secret and refused.
    public init?(reference: String) {
        if reference.hasPrefix("env:") {
            let name = String(reference.dropFirst(4))
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return nil }
            self = .environment(name)
        } else if reference.hasPrefix("file:") {
            let path = String(reference.dropFirst(5))
            guard !path.isEmpty else { return nil }
            self = .file(path)
        } else {
            return nil
        }
    }

    /// Safe to log: names the place, never the value.
    public var description: String {
        switch self {
        case .environment(let name): "env:\(name)"
        case .file(let path): "file:\(path)"
        }
    }

    /// Largest secret file read, so a mistaken path (a log, a device) cannot exhaust memory.
    public static let maximumFileBytes = 64 * 1024

    /// The secret's value, read now (`env:` from this process's environment, `file:` from disk).
    public func resolve() throws -> String {
        if case .environment(let name) = self {
            // getenv, not ProcessInfo.environment: that copies the whole environment on every call.
            guard let pointer = getenv(name), let value = String(validatingCString: pointer), !value.isEmpty else {
                throw GatehouseError("secret.missing", "secret \(self) is not set")
            }
            return value
        }
        return try resolve(environment: [:])
    }

    public func resolve(environment: [String: String]) throws -> String {
        switch self {
        case .environment(let name):
            guard let value = environment[name], !value.isEmpty else {
                throw GatehouseError("secret.missing", "secret \(self) is not set")
            }
            return value
        case .file(let path):
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw GatehouseError("secret.unreadable", "secret \(self) cannot be read")
            }
            defer { try? handle.close() }
            let data = (try? handle.read(upToCount: Self.maximumFileBytes + 1)) ?? Data()
            guard data.count <= Self.maximumFileBytes else {
                throw GatehouseError("secret.too-large", "secret \(self) is larger than \(Self.maximumFileBytes) bytes")
            }
            guard var value = String(data: data, encoding: .utf8) else {
                throw GatehouseError("secret.not-text", "secret \(self) is not UTF-8 text")
            }
            while value.last == "\n" || value.last == "\r" { value.removeLast() }
            guard !value.isEmpty else { throw GatehouseError("secret.empty", "secret \(self) is empty") }
            return value
        }
    }
}

import Crypto
import Foundation
import GatehouseCore
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A signed statement that the trail, up to and including event `seq`, ends in `hash`.
public struct AuditCheckpoint: Sendable, Codable, Equatable {
    public var seq: Int64
    public var hash: String
    public var timeMillis: Int64
    public var node: String
    /// Hex of the Ed25519 public key that signed it. Informational only: verification uses the key
    /// from config, since whoever could rewrite this row could also sign with a key of their own.
    public var publicKey: String
    /// Hex of the Ed25519 signature over `signedMessage`.
    public var signature: String

    public init(seq: Int64, hash: String, timeMillis: Int64, node: String, publicKey: String, signature: String) {
        self.seq = seq
        self.hash = hash
        self.timeMillis = timeMillis
        self.node = node
        self.publicKey = publicKey
        self.signature = signature
    }

    /// What the signature covers. Node comes last, so a node name holding a newline cannot make two
    /// different checkpoints sign the same text.
    public var signedMessage: String {
        Self.signedMessage(seq: seq, hash: hash, timeMillis: timeMillis, node: node)
    }

    public static func signedMessage(seq: Int64, hash: String, timeMillis: Int64, node: String) -> String {
        "gatehouse-checkpoint-v1\n\(seq)\n\(hash)\n\(timeMillis)\n\(node)"
    }
}

/// The gateway's checkpoint signing key (Ed25519).
public struct AuditSigner: Sendable {
    private let key: Curve25519.Signing.PrivateKey

    /// Hex of the raw 32-byte public key.
    public let publicKey: String

    public var verifier: AuditSignatureVerifier {
        AuditSignatureVerifier(key: key.publicKey)
    }

    init(key: Curve25519.Signing.PrivateKey) {
        self.key = key
        self.publicKey = Hex.encode(key.publicKey.rawRepresentation)
    }

    /// A new key held only in memory (tests, tools).
    public static func generate() -> AuditSigner {
        AuditSigner(key: Curve25519.Signing.PrivateKey())
    }

    /// From the raw 32-byte private key.
    public init(rawPrivateKey: [UInt8]) throws {
        do {
            self.init(key: try Curve25519.Signing.PrivateKey(rawRepresentation: rawPrivateKey))
        } catch {
            throw GatehouseError("audit.signing_key", "an Ed25519 private key must be 32 bytes")
        }
    }

    public func sign(seq: Int64, hash: String, time: Date, node: String) throws -> AuditCheckpoint {
        let timeMillis = Int64((time.timeIntervalSince1970 * 1000).rounded(.down))
        let message = AuditCheckpoint.signedMessage(seq: seq, hash: hash, timeMillis: timeMillis, node: node)
        let signature = try key.signature(for: Data(message.utf8))
        return AuditCheckpoint(
            seq: seq,
            hash: hash,
            timeMillis: timeMillis,
            node: node,
            publicKey: publicKey,
            signature: Hex.encode(signature)
        )
    }

    /// Loads the key at `path`, or creates it (mode 0600, directory 0700 if missing) on first start.
    ///
    /// The file holds one line: the base64 of the raw 32-byte private key. A key file that others
    /// can read is used but logged as a warning: refusing it would break deployments whose secret
    /// mounts default to 0644, while the operator still learns about it.
    public static func loadOrCreate(path: String, logger: Logger? = nil) throws -> AuditSigner {
        if let signer = try load(path: path, logger: logger) {
            return signer
        }
        let signer = generate()
        let text = Data((Data(signer.key.rawRepresentation).base64EncodedString() + "\n").utf8)
        if try createExclusively(path: path, contents: text) {
            logger?.notice("created audit signing key", metadata: ["path": "\(path)", "publicKey": "\(signer.publicKey)"])
            return signer
        }
        // Another process created it between our look and our write: use theirs.
        guard let existing = try load(path: path, logger: logger) else {
            throw AuditErrors.signingKey(path, "vanished while it was being created")
        }
        return existing
    }

    /// Loads an existing key and never creates one: for tools that only verify, where a new key
    /// would make every checkpoint look forged.
    public static func load(path: String, logger: Logger? = nil) throws -> AuditSigner {
        guard let signer = try load(path: path, logger: logger) else {
            throw AuditErrors.signingKey(path, "does not exist")
        }
        return signer
    }

    private static func load(path: String, logger: Logger?) throws -> AuditSigner? {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { return nil }
            throw AuditErrors.signingKey(path, "cannot be read (\(String(cString: strerror(errno))))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw AuditErrors.signingKey(path, "is not a regular file")
        }
        // A key file is a few dozen bytes; refuse to read anything large into memory.
        guard info.st_size <= 4096 else {
            throw AuditErrors.signingKey(path, "is malformed: expected one base64 line holding a 32-byte Ed25519 private key")
        }
        if info.st_mode & 0o077 != 0 {
            logger?.warning(
                "audit signing key is accessible to group or others; run chmod 600 on it",
                metadata: ["path": "\(path)", "mode": "\(String(info.st_mode & 0o777, radix: 8))"]
            )
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AuditErrors.signingKey(path, "cannot be read")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let raw = Data(base64Encoded: text), raw.count == 32,
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        else {
            throw AuditErrors.signingKey(path, "is malformed: expected one base64 line holding a 32-byte Ed25519 private key")
        }
        return AuditSigner(key: key)
    }

    /// Writes a temporary file and links it into place, so the key appears whole or not at all and
    /// two processes starting together cannot both create one. Returns false if `path` exists.
    private static func createExclusively(path: String, contents: Data) throws -> Bool {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory,
                    withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o700]
                )
            } catch {
                throw AuditErrors.signingKey(path, "cannot be created: its directory cannot be created")
            }
        }
        let temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileIO.writeNewFile(temporary, contents: contents, mode: 0o600, sync: true) { reason in
            AuditErrors.signingKey(path, "cannot be created (\(reason))")
        }
        defer { unlink(temporary) }
        if link(temporary, path) != 0 {
            if errno == EEXIST { return false }
            throw AuditErrors.signingKey(path, "cannot be created (\(String(cString: strerror(errno))))")
        }
        FileIO.syncDirectory(of: path)
        return true
    }
}

/// Checks checkpoint signatures against one trusted public key.
public struct AuditSignatureVerifier: Sendable, Equatable {
    private let key: Curve25519.Signing.PublicKey

    /// Hex of the raw 32-byte public key.
    public var publicKey: String { Hex.encode(key.rawRepresentation) }

    init(key: Curve25519.Signing.PublicKey) {
        self.key = key
    }

    public init(signer: AuditSigner) {
        self = signer.verifier
    }

    /// From the hex of a raw 32-byte Ed25519 public key (as `AuditSigner.publicKey` prints it).
    public init(publicKeyHex: String) throws {
        guard let raw = Hex.decode(publicKeyHex.trimmingCharacters(in: .whitespacesAndNewlines)), raw.count == 32,
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
        else {
            throw GatehouseError("audit.verify_key", "an audit public key must be 64 hex digits (32 bytes)")
        }
        self.key = key
    }

    public func isValid(_ checkpoint: AuditCheckpoint) -> Bool {
        guard let signature = Hex.decode(checkpoint.signature), signature.count == 64 else { return false }
        return key.isValidSignature(signature, for: Data(checkpoint.signedMessage.utf8))
    }

    public static func == (lhs: AuditSignatureVerifier, rhs: AuditSignatureVerifier) -> Bool {
        lhs.key.rawRepresentation == rhs.key.rawRepresentation
    }
}

/// Small POSIX helpers for files that must be whole on disk.
enum FileIO {
    static func writeNewFile(
        _ path: String,
        contents: Data,
        mode: mode_t,
        sync: Bool,
        error makeError: (String) -> GatehouseError
    ) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw makeError(String(cString: strerror(errno))) }
        defer { close(fd) }
        // The process umask may have narrowed or (if odd) not applied the mode: set it exactly.
        fchmod(fd, mode)
        let ok = contents.withUnsafeBytes { buffer -> Bool in
            var offset = 0
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
        guard ok else {
            let reason = String(cString: strerror(errno))
            unlink(path)
            throw makeError(reason)
        }
        if sync, fsync(fd) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(path)
            throw makeError(reason)
        }
    }

    /// Returns the reason on failure.
    static func createIfMissing(_ path: String, mode: mode_t) -> String? {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, mode)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        close(fd)
        return nil
    }

    /// Makes a rename or link in the directory durable. Best effort: some filesystems refuse.
    static func syncDirectory(of path: String) {
        var directory = (path as NSString).deletingLastPathComponent
        if directory.isEmpty { directory = "." }
        let fd = open(directory, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}

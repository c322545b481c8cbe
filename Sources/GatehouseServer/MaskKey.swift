import Foundation
import GatehouseConfig
import Masking

/// The key of the masks' keyed hash. The same key gives the same masked value for the same input,
/// so masked columns still join and group; changing it changes every hashed value.
public enum MaskKey {
    static let minimumBytes = 32

    struct Problem: Error, CustomStringConvertible {
        var description: String
    }

    /// From `policy.mask_key` when set (base64, or at least 32 bytes of text), else from the key
    /// file in the state directory, created with 32 random bytes on first start.
    /// `create: false` for tools that only read: a new key would open nothing.
    public static func load(_ config: GatehouseConfig, create: Bool = true) throws -> [UInt8] {
        if let reference = config.maskKey {
            let secret = try reference.resolve()
            if let decoded = Data(base64Encoded: secret.trimmingCharacters(in: .whitespacesAndNewlines)), decoded.count >= minimumBytes {
                return Array(decoded)
            }
            guard secret.utf8.count >= minimumBytes else {
                throw Problem(description: "policy.mask_key must hold at least \(minimumBytes) bytes (or their base64)")
            }
            return Array(secret.utf8)
        }
        let path = config.maskKeyPath
        if let data = FileManager.default.contents(atPath: path) {
            guard data.count <= 4096,
                  let key = Data(base64Encoded: String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
                  key.count >= minimumBytes else {
                throw Problem(description: "\(path) is malformed: expected one base64 line holding at least \(minimumBytes) bytes")
            }
            return Array(key)
        }
        guard create else { throw Problem(description: "\(path) does not exist: the gateway's mask key is not on this machine") }
        var key = [UInt8](repeating: 0, count: minimumBytes)
        var generator = SystemRandomNumberGenerator()
        for index in key.indices { key[index] = generator.next() }
        let directory = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard FileManager.default.createFile(
            atPath: path, contents: Data((Data(key).base64EncodedString() + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw Problem(description: "\(path) cannot be created")
        }
        return key
    }
}

import Crypto
import Foundation
import GatehouseCore
import GRDB

/// Gateway-issued keys for service accounts. The key is shown once at creation; the store keeps
/// only a salted SHA-256 of its secret half, so a copy of the file grants nothing. Every use reads
/// the store, so a revocation takes effect on the next request, in every gateway process.
public final class APIKeyStore: Sendable {
    public static let prefix = "ghk_"
    public static let issuer = "gatehouse:api-key"

    public struct KeyInfo: Sendable, Equatable, Codable {
        public var id: String
        public var name: String
        public var groups: [String]
        public var createdAt: Date
        public var revokedAt: Date?
    }

    private let pool: DatabasePool

    public init(path: String) throws {
        try FileManager.default.createDirectory(
            atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try pool.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS api_keys (
                        id TEXT PRIMARY KEY,
                        name TEXT NOT NULL,
                        groups TEXT NOT NULL,
                        salt TEXT NOT NULL,
                        hash TEXT NOT NULL,
                        created_ms INTEGER NOT NULL,
                        revoked_ms INTEGER
                    )
                    """)
            }
        } catch {
            throw GatehouseError("api-keys.open", "cannot open the API key store at \(path)")
        }
    }

    /// Creates a key and returns it; this is the only time the secret exists outside the client.
    public func create(name: String, groups: [String], now: Date = Date()) throws -> (info: KeyInfo, key: String) {
        guard !name.isEmpty, name.count <= 128 else { throw GatehouseError("api-keys.name", "a key name must be 1 to 128 characters") }
        let id = Self.randomHex(bytes: 8)
        let secret = Data(Self.randomBytes(32)).base64URLEncoded
        let salt = Self.randomHex(bytes: 16)
        let groupsJSON = String(decoding: try JSONEncoder().encode(groups), as: UTF8.self)
        let createdMillis = Int64(now.timeIntervalSince1970 * 1000)
        try pool.write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM api_keys WHERE name = ? AND revoked_ms IS NULL", arguments: [name]) == true {
                throw GatehouseError("api-keys.duplicate", "an active key named \(name) already exists; revoke it first")
            }
            try db.execute(
                sql: "INSERT INTO api_keys (id, name, groups, salt, hash, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [id, name, groupsJSON, salt, Self.hash(secret: secret, salt: salt), createdMillis])
        }
        let info = KeyInfo(id: id, name: name, groups: groups, createdAt: Date(timeIntervalSince1970: Double(createdMillis) / 1000), revokedAt: nil)
        return (info, "\(Self.prefix)\(id)_\(secret)")
    }

    public func list() throws -> [KeyInfo] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, name, groups, created_ms, revoked_ms FROM api_keys ORDER BY created_ms, id").map(Self.info)
        }
    }

    /// Revokes by id or by the name of an active key. Returns the revoked key.
    public func revoke(_ idOrName: String, now: Date = Date()) throws -> KeyInfo {
        try pool.write { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT id, name, groups, created_ms, revoked_ms FROM api_keys
                WHERE id = ? OR (name = ? AND revoked_ms IS NULL) ORDER BY revoked_ms IS NULL DESC LIMIT 1
                """, arguments: [idOrName, idOrName]) else {
                // Someone may paste the whole key here; never echo it back.
                let shown = idOrName.hasPrefix(Self.prefix) ? "(a key)" : idOrName
                throw GatehouseError("api-keys.not-found", "no key with id or active name \(shown)")
            }
            var info = Self.info(row)
            if info.revokedAt == nil {
                let millis = Int64(now.timeIntervalSince1970 * 1000)
                try db.execute(sql: "UPDATE api_keys SET revoked_ms = ? WHERE id = ?", arguments: [millis, info.id])
                info.revokedAt = Date(timeIntervalSince1970: Double(millis) / 1000)
            }
            return info
        }
    }

    func principal(for key: String) async throws(TokenRejection) -> Principal {
        let body = key.dropFirst(Self.prefix.count)
        let parts = body.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, parts[0].count == 16, parts[0].allSatisfy(\.isHexDigit), parts[1].count == 43 else {
            throw TokenRejection(.malformed, "API key is not in the gateway's format")
        }
        let id = String(parts[0])
        let secret = String(parts[1])
        let stored: (salt: String, hash: String, info: KeyInfo)?
        do {
            stored = try await pool.read { db in
                try Row.fetchOne(db, sql: "SELECT id, name, groups, salt, hash, created_ms, revoked_ms FROM api_keys WHERE id = ?", arguments: [id])
                    .map { (salt: $0["salt"], hash: $0["hash"], info: Self.info($0)) }
            }
        } catch {
            throw TokenRejection(.keysUnavailable, "API key store cannot be read")
        }
        guard let stored else { throw TokenRejection(.unknownAPIKey, "API key \(id) does not exist") }
        guard Self.constantTimeEquals(Self.hash(secret: secret, salt: stored.salt), stored.hash) else {
            throw TokenRejection(.unknownAPIKey, "API key \(id) has a wrong secret")
        }
        let info = stored.info
        if info.revokedAt != nil { throw TokenRejection(.revokedAPIKey, "API key \(id) (\(info.name)) was revoked") }
        return Principal(subject: info.name, groups: info.groups, issuer: Self.issuer, authMethod: .apiKey)
    }

    private static func info(_ row: Row) -> KeyInfo {
        let groupsJSON: String = row["groups"]
        let revoked: Int64? = row["revoked_ms"]
        let created: Int64 = row["created_ms"]
        return KeyInfo(
            id: row["id"],
            name: row["name"],
            groups: (try? JSONDecoder().decode([String].self, from: Data(groupsJSON.utf8))) ?? [],
            createdAt: Date(timeIntervalSince1970: Double(created) / 1000),
            revokedAt: revoked.map { Date(timeIntervalSince1970: Double($0) / 1000) }
        )
    }

    static func hash(secret: String, salt: String) -> String {
        SHA256.hash(data: Data((salt + ":" + secret).utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let left = Array(a.utf8), right = Array(b.utf8)
        guard left.count == right.count else { return false }
        var difference: UInt8 = 0
        for index in left.indices { difference |= left[index] ^ right[index] }
        return difference == 0
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    static func randomHex(bytes: Int) -> String {
        randomBytes(bytes).map { String(format: "%02x", $0) }.joined()
    }
}

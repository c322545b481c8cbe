import Foundation
import GatehouseCore
import GRDB

/// Reviews and grants as they change, in a SQLite file of their own. The gateway is its only
/// writer; the file is what lets a restarted gateway close what the last one left pending, and
/// keep the grants it made.
public final class ReviewStore: Sendable {
    private let queue: DatabaseQueue
    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .millisecondsSince1970
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()
    private static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        return decoder
    }()

    public init(path: String) throws {
        do {
            try FileManager.default.createDirectory(
                atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.busyMode = .timeout(5)
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try queue.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS reviews (
                        id TEXT PRIMARY KEY,
                        state TEXT NOT NULL,
                        created_ms INTEGER NOT NULL,
                        body TEXT NOT NULL
                    );
                    CREATE INDEX IF NOT EXISTS reviews_by_state ON reviews (state, created_ms);
                    CREATE TABLE IF NOT EXISTS grants (
                        review TEXT PRIMARY KEY,
                        body TEXT NOT NULL,
                        expires_ms INTEGER NOT NULL
                    );
                    """)
            }
        } catch {
            throw GatehouseError("reviews.open", "cannot open the review store at \(path)")
        }
    }

    public func save(_ review: Review) throws {
        let body = String(decoding: try Self.encoder.encode(review), as: UTF8.self)
        try queue.write { db in
            try db.execute(
                sql: "INSERT INTO reviews (id, state, created_ms, body) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, body = excluded.body",
                arguments: [review.id, review.state.rawValue, Int64(review.createdAt.timeIntervalSince1970 * 1000), body])
        }
    }

    public func review(_ id: String) throws -> Review? {
        try queue.read { db in
            try String.fetchOne(db, sql: "SELECT body FROM reviews WHERE id = ?", arguments: [id])
        }.map { try Self.decoder.decode(Review.self, from: Data($0.utf8)) }
    }

    /// Newest first.
    public func reviews(state: Review.State? = nil, limit: Int = 200) throws -> [Review] {
        let limit = min(limit, Int(Int32.max))
        return try queue.read { db in
            if let state {
                return try String.fetchAll(db, sql: "SELECT body FROM reviews WHERE state = ? ORDER BY created_ms DESC LIMIT ?", arguments: [state.rawValue, limit])
            }
            return try String.fetchAll(db, sql: "SELECT body FROM reviews ORDER BY created_ms DESC LIMIT ?", arguments: [limit])
        }.map { try Self.decoder.decode(Review.self, from: Data($0.utf8)) }
    }

    public func save(_ grant: AccessGrant) throws {
        let body = String(decoding: try Self.encoder.encode(grant), as: UTF8.self)
        try queue.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO grants (review, body, expires_ms) VALUES (?, ?, ?)",
                arguments: [grant.review, body, Int64(grant.expiresAt.timeIntervalSince1970 * 1000)])
        }
    }

    public func deleteGrant(_ review: String) throws {
        try queue.write { db in try db.execute(sql: "DELETE FROM grants WHERE review = ?", arguments: [review]) }
    }

    /// Forgets closed reviews older than `cutoff` (the audit trail keeps every step of them).
    @discardableResult
    public func pruneClosed(before cutoff: Date) throws -> Int {
        try queue.write { db in
            try db.execute(
                sql: "DELETE FROM reviews WHERE state NOT IN ('pending', 'approved') AND created_ms < ?",
                arguments: [Int64(cutoff.timeIntervalSince1970 * 1000)])
            return db.changesCount
        }
    }

    /// Grants still running at `now`; the expired ones are dropped on the way.
    public func activeGrants(now: Date = Date()) throws -> [AccessGrant] {
        let nowMillis = Int64(now.timeIntervalSince1970 * 1000)
        return try queue.write { db in
            try db.execute(sql: "DELETE FROM grants WHERE expires_ms <= ?", arguments: [nowMillis])
            return try String.fetchAll(db, sql: "SELECT body FROM grants ORDER BY expires_ms")
        }.map { try Self.decoder.decode(AccessGrant.self, from: Data($0.utf8)) }
    }
}

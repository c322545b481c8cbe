import GatehouseCore
import NIOConcurrencyHelpers

/// Maps the BackendKeyData the gateway gave a client to the upstream backend serving it, so a
/// CancelRequest (which arrives on a new, unauthenticated connection) reaches the right server
/// process. The client never learns the upstream's key.
final class CancelRegistry: Sendable {
    struct Upstream: Sendable, Equatable {
        var host: String
        var port: Int
        var processID: Int32
        var secretKey: Int32
        /// The session whose query a cancel would stop, with who ran it, for the trail.
        var session: String
        var principal: Principal?
        var connection: String
    }

    struct Key: Hashable, Sendable {
        var processID: Int32
        var secretKey: Int32
    }

    private let entries = NIOLockedValueBox<[Key: Upstream]>([:])

    /// A fresh random key for a client; never reused while registered.
    func register(_ upstream: Upstream) -> Key {
        entries.withLockedValue { entries in
            var key: Key
            repeat {
                key = Key(processID: Int32.random(in: 1...Int32.max), secretKey: Int32.random(in: .min ... .max))
            } while entries[key] != nil
            entries[key] = upstream
            return key
        }
    }

    func lookup(_ key: Key) -> Upstream? {
        entries.withLockedValue { $0[key] }
    }

    func remove(_ key: Key) {
        _ = entries.withLockedValue { $0.removeValue(forKey: key) }
        release(key)
    }

    /// Sessions whose statement waits for approval: a cancel for them closes the review instead
    /// of reaching a server that is running nothing.
    private let heldReviews = NIOLockedValueBox<[Key: String]>([:])

    func hold(_ key: Key, review: String) {
        heldReviews.withLockedValue { $0[key] = review }
    }

    func release(_ key: Key) {
        _ = heldReviews.withLockedValue { $0.removeValue(forKey: key) }
    }

    func heldReview(_ key: Key) -> String? {
        heldReviews.withLockedValue { $0[key] }
    }
}

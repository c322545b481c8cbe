import Identity
import Logging
import ServiceLifecycle

/// Keeps every issuer's key set fresh in the background, so a rotation at the identity provider
/// is picked up without waiting for a token with an unknown `kid`. A failed refresh keeps the
/// previous keys and retries sooner, backing off up to the normal interval.
struct KeyRefreshService: Service {
    let issuers: [IssuerKeys]
    let interval: Duration
    let logger: Logger

    func run() async throws {
        guard !issuers.isEmpty else {
            // Nothing to refresh (API keys only); returning would end the whole service group.
            try? await gracefulShutdown()
            return
        }
        await withDiscardingTaskGroup { group in
            for issuer in issuers {
                group.addTask { await keepFresh(issuer) }
            }
        }
    }

    private func keepFresh(_ issuer: IssuerKeys) async {
        var retryDelay = Duration.milliseconds(250)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let delay: Duration
            do {
                try await issuer.refresh()
                retryDelay = .milliseconds(250)
                delay = interval
            } catch {
                delay = retryDelay
                retryDelay = min(retryDelay * 2, interval)
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            } catch {
                return
            }
        }
    }
}

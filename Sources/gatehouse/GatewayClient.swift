import AsyncHTTPClient
import NIOSSL

/// An HTTP client for calling one of this gateway's own listeners from the CLI: the system's trust
/// roots, plus the listener's configured certificate (a self-signed certificate is then trusted as
/// the operator configured it) and any CA file given with --cacert.
enum GatewayClient {
    static func with<T>(trusting certificates: [String], _ body: (HTTPClient) async throws -> T) async throws -> T {
        guard !certificates.isEmpty else { return try await body(HTTPClient.shared) }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = certificates.map { .file($0) }
        tls.minimumTLSVersion = .tlsv12
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls, redirectConfiguration: .disallow))
        do {
            let value = try await body(client)
            try await client.shutdown()
            return value
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}

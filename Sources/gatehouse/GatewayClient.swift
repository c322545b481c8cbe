import AsyncHTTPClient
import NIOSSL

/// An HTTP client for calling one of this gateway's own listeners from the CLI: the system's trust
/// roots, plus the listener's configured certificate when the URL comes from the configuration (a
/// self-signed certificate is then trusted as the operator configured it, and nothing else is).
enum GatewayClient {
    static func with<T>(trusting certificate: String?, _ body: (HTTPClient) async throws -> T) async throws -> T {
        guard let certificate else { return try await body(HTTPClient.shared) }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.file(certificate)]
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

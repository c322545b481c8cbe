import AsyncHTTPClient
import Foundation
import GatehouseCore
import NIOCore
import NIOFoundationCompat

/// Where discovery documents and key sets come from. The production fetcher speaks HTTP; unit
/// tests of the token checks hand in key sets directly.
public protocol KeySetFetching: Sendable {
    func fetch(_ url: String) async throws -> Data
}

/// Fetches over HTTP(S) with a deadline and a size bound: an identity provider's answer is input
/// like any other and must not be able to stall or exhaust the gateway.
public struct HTTPKeySetFetcher: KeySetFetching {
    public static let maximumBytes = 1024 * 1024
    let client: HTTPClient
    let timeout: TimeAmount

    public init(client: HTTPClient, timeout: TimeAmount = .seconds(5)) {
        self.client = client
        self.timeout = timeout
    }

    public func fetch(_ url: String) async throws -> Data {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        let response = try await client.execute(request, timeout: timeout)
        guard response.status == .ok else {
            throw GatehouseError("identity.fetch-status", "\(url) answered HTTP \(response.status.code)")
        }
        let body = try await response.body.collect(upTo: Self.maximumBytes)
        return Data(buffer: body)
    }
}

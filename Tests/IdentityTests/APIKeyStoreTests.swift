import Foundation
import GatehouseCore
import Testing

@testable import Identity

@Suite("Service account keys")
struct APIKeyStoreTests {
    func makeStore() throws -> (APIKeyStore, String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gatehouse-keys-\(UUID().uuidString).sqlite").path
        return (try APIKeyStore(path: path), path)
    }

    @Test func aCreatedKeyAuthenticatesAsItsServiceAccount() async throws {
        let (store, _) = try makeStore()
        let (_, key) = try store.create(name: "ci-bot", groups: ["ci", "readers"])
        let verifier = TokenVerifier(issuers: [], apiKeys: store)
        let principal = try await verifier.verify(key, client: ClientInfo(address: "127.0.0.1:1")).get()
        #expect(principal.subject == "ci-bot")
        #expect(principal.groups == ["ci", "readers"])
        #expect(principal.authMethod == .apiKey)
        #expect(principal.client.address == "127.0.0.1:1")
    }

    @Test func onlyASaltedHashIsStored() throws {
        let (store, path) = try makeStore()
        let (info, key) = try store.create(name: "ci-bot", groups: [])
        // The secret is everything after `ghk_<id>_` (it may itself contain `_`).
        let secret = String(key.dropFirst("ghk_\(info.id)_".count))
        #expect(secret.count == 43)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path)) + ((try? Data(contentsOf: URL(fileURLWithPath: path + "-wal"))) ?? Data())
        #expect(bytes.range(of: Data(secret.utf8)) == nil)
    }

    @Test func aRevokedKeyStopsWorkingAtOnce() async throws {
        let (store, path) = try makeStore()
        let (info, key) = try store.create(name: "ci-bot", groups: [])
        let verifier = TokenVerifier(issuers: [], apiKeys: store)
        _ = try await verifier.verify(key, client: ClientInfo()).get()
        // Revoked through a second handle, as the CLI does while the gateway runs.
        _ = try APIKeyStore(path: path).revoke(info.id)
        #expect(rejection(await verifier.verify(key, client: ClientInfo())) == .revokedAPIKey)
        #expect(try store.list().first?.revokedAt != nil)
    }

    @Test func aWrongSecretOrUnknownKeyIsRejected() async throws {
        let (store, _) = try makeStore()
        let (info, _) = try store.create(name: "ci-bot", groups: [])
        let verifier = TokenVerifier(issuers: [], apiKeys: store)
        let wrongSecret = "ghk_\(info.id)_" + String(repeating: "A", count: 43)
        #expect(rejection(await verifier.verify(wrongSecret, client: ClientInfo())) == .unknownAPIKey)
        let unknown = "ghk_0123456789abcdef_" + String(repeating: "A", count: 43)
        #expect(rejection(await verifier.verify(unknown, client: ClientInfo())) == .unknownAPIKey)
        #expect(rejection(await verifier.verify("ghk_short", client: ClientInfo())) == .malformed)
    }

    @Test func anActiveNameCannotBeReusedUntilRevoked() throws {
        let (store, _) = try makeStore()
        _ = try store.create(name: "ci-bot", groups: [])
        #expect(throws: GatehouseError.self) { try store.create(name: "ci-bot", groups: []) }
        _ = try store.revoke("ci-bot")
        _ = try store.create(name: "ci-bot", groups: [])
        #expect(try store.list().count == 2)
    }
}

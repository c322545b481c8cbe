import Audit
import Foundation
import GatehouseCore
import Testing

@Suite("Audit signing key")
struct AuditSignerTests {
    private func temporaryDirectory() throws -> String {
        let directory = NSTemporaryDirectory() + "gatehouse-key-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func createsAPrivateKeyOnceAndReloadsIt() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/keys/audit.key"

        let created = try AuditSigner.loadOrCreate(path: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect(attributes[.posixPermissions] as? Int == 0o600)
        let directoryMode = try FileManager.default.attributesOfItem(atPath: directory + "/keys")[.posixPermissions] as? Int
        #expect(directoryMode == 0o700)

        let loaded = try AuditSigner.loadOrCreate(path: path)
        #expect(loaded.publicKey == created.publicKey)
        #expect(try AuditSigner.load(path: path).publicKey == created.publicKey)
        let missing = #expect(throws: GatehouseError.self) { _ = try AuditSigner.load(path: directory + "/none.key") }
        #expect(missing?.code == "audit.signing_key")
        #expect(!FileManager.default.fileExists(atPath: directory + "/none.key"))
        #expect(created.publicKey.count == 64)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory + "/keys")
        #expect(leftovers == ["audit.key"])
    }

    @Test func malformedKeyFileIsRefusedWithoutEchoingIt() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/audit.key"
        try Data("s3cr3t-not-a-key\n".utf8).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: GatehouseError.self) { _ = try AuditSigner.loadOrCreate(path: path) }
        #expect(error?.code == "audit.signing_key")
        #expect(error?.message.contains("s3cr3t") == false)
    }

    @Test func signaturesCoverEveryField() throws {
        let signer = AuditSigner.generate()
        let checkpoint = try signer.sign(seq: 7, hash: String(repeating: "a", count: 64), time: Date(timeIntervalSince1970: 1.5), node: "gw")
        #expect(checkpoint.timeMillis == 1500)
        #expect(checkpoint.signedMessage == "gatehouse-checkpoint-v1\n7\n\(String(repeating: "a", count: 64))\n1500\ngw")
        #expect(signer.verifier.isValid(checkpoint))

        var changed = checkpoint
        changed.seq = 8
        #expect(!signer.verifier.isValid(changed))
        changed = checkpoint
        changed.hash = String(repeating: "b", count: 64)
        #expect(!signer.verifier.isValid(changed))
        changed = checkpoint
        changed.timeMillis += 1
        #expect(!signer.verifier.isValid(changed))
        changed = checkpoint
        changed.node = "other"
        #expect(!signer.verifier.isValid(changed))
        changed = checkpoint
        changed.signature = "zz"
        #expect(!signer.verifier.isValid(changed))

        #expect(!AuditSigner.generate().verifier.isValid(checkpoint))
    }

    @Test func verifierFromHexPublicKey() throws {
        let signer = AuditSigner.generate()
        let verifier = try AuditSignatureVerifier(publicKeyHex: signer.publicKey)
        #expect(verifier == signer.verifier)
        #expect(verifier.publicKey == signer.publicKey)
        #expect(throws: GatehouseError.self) { _ = try AuditSignatureVerifier(publicKeyHex: "abcd") }
        #expect(throws: GatehouseError.self) { _ = try AuditSignatureVerifier(publicKeyHex: String(repeating: "g", count: 64)) }
    }

    @Test func rawPrivateKeyRoundTrip() throws {
        let raw = [UInt8](repeating: 7, count: 32)
        let first = try AuditSigner(rawPrivateKey: raw)
        let second = try AuditSigner(rawPrivateKey: raw)
        #expect(first.publicKey == second.publicKey)
        #expect(throws: GatehouseError.self) { _ = try AuditSigner(rawPrivateKey: [1, 2, 3]) }
    }
}

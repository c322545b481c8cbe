import Crypto
import Foundation

/// Seals values the trail may keep for auditors but must not show: unmasked results a mask rule
/// lets the trail keep (`keep_unmasked_for_audit`). AES-256-GCM under a key derived from the
/// gateway's mask key, so only someone holding that key (`gatehouse audit unseal`) reads them,
/// while the event's hash still covers the sealed bytes.
public struct AuditSeal: Sendable {
    private let key: SymmetricKey
    static let prefix = "sealed:v1:"

    public init(maskKey: some ContiguousBytes) {
        key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: maskKey), info: Data("gatehouse audit seal v1".utf8), outputByteCount: 32)
    }

    public func seal(_ text: String) -> String {
        // A fresh random nonce per seal: sealing cannot fail with a valid key.
        let box = try! AES.GCM.seal(Data(text.utf8), using: key)
        return Self.prefix + (box.combined ?? Data()).base64EncodedString()
    }

    public struct OpenError: Error, CustomStringConvertible {
        public var description: String
    }

    public func open(_ sealed: String) throws -> String {
        guard sealed.hasPrefix(Self.prefix), let data = Data(base64Encoded: String(sealed.dropFirst(Self.prefix.count))) else {
            throw OpenError(description: "not a sealed value")
        }
        do {
            let box = try AES.GCM.SealedBox(combined: data)
            return String(decoding: try AES.GCM.open(box, using: key), as: UTF8.self)
        } catch {
            throw OpenError(description: "the value cannot be opened with this gateway's mask key")
        }
    }
}

import Crypto
import Foundation
import GatehouseCore

/// The fingerprint an approval is bound to: the exact operation (every byte of its text, every
/// parameter, null told apart from empty), who asks (issuer, subject, the agents acting) and on
/// which connection. Each field is length-prefixed, so no two different operations share an
/// encoding.
public enum ReviewDigest {
    public static func of(
        protocolName: String, connection: String, principal: Principal, operation: String, parameters: [String?]? = nil,
        body: [UInt8]? = nil
    ) -> String {
        var hasher = SHA256()
        func field(_ bytes: some Collection<UInt8>) {
            var length = UInt64(bytes.count).bigEndian
            withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
            hasher.update(data: Array(bytes))
        }
        func field(_ text: String?) {
            guard let text else {
                hasher.update(data: [0])
                return
            }
            hasher.update(data: [1])
            field(Array(text.utf8))
        }
        field("gatehouse-review-v1")
        field(protocolName)
        field(connection)
        field(principal.issuer)
        field(principal.subject)
        field(principal.actors.map(\.subject).joined(separator: "\u{0}"))
        field(operation)
        if let parameters {
            field(String(parameters.count))
            for parameter in parameters { field(parameter) }
        } else {
            field(nil as String?)
        }
        if let body {
            hasher.update(data: [1])
            field(body)
        } else {
            hasher.update(data: [0])
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

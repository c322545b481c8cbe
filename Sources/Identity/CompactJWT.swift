import Foundation

/// The parts of a compact JWS, split and decoded with strict bounds before any cryptography runs.
/// jwt-kit verifies the signature; this decides whether a token is even worth handing to it.
struct CompactJWT {
    struct Header: Decodable {
        var alg: String
        var kid: String?
        var crit: [String]?
    }

    /// Tokens larger than this are refused unread.
    static let maximumBytes = 16 * 1024

    let header: Header
    let claims: [String: JSONValue]
    /// `base64url(header) + "." + base64url(payload)`, the bytes the signature covers.
    let signingInput: [UInt8]
    let signature: Data

    init(_ token: String) throws(TokenRejection) {
        guard token.utf8.count <= Self.maximumBytes else {
            throw TokenRejection(.oversized, "token is \(token.utf8.count) bytes, over the \(Self.maximumBytes) byte limit")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw TokenRejection(.malformed, "token is not a compact JWS (expected 3 parts, found \(parts.count))")
        }
        guard let headerBytes = Self.base64URLDecode(parts[0]), let payloadBytes = Self.base64URLDecode(parts[1]),
              let signature = Self.base64URLDecode(parts[2]) else {
            throw TokenRejection(.malformed, "token part is not base64url")
        }
        guard let header = try? JSONDecoder().decode(Header.self, from: headerBytes) else {
            throw TokenRejection(.malformed, "token header is not a JSON object with alg")
        }
        guard let claims = try? JSONDecoder().decode([String: JSONValue].self, from: payloadBytes) else {
            throw TokenRejection(.malformed, "token payload is not a JSON object")
        }
        // RFC 7515 §4.1.11: a recipient must reject critical extensions it does not understand.
        if let crit = header.crit, !crit.isEmpty {
            throw TokenRejection(.malformed, "token header has critical extensions")
        }
        self.header = header
        self.claims = claims
        self.signingInput = Array(token.utf8[..<token.utf8.index(token.utf8.startIndex, offsetBy: parts[0].utf8.count + 1 + parts[1].utf8.count)])
        self.signature = signature
    }

    static func base64URLDecode(_ text: Substring) -> Data? {
        guard text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        let remainder = base64.count % 4
        if remainder == 1 { return nil }
        if remainder > 0 { base64 += String(repeating: "=", count: 4 - remainder) }
        return Data(base64Encoded: base64)
    }
}

extension Data {
    /// RFC 7515 base64url without padding.
    var base64URLEncoded: String {
        base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

import Foundation
import GatehouseCore

/// A request path made safe to decide on and to forward.
///
/// Policy matches the decoded path and the upstream receives the same path re-encoded, so the two
/// cannot disagree about what was asked for. What upstream servers are known to read their own way
/// is refused rather than passed on: encoded slashes, backslashes, control characters, dot
/// segments, and `;` (path parameters: Tomcat, Jetty and Spring read `/a/..;/b` as `/b`). Every
/// character but the unreserved ones, `:` and `@` is sent percent-encoded.
public struct CanonicalPath: Sendable, Equatable {
    /// Decoded, with `/` between segments; what rules match. Always starts with `/`.
    public var decoded: String
    /// The same segments percent-encoded again; what the upstream receives.
    public var encoded: String

    public static let maximumBytes = 8 * 1024

    public enum Problem: Error, Equatable, CustomStringConvertible {
        case tooLong
        case badEncoding
        case forbiddenCharacter
        case pathParameter
        case dotSegment

        public var description: String {
            switch self {
            case .tooLong: "the path is too long"
            case .badEncoding: "the path has an invalid percent-encoding"
            case .forbiddenCharacter: "the path contains an encoded '/', a '\\' or a control character"
            case .pathParameter: "the path contains ';' (path parameters are not forwarded)"
            case .dotSegment: "the path contains a '.' or '..' segment"
            }
        }
    }

    /// `raw` is the path as the client sent it (no query), starting with `/` or empty.
    public init(raw: Substring) throws(Problem) {
        guard raw.utf8.count <= Self.maximumBytes else { throw .tooLong }
        var decodedSegments: [String] = []
        let parts = raw.split(separator: "/", omittingEmptySubsequences: true)
        for part in parts {
            guard let segment = Self.percentDecoded(part) else { throw .badEncoding }
            if segment.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "\\") || $0 < 0x20 || $0 == 0x7F }) {
                throw .forbiddenCharacter
            }
            if segment.utf8.contains(UInt8(ascii: ";")) { throw .pathParameter }
            if segment == "." || segment == ".." { throw .dotSegment }
            decodedSegments.append(segment)
        }
        let trailingSlash = raw.count > 1 && raw.hasSuffix("/") && !decodedSegments.isEmpty
        decoded = "/" + decodedSegments.joined(separator: "/") + (trailingSlash ? "/" : "")
        encoded = "/" + decodedSegments.map(Self.encode).joined(separator: "/") + (trailingSlash ? "/" : "")
    }

    /// Unreserved characters, ':' and '@' stay; sub-delims are encoded too, so no upstream can give
    /// one of them a meaning the policy did not see.
    private static let segmentBytes: [Bool] = {
        var allowed = [Bool](repeating: false, count: 256)
        for byte in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:@".utf8 {
            allowed[Int(byte)] = true
        }
        return allowed
    }()

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    static func encode(_ segment: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(segment.utf8.count)
        for byte in segment.utf8 {
            if segmentBytes[Int(byte)] {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `%XX` decoded; nil for a bad escape or bytes that are not UTF-8.
    static func percentDecoded(_ part: Substring) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(part.utf8.count)
        var bytes = part.utf8.makeIterator()
        while let byte = bytes.next() {
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard let high = bytes.next().flatMap(hexValue), let low = bytes.next().flatMap(hexValue) else { return nil }
            out.append(high << 4 | low)
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// What the gateway does to headers in each direction; pure, so every rule is unit-tested.
public enum HeaderShaping {
    /// RFC 9110 section 7.6.1 connection-specific fields, plus the legacy ones proxies still see.
    public static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade",
    ]

    /// Credentials and cookies: recorded as `[redacted]`, never as values.
    public static let alwaysRedacted: Set<String> = [
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token",
    ]

    public typealias Fields = [(name: String, value: String)]

    /// The client's headers as the upstream should see them: no hop-by-hop headers (including those
    /// the client's `Connection` header names), none of the client's credentials or Gatehouse's own
    /// headers, no client-supplied forwarding headers (the gateway writes its own), no length
    /// framing (the HTTP client sets it for the body it sends), and the injected credential.
    public static func upstream(
        client: Fields,
        credentialHeader: (name: String, value: String)?,
        clientAddress: String?,
        clientHost: String?,
        clientProtocol: String
    ) -> Fields {
        let named = connectionNamed(client)
        let credentialName = credentialHeader?.name.lowercased()
        var fields: Fields = []
        for field in client {
            let name = field.name.lowercased()
            if hopByHop.contains(name) || named.contains(name) { continue }
            if name == "authorization" || name == "host" || name == "content-length" || name == "expect" { continue }
            if name.hasPrefix("gatehouse-") || name.hasPrefix("x-forwarded-") || name == "forwarded" { continue }
            if name == credentialName { continue }
            fields.append(field)
        }
        if let clientAddress { fields.append(("X-Forwarded-For", clientAddress)) }
        if let clientHost { fields.append(("X-Forwarded-Host", clientHost)) }
        fields.append(("X-Forwarded-Proto", clientProtocol))
        if let credentialHeader { fields.append(credentialHeader) }
        return fields
    }

    /// The upstream's response headers as the client should see them.
    public static func downstream(upstream: Fields) -> Fields {
        let named = connectionNamed(upstream)
        return upstream.filter { field in
            let name = field.name.lowercased()
            return !hopByHop.contains(name) && !named.contains(name) && name != "content-length"
        }
    }

    /// Headers for the audit trail, credentials replaced by `[redacted]`.
    public static func recorded(_ fields: Fields, alsoRedacting extra: Set<String> = []) -> [(String, String)] {
        fields.map { field in
            let name = field.name.lowercased()
            let secret = alwaysRedacted.contains(name) || extra.contains(name)
            return (name, secret ? "[redacted]" : field.value.truncated(toUTF8Bytes: 2048).text)
        }
    }

    private static func connectionNamed(_ fields: Fields) -> Set<String> {
        var names: Set<String> = []
        for field in fields where field.name.utf8.count == 10 && field.name.lowercased() == "connection" {
            for token in field.value.split(separator: ",") {
                let trimmed = token.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed()
                names.insert(String(trimmed).lowercased())
            }
        }
        return names
    }
}

/// Query strings, kept as the client wrote them except for the injected credential's parameter.
public enum QueryShaping {
    /// Parameters whose values are credentials often enough that the trail records them as
    /// `[redacted]` (compared case-insensitively).
    public static let sensitiveNames: Set<String> = [
        "access_token", "api_key", "apikey", "api-key", "auth", "client_secret", "code", "id_token", "key", "password",
        "refresh_token", "secret", "sig", "signature", "token", "x-amz-signature", "x-amz-credential", "x-goog-signature",
    ]

    /// The query for the audit trail: values of `names` replaced, everything else as sent.
    public static func redacted(_ query: String, names: Set<String>) -> String {
        query.split(separator: "&", omittingEmptySubsequences: false).map { part in
            let pieces = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(pieces[0])
            let name = (key.removingPercentEncoding ?? key).lowercased()
            guard pieces.count == 2, names.contains(name) else { return String(part) }
            return key + "=[redacted]"
        }.joined(separator: "&")
    }

    /// Removes any parameter named `name` the client sent (it cannot choose the credential) and
    /// appends the injected one.
    public static func inject(into query: String?, name: String, value: String) -> String {
        var parts = (query ?? "").split(separator: "&", omittingEmptySubsequences: true).filter { part in
            let key = part.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
            return (key.removingPercentEncoding ?? key).lowercased() != name.lowercased()
        }.map(String.init)
        parts.append(encode(name) + "=" + encode(value))
        return parts.joined(separator: "&")
    }

    private static let valueCharacters: CharacterSet = {
        CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
    }()

    static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: valueCharacters) ?? text
    }
}

/// Credentials with a recognisable shape. Only prefixes that issuers reserve for secrets are
/// matched; generic "high-entropy string" guessing would mask ids and hashes everywhere.
///
/// - AWS access key ids: `AKIA` / `ASIA` and 16 uppercase letters or digits.
/// - GitHub tokens: `ghp_` `gho_` `ghu_` `ghs_` `ghr_` and 36–251 letters or digits;
///   fine-grained `github_pat_` and 22–244 letters, digits or `_`.
/// - Slack tokens: `xoxb-` `xoxa-` `xoxp-` `xoxr-` `xoxs-` `xoxo-` and 10–250 letters, digits or `-`.
/// - Google API keys: `AIza` and exactly 35 of `A–Z a–z 0–9 _ -`.
/// - Stripe secret and restricted live keys: `sk_live_` / `rk_live_` and 16–247 letters or digits.
/// - JWTs (JWS and JWE compact form): a base64url header starting `eyJ` (`{"`) whose last
///   decoded byte is `}`, then 2 (JWS) or 4 (JWE) more dot-separated base64url segments; the
///   signature may be empty (unsecured JWTs).
/// - PEM private keys: `-----BEGIN <label>-----` where the label contains `PRIVATE KEY`
///   (`RSA PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `OPENSSH PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`…)
///   through the matching `-----END <label>-----`, or to the end of the value when that is missing
///   (a truncated key is still a key).
enum SecretScanner {
    /// `i` is the index of a letter that starts a token.
    static func matchToken(_ v: ByteView, at i: Int) -> Int? {
        switch v[i] {
        case UInt8(ascii: "A"):
            if v.hasPrefix("AKIA", at: i) || v.hasPrefix("ASIA", at: i) {
                return exact(v, from: i + 4, count: 16, { ASCII.isUpper($0) || ASCII.isDigit($0) }, boundary: ASCII.isAlnum)
            }
            if v.hasPrefix("AIza", at: i) {
                return exact(v, from: i + 4, count: 35, ASCII.isBase64URL, boundary: ASCII.isBase64URL)
            }
        case UInt8(ascii: "g"):
            if v.hasPrefix("github_pat_", at: i) {
                return between(v, from: i + 11, 22...244, ASCII.isWord)
            }
            if v.hasPrefix("gh", at: i), v[i + 3] == ASCII.underscore {
                switch v[i + 2] {
                case UInt8(ascii: "p"), UInt8(ascii: "o"), UInt8(ascii: "u"), UInt8(ascii: "s"), UInt8(ascii: "r"):
                    return between(v, from: i + 4, 36...251, ASCII.isAlnum)
                default: break
                }
            }
        case UInt8(ascii: "x"):
            if v.hasPrefix("xox", at: i), v[i + 4] == ASCII.dash {
                switch v[i + 3] {
                case UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "o"), UInt8(ascii: "p"),
                     UInt8(ascii: "r"), UInt8(ascii: "s"):
                    return between(v, from: i + 5, 10...250, ASCII.isBase64URL)
                default: break
                }
            }
        case UInt8(ascii: "s"), UInt8(ascii: "r"):
            if v.hasPrefix("k_live_", at: i + 1) {
                return between(v, from: i + 8, 16...247, ASCII.isAlnum)
            }
        case UInt8(ascii: "e"):
            return jwt(v, at: i)
        default:
            break
        }
        return nil
    }

    /// Exactly `count` bytes accepted by `body`, not followed by a `boundary` byte.
    private static func exact(
        _ v: ByteView, from j: Int, count: Int, _ body: (UInt8) -> Bool, boundary: (UInt8) -> Bool
    ) -> Int? {
        for k in 0..<count where !body(v[j + k]) { return nil }
        let end = j + count
        return boundary(v[end]) || v[end] == ASCII.underscore ? nil : end
    }

    /// A run of `body` bytes whose length is within `lengths`, not followed by a word character.
    private static func between(_ v: ByteView, from j: Int, _ lengths: ClosedRange<Int>, _ body: (UInt8) -> Bool) -> Int? {
        var end = j
        while body(v[end]) {
            end += 1
            if end - j > lengths.upperBound { return nil }
        }
        guard end - j >= lengths.lowerBound, !ASCII.isWord(v[end]) else { return nil }
        return end
    }

    private static func jwt(_ v: ByteView, at i: Int) -> Int? {
        guard v.hasPrefix("eyJ", at: i), v[i - 1] != ASCII.dash else { return nil }
        // Ends of the first five dot-separated segments (JWS has three, JWE five).
        var ends = (0, 0, 0, 0, 0)
        var segments = 0
        var j = i
        while true {
            while ASCII.isBase64URL(v[j]) { j += 1 }
            segments += 1
            switch segments {
            case 1: ends.0 = j
            case 2: ends.1 = j
            case 3: ends.2 = j
            case 4: ends.3 = j
            default: ends.4 = j
            }
            // Segments may be empty (an unsecured JWS's signature, a direct-key JWE's key), but
            // a dot with nothing after it past the third segment belongs to the surrounding text.
            guard segments < 5, v[j] == ASCII.dot, segments < 3 || ASCII.isBase64URL(v[j + 1]) else { break }
            j += 1
        }
        let headerLength = ends.0 - i
        guard segments >= 3, headerLength >= 10, headerEndsWithBrace(v, headerStart: i, length: headerLength)
        else { return nil }
        if segments == 5 { return ends.4 }
        // A JWS needs a payload (a JSON object: at least `{}`, three base64url characters).
        guard ends.1 - ends.0 - 1 >= 3 else { return nil }
        return ends.2
    }

    /// Decodes only the last base64url quantum of the header: a JOSE header is a JSON object, so its
    /// last byte is `}`. Cheap, and it turns away `eyJ`-prefixed words and identifiers.
    private static func headerEndsWithBrace(_ v: ByteView, headerStart: Int, length: Int) -> Bool {
        let tail = length % 4 == 0 ? 4 : length % 4
        guard tail >= 2 else { return false }
        var bits: UInt32 = 0
        for k in (headerStart + length - tail)..<(headerStart + length) {
            guard let value = base64URLValue(v[k]) else { return false }
            bits = bits << 6 | UInt32(value)
        }
        // `tail` characters carry 6·tail bits, of which the whole bytes are the high ones.
        let byteCount = tail * 6 / 8
        let lastByte = UInt8(truncatingIfNeeded: bits >> UInt32(tail * 6 - byteCount * 8))
        return lastByte == UInt8(ascii: "}")
    }

    private static func base64URLValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): b - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): b - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0") + 52
        case ASCII.dash: 62
        case ASCII.underscore: 63
        default: nil
        }
    }

    static let maxPEMLabel = 64

    /// `i` is the index of a `-` not preceded by another.
    static func matchPEM(_ v: ByteView, at i: Int) -> Int? {
        guard v.hasPrefix("-----BEGIN ", at: i) else { return nil }
        let labelStart = i + 11
        var j = labelStart
        while ASCII.isUpper(v[j]) || ASCII.isDigit(v[j]) || v[j] == ASCII.space {
            j += 1
            if j - labelStart > maxPEMLabel { return nil }
        }
        let label = labelStart..<j
        guard v.hasPrefix("-----", at: j), contains(v, label, "PRIVATE KEY") else { return nil }
        var k = j + 5
        // Find the END line for this label; anything else (another block's END) is content.
        while k < v.count {
            if v[k] == ASCII.dash, v.hasPrefix("-----END ", at: k) {
                let endLabel = k + 9
                if endLabel + label.count + 5 <= v.count, equal(v, label, endLabel),
                   v.hasPrefix("-----", at: endLabel + label.count) {
                    return endLabel + label.count + 5
                }
                k += 9
                continue
            }
            k += 1
        }
        return v.count
    }

    private static func contains(_ v: ByteView, _ range: Range<Int>, _ needle: StaticString) -> Bool {
        let n = needle.utf8CodeUnitCount
        guard range.count >= n else { return false }
        for s in range.lowerBound...(range.upperBound - n) where v.hasPrefix(needle, at: s) { return true }
        return false
    }

    private static func equal(_ v: ByteView, _ range: Range<Int>, _ other: Int) -> Bool {
        for (offset, i) in range.enumerated() where v[i] != v[other + offset] { return false }
        return true
    }
}

/// IP addresses.
///
/// - IPv4: four decimal octets 0–255 without leading zeros (`010` is octal to some parsers and a
///   zero-padded id to everyone else), not part of a longer dotted number (`1.2.3.4.5`, OIDs).
///   A four-part version string such as `1.2.3.4` is indistinguishable and is matched.
/// - IPv6: eight groups of 1–4 hex digits, or fewer with one `::`, optionally ending in an
///   embedded IPv4 (`::ffff:192.0.2.1`); no zone (`%eth0`) or prefix length, which stay outside
///   the match. `::` alone is not an address worth masking. To keep code (`a::b`, `x[1::2]`)
///   and words out, an address needs a decimal digit, and a compressed one that does not start
///   with `::` needs a group of 3–4 digits (`fe80::1`, `2001:db8::1`).
enum IPScanner {
    /// `i` is the index of a digit that starts a number.
    static func matchIPv4(_ v: ByteView, at i: Int) -> Int? {
        guard let end = dottedQuad(v, at: i), v.endsNumber(end) else { return nil }
        return end
    }

    /// Four octets starting at `i`; the end, not yet checked for what follows.
    static func dottedQuad(_ v: ByteView, at i: Int) -> Int? {
        var j = i
        for octet in 0..<4 {
            if octet > 0 {
                guard v[j] == ASCII.dot else { return nil }
                j += 1
            }
            let start = j
            var value = 0
            while ASCII.isDigit(v[j]), j - start < 4 {
                value = value * 10 + Int(v[j] &- 0x30)
                j += 1
            }
            let length = j - start
            guard length >= 1, length <= 3, value <= 255, length == 1 || v[start] != UInt8(ascii: "0") else { return nil }
        }
        return j
    }

    /// `i` is the index of a hex digit or `:` that starts a token.
    static func matchIPv6(_ v: ByteView, at i: Int) -> Int? {
        guard v[i - 1] != ASCII.colon, v[i - 1] != ASCII.dot else { return nil }
        var j = i
        var groups = 0
        var compressed = false
        let leadingCompression = v[i] == ASCII.colon
        var hasDecimalDigit = false
        var hasLongGroup = false
        if leadingCompression {
            guard v[i + 1] == ASCII.colon, ASCII.isHex(v[i + 2]) else { return nil }
            compressed = true
            j += 2
        }
        var end = j
        while true {
            let groupStart = j
            while ASCII.isHex(v[j]), j - groupStart < 5 { j += 1 }
            let length = j - groupStart
            if v[j] == ASCII.dot {
                // Only the last 32 bits may be written as a dotted quad.
                guard let quadEnd = dottedQuad(v, at: groupStart), groups + 2 <= (compressed ? 7 : 8) else { return nil }
                groups += 2
                hasDecimalDigit = true
                end = quadEnd
                break
            }
            guard length >= 1, length <= 4 else { return nil }
            groups += 1
            if groups > 8 { return nil }
            if length >= 3 { hasLongGroup = true }
            if !hasDecimalDigit {
                for k in groupStart..<j where ASCII.isDigit(v[k]) { hasDecimalDigit = true }
            }
            end = j
            guard v[j] == ASCII.colon else { break }
            if v[j + 1] == ASCII.colon {
                guard !compressed else { return nil }
                compressed = true
                j += 2
                end = j
                guard ASCII.isHex(v[j]) else { break }
            } else if ASCII.isHex(v[j + 1]) {
                j += 1
            } else {
                break  // a colon of the surrounding text (`… fe80::1: timeout`)
            }
        }
        guard compressed ? groups <= 7 : groups == 8, hasDecimalDigit,
              !compressed || leadingCompression || hasLongGroup,
              v.endsToken(end), v[end] != ASCII.colon || !ASCII.isHex(v[end + 1])
        else { return nil }
        // A dotted continuation means something else (`::ffff:1.2.3.4.5`).
        if v[end] == ASCII.dot, ASCII.isDigit(v[end + 1]) { return nil }
        return end
    }
}

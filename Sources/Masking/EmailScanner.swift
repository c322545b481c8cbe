/// Email addresses, found from their `@` outwards: the local part backwards, the domain forwards.
/// Each `@` costs at most the two length limits, and neither walk crosses another `@`.
enum EmailScanner {
    static let maxLocal = 64      // RFC 5321 §4.5.3.1.1
    static let maxDomain = 253    // RFC 1035 (presentation form without the root dot)
    static let maxLabel = 63

    /// Unquoted local-part characters accepted. A practical subset of RFC 5322 `atext`: `=`, `&`,
    /// `?`, `/`, `!`, `#`, `$` and the like are left out so that `email=ann@x.io` in a query string
    /// or `path/ann@x.io` yields `ann@x.io`, not a longer token that includes its label.
    @inline(__always) static func isLocalByte(_ b: UInt8) -> Bool {
        ASCII.isAlnum(b) || b == ASCII.dot || b == ASCII.underscore || b == ASCII.plus || b == ASCII.dash
            || b == UInt8(ascii: "%") || b == UInt8(ascii: "'")
    }

    /// `at` is the index of an `@`. Returns the address around it.
    static func match(_ v: ByteView, at: Int) -> Range<Int>? {
        guard let start = localStart(v, at: at), let end = domainEnd(v, at: at) else { return nil }
        return start..<end
    }

    private static func localStart(_ v: ByteView, at: Int) -> Int? {
        var s = at
        while s > 0 {
            let b = v[s - 1]
            if b < 0x80 {
                guard isLocalByte(b) else { break }
                s -= 1
            } else {
                guard let (scalar, start) = v.scalar(endingAt: s), ByteView.isWordScalar(scalar) else { break }
                s = start
            }
            // Longer than a mailbox can be: some other token that happens to precede an `@`.
            if at - s > maxLocal { return nil }
        }
        // A literal escape (`\n` in a log line or JSON text) is not part of the name.
        if v[s - 1] == ASCII.backslash, v[s] == UInt8(ascii: "n") || v[s] == UInt8(ascii: "t") || v[s] == UInt8(ascii: "r") {
            s += 1
        }
        // Quotes, dots, plus or minus signs before the name are punctuation of the surrounding text.
        while s < at, v[s] < 0x80, !ASCII.isWord(v[s]) { s += 1 }
        guard s < at, v[at - 1] != ASCII.dot else { return nil }
        var previous: UInt8 = 0
        for i in s..<at {
            let b = v[i]
            if b == ASCII.dot, previous == ASCII.dot { return nil }
            previous = b
        }
        return s
    }

    private static func domainEnd(_ v: ByteView, at: Int) -> Int? {
        var e = at + 1
        var labels = 0
        var firstLabel = e..<e
        var lastLabel = e..<e
        while true {
            let labelStart = e
            while true {
                let b = v[e]
                if b < 0x80 {
                    guard ASCII.isAlnum(b) || b == ASCII.dash else { break }
                    e += 1
                } else {
                    guard let (scalar, length) = v.scalar(at: e), ByteView.isWordScalar(scalar) else { break }
                    e += length
                }
                if e - labelStart > maxLabel { return nil }
            }
            guard e > labelStart, v[labelStart] != ASCII.dash, v[e - 1] != ASCII.dash else { return nil }
            labels += 1
            if labels == 1 { firstLabel = labelStart..<e }
            lastLabel = labelStart..<e
            if e - at - 1 > maxDomain { return nil }
            // Another label follows only if something label-like comes after the dot; otherwise
            // the dot ends a sentence.
            let afterDot = v[e + 1]
            guard v[e] == ASCII.dot, ASCII.isAlnum(afterDot) || afterDot >= 0x80 else { break }
            e += 1
        }
        guard labels >= 2, isTopLevel(v, lastLabel), !ASCII.isWord(v[e]) else { return nil }
        // `icon@2x.png`: image density suffixes, not addresses.
        if labels == 2, isDensitySuffix(v, firstLabel) { return nil }
        return e
    }

    /// Top-level labels are alphabetic (`com`, `museum`, IDN in UTF-8) or punycode (`xn--p1ai`):
    /// never numeric, which keeps `pkg@1.2.3` and `user@10.0.0.1`-style text out.
    private static func isTopLevel(_ v: ByteView, _ label: Range<Int>) -> Bool {
        guard label.count >= 2 else { return false }
        if label.count > 4, v.hasPrefix("xn--", at: label.lowerBound) || v.hasPrefix("XN--", at: label.lowerBound) {
            return true
        }
        for i in label where v[i] < 0x80 && !ASCII.isLetter(v[i]) { return false }
        return true
    }

    private static func isDensitySuffix(_ v: ByteView, _ label: Range<Int>) -> Bool {
        guard label.count >= 2, v[label.upperBound - 1] | 0x20 == UInt8(ascii: "x") else { return false }
        for i in label.lowerBound..<(label.upperBound - 1) where !ASCII.isDigit(v[i]) { return false }
        return true
    }
}

/// Telephone numbers: E.164 with a leading `+`, and North American numbers with separators.
/// Bare digit runs are never phones: they are far more often ids, amounts or timestamps.
enum PhoneScanner {
    @inline(__always) static func isSeparator(_ b: UInt8) -> Bool {
        b == ASCII.space || b == ASCII.dash || b == ASCII.dot
    }

    /// `i` is the index of a `+`. Accepts 8–15 digits (E.164's maximum is 15) where single
    /// separators and one pair of parentheses (`+44 (0)20 …`, `+1 (555) …`) may sit between digits.
    static func matchInternational(_ v: ByteView, at i: Int) -> Int? {
        guard v.startsToken(i), v[i - 1] != ASCII.plus else { return nil }
        var j = i + 1
        // Country codes never start with 0.
        guard ASCII.isDigit(v[j]), v[j] != UInt8(ascii: "0") else { return nil }
        var digits = 0
        var parenOpen = false
        while true {
            if ASCII.isDigit(v[j]) {
                digits += 1
                // A longer run is not a phone number; stop early so the work stays bounded.
                if digits > 15 { return nil }
                j += 1
                continue
            }
            // Between two digits: `)`? then one of ` -.`? then `(`?
            var k = j
            let closes = v[k] == ASCII.closeParen && parenOpen
            if closes { k += 1 }
            if isSeparator(v[k]) { k += 1 }
            let opens = v[k] == ASCII.openParen && (!parenOpen || closes)
            if opens { k += 1 }
            guard k > j else { break }
            if ASCII.isDigit(v[k]) {
                if closes { parenOpen = false }
                if opens { parenOpen = true }
                j = k
                continue
            }
            // Nothing numeric follows: only a closing parenthesis still belongs to the number.
            if closes {
                parenOpen = false
                j += 1
            }
            break
        }
        guard !parenOpen, digits >= 8, v.endsNumber(j) else { return nil }
        // `+2024-01-15` is a signed date, not a phone.
        if j - i == 11, v[i + 5] == ASCII.dash, v[i + 8] == ASCII.dash { return nil }
        return j
    }

    /// `i` is the index of a digit or `(`. North American Numbering Plan shapes:
    /// `(NXX) XXX-XXXX` (the space optional, the last separator one of ` -.`), `NXX-XXX-XXXX`
    /// and `NXX.XXX.XXXX` (the same separator twice), each optionally led by `1` and that
    /// separator. The area code starts with 2–9, as NANP assigns them.
    static func matchNorthAmerican(_ v: ByteView, at i: Int) -> Int? {
        guard v.startsNumber(i), v[i - 1] != ASCII.plus else { return nil }
        if v[i] == ASCII.openParen { return parenthesised(v, at: i) }
        let first = v[i]
        if first == UInt8(ascii: "1"), isSeparator(v[i + 1]) {
            return separated(v, at: i + 2, separator: v[i + 1])
        }
        guard ASCII.isDigit(first) else { return nil }
        let separator = v[i + 3]
        guard separator == ASCII.dash || separator == ASCII.dot else { return nil }
        return separated(v, at: i, separator: separator)
    }

    private static func digits(_ v: ByteView, at i: Int, count: Int) -> Bool {
        for k in 0..<count where !ASCII.isDigit(v[i + k]) { return false }
        return true
    }

    private static func isAreaCode(_ v: ByteView, at i: Int) -> Bool {
        digits(v, at: i, count: 3) && v[i] >= UInt8(ascii: "2")
    }

    private static func separated(_ v: ByteView, at i: Int, separator: UInt8) -> Int? {
        guard isAreaCode(v, at: i), v[i + 3] == separator, digits(v, at: i + 4, count: 3),
              v[i + 7] == separator, digits(v, at: i + 8, count: 4), v.endsNumber(i + 12)
        else { return nil }
        return i + 12
    }

    private static func parenthesised(_ v: ByteView, at i: Int) -> Int? {
        guard isAreaCode(v, at: i + 1), v[i + 4] == ASCII.closeParen else { return nil }
        var j = i + 5
        if v[j] == ASCII.space { j += 1 }
        guard digits(v, at: j, count: 3), isSeparator(v[j + 3]), digits(v, at: j + 4, count: 4),
              v.endsNumber(j + 8)
        else { return nil }
        return j + 8
    }
}

/// ASCII byte classes. Arithmetic instead of lookup tables: a global table costs a lazy-init check
/// on every access, and these are the innermost operations of every scanner.
enum ASCII {
    static let space = UInt8(ascii: " ")
    static let dash = UInt8(ascii: "-")
    static let dot = UInt8(ascii: ".")
    static let colon = UInt8(ascii: ":")
    static let plus = UInt8(ascii: "+")
    static let at = UInt8(ascii: "@")
    static let underscore = UInt8(ascii: "_")
    static let openParen = UInt8(ascii: "(")
    static let closeParen = UInt8(ascii: ")")
    static let backslash = UInt8(ascii: "\\")
    static let asterisk = UInt8(ascii: "*")

    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b &- 0x30 < 10 }
    @inline(__always) static func isUpper(_ b: UInt8) -> Bool { b &- 0x41 < 26 }
    @inline(__always) static func isLower(_ b: UInt8) -> Bool { b &- 0x61 < 26 }
    @inline(__always) static func isLetter(_ b: UInt8) -> Bool { (b | 0x20) &- 0x61 < 26 }
    @inline(__always) static func isAlnum(_ b: UInt8) -> Bool { isDigit(b) || isLetter(b) }
    /// Characters that continue an identifier-like token: a match glued to one of these on either
    /// side is part of something bigger (an id, a hash, a word).
    @inline(__always) static func isWord(_ b: UInt8) -> Bool { isAlnum(b) || b == underscore }
    @inline(__always) static func isHex(_ b: UInt8) -> Bool { isDigit(b) || (b | 0x20) &- 0x61 < 6 }
    @inline(__always) static func isBase64URL(_ b: UInt8) -> Bool { isWord(b) || b == dash }
    @inline(__always) static func uppercased(_ b: UInt8) -> UInt8 { isLower(b) ? b &- 0x20 : b }
    /// Value of a digit or letter in base 36 (`0`–`9`, `A`–`Z` case-insensitively).
    @inline(__always) static func base36(_ b: UInt8) -> Int {
        isDigit(b) ? Int(b &- 0x30) : Int((b | 0x20) &- 0x61) + 10
    }
}

/// Read-only view of the scanned bytes. Out-of-range reads return 0 (a byte no scanner accepts),
/// so the scanners look ahead and behind without separate bounds checks at every step.
struct ByteView {
    let base: UnsafeBufferPointer<UInt8>
    let count: Int

    init(_ base: UnsafeBufferPointer<UInt8>) {
        self.base = base
        self.count = base.count
    }

    @inline(__always) subscript(_ i: Int) -> UInt8 {
        i >= 0 && i < count ? base[i] : 0
    }

    /// True when `literal` (ASCII) occurs at `i`.
    func hasPrefix(_ literal: StaticString, at i: Int) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard i >= 0, n <= count - i else { return false }
        let lit = literal.utf8Start
        for k in 0..<n where base[i + k] != lit[k] { return false }
        return true
    }

    // MARK: Boundaries

    /// The byte at `i` starts a token: it is not glued to a word character before it.
    ///
    /// JSON and log text often carry escapes such as `\n` literally; the letter of such an escape is
    /// not part of the token that follows it.
    @inline(__always) func startsToken(_ i: Int) -> Bool {
        guard i > 0 else { return true }
        let prev = base[i - 1]
        if !ASCII.isWord(prev) { return true }
        return i >= 2 && base[i - 2] == ASCII.backslash
            && (prev == UInt8(ascii: "n") || prev == UInt8(ascii: "t") || prev == UInt8(ascii: "r"))
    }

    /// The byte at `i` starts a number that does not continue an earlier one through a dash or a
    /// dot (the tail of `12-555-123-4567` or of `1.10.0.0.1` is not a number of its own).
    @inline(__always) func startsNumber(_ i: Int) -> Bool {
        guard startsToken(i) else { return false }
        let prev = self[i - 1]
        return !((prev == ASCII.dash || prev == ASCII.dot) && ASCII.isDigit(self[i - 2]))
    }

    /// A token ending before `end` is not glued to a word character after it.
    @inline(__always) func endsToken(_ end: Int) -> Bool {
        !ASCII.isWord(self[end])
    }

    /// A number ending before `end` is not glued to a word character nor continued through a dash
    /// or a dot by more digits (`…-1111-12`, `1.2.3.4.5`).
    @inline(__always) func endsNumber(_ end: Int) -> Bool {
        let next = self[end]
        if ASCII.isWord(next) { return false }
        return !((next == ASCII.dash || next == ASCII.dot) && ASCII.isDigit(self[end + 1]))
    }

    // MARK: UTF-8 scalars

    /// The scalar starting at `i` and its length in bytes; nil when the bytes there are not
    /// well-formed UTF-8 (overlong forms, surrogates and truncated sequences included).
    func scalar(at i: Int) -> (Unicode.Scalar, Int)? {
        let b0 = self[i]
        if b0 < 0x80 { return i < count ? (Unicode.Scalar(b0), 1) : nil }
        let length: Int
        var value: UInt32
        var low: UInt8 = 0x80, high: UInt8 = 0xBF  // allowed range of the second byte
        switch b0 {
        case 0xC2...0xDF: length = 2; value = UInt32(b0 & 0x1F)
        case 0xE0...0xEF:
            length = 3; value = UInt32(b0 & 0x0F)
            if b0 == 0xE0 { low = 0xA0 } else if b0 == 0xED { high = 0x9F }
        case 0xF0...0xF4:
            length = 4; value = UInt32(b0 & 0x07)
            if b0 == 0xF0 { low = 0x90 } else if b0 == 0xF4 { high = 0x8F }
        default: return nil
        }
        guard length <= count - i else { return nil }
        for k in 1..<length {
            let b = base[i + k]
            let (lo, hi) = k == 1 ? (low, high) : (UInt8(0x80), UInt8(0xBF))
            guard b >= lo, b <= hi else { return nil }
            value = value << 6 | UInt32(b & 0x3F)
        }
        guard let scalar = Unicode.Scalar(value) else { return nil }
        return (scalar, length)
    }

    /// The non-ASCII scalar that ends just before `end` and where it starts; nil when the bytes
    /// there are not a well-formed sequence ending exactly at `end`.
    func scalar(endingAt end: Int) -> (Unicode.Scalar, start: Int)? {
        var start = end - 1
        // At most three continuation bytes precede the end of a scalar.
        while start > end - 4, start > 0, self[start] & 0xC0 == 0x80 { start -= 1 }
        guard start >= 0, let (scalar, length) = scalar(at: start), start + length == end else { return nil }
        return (scalar, start)
    }

    /// Letters and digits of any script: what internationalised mailbox names and domain labels
    /// are made of. Punctuation (including full-width forms such as `：`) ends them.
    static func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isAlphabetic || scalar.properties.numericType != nil
    }
}

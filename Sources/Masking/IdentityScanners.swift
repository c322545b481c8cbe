/// US Social Security numbers, dashed form only: nine bare digits are far too often something
/// else (ids, amounts, zip+4) to mask on sight.
enum SSNScanner {
    /// `i` is the index of a digit that starts a number.
    static func match(_ v: ByteView, at i: Int) -> Int? {
        guard v[i + 3] == ASCII.dash, v[i + 6] == ASCII.dash else { return nil }
        var area = 0, group = 0, serial = 0
        for k in 0..<3 { guard ASCII.isDigit(v[i + k]) else { return nil }; area = area * 10 + Int(v[i + k] &- 0x30) }
        for k in 4..<6 { guard ASCII.isDigit(v[i + k]) else { return nil }; group = group * 10 + Int(v[i + k] &- 0x30) }
        for k in 7..<11 { guard ASCII.isDigit(v[i + k]) else { return nil }; serial = serial * 10 + Int(v[i + k] &- 0x30) }
        // Never issued: area 000, 666 and 900–999 (the latter are ITINs), group 00, serial 0000.
        guard area != 0, area != 666, area < 900, group != 0, serial != 0, v.endsNumber(i + 11) else { return nil }
        return i + 11
    }
}

/// National identity numbers with enough structure to find in free text.
///
/// - UK National Insurance numbers: two prefix letters (HMRC's excluded letters and unallocated
///   pairs rejected), six digits, suffix A–D; `AB123456C`, `AB 12 34 56 C` (single optional spaces
///   after the prefix, between digit pairs and before the suffix). Uppercase, or all lowercase
///   in the compact form.
/// - Spanish DNI: eight digits and the mod-23 check letter, `12345678Z` or `12345678-Z`.
/// - Spanish NIE: `X`/`Y`/`Z`, seven digits and the check letter, optionally dashed
///   (`X1234567L`, `X-1234567-L`).
enum NationalIDScanner {
    /// `i` starts a token.
    static func match(_ v: ByteView, at i: Int) -> Int? {
        let b = v[i]
        if ASCII.isDigit(b) { return dni(v, at: i) }
        guard ASCII.isLetter(b) else { return nil }
        if let end = nino(v, at: i) { return end }
        switch ASCII.uppercased(b) {
        case UInt8(ascii: "X"), UInt8(ascii: "Y"), UInt8(ascii: "Z"): return nie(v, at: i)
        default: return nil
        }
    }

    private static func nino(_ v: ByteView, at i: Int) -> Int? {
        // Lowercase only in the compact form: `at 12 34 56 a` is prose far more often than an id.
        let lowercase = ASCII.isLower(v[i])
        let a = v[i], b = v[i + 1]
        guard lowercase ? ASCII.isLower(b) : (ASCII.isUpper(a) && ASCII.isUpper(b)),
              isNINOPrefix(ASCII.uppercased(a), ASCII.uppercased(b))
        else { return nil }
        var j = i + 2
        var spaced = false
        func skipSpace() {
            if v[j] == ASCII.space { j += 1; spaced = true }
        }
        skipSpace()
        for pair in 0..<3 {
            if pair > 0 { skipSpace() }
            guard ASCII.isDigit(v[j]), ASCII.isDigit(v[j + 1]) else { return nil }
            j += 2
        }
        skipSpace()
        let suffix = v[j]
        let first = lowercase ? UInt8(ascii: "a") : UInt8(ascii: "A")
        guard !(lowercase && spaced), suffix >= first, suffix <= first + 3, v.endsToken(j + 1) else { return nil }
        return j + 1
    }

    /// HMRC: the first letter is never D, F, I, Q, U or V; the second never D, F, I, O, Q, U or V;
    /// BG, GB, KN, NK, NT, TN and ZZ are not allocated.
    static func isNINOPrefix(_ a: UInt8, _ b: UInt8) -> Bool {
        func excluded(_ c: UInt8, _ letters: StaticString) -> Bool {
            let p = letters.utf8Start
            for k in 0..<letters.utf8CodeUnitCount where p[k] == c { return true }
            return false
        }
        if excluded(a, "DFIQUV") || excluded(b, "DFIOQUV") { return false }
        switch (a, b) {
        case (UInt8(ascii: "B"), UInt8(ascii: "G")), (UInt8(ascii: "G"), UInt8(ascii: "B")),
             (UInt8(ascii: "K"), UInt8(ascii: "N")), (UInt8(ascii: "N"), UInt8(ascii: "K")),
             (UInt8(ascii: "N"), UInt8(ascii: "T")), (UInt8(ascii: "T"), UInt8(ascii: "N")),
             (UInt8(ascii: "Z"), UInt8(ascii: "Z")):
            return false
        default:
            return true
        }
    }

    /// `i` is the index of a digit that starts a number.
    private static func dni(_ v: ByteView, at i: Int) -> Int? {
        guard let number = digits(v, at: i, count: 8), !ASCII.isDigit(v[i + 8]) else { return nil }
        var j = i + 8
        if v[j] == ASCII.dash { j += 1 }
        return checkLetter(v, at: j, number: number)
    }

    private static func nie(_ v: ByteView, at i: Int) -> Int? {
        let lead = Int(ASCII.uppercased(v[i]) - UInt8(ascii: "X"))  // X=0, Y=1, Z=2
        var j = i + 1
        let dashed = v[j] == ASCII.dash
        if dashed { j += 1 }
        guard let number = digits(v, at: j, count: 7), !ASCII.isDigit(v[j + 7]) else { return nil }
        j += 7
        if dashed {
            guard v[j] == ASCII.dash else { return nil }
            j += 1
        }
        return checkLetter(v, at: j, number: lead * 10_000_000 + number)
    }

    private static func digits(_ v: ByteView, at i: Int, count: Int) -> Int? {
        var number = 0
        for k in 0..<count {
            guard ASCII.isDigit(v[i + k]) else { return nil }
            number = number * 10 + Int(v[i + k] &- 0x30)
        }
        return number
    }

    private static func checkLetter(_ v: ByteView, at j: Int, number: Int) -> Int? {
        guard ASCII.uppercased(v[j]) == SpanishIDCheck.letter(for: number), v.endsToken(j + 1) else { return nil }
        return j + 1
    }
}

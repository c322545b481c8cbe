/// IBANs: country code, two check digits, then the BBAN; compact (`DE89370400440532013000`) or
/// printed in groups of four separated by single spaces (`DE89 3704 0044 0532 0130 00`).
/// Only the exact length registered for the country is accepted, then the mod-97 check.
/// Letters must be uppercase, as ISO 13616 writes them: lowercase would let one hex digest in 97
/// that starts like a country code (`ad23d4…`) through.
enum IBANScanner {
    /// `i` is the index of a letter that starts a token.
    static func match(_ v: ByteView, at i: Int) -> Int? {
        guard ASCII.isUpper(v[i]), ASCII.isUpper(v[i + 1]), ASCII.isDigit(v[i + 2]), ASCII.isDigit(v[i + 3]),
              let length = IBANCheck.length(v[i], v[i + 1])
        else { return nil }
        let spaced = v[i + 4] == ASCII.space
        var j = i
        var taken = 0
        while taken < length {
            if spaced, taken > 0, taken % 4 == 0 {
                guard v[j] == ASCII.space else { return nil }
                j += 1
            }
            guard ASCII.isUpper(v[j]) || ASCII.isDigit(v[j]) else { return nil }
            j += 1
            taken += 1
        }
        guard v.endsToken(j) else { return nil }
        let slice = UnsafeBufferPointer(rebasing: v.base[i..<j])
        guard IBANCheck.mod97(slice) == 1 else { return nil }
        return j
    }
}

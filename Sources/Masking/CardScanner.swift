/// Payment card numbers (PANs).
///
/// Luhn alone passes one random number in ten, so a candidate must also carry an issuer prefix
/// (IIN) with a length that issuer uses. Grouped forms (`4111 1111 1111 1111`, `3782-822463-10005`)
/// use one separator kind, single, between groups of 3–6 digits.
enum CardScanner {
    /// `i` is the index of a digit that starts a number.
    static func match(_ v: ByteView, at i: Int) -> Int? {
        var j = i
        while ASCII.isDigit(v[j]), j - i < 20 { j += 1 }
        let first = j - i
        if first >= 13 {
            guard first <= 19, v.endsNumber(j), isCard(v, i..<j, separator: 0) else { return nil }
            return j
        }
        guard first >= 3, first <= 6 else { return nil }
        let separator = v[j]
        guard separator == ASCII.space || separator == ASCII.dash else { return nil }
        // Prefer the longest grouping that is a card: `4111 1111 1111 1111 2024` is a card and a year.
        var total = first
        var best: Int?
        while v[j] == separator, ASCII.isDigit(v[j + 1]) {
            let groupStart = j + 1
            var k = groupStart
            while ASCII.isDigit(v[k]), k - groupStart < 7 { k += 1 }
            let length = k - groupStart
            guard length >= 3, length <= 6 else { break }
            total += length
            guard total <= 19 else { break }
            j = k
            if total >= 13, v.endsNumber(j), isCard(v, i..<j, separator: separator) { best = j }
        }
        return best
    }

    private static func isCard(_ v: ByteView, _ range: Range<Int>, separator: UInt8) -> Bool {
        // The first six digits (the IIN) and the digit count.
        var prefix = 0
        var length = 0
        for i in range where v[i] != separator {
            if length < 6 { prefix = prefix * 10 + Int(v[i] &- 0x30) }
            length += 1
        }
        guard issuerAccepts(prefix: prefix, length: length) else { return false }
        let slice = UnsafeBufferPointer(rebasing: v.base[range])
        return Luhn.checksum(slice, skipping: separator) == 0
    }

    /// Issuer prefixes and the lengths each issues (ISO/IEC 7812 registrations as published by the
    /// networks). `prefix` is the first six digits.
    static func issuerAccepts(prefix p6: Int, length: Int) -> Bool {
        let p1 = p6 / 100_000, p2 = p6 / 10_000, p3 = p6 / 1_000, p4 = p6 / 100
        switch length {
        case 13...19 where p1 == 4:
            return length == 13 || length == 16 || length == 19          // Visa
        case 16 where (51...55).contains(p2) || (2221...2720).contains(p4):
            return true                                                   // Mastercard
        case 15 where p2 == 34 || p2 == 37:
            return true                                                   // American Express
        case 16...19 where p4 == 6011 || (644...649).contains(p3) || p2 == 65:
            return true                                                   // Discover
        case 16...19 where (3528...3589).contains(p4):
            return true                                                   // JCB
        case 14...19 where (300...305).contains(p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39:
            return true                                                   // Diners Club
        case 16...19 where p2 == 62:
            return true                                                   // UnionPay
        case 16...19 where (2200...2204).contains(p4):
            return true                                                   // Mir
        case 13...19 where isMaestro(p4):
            return true                                                   // Maestro
        default:
            return false
        }
    }

    private static func isMaestro(_ p4: Int) -> Bool {
        switch p4 {
        case 5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763: true
        default: false
        }
    }
}

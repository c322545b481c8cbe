/// The Luhn (mod 10) check used by payment card numbers.
public enum Luhn {
    /// True when `digits` (ASCII `0`–`9` only, at least two of them) pass the Luhn check.
    public static func isValid(_ digits: some Collection<UInt8>) -> Bool {
        guard digits.count >= 2, digits.allSatisfy(ASCII.isDigit) else { return false }
        return checksum(digits, skipping: 0) == 0
    }

    /// True when the ASCII digits of `text` pass the Luhn check (any other character fails).
    public static func isValid(_ text: String) -> Bool {
        isValid(Array(text.utf8))
    }

    /// The Luhn sum mod 10 over the digits of `bytes`, ignoring bytes equal to `separator` (the
    /// card scanner checks grouped numbers in place). Walks forward, so the doubling parity comes
    /// from the number of digits still to come.
    static func checksum(_ bytes: some Collection<UInt8>, skipping separator: UInt8) -> Int {
        var remaining = 0
        for b in bytes where b != separator { remaining += 1 }
        var sum = 0
        for b in bytes where b != separator {
            remaining -= 1
            var d = Int(b &- 0x30)
            if remaining % 2 == 1 {
                d *= 2
                if d > 9 { d -= 9 }
            }
            sum += d
        }
        return sum % 10
    }
}

/// ISO 13616 (IBAN) structure: country lengths and the ISO 7064 mod 97-10 check.
enum IBANCheck {
    /// Total IBAN length by country code (two uppercase ASCII letters packed big-endian), from the
    /// SWIFT IBAN registry: every SEPA country, GB, and the other registry members whose lengths
    /// are stable.
    static let lengths: [UInt16: Int] = {
        let table = """
            AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 DO28 \
            EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 IS26 \
            IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 MT31 MU30 NL18 \
            NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 \
            TR26 UA29 VA22 VG24 XK20
            """
        var lengths: [UInt16: Int] = [:]
        for entry in table.split(separator: " ") {
            let bytes = Array(entry.utf8)
            lengths[UInt16(bytes[0]) << 8 | UInt16(bytes[1])] = Int(bytes[2] - 0x30) * 10 + Int(bytes[3] - 0x30)
        }
        return lengths
    }()

    /// Expected length for the country code `c0 c1` (either case: callers decide what case they
    /// accept); nil for unknown countries.
    static func length(_ c0: UInt8, _ c1: UInt8) -> Int? {
        lengths[UInt16(ASCII.uppercased(c0)) << 8 | UInt16(ASCII.uppercased(c1))]
    }

    /// The ISO 7064 mod 97-10 remainder of an IBAN given as its alphanumeric characters (any other
    /// byte, such as the grouping spaces, is skipped): the first four characters move to the end
    /// and letters count as 10–35. A valid IBAN gives 1. Nil when a character is not alphanumeric.
    static func mod97(_ bytes: some Collection<UInt8>) -> Int? {
        var remainder = 0
        var moved = 0
        func feed(_ b: UInt8) -> Bool {
            guard ASCII.isAlnum(b) else { return false }
            let v = ASCII.base36(b)
            remainder = (remainder * (v < 10 ? 10 : 100) + v) % 97
            return true
        }
        // Pass 1: everything after the first four characters; pass 2: those four.
        for b in bytes where b != ASCII.space {
            if moved < 4 { moved += 1; continue }
            guard feed(b) else { return nil }
        }
        moved = 0
        for b in bytes where b != ASCII.space {
            guard moved < 4 else { break }
            moved += 1
            guard feed(b) else { return nil }
        }
        return remainder
    }

    /// A complete IBAN (compact or in groups of four separated by single spaces, uppercase):
    /// known country, that country's length, numeric check digits and mod 97 == 1.
    static func isValid(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBufferPointer { buffer in
            let view = ByteView(buffer)
            return IBANScanner.match(view, at: 0) == view.count
        }
    }
}

/// Spanish DNI and NIE check letters.
enum SpanishIDCheck {
    /// `number % 23` indexes this table.
    static let letters: StaticString = "TRWAGMYFPDXBNJZSQVHLCKE"

    static func letter(for number: Int) -> UInt8 {
        letters.utf8Start[number % 23]
    }
}

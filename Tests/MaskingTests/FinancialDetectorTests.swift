import Testing

@testable import Masking

@Suite("Payment card detector")
struct CardDetectorTests {
    @Test(arguments: [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "5105 1051 0510 5100",
        "2223003122003222",
        "378282246310005",
        "3782 822463 10005",
        "371449635398431",
        "6011111111111117",
        "6011-0009-9013-9424",
        "3530111333300000",
        "3566002020360505",
        "30569309025904",
        "38520000023237",
        "6200000000000005",
        "4012888888881881",
        "4222222222222",
        "6759649826438453",
        "2200000000000004",
    ])
    func findsCards(number: String) {
        for context in contexts {
            #expect(found(.paymentCard, in: context(number)) == [number], "\(context(number))")
        }
    }

    @Test func theLongestValidGroupingWins() {
        #expect(found(.paymentCard, in: "card 4111 1111 1111 1111 2024 exp") == ["4111 1111 1111 1111"])
        #expect(found(.paymentCard, in: "4111111111111111 and 5555555555554444") == ["4111111111111111", "5555555555554444"])
    }

    @Test(arguments: [
        "4111111111111112",            // Luhn fails
        "1234567812345670",            // Luhn passes, no issuer starts with 1
        "9999999999999995",            // no issuer
        "41111111111111111111",        // 20 digits
        "x4111111111111111",           // glued before
        "4111111111111111abc",         // glued after
        "4111111111111111_1",
        "12-4111111111111111",         // tail of a longer dashed number
        "4111-1111-1111-1111-12",
        "1.4111111111111111",
        "4111 1111 1111 11",           // 14 digits: no Visa length
        "4111  1111  1111  1111",      // double spaces
        "4111 1111-1111 1111",         // mixed separators
        "41 11 11 11 11 11 11 11",     // groups of two
        "1700000000000",               // epoch milliseconds
        "order 12345678901234",
        "2024-01-15T10:30:00.123Z",
        "123e4567-e89b-12d3-a456-426614174000",
        "41111111-1111-1111-1111-111111111111",
        "5555555555554444 is fine but 555555555555444 is short",
    ])
    func ignoresNonCards(text: String) {
        let hits = found(.paymentCard, in: text)
        if text.hasPrefix("5555555555554444 is") {
            #expect(hits == ["5555555555554444"])
        } else {
            #expect(hits.isEmpty, "\(text)")
        }
    }
}

@Suite("IBAN detector")
struct IBANDetectorTests {
    @Test(arguments: [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91 ABNA 0417 1643 00",
        "BE68 5390 0754 7034",
        "ES91 2100 0418 4502 0005 1332",
        "IT60 X054 2811 1010 0000 0123 456",
        "CH93 0076 2011 6238 5295 7",
        "NO93 8601 1117 947",
        "AT61 1904 3002 3457 3201",
        "PL61 1090 1014 0000 0712 1981 2874",
        "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
        "IE29 AIBK 9311 5212 3456 78",
        "FI21 1234 5600 0007 85",
        "SE45 5000 0000 0583 9825 7466",
        "DK50 0040 0440 1162 43",
        "LU28 0019 4006 4475 0000",
        "PT50 0002 0123 1234 5678 9015 4",
    ])
    func findsIBANs(iban: String) {
        for context in contexts {
            #expect(found(.iban, in: context(iban)) == [iban], "\(context(iban))")
        }
        #expect(IBANCheck.isValid(iban))
    }

    @Test(arguments: [
        "DE88 3704 0044 0532 0130 00",       // check digits
        "GB82 WEST 1234 5698 7654 33",       // one character changed
        "XX89370400440532013000",            // unknown country
        "DE8937040044053201300",             // one short
        "DE893704004405320130001",           // one long
        "DE89370400440532013000X",           // glued
        "xDE89370400440532013000",
        "DE89 37040044 0532013000",          // irregular grouping
        "DE89  3704 0044 0532 0130 00",
        "DEPARTMENT 12",
        "ISO 8601 and RFC 3339",
        "AB12 and CD34 are codes",
        "gb82west12345698765432",            // lowercase
        "GB82West12345698765432",
        "ad23d477d0f9ec0c122823f3",          // a hex digest that passes mod 97
    ])
    func ignoresNonIBANs(text: String) {
        #expect(found(.iban, in: text).isEmpty, "\(text)")
    }
}

@Suite("Checksums")
struct ChecksumTests {
    @Test(arguments: [
        ("4111111111111111", true), ("4111111111111112", false), ("79927398713", true), ("79927398710", false),
        ("0", false), ("00", true), ("", false), ("4111-1111-1111-1111", false), ("378282246310005", true),
    ])
    func luhn(digits: String, valid: Bool) {
        #expect(Luhn.isValid(digits) == valid)
        #expect(Luhn.isValid(Array(digits.utf8)) == valid)
    }

    @Test func mod97() {
        #expect(IBANCheck.mod97(Array("DE89370400440532013000".utf8)) == 1)
        #expect(IBANCheck.mod97(Array("DE89 3704 0044 0532 0130 00".utf8)) == 1)
        #expect(IBANCheck.mod97(Array("DE00370400440532013000".utf8)) != 1)
        #expect(IBANCheck.mod97(Array("DE89-3704".utf8)) == nil)
        #expect(IBANCheck.length(UInt8(ascii: "g"), UInt8(ascii: "b")) == 22)
        #expect(IBANCheck.length(UInt8(ascii: "U"), UInt8(ascii: "S")) == nil)
    }

    @Test func spanishCheckLetters() {
        #expect(SpanishIDCheck.letter(for: 12_345_678) == UInt8(ascii: "Z"))
        #expect(SpanishIDCheck.letter(for: 0) == UInt8(ascii: "T"))
        #expect(SpanishIDCheck.letter(for: 22) == UInt8(ascii: "E"))
    }

    @Test(arguments: [
        (411111, 16, true), (411111, 15, false), (555555, 16, true), (555555, 19, false), (222100, 16, true),
        (272099, 16, true), (272100, 16, false), (378282, 15, true), (378282, 16, false), (601111, 19, true),
        (353011, 16, true), (305693, 14, true), (620000, 16, true), (100000, 16, false), (999999, 16, false),
    ])
    func issuerPrefixes(prefix: Int, length: Int, accepted: Bool) {
        #expect(CardScanner.issuerAccepts(prefix: prefix, length: length) == accepted)
    }
}

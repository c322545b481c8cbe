import Testing

@testable import Masking

@Suite("Masking strategies")
struct StrategyTests {
    @Test(arguments: ["", "x", "4111 1111 1111 1111", "Grüße, Jürgen 👋🏽", String(repeating: "a", count: 10_000)])
    func redactReplacesTheWholeValue(value: String) {
        #expect(testMasker.mask(value, strategy: .redact) == "[redacted]")
        #expect(testMasker.mask(utf8: Array(value.utf8), strategy: .redact) == Array("[redacted]".utf8))
        #expect(ValueMasker.redactionMarker == "[redacted]")
    }

    @Test(arguments: [
        ("4111 1111 1111 1111", 4, "**** **** **** 1111"),
        ("4111-1111-1111-1111", 4, "****-****-****-1111"),
        ("4111111111111111", 4, "************1111"),
        ("123-45-6789", 4, "***-**-6789"),
        ("(555) 123-4567", 4, "(***) ***-4567"),
        ("+1 415 555 2671", 4, "+* *** *** 2671"),
        ("DE89 3704 0044 0532 0130 00", 4, "**** **** **** **** **30 00"),
        ("secretvalue", 4, "*******alue"),
        ("secretvalue", 0, "***********"),
        ("secretvalue", -3, "***********"),
        ("secretvalue", 100, "***********"),        // no longer than keep: nothing kept
        ("secretvalue", 6, "******value"),          // never more than half
        ("abcdefgh", 4, "****efgh"),
        ("abcdefg", 4, "****efg"),
        ("abcde", 4, "***de"),
        ("abcd", 4, "****"),                      // as long as keep: nothing kept
        ("abc", 4, "***"),
        ("a", 4, "*"),
        ("", 4, ""),
        ("---", 4, "***"),                        // separators only: all masked
        ("   ", 0, "***"),
        ("a b", 4, "* *"),
        ("line one\nline two", 4, "**** ***\n***e two"),
        ("john.doe@example.com", 4, "****.**********e.com"),
        ("Jürgen Müller", 4, "****** **ller"),
        ("日本語テキスト", 2, "*****スト"),
        ("👨‍👩‍👧‍👦👍🏽ab", 4, "****"),
        ("👨‍👩‍👧‍👦👍🏽ab", 2, "**ab"),
        ("👍🏽👍🏽👍🏽👍🏽", 2, "**👍🏽👍🏽"),
        ("🇩🇪🇫🇷🇮🇹🇪🇸", 1, "***🇪🇸"),
        ("e\u{301}e\u{301}e\u{301}", 1, "**e\u{301}"),
    ])
    func partialKeepsTheTail(value: String, keep: Int, expected: String) {
        let masked = testMasker.mask(value, strategy: .partial(keep: keep))
        #expect(masked == expected)
        #expect(masked.count == value.count || value.isEmpty)
        #expect(testMasker.mask(utf8: Array(value.utf8), strategy: .partial(keep: keep)) == Array(expected.utf8))
    }

    @Test func partialDefaultsToFour() {
        #expect(MaskStrategy.partial() == .partial(keep: 4))
        #expect(testMasker.mask("4111111111111111", strategy: .partial()) == "************1111")
    }

    @Test func partialNeverSplitsOrEmitsInvalidUTF8() {
        // Ill-formed input is read with U+FFFD and comes out well-formed.
        let bytes: [UInt8] = [0x61, 0xFF, 0x62, 0xE2, 0x82, 0x63, 0x64, 0x65, 0xF0, 0x9F, 0x98, 0x80]
        let out = testMasker.mask(utf8: bytes, strategy: .partial(keep: 2))
        #expect(String(validating: out, as: UTF8.self) != nil)
        #expect(String(decoding: out, as: UTF8.self).hasSuffix("e😀"))
    }

    @Test func keyedHashIsStableAndKeyed() {
        let a = testMasker.mask("ann@example.com", strategy: .keyedHash)
        #expect(a == testMasker.mask("ann@example.com", strategy: .keyedHash))
        #expect(a.hasPrefix("h:"))
        #expect(a.count == 18)
        #expect(a.dropFirst(2).allSatisfy { "0123456789abcdef".contains($0) })
        #expect(a != testMasker.mask("ann@example.org", strategy: .keyedHash))
        #expect(a != testMasker.mask("Ann@example.com", strategy: .keyedHash))
        let otherKey = ValueMasker(hashKey: Array("another-key".utf8))
        #expect(a != otherKey.mask("ann@example.com", strategy: .keyedHash))
        // A copy of the masker (or one made from the same key) agrees: hashes join across sessions.
        let sameKey = ValueMasker(hashKey: Array("gatehouse-test-key-0123456789abcdef".utf8))
        #expect(a == sameKey.mask("ann@example.com", strategy: .keyedHash))
        #expect(testMasker.mask(utf8: Array("ann@example.com".utf8), strategy: .keyedHash) == Array(a.utf8))
    }

    @Test func keyedHashMatchesHMACSHA256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let masker = ValueMasker(hashKey: Array("Jefe".utf8))
        #expect(masker.mask("what do ya want for nothing?", strategy: .keyedHash) == "h:5bdcc146bf60754e")
    }

    @Test func keyedHashesOfManyInputsDoNotCollide() {
        var seen = Set<String>()
        for i in 0..<5_000 { seen.insert(testMasker.mask("user\(i)@example.com", strategy: .keyedHash)) }
        #expect(seen.count == 5_000)
    }
}

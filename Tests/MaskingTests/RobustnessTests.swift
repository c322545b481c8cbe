import Testing

@testable import Masking

@Suite("Robustness")
struct RobustnessTests {
    @Test func aLargeValueIsScannedInOnePass() {
        // ~4 MiB of mixed text with a sensitive value every few hundred bytes.
        let chunk = "Lorem ipsum dolor sit amet, id 1234567 at 2024-01-15T10:30:00Z v1.2.3; mail ann@example.com, "
            + "card 4111 1111 1111 1111, ip 10.0.0.1, uuid 123e4567-e89b-12d3-a456-426614174000.\n"
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 << 20)
        while bytes.count < 4 << 20 { bytes.append(contentsOf: chunk.utf8) }
        let spans = testMasker.detect(in: bytes)
        let repeats = (bytes.count + chunk.utf8.count - 1) / chunk.utf8.count
        #expect(spans.count == 3 * repeats)
        let masked = testMasker.maskDetected(in: bytes, strategy: .redact)
        #expect(masked != nil)
    }

    /// Inputs that would make a backtracking matcher or a careless scanner go quadratic.
    @Test(arguments: [
        "a@", "1 ", "1-", "1.", "+1 ", "::", "1:", "eyJ.", "eyJhbGciOiJub25lIn0.", "-----BEGIN PRIVATE KEY-----",
        "AB 12 ", "DE89 ", "a.", "4111 ", "(", "@a.", "xoxb-", "ghp_", "é@",
    ])
    func pathologicalRepetitionsStayLinear(unit: String) {
        let text = String(repeating: unit, count: (256 << 10) / unit.utf8.count)
        let bytes = Array(text.utf8)
        _ = testMasker.detect(in: bytes)
        let out = testMasker.maskDetected(in: bytes, strategy: .partial())
        if let out { #expect(String(validating: out, as: UTF8.self) != nil) }
    }

    @Test func longRunsWithoutSeparators() {
        for byte in [UInt8(ascii: "1"), UInt8(ascii: "a"), UInt8(ascii: "-"), UInt8(ascii: "@"), UInt8(ascii: "."), 0xC3, 0x00] {
            let bytes = [UInt8](repeating: byte, count: 1 << 20)
            #expect(testMasker.detect(in: bytes).isEmpty)
        }
        let jwtBody = "eyJhbGciOiJIUzI1NiJ9." + String(repeating: "A", count: 1 << 20) + ".sig"
        #expect(testMasker.detect(in: jwtBody).map(\.detector) == [.secret])
    }

    @Test func randomBytesNeverCrash() {
        var rng = SplitMix64(state: 0x5EED)
        for _ in 0..<300 {
            let bytes = (0..<Int.random(in: 0..<600, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let spans = testMasker.detect(in: bytes)
            #expect(spans.allSatisfy { $0.range.lowerBound >= 0 && $0.range.upperBound <= bytes.count && !$0.range.isEmpty })
            for strategy in [MaskStrategy.redact, .partial(), .keyedHash] {
                _ = testMasker.maskDetected(in: bytes, strategy: strategy)
                let whole = testMasker.mask(utf8: bytes, strategy: strategy)
                #expect(String(validating: whole, as: UTF8.self) != nil)
            }
        }
    }

    /// Text assembled from fragments that trigger the scanners, separators and multibyte
    /// characters: output must stay valid UTF-8 and never contain a masked span's text.
    @Test func randomTextStaysValidUTF8() {
        let pieces = [
            " ", "-", ".", "@", "+", "(", ")", ":", "::", "/", "\\n", "\n", "_", "1", "4111", "555", "123-45-6789",
            "ann", "example", ".com", "é", "日本", "👍🏽", "e\u{301}", "AB", "12", "C", "DE89", "3704", "eyJ",
            "AKIA", "IOSFODNN7EXAMPLE", "10.0.0.1", "fe80", "-----BEGIN PRIVATE KEY-----", "ghp_", "xoxb-", "Z",
        ]
        var rng = SplitMix64(state: 42)
        for _ in 0..<1_500 {
            var text = ""
            for _ in 0..<Int.random(in: 1..<60, using: &rng) { text += pieces.randomElement(using: &rng)! }
            let bytes = Array(text.utf8)
            let spans = testMasker.detect(in: bytes)
            for span in spans {
                // Valid input: spans start and end on scalar boundaries.
                #expect(String(validating: bytes[span.range], as: UTF8.self) != nil, "\(text)")
            }
            for strategy in [MaskStrategy.redact, .partial(), .partial(keep: 1), .keyedHash] {
                guard let out = testMasker.maskDetected(in: bytes, strategy: strategy) else {
                    #expect(spans.isEmpty)
                    continue
                }
                #expect(String(validating: out, as: UTF8.self) != nil, "\(text)")
                if strategy == .redact {
                    #expect(out.count == bytes.count - spans.reduce(0) { $0 + $1.range.count } + 10 * spans.count)
                }
                if case .partial = strategy {
                    #expect(String(decoding: out, as: UTF8.self).count == text.count
                        || text.unicodeScalars.contains { $0.properties.isGraphemeExtend || $0.value > 0x1F000 }, "\(text)")
                }
            }
        }
    }
}

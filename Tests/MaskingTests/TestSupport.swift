@testable import Masking

/// A fixed key: tests compare hashes across calls.
let testMasker = ValueMasker(hashKey: Array("gatehouse-test-key-0123456789abcdef".utf8))

/// The substrings `detector` alone finds in `text`.
func found(_ detector: Detector, in text: String) -> [String] {
    found([detector], in: text)
}

func found(_ detectors: Set<Detector>, in text: String) -> [String] {
    let bytes = Array(text.utf8)
    return testMasker.detect(in: bytes, detectors: detectors).map {
        String(decoding: bytes[$0.range], as: UTF8.self)
    }
}

/// Deterministic generator so fuzz failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Wraps a value in ordinary surrounding text, which every positive case must survive.
let contexts: [@Sendable (String) -> String] = [
    { $0 },
    { "value: \($0)" },
    { "(\($0)), then more" },
    { "{\"field\":\"\($0)\"}" },
    { "line one\n\($0)\tafter" },
]

import Testing

@testable import Masking

@Suite("Masking what was detected")
struct MaskDetectedTests {
    static let text = "Ann (ann@example.com, +44 20 7946 0958) paid with 4111 1111 1111 1111 from 10.0.0.1; SSN 123-45-6789."

    @Test func replacesEverySpanInPlace() {
        let redacted = testMasker.maskDetected(in: Self.text, strategy: .redact)
        #expect(redacted == "Ann ([redacted], [redacted]) paid with [redacted] from [redacted]; SSN [redacted].")
        let partial = testMasker.maskDetected(in: Self.text, strategy: .partial())
        #expect(partial == "Ann (**********e.com, +** ** **** 0958) paid with **** **** **** 1111 from **.*.0.1; SSN ***-**-6789.")
        let hashed = testMasker.maskDetected(in: Self.text, strategy: .keyedHash)
        let cardHash = testMasker.mask("4111 1111 1111 1111", strategy: .keyedHash)
        #expect(hashed?.contains("paid with \(cardHash) from") == true)
        #expect(hashed?.contains("4111") == false)
    }

    @Test func spansAreSortedWithByteOffsets() {
        let spans = testMasker.detect(in: Self.text)
        #expect(spans.map(\.detector) == [.email, .phone, .paymentCard, .ipAddress, .usSSN])
        let bytes = Array(Self.text.utf8)
        #expect(String(decoding: bytes[spans[0].range], as: UTF8.self) == "ann@example.com")
        #expect(zip(spans, spans.dropFirst()).allSatisfy { $0.range.upperBound <= $1.range.lowerBound })
    }

    @Test func offsetsAreUTF8AndMultibyteTextSurvives() {
        let text = "Grüße — 📧 ann@example.com — 日本"
        let spans = testMasker.detect(in: text)
        #expect(spans.count == 1)
        #expect(spans.first?.range.lowerBound == "Grüße — 📧 ".utf8.count)
        #expect(testMasker.maskDetected(in: text, strategy: .redact) == "Grüße — 📧 [redacted] — 日本")
    }

    @Test func onlyTheChosenDetectorsRun() {
        #expect(found([.paymentCard], in: Self.text) == ["4111 1111 1111 1111"])
        #expect(found([.email, .usSSN], in: Self.text) == ["ann@example.com", "123-45-6789"])
        #expect(testMasker.detect(in: Self.text, detectors: []).isEmpty)
        #expect(testMasker.maskDetected(in: Self.text, detectors: [.iban], strategy: .redact) == nil)
    }

    @Test func aStrategyPerDetector() {
        let out = testMasker.maskDetected(in: Array(Self.text.utf8)) { detector in
            detector == .paymentCard ? .partial() : .redact
        }
        #expect(out.map { String(decoding: $0, as: UTF8.self) }
            == "Ann ([redacted], [redacted]) paid with **** **** **** 1111 from [redacted]; SSN [redacted].")
    }

    @Test(arguments: [
        "", "plain prose with nothing sensitive in it at all.", "order 12345, build 1.2.3, at 2024-01-15T10:30:00Z",
        "uuid 123e4567-e89b-12d3-a456-426614174000", "日本語のテキスト", "version 10.2 build 4412",
    ])
    func nothingDetectedReturnsNil(text: String) {
        #expect(testMasker.maskDetected(in: text, strategy: .redact) == nil)
        #expect(testMasker.maskDetected(in: Array(text.utf8), strategy: .partial()) == nil)
        #expect(testMasker.detect(in: text).isEmpty)
    }

    @Test func overlappingSpansAreJoined() {
        let merged = DetectionEngine.merged([
            DetectedSpan(range: 10..<20, detector: .phone),
            DetectedSpan(range: 0..<5, detector: .email),
            DetectedSpan(range: 15..<25, detector: .paymentCard),
            DetectedSpan(range: 3..<4, detector: .secret),
            DetectedSpan(range: 25..<30, detector: .iban),
        ])
        #expect(merged == [
            DetectedSpan(range: 0..<5, detector: .email),
            DetectedSpan(range: 10..<25, detector: .phone),
            DetectedSpan(range: 25..<30, detector: .iban),
        ])
        // A NINO that is also an email's local part: the address is masked whole.
        #expect(testMasker.maskDetected(in: "AB123456C@example.com", strategy: .redact) == "[redacted]")
    }

    @Test func slicesAndRawBuffersUseOffsetsFromTheirStart() {
        let bytes = Array("xxxx ann@example.com".utf8)
        let slice = bytes[5...]
        #expect(testMasker.detect(in: slice).map(\.range) == [0..<15])
        let raw = bytes.withUnsafeBytes { testMasker.detect(in: $0) }
        #expect(raw.map(\.range) == [5..<20])
        let masked = bytes.withUnsafeBytes { testMasker.maskDetected(in: $0, strategy: .redact) }
        #expect(masked == Array("xxxx [redacted]".utf8))
    }

    @Test func escapedTextInJSONOrLogsIsStillScanned() {
        let line = #"{"msg":"contact:\nann@example.com\tcard\n4111111111111111"}"#
        #expect(testMasker.maskDetected(in: line, strategy: .redact) == #"{"msg":"contact:\n[redacted]\tcard\n[redacted]"}"#)
    }
}

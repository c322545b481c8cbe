/// One left-to-right pass over the bytes that hands each candidate position to the scanners that
/// can start there.
///
/// Work is linear in the input: most bytes cost one comparison (letters and digits inside a word
/// are not candidates at all), and each scanner does bounded work per candidate, except the
/// JWT and PEM scanners, whose walks are over base64 runs that no later candidate walks again
/// more than a fixed number of times.
enum DetectionEngine {
    struct Enabled {
        var bits: UInt8
        init(_ detectors: Set<Detector>) {
            bits = 0
            for detector in detectors { bits |= 1 << detector.ordinal }
        }
        @inline(__always) func contains(_ detector: Detector) -> Bool { bits & (1 << detector.ordinal) != 0 }
    }

    static func detect(_ base: UnsafeBufferPointer<UInt8>, detectors: Set<Detector>) -> [DetectedSpan] {
        let enabled = Enabled(detectors)
        guard enabled.bits != 0, !base.isEmpty else { return [] }
        let v = ByteView(base)
        var spans: [DetectedSpan] = []
        // Per detector, where its last match ended: a detector does not look inside its own match.
        var resume = [Int](repeating: 0, count: Detector.allCases.count)

        func attempt(_ detector: Detector, at i: Int, _ scan: (ByteView, Int) -> Int?) {
            guard enabled.contains(detector), i >= resume[detector.ordinal], let end = scan(v, i) else { return }
            spans.append(DetectedSpan(range: i..<end, detector: detector))
            resume[detector.ordinal] = end
        }

        var i = 0
        let n = v.count
        while i < n {
            let b = base[i]
            defer { i += 1 }
            if ASCII.isDigit(b) {
                guard v.startsToken(i) else { continue }
                let number = v.startsNumber(i)
                if number {
                    attempt(.paymentCard, at: i, CardScanner.match)
                    attempt(.usSSN, at: i, SSNScanner.match)
                    attempt(.phone, at: i, PhoneScanner.matchNorthAmerican)
                    attempt(.nationalID, at: i, NationalIDScanner.match)
                    attempt(.ipAddress, at: i, IPScanner.matchIPv4)
                }
                attempt(.ipAddress, at: i, IPScanner.matchIPv6)
            } else if ASCII.isLetter(b) {
                guard v.startsToken(i) else { continue }
                attempt(.iban, at: i, IBANScanner.match)
                attempt(.nationalID, at: i, NationalIDScanner.match)
                attempt(.secret, at: i, SecretScanner.matchToken)
                if ASCII.isHex(b) { attempt(.ipAddress, at: i, IPScanner.matchIPv6) }
            } else {
                switch b {
                case ASCII.at:
                    guard enabled.contains(.email), let range = EmailScanner.match(v, at: i),
                          range.lowerBound >= resume[Detector.email.ordinal]
                    else { continue }
                    spans.append(DetectedSpan(range: range, detector: .email))
                    resume[Detector.email.ordinal] = range.upperBound
                case ASCII.plus:
                    attempt(.phone, at: i, PhoneScanner.matchInternational)
                case ASCII.openParen:
                    attempt(.phone, at: i, PhoneScanner.matchNorthAmerican)
                case ASCII.colon:
                    if v.startsToken(i) { attempt(.ipAddress, at: i, IPScanner.matchIPv6) }
                case ASCII.dash:
                    if v[i - 1] != ASCII.dash { attempt(.secret, at: i, SecretScanner.matchPEM) }
                default:
                    break
                }
            }
        }
        return merged(spans)
    }

    /// Sorted by start, overlapping spans joined: every byte any detector flagged is masked, and
    /// masking never has to deal with nested spans.
    static func merged(_ spans: [DetectedSpan]) -> [DetectedSpan] {
        guard spans.count > 1 else { return spans }
        let sorted = spans.sorted { a, b in
            a.range.lowerBound != b.range.lowerBound
                ? a.range.lowerBound < b.range.lowerBound
                : a.range.upperBound > b.range.upperBound
        }
        var result: [DetectedSpan] = []
        result.reserveCapacity(sorted.count)
        for span in sorted {
            if let last = result.last, span.range.lowerBound < last.range.upperBound {
                if span.range.upperBound > last.range.upperBound {
                    result[result.count - 1].range = last.range.lowerBound..<span.range.upperBound
                }
            } else {
                result.append(span)
            }
        }
        return result
    }
}

import Crypto
import protocol Foundation.ContiguousBytes

/// Applies masking strategies to whole values and to the sensitive spans detectors find.
///
/// Holds only the keyed-hash key; cheap to copy and safe to share between threads.
public struct ValueMasker: Sendable {
    /// What `.redact` produces.
    public static let redactionMarker = "[redacted]"
    /// What every `.keyedHash` output starts with.
    public static let hashPrefix = "h:"
    /// Hex digits of the HMAC kept by `.keyedHash`.
    public static let hashHexDigits = 16

    private let key: SymmetricKey

    /// `hashKey` is the secret for `.keyedHash`; configuration should supply at least 32 random
    /// bytes. Anyone who knows it can confirm guesses of masked values.
    public init(hashKey: some ContiguousBytes) {
        key = SymmetricKey(data: hashKey)
    }

    // MARK: Whole values

    /// Masks a whole value.
    public func mask(_ value: String, strategy: MaskStrategy) -> String {
        var value = value
        return value.withUTF8 { String(decoding: mask(buffer: $0, strategy: strategy), as: UTF8.self) }
    }

    /// Masks a whole value given as UTF-8 bytes. Invalid UTF-8 is accepted: `.redact` and
    /// `.keyedHash` do not look at the text, and `.partial` reads it with U+FFFD replacing
    /// ill-formed sequences, so the output is always valid UTF-8.
    public func mask(utf8 bytes: some Collection<UInt8>, strategy: MaskStrategy) -> [UInt8] {
        withContiguous(bytes) { mask(buffer: $0, strategy: strategy) }
    }

    private func mask(buffer: UnsafeBufferPointer<UInt8>, strategy: MaskStrategy) -> [UInt8] {
        var out: [UInt8] = []
        append(masking: buffer, strategy: strategy, to: &out)
        return out
    }

    // MARK: Detection

    /// Sensitive spans in `bytes`, sorted and non-overlapping, with offsets from the start of
    /// `bytes`; empty when none. Any bytes are accepted (invalid UTF-8 included); time is linear
    /// in the length.
    public func detect(in bytes: some Collection<UInt8>, detectors: Set<Detector> = Set(Detector.allCases)) -> [DetectedSpan] {
        withContiguous(bytes) { DetectionEngine.detect($0, detectors: detectors) }
    }

    /// Sensitive spans in raw memory (a NIO buffer's readable bytes, for instance).
    public func detect(in buffer: UnsafeRawBufferPointer, detectors: Set<Detector> = Set(Detector.allCases)) -> [DetectedSpan] {
        DetectionEngine.detect(buffer.assumingMemoryBound(to: UInt8.self), detectors: detectors)
    }

    /// Sensitive spans in `text`, with UTF-8 offsets.
    public func detect(in text: String, detectors: Set<Detector> = Set(Detector.allCases)) -> [DetectedSpan] {
        detect(in: text.utf8, detectors: detectors)
    }

    // MARK: Masking what was detected

    /// `bytes` with each detected span replaced by its masked form (the strategy applied to the
    /// span's text alone); nil when nothing was detected, so callers can pass the original bytes
    /// on without copying. Valid UTF-8 in gives valid UTF-8 out.
    public func maskDetected(
        in bytes: some Collection<UInt8>, detectors: Set<Detector> = Set(Detector.allCases), strategy: MaskStrategy
    ) -> [UInt8]? {
        withContiguous(bytes) { maskDetected(buffer: $0, detectors: detectors, strategy: { _ in strategy }) }
    }

    /// As `maskDetected(in:detectors:strategy:)`, with a strategy chosen per detector.
    public func maskDetected(
        in bytes: some Collection<UInt8>, detectors: Set<Detector> = Set(Detector.allCases),
        strategy: (Detector) -> MaskStrategy
    ) -> [UInt8]? {
        withContiguous(bytes) { maskDetected(buffer: $0, detectors: detectors, strategy: strategy) }
    }

    /// As `maskDetected(in:detectors:strategy:)`, over raw memory.
    public func maskDetected(
        in buffer: UnsafeRawBufferPointer, detectors: Set<Detector> = Set(Detector.allCases), strategy: MaskStrategy
    ) -> [UInt8]? {
        maskDetected(buffer: buffer.assumingMemoryBound(to: UInt8.self), detectors: detectors, strategy: { _ in strategy })
    }

    /// As `maskDetected(in:detectors:strategy:)`, for a string; nil when nothing was detected.
    public func maskDetected(
        in text: String, detectors: Set<Detector> = Set(Detector.allCases), strategy: MaskStrategy
    ) -> String? {
        maskDetected(in: text.utf8, detectors: detectors, strategy: strategy).map { String(decoding: $0, as: UTF8.self) }
    }

    private func maskDetected(
        buffer: UnsafeBufferPointer<UInt8>, detectors: Set<Detector>, strategy: (Detector) -> MaskStrategy
    ) -> [UInt8]? {
        let spans = DetectionEngine.detect(buffer, detectors: detectors)
        guard !spans.isEmpty else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(buffer.count)
        var cursor = 0
        for span in spans {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[cursor..<span.range.lowerBound]))
            append(masking: UnsafeBufferPointer(rebasing: buffer[span.range]), strategy: strategy(span.detector), to: &out)
            cursor = span.range.upperBound
        }
        out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[cursor...]))
        return out
    }

    // MARK: Strategies

    private func append(masking value: UnsafeBufferPointer<UInt8>, strategy: MaskStrategy, to out: inout [UInt8]) {
        switch strategy {
        case .redact:
            out.append(contentsOf: Self.redactionMarker.utf8)
        case .keyedHash:
            appendKeyedHash(of: value, to: &out)
        case .partial(let keep):
            PartialMask.append(masking: value, keep: keep, to: &out)
        }
    }

    private func appendKeyedHash(of value: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        let code = HMAC<SHA256>.authenticationCode(for: UnsafeRawBufferPointer(value), using: key)
        let hex: StaticString = "0123456789abcdef"
        out.append(contentsOf: Self.hashPrefix.utf8)
        for byte in code.prefix(Self.hashHexDigits / 2) {
            out.append(hex.utf8Start[Int(byte >> 4)])
            out.append(hex.utf8Start[Int(byte & 0x0F)])
        }
    }

    private func withContiguous<Bytes: Collection<UInt8>, R>(_ bytes: Bytes, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let result = bytes.withContiguousStorageIfAvailable(body) { return result }
        return Array(bytes).withUnsafeBufferPointer(body)
    }
}

/// The `.partial` strategy.
enum PartialMask {
    /// Characters kept as they are: they carry format, not identity.
    @inline(__always) static func isSeparator(_ b: UInt8) -> Bool {
        switch b {
        case ASCII.space, ASCII.dash, ASCII.dot, ASCII.plus, ASCII.openParen, ASCII.closeParen, ASCII.colon,
             UInt8(ascii: "/"), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
            true
        default: false
        }
    }

    /// How many trailing significant characters `.partial(keep:)` reveals out of `significant`.
    static func revealed(significant: Int, keep: Int) -> Int {
        significant <= keep ? 0 : min(keep, significant / 2)
    }

    static func append(masking value: UnsafeBufferPointer<UInt8>, keep: Int, to out: inout [UInt8]) {
        let keep = max(0, keep)
        // Bytes are characters when the value is ASCII (the common case: numbers, codes, addresses).
        if !value.contains(where: { $0 >= 0x80 }) {
            var significant = 0
            for b in value where !isSeparator(b) { significant += 1 }
            if significant == 0 {
                out.append(contentsOf: repeatElement(ASCII.asterisk, count: value.count))
                return
            }
            var toMask = significant - revealed(significant: significant, keep: keep)
            for b in value {
                if isSeparator(b) {
                    out.append(b)
                } else if toMask > 0 {
                    out.append(ASCII.asterisk)
                    toMask -= 1
                } else {
                    out.append(b)
                }
            }
            return
        }
        // Otherwise by grapheme cluster, reading ill-formed sequences as U+FFFD.
        let text = String(decoding: value, as: UTF8.self)
        func separator(_ c: Character) -> Bool {
            guard let ascii = c.asciiValue else { return false }
            return isSeparator(ascii)
        }
        var significant = 0
        var characters = 0
        for c in text {
            characters += 1
            if !separator(c) { significant += 1 }
        }
        if significant == 0 {
            out.append(contentsOf: repeatElement(ASCII.asterisk, count: characters))
            return
        }
        var toMask = significant - revealed(significant: significant, keep: keep)
        for c in text {
            if separator(c) {
                out.append(contentsOf: c.utf8)
            } else if toMask > 0 {
                out.append(ASCII.asterisk)
                toMask -= 1
            } else {
                out.append(contentsOf: c.utf8)
            }
        }
    }
}

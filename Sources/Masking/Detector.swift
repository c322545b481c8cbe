/// A kind of sensitive value the scanners can find in text.
///
/// The raw values are the names used in configuration files.
public enum Detector: String, Sendable, Hashable, CaseIterable, Codable {
    /// `local@domain.tld`: a practical subset of RFC 5322 (dot-atom local part of letters, digits
    /// and `._%+-'`, at most 64 bytes; two or more domain labels, at most 253 bytes; an alphabetic
    /// or `xn--` top-level label). Letters and digits outside ASCII are accepted (EAI / IDN).
    case email
    /// E.164 (`+` and 8–15 digits, with single spaces, dashes, dots or one pair of parentheses
    /// between digits) and North American numbers: `(555) 123-4567`, `555-123-4567`,
    /// `555.123.4567`, optionally with a leading `1-` / `1.` / `1 `.
    case phone
    /// Payment card numbers: 13–19 digits, bare or in groups of 3–6 separated by single spaces or
    /// single dashes, with a known issuer prefix and length, passing the Luhn check.
    case paymentCard = "card"
    /// US Social Security numbers in the dashed form `AAA-GG-SSSS` only, with the ranges the SSA
    /// never issues excluded.
    case usSSN = "ssn"
    /// UK National Insurance numbers and Spanish DNI / NIE numbers (with their check letter).
    case nationalID = "national_id"
    /// IBANs (uppercase, compact or in groups of four) with a known country, that country's
    /// length and a valid ISO 13616 mod-97 check.
    case iban
    /// IPv4 dotted quads and IPv6 addresses (full, compressed, with an embedded IPv4).
    case ipAddress = "ip"
    /// Credentials with a recognisable shape: cloud and SaaS tokens, JWTs, PEM private keys.
    case secret

    /// A small dense index, for per-detector bookkeeping without dictionaries.
    var ordinal: Int {
        switch self {
        case .email: 0
        case .phone: 1
        case .paymentCard: 2
        case .usSSN: 3
        case .nationalID: 4
        case .iban: 5
        case .ipAddress: 6
        case .secret: 7
        }
    }
}

/// A sensitive substring found by a detector.
public struct DetectedSpan: Sendable, Hashable {
    /// UTF-8 byte offsets from the start of the scanned bytes (0-based even when the scanned
    /// collection was a slice). Always on scalar boundaries when the input was valid UTF-8.
    public var range: Range<Int>
    /// The detector that found the span. When spans of different detectors overlap they are
    /// merged into one and this is the detector of the earliest-starting span.
    public var detector: Detector

    public init(range: Range<Int>, detector: Detector) {
        self.range = range
        self.detector = detector
    }
}

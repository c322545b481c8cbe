import Foundation
import GatehouseCore
import Masking
import Policy

// Inline masking of HTTP responses: when the policy's mask rules apply to a request, its response
// body is rewritten on the way to the client, chunk by chunk, in bounded memory, and what the
// gateway cannot read is withheld rather than passed on. Everything here is pure (no I/O); the
// proxy decides the mode from the response head, feeds the body through a `ResponseMasker` and
// records what the client received.
//
// Semantics:
// - JSON bodies (`application/json`, `*/*+json`, `text/json`, NDJSON / JSON lines): a string,
//   number or boolean at a path a rule's `json_paths` select (or below it: `$.card` covers every
//   scalar inside the `card` object) is masked whole with that rule's strategy (the first such
//   rule in policy order). Strings and numbers become a JSON string holding the masked text (a
//   number's digits never survive, and its type changes to string); booleans become `null`
//   (`partial` of `false` would tell it from `true`). Every other string and number is run
//   through the rules' detectors, and what they find is masked with the strategy of the first
//   rule naming that detector. Object keys are never masked. Paths compare names exactly (case
//   matters, as in RFC 9535). Malformed JSON, or an inspected value over `JSONLimits`, cuts the
//   response (the client sees an aborted body) and is recorded.
// - Other text (`text/*`, XML, form data, JavaScript, CSV, YAML…): detectors only (JSON paths
//   mean nothing there, so text passes untouched when the rules have no detectors); see
//   `TextStreamMasker` for the bounds across chunk boundaries.
// - Anything else is withheld with 502 while masks apply: a body compressed with a
//   Content-Encoding other than identity (the gateway asks for identity, so only an upstream
//   that ignores that sends one), a binary or unknown Content-Type (images, PDFs, archives,
//   protobuf, multipart: their bytes can carry the same data, unreadable to the detectors; a
//   rule's `http.paths` can exempt such endpoints), a text charset that is not ASCII-compatible
//   (UTF-16 hides every value from the byte-level detectors), a partial (206) response, and a
//   body without a Content-Type.
// - A rewritten body loses Content-Length (it is sent chunked) and every header describing the
//   upstream's bytes (ETag, digests, Accept-Ranges, Content-Range): they would be wrong, and a
//   digest of the unmasked body lets anyone confirm a guess of it.
// - Response header values are run through the detectors too (a `Location` carrying an email).
// - The forwarded request asks for `Accept-Encoding: identity` and no byte range, so a readable,
//   whole body comes back.
// - The response event records the masked bytes (what the client received) and a `mask`
//   decision naming the rules that masked something and how many values.

/// Why a response could not be masked. The description never holds response content.
struct ResponseMaskingError: Error, Sendable, Equatable, CustomStringConvertible {
    var description: String
}

/// The mask rules in force for one request, compiled for its response.
struct ResponseMaskRules: Sendable {
    struct PathRule: Sendable {
        var rule: Int
        var pattern: JSONPathPattern
        var strategy: MaskStrategy
    }

    /// Rule names in policy order; every `rule` index below points here.
    let names: [String]
    let paths: [PathRule]
    let detectors: Set<Detector>
    /// Per detector, the first rule naming it, and that rule's strategy.
    let detectorRules: [Detector: (rule: Int, strategy: MaskStrategy)]
    /// A `json_paths` entry that does not parse, with its rule: the rule cannot be applied.
    let unreadablePath: (rule: String, pattern: String)?

    /// The rules that can apply to an HTTP response (JSON paths or detectors; a rule with
    /// columns only is about SQL results); nil when there are none.
    static func forResponses(_ masks: [NamedMask]) -> ResponseMaskRules? {
        let applicable = masks.filter { !$0.action.jsonPaths.isEmpty || !$0.action.detectors.isEmpty }
        return applicable.isEmpty ? nil : ResponseMaskRules(applicable)
    }

    init(_ masks: [NamedMask]) {
        var names: [String] = []
        var paths: [PathRule] = []
        var detectors: Set<Detector> = []
        var detectorRules: [Detector: (rule: Int, strategy: MaskStrategy)] = [:]
        var unreadable: (rule: String, pattern: String)?
        for mask in masks {
            let index = names.count
            names.append(mask.rule)
            for text in mask.action.jsonPaths {
                if let pattern = JSONPathPattern(text) {
                    paths.append(PathRule(rule: index, pattern: pattern, strategy: mask.action.strategy))
                } else if unreadable == nil {
                    unreadable = (mask.rule, text)
                }
            }
            for detector in mask.action.detectors where detectorRules[detector] == nil {
                detectorRules[detector] = (index, mask.action.strategy)
            }
            detectors.formUnion(mask.action.detectors)
        }
        self.names = names
        self.paths = paths
        self.detectors = detectors
        self.detectorRules = detectorRules
        self.unreadablePath = unreadable
    }

    /// The first rule whose JSON paths select `path` or a container it lies in.
    func pathRule(for path: [JSONPathComponent]) -> PathRule? {
        paths.first { $0.pattern.matches(path, includingDescendants: true) }
    }

    func strategy(for detector: Detector) -> MaskStrategy {
        detectorRules[detector]?.strategy ?? .redact
    }

    /// What a JSON scalar becomes; counts the rule that masked it.
    func decide(
        _ path: [JSONPathComponent], _ value: JSONScalar, masker: ValueMasker, tally: inout MaskTally
    ) -> JSONStreamMasker.Decision {
        if let rule = pathRule(for: path) {
            tally.count(rule: rule.rule, byPath: true)
            switch value {
            case .string(let text), .number(let text): return .replace(masker.mask(text, strategy: rule.strategy))
            case .bool: return .replaceWithNull
            }
        }
        guard !detectors.isEmpty else { return .keep }
        switch value {
        case .string(let text), .number(let text):
            var text = text
            let masked = text.withUTF8 { bytes -> [UInt8]? in
                let spans = masker.detect(in: bytes, detectors: detectors)
                guard !spans.isEmpty else { return nil }
                var out: [UInt8] = []
                out.reserveCapacity(bytes.count)
                appendMasking(bytes, upTo: bytes.count, spans: spans[...], masker: masker, tally: &tally, into: &out)
                return out
            }
            return masked.map { .replace(String(decoding: $0, as: UTF8.self)) } ?? .keep
        case .bool:
            return .keep
        }
    }

    /// `bytes[..<end]` with every span inside it masked with its detector's strategy.
    func appendMasking(
        _ bytes: UnsafeBufferPointer<UInt8>, upTo end: Int, spans: ArraySlice<DetectedSpan>, masker: ValueMasker,
        tally: inout MaskTally, into out: inout [UInt8]
    ) {
        var cursor = 0
        for span in spans where span.range.upperBound <= end {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[cursor..<span.range.lowerBound]))
            out.append(contentsOf: masker.mask(utf8: UnsafeBufferPointer(rebasing: bytes[span.range]), strategy: strategy(for: span.detector)))
            if let rule = detectorRules[span.detector]?.rule { tally.count(rule: rule, byPath: false) }
            cursor = span.range.upperBound
        }
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[cursor..<end]))
    }

    /// Text with what the detectors find masked (header values); nil when nothing was found.
    func maskDetected(in text: String, masker: ValueMasker, tally: inout MaskTally) -> String? {
        guard !detectors.isEmpty else { return nil }
        var text = text
        return text.withUTF8 { bytes -> String? in
            let spans = masker.detect(in: bytes, detectors: detectors)
            guard !spans.isEmpty else { return nil }
            var out: [UInt8] = []
            appendMasking(bytes, upTo: bytes.count, spans: spans[...], masker: masker, tally: &tally, into: &out)
            return String(decoding: out, as: UTF8.self)
        }
    }

    /// The response event's decision: `mask` naming the rules that masked something, or the
    /// request's decision noting that the rules in force found nothing.
    func decision(after tally: MaskTally, request: Decision) -> Decision {
        let used = names.indices.filter { tally.total(rule: $0) > 0 }
        let allowed = request.rule.map { "; the request was allowed by rule \($0)" } ?? ""
        guard !used.isEmpty else {
            let inForce = names.count == 1 ? "mask rule \(names[0])" : "mask rules \(names.joined(separator: ", "))"
            return Decision(effect: request.effect, rule: request.rule, reason: (request.reason ?? "allowed") + "; \(inForce) found nothing to mask")
        }
        let parts = used.map { index -> String in
            var how: [String] = []
            if tally.byPath[index] > 0 { how.append("\(tally.byPath[index]) by JSON path") }
            if tally.byDetector[index] > 0 { how.append("\(tally.byDetector[index]) by detector") }
            return "\(names[index]) (\(how.joined(separator: ", ")))"
        }
        let total = used.reduce(0) { $0 + tally.total(rule: $1) }
        return Decision(
            effect: .mask, rule: used.map { names[$0] }.joined(separator: ","),
            reason: "\(total) value\(total == 1 ? "" : "s") masked by rule\(used.count == 1 ? "" : "s") \(parts.joined(separator: "; "))\(allowed)")
    }

    /// How the refusal of an unreadable response is recorded.
    func withheld(_ reason: String) -> Decision {
        .deny(rule: names.joined(separator: ","), reason: "the response could not be masked (\(reason)); it was withheld")
    }
}

/// Masked values per rule, by JSON path and by detector.
struct MaskTally: Sendable, Equatable {
    var byPath: [Int]
    var byDetector: [Int]

    init(rules: Int) {
        byPath = Array(repeating: 0, count: rules)
        byDetector = Array(repeating: 0, count: rules)
    }

    mutating func count(rule: Int, byPath path: Bool) {
        if path { byPath[rule] += 1 } else { byDetector[rule] += 1 }
    }

    func total(rule: Int) -> Int { byPath[rule] + byDetector[rule] }

    mutating func add(_ other: MaskTally) {
        for index in byPath.indices where index < other.byPath.count {
            byPath[index] += other.byPath[index]
            byDetector[index] += other.byDetector[index]
        }
    }
}

// MARK: - What to do with a response

enum ResponseMaskMode: Equatable, Sendable {
    /// The body passes untouched: there is none, or nothing in force can apply to it (text
    /// when the rules have JSON paths only).
    case untouched
    case json
    case text
    /// The body cannot be masked and is not sent; the reason is for the client and the trail.
    case withhold(String)

    var rewritesBody: Bool { self == .json || self == .text }
}

enum ResponseMasking {
    /// The mode for a response, from its head.
    static func mode(
        status: Int, contentType: String?, contentEncodings: [String], transferEncodings: [String],
        declaredLength: Int?, hasDetectors: Bool, hasPaths: Bool = false
    ) -> ResponseMaskMode {
        // No content by definition.
        if status == 204 || status == 304 || (100..<200).contains(status) { return .untouched }
        for coding in codings(contentEncodings) where coding != "identity" {
            return .withhold("it is \(coding)-encoded")
        }
        for coding in codings(transferEncodings) where coding != "chunked" && coding != "identity" {
            return .withhold("its transfer coding is \(coding)")
        }
        if declaredLength == 0 { return .untouched }
        if status == 206 { return .withhold("it is a partial response") }
        guard let contentType, let media = MediaType(contentType) else { return .withhold("it has no content type") }
        switch media.kind {
        case .json:
            guard media.charsetIsUTF8 else { return .withhold("its charset is \(media.charset ?? "")") }
            return .json
        case .text:
            guard media.charsetIsASCIICompatible else { return .withhold("its charset is \(media.charset ?? "")") }
            // A field masked by JSON path would go out unmasked in any other representation of
            // the same data (CSV, XML, ?format=…).
            if hasPaths { return .withhold("JSON-path masks apply and it is \(media.type), not JSON") }
            return hasDetectors ? .text : .untouched
        case .other:
            return .withhold("the gateway cannot read \(media.type) content")
        }
    }

    private static func codings(_ values: [String]) -> [String] {
        values.flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            .filter { !$0.isEmpty }
    }

    /// The forwarded request's headers while masks apply: the body must come back readable and
    /// whole, so the client's Accept-Encoding and range requests give way to `identity`.
    static func upstreamFields(_ fields: HeaderShaping.Fields) -> HeaderShaping.Fields {
        var kept = fields.filter { field in
            let name = field.name.lowercased()
            return name != "accept-encoding" && name != "range" && name != "if-range"
        }
        kept.append(("Accept-Encoding", "identity"))
        return kept
    }

    /// Headers that describe the upstream's exact bytes, dropped when the body is rewritten.
    static let describingUpstreamBytes: Set<String> = [
        "content-length", "etag", "content-md5", "digest", "content-digest", "repr-digest", "accept-ranges", "content-range",
    ]

    /// Headers the detectors never rewrite: the gateway itself reads them.
    static let structural: Set<String> = ["content-type", "content-encoding", "transfer-encoding", "content-length"]

    /// The response headers for the client while masks apply: detected values masked in every
    /// value, and the headers about the upstream's bytes gone when the body is rewritten.
    static func downstreamFields(
        _ fields: HeaderShaping.Fields, rewritingBody: Bool, rules: ResponseMaskRules, masker: ValueMasker, tally: inout MaskTally
    ) -> HeaderShaping.Fields {
        var out: HeaderShaping.Fields = []
        for field in fields {
            let name = field.name.lowercased()
            if rewritingBody && describingUpstreamBytes.contains(name) { continue }
            if !structural.contains(name), let masked = rules.maskDetected(in: field.value, masker: masker, tally: &tally) {
                out.append((field.name, masked))
            } else {
                out.append(field)
            }
        }
        return out
    }
}

/// A Content-Type, as far as masking needs it.
struct MediaType: Equatable {
    enum Kind { case json, text, other }

    /// `type/subtype`, lower case, no parameters.
    var type: String
    var charset: String?

    init?(_ header: String) {
        let parts = header.split(separator: ";", omittingEmptySubsequences: false)
        let type = parts[0].trimmingCharacters(in: .whitespaces).lowercased()
        guard type.split(separator: "/", omittingEmptySubsequences: false).count == 2 else { return nil }
        self.type = type
        for parameter in parts.dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces).lowercased() == "charset" else { continue }
            charset = pair[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: .init(charactersIn: "\"")).lowercased()
        }
    }

    static let jsonTypes: Set<String> = [
        "application/json", "text/json", "application/x-json", "application/x-ndjson", "application/ndjson",
        "application/jsonl", "application/x-jsonl", "application/jsonlines", "application/x-jsonlines", "application/json-lines",
    ]

    static let textTypes: Set<String> = [
        "application/xml", "application/x-www-form-urlencoded", "application/javascript", "application/x-javascript",
        "application/ecmascript", "application/csv", "application/yaml", "application/x-yaml", "application/toml",
        "application/sql", "application/graphql", "application/x-sh", "application/x-httpd-php",
    ]

    var kind: Kind {
        if Self.jsonTypes.contains(type) || type.hasSuffix("+json") { return .json }
        if type.hasPrefix("text/") || Self.textTypes.contains(type) || type.hasSuffix("+xml") || type.hasSuffix("+yaml") {
            return .text
        }
        return .other
    }

    /// JSON is UTF-8 (RFC 8259); a label saying otherwise is not believed to be readable.
    var charsetIsUTF8: Bool { charset == nil || charset == "utf-8" || charset == "utf8" || charset == "us-ascii" }

    /// Charsets whose bytes for ASCII characters are ASCII, so the detectors see digits and `@`.
    var charsetIsASCIICompatible: Bool {
        guard let charset else { return true }
        if charsetIsUTF8 || charset == "ascii" || charset == "latin1" || charset == "iso-latin-1" { return true }
        return charset.hasPrefix("iso-8859-") || charset.hasPrefix("windows-125") || charset.hasPrefix("cp125")
    }
}

// MARK: - Masking a body

/// Limits of the JSON rewriter: an inspected string or number is held until it ends, so these
/// bound the memory one response can take; a value over them cuts the response.
enum JSONLimits {
    static let maxDepth = 128
    static let maxValueBytes = 1 << 20
    static let maxKeyBytes = 1 << 16
}

/// Rewrites one response body as it streams. Not thread-safe: one per response, used by the task
/// that streams it.
struct ResponseMasker {
    private final class Box {
        var tally: MaskTally
        init(_ tally: MaskTally) { self.tally = tally }
    }

    // One of the two is set; kept as optionals so they are mutated in place, never copied.
    private var json: JSONStreamMasker?
    private var text: TextStreamMasker?
    private let box: Box

    /// Values masked so far (with those of the headers when `init` was given their tally).
    var tally: MaskTally {
        var tally = box.tally
        if let text { tally.add(text.tally) }
        return tally
    }

    /// A JSON rewriter when `json`, else a text one; `tally` carries counts made before (headers).
    init(json: Bool, rules: ResponseMaskRules, masker: ValueMasker, tally: MaskTally? = nil,
         textWindow: Int = TextStreamMasker.defaultWindow, textMaxHeld: Int = TextStreamMasker.defaultMaxHeld) {
        let box = Box(tally ?? MaskTally(rules: rules.names.count))
        self.box = box
        if json {
            // With detectors every value is read; with paths only, just what they select.
            let inspect: JSONStreamMasker.InspectFunction? = rules.detectors.isEmpty
                ? { path in rules.pathRule(for: path) != nil } : nil
            self.json = JSONStreamMasker(
                maxDepth: JSONLimits.maxDepth, maxValueBytes: JSONLimits.maxValueBytes, maxKeyBytes: JSONLimits.maxKeyBytes,
                shouldInspect: inspect,
                mask: { path, value in rules.decide(path, value, masker: masker, tally: &box.tally) })
        } else {
            self.text = TextStreamMasker(rules: rules, masker: masker, window: textWindow, maxHeld: textMaxHeld)
        }
    }

    /// The masked bytes to send for the next chunk (possibly none yet).
    mutating func feed(_ bytes: some Collection<UInt8>) throws(ResponseMaskingError) -> [UInt8] {
        if json != nil {
            do {
                return try json!.feed(bytes)
            } catch {
                throw ResponseMaskingError(description: error.description)
            }
        }
        return try text!.feed(bytes)
    }

    /// The last bytes; throws when the body ended in the middle of a JSON value.
    mutating func finish() throws(ResponseMaskingError) -> [UInt8] {
        if json != nil {
            do {
                return try json!.finish()
            } catch {
                throw ResponseMaskingError(description: error.description)
            }
        }
        return text!.finish()
    }
}

/// Detector masking of a text stream, correct across chunk boundaries in bounded memory.
///
/// Bytes are held back until no sensitive value can straddle the point they are sent up to:
/// - through the last line break (no detector's value spans lines, except PEM keys, below);
/// - once `2 × window` bytes are held, all but the last `window`, moved back to just after the
///   last whitespace before that point, so a token that is still arriving is held whole;
/// - and never into a detected value, nor from a detected value that reaches the end of what is
///   held (it may go on: a PEM key waiting for its END line, a card waiting for its last digits).
///
/// So any value up to `window` bytes (4 KiB by default; the longest bounded detector values —
/// emails, IBANs, tokens — are a few hundred bytes) is masked wherever chunks split it, and
/// memory stays within `2 × window` plus one chunk; a value still open after `maxHeld` bytes
/// (64 KiB: a very long PEM key) cannot be held and cuts the response. A whitespace-free token
/// longer than `window` may be split and escape a detector that needs all of it (a huge JWT).
struct TextStreamMasker {
    static let defaultWindow = 4096
    static let defaultMaxHeld = 64 * 1024

    let rules: ResponseMaskRules
    let masker: ValueMasker
    let window: Int
    let maxHeld: Int
    private(set) var tally: MaskTally
    private var pending: [UInt8] = []

    init(rules: ResponseMaskRules, masker: ValueMasker, window: Int = defaultWindow, maxHeld: Int = defaultMaxHeld) {
        self.rules = rules
        self.masker = masker
        self.window = max(1, window)
        self.maxHeld = max(2 * self.window, maxHeld)
        tally = MaskTally(rules: rules.names.count)
    }

    /// Bytes currently held back.
    var heldByteCount: Int { pending.count }

    mutating func feed(_ bytes: some Collection<UInt8>) throws(ResponseMaskingError) -> [UInt8] {
        pending.append(contentsOf: bytes)
        var cut = 0
        if let newline = pending.lastIndex(of: UInt8(ascii: "\n")) { cut = newline + 1 }
        if pending.count >= 2 * window {
            var byWindow = pending.count - window
            if let space = pending[..<byWindow].lastIndex(where: Self.isWhitespace) { byWindow = space + 1 }
            cut = max(cut, byWindow)
        }
        guard cut > 0 else { return [] }
        let count = pending.count
        let output = pending.withUnsafeBufferPointer { bytes -> [UInt8] in
            let spans = masker.detect(in: bytes, detectors: rules.detectors)
            if let open = spans.first(where: { $0.range.lowerBound < cut && ($0.range.upperBound > cut || $0.range.upperBound == count) }) {
                cut = open.range.lowerBound
            }
            guard cut > 0 else { return [] }
            var out: [UInt8] = []
            out.reserveCapacity(cut)
            rules.appendMasking(bytes, upTo: cut, spans: spans[...], masker: masker, tally: &tally, into: &out)
            return out
        }
        if cut > 0 { pending.removeFirst(cut) }
        if pending.count > maxHeld {
            pending = []
            throw ResponseMaskingError(description: "a detected value runs past the \(maxHeld) bytes the gateway holds back")
        }
        return output
    }

    /// Everything still held, masked.
    mutating func finish() -> [UInt8] {
        defer { pending = [] }
        return pending.withUnsafeBufferPointer { bytes in
            let spans = masker.detect(in: bytes, detectors: rules.detectors)
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count)
            rules.appendMasking(bytes, upTo: bytes.count, spans: spans[...], masker: masker, tally: &tally, into: &out)
            return out
        }
    }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }
}

import GatehouseCore

// MARK: - Paths

/// One step on the way from the root of a JSON document to a value: an object member or an
/// array position (counted from 0).
public enum JSONPathComponent: Sendable, Hashable, CustomStringConvertible {
    case key(String)
    case index(Int)

    public var description: String {
        switch self {
        case .key(let name): "['\(JSONPathPattern.quoted(name))']"
        case .index(let position): "[\(position)]"
        }
    }

    /// Renders a path in the pattern syntax, e.g. `$.customers[3].email` — for logs and audit.
    /// Keys that are not plain names are written quoted: `$['a b']`.
    public static func render(_ path: [JSONPathComponent]) -> String {
        var text = "$"
        for component in path {
            switch component {
            case .key(let name) where JSONPathPattern.isPlainName(name): text += ".\(name)"
            default: text += component.description
            }
        }
        return text
    }
}

/// A field-path pattern over JSON documents, a small subset of JSONPath (RFC 9535):
///
/// - `$` the root; every pattern starts with it.
/// - `.name` a member; names are any characters except `.`, `[`, `]`, quotes and whitespace.
/// - `['any name']` or `["any name"]` a member by quoted name; `\` escapes the next character.
/// - `.*` or `[*]` any member of an object and any element of an array.
/// - `[N]` the element at position N (from 0) of an array. It never matches an object member
///   named "N"; write `['N']` for that.
/// - `..` followed by a name, `*` or a bracket: that selector at any depth below, e.g.
///   `$..email` matches `email` members anywhere.
///
/// Names are compared exactly (case-sensitive, no Unicode normalization) unless the pattern is
/// made with `caseInsensitive: true`, which compares the `lowercased()` forms. Keys of the
/// document are decoded before matching, so `{"e\u006dail": …}` is the member `email`.
public struct JSONPathPattern: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    public let isCaseInsensitive: Bool
    private let segments: [Segment]
    private let hasDescendantSegment: Bool

    private enum Selector: Sendable, Hashable {
        case name(String)
        case index(Int)
        case wildcard
    }

    private struct Segment: Sendable, Hashable {
        /// `..`: the selector applies at this depth or any depth below.
        var descendant: Bool
        var selector: Selector
    }

    /// Nil when `text` is not a valid pattern.
    public init?(_ text: String, caseInsensitive: Bool = false) {
        guard let segments = Self.parse(Array(text.unicodeScalars), caseInsensitive: caseInsensitive) else {
            return nil
        }
        self.text = text
        self.isCaseInsensitive = caseInsensitive
        self.segments = segments
        self.hasDescendantSegment = segments.contains { $0.descendant }
    }

    public var description: String { text }

    /// Whether the pattern selects exactly the value at `path`.
    public func matches(_ path: [JSONPathComponent]) -> Bool {
        matches(path, includingDescendants: false)
    }

    /// With `includingDescendants`, also true when the pattern selects an ancestor of `path`
    /// (a container the value lies in) — for rules that cover everything below a member.
    public func matches(_ path: [JSONPathComponent], includingDescendants: Bool) -> Bool {
        if !hasDescendantSegment {
            // One selector per component: a straight comparison.
            guard includingDescendants ? path.count >= segments.count : path.count == segments.count else { return false }
            for (segment, component) in zip(segments, path) where !select(segment.selector, component) { return false }
            return true
        }
        if path.count < 64 { return matchesShallow(path, includingDescendants: includingDescendants) }
        return matchesGeneral(path, includingDescendants: includingDescendants)
    }

    /// Set-of-positions matching over any depth (internal for tests to compare against).
    func matchesGeneral(_ path: [JSONPathComponent], includingDescendants: Bool) -> Bool {
        // positions[d] == true: the segments so far can consume exactly path[0..<d].
        var positions = [Bool](repeating: false, count: path.count + 1)
        positions[0] = true
        for segment in segments {
            var next = [Bool](repeating: false, count: path.count + 1)
            var any = false
            for start in 0..<path.count where positions[start] {
                if segment.descendant {
                    for depth in start..<path.count where select(segment.selector, path[depth]) {
                        next[depth + 1] = true
                        any = true
                    }
                } else if select(segment.selector, path[start]) {
                    next[start + 1] = true
                    any = true
                }
            }
            if !any { return false }
            positions = next
        }
        if includingDescendants { return positions.contains(true) }
        return positions[path.count]
    }

    /// The same as the general case with the positions in a bit set: no allocation.
    private func matchesShallow(_ path: [JSONPathComponent], includingDescendants: Bool) -> Bool {
        let count = path.count
        var positions: UInt64 = 1
        for segment in segments {
            var next: UInt64 = 0
            if segment.descendant {
                // From the shallowest reachable position, any deeper component may match.
                for depth in positions.trailingZeroBitCount..<count where select(segment.selector, path[depth]) {
                    next |= 1 << (depth + 1)
                }
            } else {
                var remaining = positions
                while remaining != 0 {
                    let start = remaining.trailingZeroBitCount
                    remaining &= remaining &- 1
                    if start < count, select(segment.selector, path[start]) { next |= 1 << (start + 1) }
                }
            }
            if next == 0 { return false }
            positions = next
        }
        return includingDescendants || positions & (1 << count) != 0
    }

    private func select(_ selector: Selector, _ component: JSONPathComponent) -> Bool {
        switch (selector, component) {
        case (.wildcard, _): return true
        case (.index(let wanted), .index(let actual)): return wanted == actual
        case (.name(let wanted), .key(let actual)):
            // `wanted` is stored lowercased for case-insensitive patterns.
            return actual == wanted || (isCaseInsensitive && actual.lowercased() == wanted)
        default: return false
        }
    }

    // MARK: Parsing

    private static func parse(_ s: [Unicode.Scalar], caseInsensitive: Bool) -> [Segment]? {
        guard s.first == "$" else { return nil }
        var segments: [Segment] = []
        var i = 1
        while i < s.count {
            var descendant = false
            if s[i] == "." {
                i += 1
                if i < s.count, s[i] == "." {
                    descendant = true
                    i += 1
                }
                guard i < s.count else { return nil }
                if s[i] == "[" {
                    // `.[` is only valid as part of `..[`.
                    guard descendant, let (selector, end) = parseBracket(s, i, caseInsensitive: caseInsensitive) else { return nil }
                    segments.append(Segment(descendant: true, selector: selector))
                    i = end
                    continue
                }
                let start = i
                while i < s.count, s[i] != ".", s[i] != "[" {
                    guard !isExcludedFromName(s[i]) else { return nil }
                    i += 1
                }
                guard i > start else { return nil }
                var name = String(String.UnicodeScalarView(s[start..<i]))
                if name == "*" {
                    segments.append(Segment(descendant: descendant, selector: .wildcard))
                } else {
                    guard !name.unicodeScalars.contains("*") else { return nil }
                    if caseInsensitive { name = name.lowercased() }
                    segments.append(Segment(descendant: descendant, selector: .name(name)))
                }
            } else if s[i] == "[" {
                guard let (selector, end) = parseBracket(s, i, caseInsensitive: caseInsensitive) else { return nil }
                segments.append(Segment(descendant: false, selector: selector))
                i = end
            } else {
                return nil
            }
        }
        return segments
    }

    /// Parses `[...]` starting at `s[i] == "["`; returns the selector and the index after `]`.
    private static func parseBracket(_ s: [Unicode.Scalar], _ start: Int, caseInsensitive: Bool) -> (Selector, Int)? {
        var i = start + 1
        guard i < s.count else { return nil }
        let selector: Selector
        switch s[i] {
        case "*":
            selector = .wildcard
            i += 1
        case "'", "\"":
            let quote = s[i]
            i += 1
            var name = String.UnicodeScalarView()
            while true {
                guard i < s.count else { return nil }
                let c = s[i]
                if c == quote { break }
                if c == "\\" {
                    i += 1
                    guard i < s.count else { return nil }
                }
                name.append(s[i])
                i += 1
            }
            i += 1
            selector = .name(caseInsensitive ? String(name).lowercased() : String(name))
        case "0"..."9":
            var value = 0
            let digitsStart = i
            while i < s.count, ("0"..."9").contains(s[i]) {
                // Far more digits than any real array can be indexed with: reject, never overflow.
                guard i - digitsStart < 15 else { return nil }
                value = value * 10 + Int(s[i].value - 48)
                i += 1
            }
            selector = .index(value)
        default:
            return nil
        }
        guard i < s.count, s[i] == "]" else { return nil }
        return (selector, i + 1)
    }

    private static func isExcludedFromName(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "]", "'", "\"", " ", "\t", "\n", "\r": true
        default: c.value < 0x20
        }
    }

    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name != "*"
            && !name.unicodeScalars.contains { $0 == "." || $0 == "[" || $0 == "*" || isExcludedFromName($0) }
    }

    static func quoted(_ name: String) -> String {
        var out = ""
        for c in name.unicodeScalars {
            if c == "'" || c == "\\" { out.unicodeScalars.append("\\") }
            out.unicodeScalars.append(c)
        }
        return out
    }
}

// MARK: - Values and errors

/// A complete scalar value from the document, as handed to the masking decision.
public enum JSONScalar: Sendable, Hashable {
    /// Decoded (unescaped) content. Escaped lone surrogates (`\uD800`) appear as U+FFFD.
    case string(String)
    /// The number exactly as written, e.g. `-1.50e+3`.
    case number(String)
    /// `true` or `false`. (`null` is never offered: there is nothing to mask.)
    case bool(Bool)
}

/// Why a stream could not be masked. Never contains document content.
public struct JSONStreamMaskingError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// A byte that JSON does not allow at that place (including trailing commas, missing
        /// separators between top-level values, bad literals, misplaced brackets).
        case syntax
        /// Malformed number such as `01`, `1.`, `-`, `1e`.
        case invalidNumber
        /// Backslash followed by anything but `"\/bfnrtu`, or `\u` without four hex digits.
        case invalidEscape
        /// A raw byte below 0x20 inside a string.
        case controlCharacterInString
        /// Bytes inside a string that are not well-formed UTF-8 (overlong forms, encoded
        /// surrogates, stray continuation bytes and truncated sequences included).
        case invalidUTF8
        /// Containers nested deeper than `maxDepth`.
        case tooDeep
        /// An inspected string or number longer than `maxValueBytes`.
        case valueTooLong
        /// An object key longer than `maxKeyBytes`.
        case keyTooLong
        /// `finish()` was called while a value was still open.
        case truncated
        /// `feed` or `finish` was called after `finish()`.
        case alreadyFinished
    }

    public let kind: Kind
    /// Offset in the whole stream (over all chunks) of the byte where the problem was found.
    public let offset: Int

    public init(_ kind: Kind, offset: Int) {
        self.kind = kind
        self.offset = offset
    }

    public var description: String {
        let what: String
        switch kind {
        case .syntax: what = "malformed JSON"
        case .invalidNumber: what = "malformed JSON number"
        case .invalidEscape: what = "invalid escape sequence in JSON string"
        case .controlCharacterInString: what = "unescaped control character in JSON string"
        case .invalidUTF8: what = "invalid UTF-8 in JSON string"
        case .tooDeep: what = "JSON nested too deeply"
        case .valueTooLong: what = "JSON value too long to inspect"
        case .keyTooLong: what = "JSON object key too long"
        case .truncated: what = "JSON document ends early"
        case .alreadyFinished: what = "JSON masker used after finish"
        }
        return "\(what) at byte \(offset)"
    }

    /// The same failure in the form the rest of Gatehouse reports, code `masking.json.<kind>`.
    public var gatehouseError: GatehouseError {
        GatehouseError("masking.json.\(kind.rawValue)", description)
    }
}

// MARK: - The masker

/// Rewrites a JSON byte stream chunk by chunk, replacing scalar values a decision closure asks
/// to replace, and passing everything else through byte for byte.
///
/// - Output equals input exactly when every decision is `.keep` (whitespace, escapes and number
///   spelling are preserved).
/// - Bytes are emitted as soon as they are known to be final. Only a scalar that is being
///   inspected and not yet complete is held back (at most `maxValueBytes`), plus the key of
///   each open object member (each at most `maxKeyBytes`) for the path.
/// - The stream may hold several top-level values separated by whitespace (NDJSON / JSON
///   lines); each one starts at the empty path. A stream of only whitespace is accepted. A UTF-8
///   byte order mark at the very start is passed through.
/// - The input is validated fully (RFC 8259), including UTF-8 inside strings: malformed input
///   throws `JSONStreamMaskingError`. Once an error was thrown, every later call throws it
///   again; the caller is expected to abort the response. Bytes of a held value are never
///   emitted before its decision, so an error never leaks a value that was to be masked.
/// - Not thread-safe; use from one task at a time.
public struct JSONStreamMasker {
    public enum Decision: Sendable, Hashable {
        case keep
        /// Emit this content (unescaped) as a JSON string instead of the value.
        case replace(String)
        case replaceWithNull
    }

    public typealias MaskFunction = (_ path: [JSONPathComponent], _ value: JSONScalar) -> Decision
    public typealias InspectFunction = (_ path: [JSONPathComponent]) -> Bool

    public let maxDepth: Int
    public let maxValueBytes: Int
    public let maxKeyBytes: Int
    /// Top-level values completed so far.
    public private(set) var completedValueCount = 0

    private let mask: MaskFunction
    private let shouldInspect: InspectFunction?

    private enum State: UInt8 {
        case topValue  // between top-level values
        case topAfter  // right after a top-level value: whitespace must follow
        case value  // after `:` or `,` in an array
        case valueOrClose  // after `[`
        case keyOrClose  // after `{`
        case key  // after `,` in an object
        case colon  // after a key
        case afterValue  // after a value inside a container
        case string
        case escape  // after a backslash
        case hex  // inside \uXXXX
        case utf8  // inside a multi-byte UTF-8 sequence
        case number
        case literal
        case byteOrderMark
        case failed
    }

    private enum Token: UInt8 {
        case none
        /// An object key: held (never replaced) so the path can name it.
        case key
        /// A scalar value under inspection: held back until the decision.
        case held
        /// A scalar value passed straight through (not inspected, or `null`).
        case passed
    }

    private enum ScalarKind { case string, number, literal }

    private var state: State = .topValue
    /// Path of the value being parsed; its last component names the current member of the
    /// innermost open container, and its kind (key/index) says whether that is an object.
    private var path: [JSONPathComponent] = []
    private var token: Token = .none
    /// Chunk-relative start of the current token (0 when it began in an earlier chunk).
    private var tokenStart = 0
    private var tokenHasEscape = false
    /// Bytes of the current held token from earlier chunks.
    private var held: [UInt8] = []
    private var numberState: UInt8 = 0
    private var literalKind: UInt8 = 0  // 0 true, 1 false, 2 null
    private var literalPosition = 0
    private var remaining = 0  // hex digits or UTF-8 continuation bytes still expected
    private var utf8Low: UInt8 = 0x80
    private var utf8High: UInt8 = 0xBF
    private var streamOffset = 0
    private var failure: JSONStreamMaskingError?

    /// - Parameters:
    ///   - maxDepth: most containers open at once; deeper input throws `.tooDeep`.
    ///   - maxValueBytes: longest inspected string or number, counted as encoded bytes
    ///     (a string's count includes its quotes). Values not inspected are streamed and not limited.
    ///   - maxKeyBytes: longest object key, encoded (keys are always held for the path).
    ///   - shouldInspect: optional pre-filter by path. When it returns false for a scalar, the
    ///     scalar is streamed through unheld and `mask` is not called for it. Nil inspects all.
    ///   - mask: decides on every complete string, number and boolean value (not keys, not null).
    public init(
        maxDepth: Int = 128,
        maxValueBytes: Int = 1 << 20,
        maxKeyBytes: Int = 1 << 16,
        shouldInspect: InspectFunction? = nil,
        mask: @escaping MaskFunction
    ) {
        self.maxDepth = max(0, maxDepth)
        self.maxValueBytes = max(0, maxValueBytes)
        self.maxKeyBytes = max(0, maxKeyBytes)
        self.shouldInspect = shouldInspect
        self.mask = mask
    }

    /// Bytes currently held back (for tests and metrics).
    var bufferedByteCount: Int { held.count }

    // MARK: Feeding

    /// Feeds the next chunk; returns the bytes to send on (possibly empty).
    public mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONStreamMaskingError) -> [UInt8] {
        if let failure { throw failure }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        do {
            try process(bytes, into: &out)
        } catch {
            state = .failed
            failure = error
            held = []
            throw error
        }
        return out
    }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(JSONStreamMaskingError) -> [UInt8] {
        try feed(bytes.assumingMemoryBound(to: UInt8.self))
    }

    public mutating func feed(_ bytes: some Collection<UInt8>) throws(JSONStreamMaskingError) -> [UInt8] {
        do {
            if let out = try bytes.withContiguousStorageIfAvailable({ try self.feed($0) }) { return out }
            return try Array(bytes).withUnsafeBufferPointer { try self.feed($0) }
        } catch let error as JSONStreamMaskingError {
            throw error
        } catch {
            // Unreachable: only `feed(UnsafeBufferPointer)` throws, and only this type.
            throw JSONStreamMaskingError(.syntax, offset: streamOffset)
        }
    }

    /// Ends the input: returns the last bytes, or throws when a value is still open.
    public mutating func finish() throws(JSONStreamMaskingError) -> [UInt8] {
        if let failure { throw failure }
        var out: [UInt8] = []
        do throws(JSONStreamMaskingError) {
            switch state {
            case .topValue, .topAfter:
                break
            case .number where path.isEmpty && [1, 2, 4, 7].contains(numberState):
                // A top-level number ends with the input.
                let empty = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
                _ = try completeScalar(.number, empty, end: 0, emitStart: 0, into: &out)
                completedValueCount += 1
            default:
                throw JSONStreamMaskingError(.truncated, offset: streamOffset)
            }
        } catch {
            state = .failed
            failure = error
            held = []
            throw error
        }
        failure = JSONStreamMaskingError(.alreadyFinished, offset: streamOffset)
        state = .failed
        return out
    }

    // MARK: The scanner

    private mutating func process(_ p: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) throws(JSONStreamMaskingError) {
        let n = p.count
        var i = 0
        // Start of the input bytes not yet copied to `out`.
        var emitStart = 0
        // Kept in a local so the dispatch below reads a register, not memory.
        var state = self.state

        while i < n {
            switch state {
            case .string:
                // Hot loop: printable ASCII other than `"` and `\`, eight bytes at a time first.
                if let base = p.baseAddress {
                    let raw = UnsafeRawPointer(base)
                    while i &+ 8 <= n {
                        let x = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                        if Self.needsAttention(x) { break }
                        i &+= 8
                    }
                }
                while i < n {
                    let c = p[i]
                    if c == 0x22 || c == 0x5C || c < 0x20 || c >= 0x80 { break }
                    i &+= 1
                }
                if i == n { break }
                let c = p[i]
                if c == 0x22 {
                    i &+= 1
                    if token == .key {
                        try completeKey(p, end: i)
                        state = try continueAfterKey(p, &i)
                    } else {
                        emitStart = try completeScalar(.string, p, end: i, emitStart: emitStart, into: &out)
                        state = try continueAfterValue(p, &i)
                    }
                } else if c == 0x5C {
                    tokenHasEscape = true
                    state = .escape
                    i &+= 1
                } else if c < 0x20 {
                    throw error(.controlCharacterInString, i)
                } else {
                    switch c {
                    case 0xC2...0xDF: remaining = 1; utf8Low = 0x80; utf8High = 0xBF
                    case 0xE0: remaining = 2; utf8Low = 0xA0; utf8High = 0xBF
                    case 0xE1...0xEC, 0xEE, 0xEF: remaining = 2; utf8Low = 0x80; utf8High = 0xBF
                    case 0xED: remaining = 2; utf8Low = 0x80; utf8High = 0x9F  // no surrogates
                    case 0xF0: remaining = 3; utf8Low = 0x90; utf8High = 0xBF
                    case 0xF1...0xF3: remaining = 3; utf8Low = 0x80; utf8High = 0xBF
                    case 0xF4: remaining = 3; utf8Low = 0x80; utf8High = 0x8F  // up to U+10FFFF
                    default: throw error(.invalidUTF8, i)
                    }
                    state = .utf8
                    i &+= 1
                }

            case .utf8:
                while i < n {
                    let c = p[i]
                    guard c >= utf8Low && c <= utf8High else { throw error(.invalidUTF8, i) }
                    utf8Low = 0x80
                    utf8High = 0xBF
                    i &+= 1
                    remaining &-= 1
                    if remaining == 0 {
                        state = .string
                        break
                    }
                }

            case .escape:
                switch p[i] {
                case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74:  // " \ / b f n r t
                    state = .string
                case 0x75:  // u
                    state = .hex
                    remaining = 4
                default:
                    throw error(.invalidEscape, i)
                }
                i &+= 1

            case .hex:
                guard Self.hexValue(p[i]) != nil else { throw error(.invalidEscape, i) }
                i &+= 1
                remaining &-= 1
                if remaining == 0 { state = .string }

            case .number:
                let c = p[i]
                let isDigit = c &- 0x30 < 10
                var ended = false
                switch numberState {
                case 0:  // after `-`
                    if c == 0x30 { numberState = 1 } else if isDigit { numberState = 2 } else { throw error(.invalidNumber, i) }
                case 1:  // `0`
                    if c == 0x2E { numberState = 3 } else if c | 0x20 == 0x65 { numberState = 5 } else if isDigit {
                        throw error(.invalidNumber, i)
                    } else { ended = true }
                case 2, 4, 7:  // integer, fraction or exponent digits
                    if isDigit {
                        i &+= 1
                        while i < n, p[i] &- 0x30 < 10 { i &+= 1 }
                        continue
                    }
                    if numberState == 2 && c == 0x2E {
                        numberState = 3
                    } else if numberState != 7 && c | 0x20 == 0x65 {
                        numberState = 5
                    } else {
                        ended = true
                    }
                case 3:  // after `.`
                    if isDigit { numberState = 4 } else { throw error(.invalidNumber, i) }
                case 5:  // after `e`
                    if c == 0x2B || c == 0x2D { numberState = 6 } else if isDigit { numberState = 7 } else {
                        throw error(.invalidNumber, i)
                    }
                default:  // 6: after the exponent's sign
                    if isDigit { numberState = 7 } else { throw error(.invalidNumber, i) }
                }
                if ended {
                    // The byte after the number is not part of it: it is looked at again.
                    emitStart = try completeScalar(.number, p, end: i, emitStart: emitStart, into: &out)
                    state = try continueAfterValue(p, &i)
                } else {
                    i &+= 1
                }

            case .literal:
                guard p[i] == Self.literalByte(literalKind, literalPosition) else { throw error(.syntax, i) }
                i &+= 1
                literalPosition &+= 1
                if literalPosition == (literalKind == 1 ? 5 : 4) {
                    emitStart = try completeScalar(.literal, p, end: i, emitStart: emitStart, into: &out)
                    state = try continueAfterValue(p, &i)
                }

            case .topValue, .value, .valueOrClose:
                let c = p[i]
                if Self.isWhitespace(c) {
                    i &+= 1
                    while i < n, Self.isWhitespace(p[i]) { i &+= 1 }
                    continue
                }
                if c == 0x5D && state == .valueOrClose {
                    try close(c, at: i)
                    i &+= 1
                    state = try continueAfterValue(p, &i)
                } else if c == 0xEF && state == .topValue && streamOffset + i == 0 {
                    state = .byteOrderMark
                    remaining = 2
                    i &+= 1
                } else {
                    state = try startValue(c, at: i)
                    i &+= 1
                }

            case .afterValue:
                let c = p[i]
                if Self.isWhitespace(c) {
                    i &+= 1
                    while i < n, Self.isWhitespace(p[i]) { i &+= 1 }
                    continue
                }
                if c == 0x2C {
                    if case .index(let position) = path[path.count &- 1] {
                        path[path.count &- 1] = .index(position &+ 1)
                        state = .value
                    } else {
                        state = .key
                    }
                    i &+= 1
                } else if c == 0x5D || c == 0x7D {
                    try close(c, at: i)
                    i &+= 1
                    state = try continueAfterValue(p, &i)
                } else {
                    throw error(.syntax, i)
                }

            case .keyOrClose, .key:
                let c = p[i]
                if Self.isWhitespace(c) {
                    i &+= 1
                    while i < n, Self.isWhitespace(p[i]) { i &+= 1 }
                    continue
                }
                if c == 0x22 {
                    beginKey(at: i)
                    state = .string
                    i &+= 1
                } else if c == 0x7D && state == .keyOrClose {
                    try close(c, at: i)
                    i &+= 1
                    state = try continueAfterValue(p, &i)
                } else {
                    throw error(.syntax, i)
                }

            case .colon:
                state = try continueAfterKey(p, &i)

            case .topAfter:
                guard Self.isWhitespace(p[i]) else { throw error(.syntax, i) }
                state = .topValue
                i &+= 1

            case .byteOrderMark:
                guard p[i] == (remaining == 2 ? 0xBB : 0xBF) else { throw error(.syntax, i) }
                remaining &-= 1
                if remaining == 0 { state = .topValue }
                i &+= 1

            case .failed:
                throw failure ?? error(.syntax, i)
            }
        }
        self.state = state

        // End of the chunk: send what is final, keep what is still undecided.
        switch token {
        case .held:
            flush(p, emitStart, tokenStart, into: &out)
            held.append(contentsOf: UnsafeBufferPointer(rebasing: p[tokenStart..<n]))
            if held.count > maxValueBytes { throw error(.valueTooLong, n) }
            tokenStart = 0
        case .key:
            flush(p, emitStart, n, into: &out)
            held.append(contentsOf: UnsafeBufferPointer(rebasing: p[tokenStart..<n]))
            if held.count > maxKeyBytes { throw error(.keyTooLong, n) }
            tokenStart = 0
        case .none, .passed:
            flush(p, emitStart, n, into: &out)
        }
        streamOffset += n
    }

    /// After a key: the colon and the start of the value, when they are in this chunk (the
    /// common case, handled here without going through the dispatch loop).
    @inline(__always)
    private mutating func continueAfterKey(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int) throws(JSONStreamMaskingError) -> State {
        let n = p.count
        while i < n, Self.isWhitespace(p[i]) { i &+= 1 }
        guard i < n else { return .colon }
        guard p[i] == 0x3A else { throw error(.syntax, i) }
        i &+= 1
        while i < n, Self.isWhitespace(p[i]) { i &+= 1 }
        guard i < n else { return .value }
        let state = try startValue(p[i], at: i)
        i &+= 1
        return state
    }

    /// After a complete value: the comma and the start of the next member or element, when
    /// they are in this chunk.
    @inline(__always)
    private mutating func continueAfterValue(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int) throws(JSONStreamMaskingError) -> State {
        let last = path.count &- 1
        guard last >= 0 else {
            completedValueCount += 1
            return .topAfter
        }
        let n = p.count
        while i < n, Self.isWhitespace(p[i]) { i &+= 1 }
        guard i < n, p[i] == 0x2C else { return .afterValue }
        i &+= 1
        while i < n, Self.isWhitespace(p[i]) { i &+= 1 }
        if case .index(let position) = path[last] {
            path[last] = .index(position &+ 1)
            guard i < n else { return .value }
            let state = try startValue(p[i], at: i)
            i &+= 1
            return state
        }
        guard i < n else { return .key }
        guard p[i] == 0x22 else { throw error(.syntax, i) }
        beginKey(at: i)
        i &+= 1
        return .string
    }

    @inline(__always)
    private func flush(_ p: UnsafeBufferPointer<UInt8>, _ from: Int, _ to: Int, into out: inout [UInt8]) {
        if from < to { out.append(contentsOf: UnsafeBufferPointer(rebasing: p[from..<to])) }
    }

    private func error(_ kind: JSONStreamMaskingError.Kind, _ i: Int) -> JSONStreamMaskingError {
        JSONStreamMaskingError(kind, offset: streamOffset + i)
    }

    /// Whether any of the eight bytes in `x` is `"`, `\`, below 0x20 or above 0x7F.
    @inline(__always)
    private static func needsAttention(_ x: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let high: UInt64 = 0x8080_8080_8080_8080
        @inline(__always) func hasZeroByte(_ v: UInt64) -> UInt64 { (v &- ones) & ~v & high }
        let control = (x &- 0x2020_2020_2020_2020) & ~x & high  // some byte < 0x20 (when none ≥ 0x80)
        let quote = hasZeroByte(x ^ 0x2222_2222_2222_2222)
        let backslash = hasZeroByte(x ^ 0x5C5C_5C5C_5C5C_5C5C)
        return (x & high) | control | quote | backslash != 0
    }

    @inline(__always)
    private static func isWhitespace(_ c: UInt8) -> Bool {
        c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09
    }

    private static func literalByte(_ kind: UInt8, _ position: Int) -> UInt8 {
        let text: StaticString
        switch kind {
        case 0: text = "true"
        case 1: text = "false"
        default: text = "null"
        }
        return text.utf8Start[position]
    }

    /// Starts the value whose first byte `c` is at `i`; returns the state for the next byte.
    private mutating func startValue(_ c: UInt8, at i: Int) throws(JSONStreamMaskingError) -> State {
        switch c {
        case 0x22:
            beginScalar(at: i, inspectable: true)
            tokenHasEscape = false
            return .string
        case 0x7B, 0x5B:  // { [
            guard path.count < maxDepth else { throw error(.tooDeep, i) }
            path.append(c == 0x7B ? .key("") : .index(0))
            return c == 0x7B ? .keyOrClose : .valueOrClose
        case 0x2D, 0x30...0x39:
            beginScalar(at: i, inspectable: true)
            numberState = c == 0x2D ? 0 : (c == 0x30 ? 1 : 2)
            return .number
        case 0x74, 0x66, 0x6E:  // t f n
            beginScalar(at: i, inspectable: c != 0x6E)
            literalKind = c == 0x74 ? 0 : (c == 0x66 ? 1 : 2)
            literalPosition = 1
            return .literal
        default:
            throw error(.syntax, i)
        }
    }

    @inline(__always)
    private mutating func beginScalar(at i: Int, inspectable: Bool) {
        tokenStart = i
        token = inspectable && (shouldInspect?(path) ?? true) ? .held : .passed
    }

    @inline(__always)
    private mutating func beginKey(at i: Int) {
        token = .key
        tokenStart = i
        tokenHasEscape = false
    }

    /// Closes the innermost container with `c` (`]` or `}`); the caller continues after it.
    private mutating func close(_ c: UInt8, at i: Int) throws(JSONStreamMaskingError) {
        guard let last = path.last else { throw error(.syntax, i) }
        switch last {
        case .key: guard c == 0x7D else { throw error(.syntax, i) }
        case .index: guard c == 0x5D else { throw error(.syntax, i) }
        }
        path.removeLast()
    }

    private mutating func completeKey(_ p: UnsafeBufferPointer<UInt8>, end: Int) throws(JSONStreamMaskingError) {
        if held.count + end - tokenStart > maxKeyBytes { throw error(.keyTooLong, end) }
        let name: String
        if held.isEmpty {
            name = Self.decodeString(UnsafeBufferPointer(rebasing: p[tokenStart..<end]), escaped: tokenHasEscape)
        } else {
            held.append(contentsOf: UnsafeBufferPointer(rebasing: p[tokenStart..<end]))
            let escaped = tokenHasEscape
            name = held.withUnsafeBufferPointer { Self.decodeString($0, escaped: escaped) }
            releaseHeld()
        }
        path[path.count - 1] = .key(name)
        token = .none
    }

    /// Ends the scalar at `p[..<end]`, asks for a decision and writes the outcome.
    /// Returns the new start of unsent input; the caller continues after the value.
    private mutating func completeScalar(
        _ kind: ScalarKind, _ p: UnsafeBufferPointer<UInt8>, end: Int, emitStart: Int, into out: inout [UInt8]
    ) throws(JSONStreamMaskingError) -> Int {
        var emitStart = emitStart
        if token == .held {
            if held.count + end - tokenStart > maxValueBytes { throw error(.valueTooLong, end) }
            let wasHeld = !held.isEmpty
            let value: JSONScalar
            let escaped = tokenHasEscape
            if wasHeld {
                held.append(contentsOf: UnsafeBufferPointer(rebasing: p[tokenStart..<end]))
                value = held.withUnsafeBufferPointer { Self.scalar(kind, $0, escaped: escaped) }
            } else {
                value = Self.scalar(kind, UnsafeBufferPointer(rebasing: p[tokenStart..<end]), escaped: escaped)
            }
            switch mask(path, value) {
            case .keep:
                // Unheld bytes are still in the unsent input; held ones go out now.
                if wasHeld {
                    flush(p, emitStart, tokenStart, into: &out)
                    out.append(contentsOf: held)
                    emitStart = end
                }
            case .replace(let replacement):
                flush(p, emitStart, tokenStart, into: &out)
                Self.appendJSONString(replacement, to: &out)
                emitStart = end
            case .replaceWithNull:
                flush(p, emitStart, tokenStart, into: &out)
                out.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])
                emitStart = end
            }
            if wasHeld { releaseHeld() }
        }
        token = .none
        return emitStart
    }

    private mutating func releaseHeld() {
        if held.capacity > 1 << 16 { held = [] } else { held.removeAll(keepingCapacity: true) }
    }

    // MARK: Decoding and encoding

    private static func scalar(_ kind: ScalarKind, _ raw: UnsafeBufferPointer<UInt8>, escaped: Bool) -> JSONScalar {
        switch kind {
        case .string: .string(decodeString(raw, escaped: escaped))
        case .number: .number(String(decoding: raw, as: UTF8.self))
        case .literal: .bool(raw.first == 0x74)
        }
    }

    /// Decodes a validated string token, quotes included. Lone surrogates become U+FFFD.
    static func decodeString(_ raw: UnsafeBufferPointer<UInt8>, escaped: Bool) -> String {
        guard raw.count >= 2 else { return "" }
        let content = UnsafeBufferPointer(rebasing: raw[1..<(raw.count - 1)])
        if !escaped { return String(decoding: content, as: UTF8.self) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(content.count)
        let n = content.count
        var j = 0
        while j < n {
            let c = content[j]
            if c != 0x5C {
                bytes.append(c)
                j += 1
                continue
            }
            guard j + 1 < n else { break }
            switch content[j + 1] {
            case 0x62: bytes.append(0x08)
            case 0x66: bytes.append(0x0C)
            case 0x6E: bytes.append(0x0A)
            case 0x72: bytes.append(0x0D)
            case 0x74: bytes.append(0x09)
            case 0x75:
                guard let unit = hex4(content, j + 2) else { return String(decoding: bytes, as: UTF8.self) }
                j += 6
                var scalar: UInt32 = 0xFFFD
                switch unit {
                case 0xD800...0xDBFF:
                    if j + 6 <= n, content[j] == 0x5C, content[j + 1] == 0x75, let low = hex4(content, j + 2),
                        (0xDC00...0xDFFF).contains(low)
                    {
                        scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        j += 6
                    }
                case 0xDC00...0xDFFF:
                    break
                default:
                    scalar = unit
                }
                appendUTF8(scalar, to: &bytes)
                continue
            default:
                bytes.append(content[j + 1])  // " \ /
            }
            j += 2
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hex4(_ p: UnsafeBufferPointer<UInt8>, _ at: Int) -> UInt32? {
        guard at + 4 <= p.count else { return nil }
        var value: UInt32 = 0
        for k in at..<(at + 4) {
            guard let digit = hexValue(p[k]) else { return nil }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    @inline(__always)
    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }

    private static func appendUTF8(_ scalar: UInt32, to bytes: inout [UInt8]) {
        switch scalar {
        case 0..<0x80:
            bytes.append(UInt8(scalar))
        case 0x80..<0x800:
            bytes.append(UInt8(0xC0 | scalar >> 6))
            bytes.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            bytes.append(UInt8(0xE0 | scalar >> 12))
            bytes.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            bytes.append(UInt8(0x80 | scalar & 0x3F))
        default:
            bytes.append(UInt8(0xF0 | scalar >> 18))
            bytes.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            bytes.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            bytes.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// Appends `text` as a JSON string: quotes, backslashes and control characters escaped.
    static func appendJSONString(_ text: String, to out: inout [UInt8]) {
        out.append(0x22)
        for b in text.utf8 {
            switch b {
            case 0x22: out.append(contentsOf: [0x5C, 0x22])
            case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: out.append(contentsOf: [0x5C, 0x6E])
            case 0x0D: out.append(contentsOf: [0x5C, 0x72])
            case 0x09: out.append(contentsOf: [0x5C, 0x74])
            case 0x08: out.append(contentsOf: [0x5C, 0x62])
            case 0x0C: out.append(contentsOf: [0x5C, 0x66])
            case 0..<0x20:
                let digits: StaticString = "0123456789abcdef"
                out.append(contentsOf: [0x5C, 0x75, 0x30, 0x30, digits.utf8Start[Int(b >> 4)], digits.utf8Start[Int(b & 0xF)]])
            default: out.append(b)
            }
        }
        out.append(0x22)
    }
}

/// libpg_query's JSON parse tree, read into values this module can switch over.
///
/// The JSON is protobuf JSON of PostgreSQL's raw parse nodes. A field typed `Node` holds a
/// wrapper object with one key, the node type: `{"RangeVar": {"relname": "t", …}}`. A field
/// typed with a specific message (DeleteStmt.relation is a RangeVar) holds the fields directly,
/// without the wrapper. Default values are left out: a missing boolean is false, a missing number
/// 0, a missing list empty.
enum ParseTree: Sendable, Equatable {
    case object(ParseFields)
    case array([ParseTree])
    case string(String)
    /// Numbers and booleans (true is 1).
    case integer(Int)
    case null

    subscript(key: String) -> ParseTree? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    var fields: ParseFields? {
        if case .object(let fields) = self { return fields }
        return nil
    }

    var elements: [ParseTree] {
        if case .array(let elements) = self { return elements }
        return []
    }

    var string: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    var integer: Int? {
        if case .integer(let value) = self { return value }
        return nil
    }

    /// The node type and fields when this is a `Node` wrapper (`{"TypeName": {…}}`). Node type
    /// names start with an upper-case letter; field names never do.
    var node: (type: String, fields: ParseFields)? {
        guard case .object(let wrapper) = self, wrapper.count == 1, let (type, body) = wrapper.first,
              let first = type.utf8.first, first >= UInt8(ascii: "A"), first <= UInt8(ascii: "Z"),
              case .object(let fields) = body
        else { return nil }
        return (type, fields)
    }

    /// The text of a `String` node (`{"String": {"sval": "x"}}`).
    var stringNodeValue: String? {
        guard let node, node.type == "String" else { return nil }
        return node.fields["sval"]?.string ?? ""
    }
}

/// The fields of a JSON object in document order. A list rather than a dictionary: parse-tree
/// objects have a handful of short keys, for which a linear search beats hashing (building
/// dictionaries was most of the reading time), and document order keeps walks deterministic.
struct ParseFields: Sendable, Sequence, Equatable, ExpressibleByDictionaryLiteral {
    private(set) var entries: [(key: String, value: ParseTree)]

    init(_ entries: [(key: String, value: ParseTree)] = []) {
        self.entries = entries
    }

    init(capacity: Int) {
        entries = []
        entries.reserveCapacity(capacity)
    }

    init(dictionaryLiteral elements: (String, ParseTree)...) {
        self.init(elements.map { (key: $0.0, value: $0.1) })
    }

    var count: Int { entries.count }
    var first: (key: String, value: ParseTree)? { entries.first }

    /// The first value under `key` (libpg_query never repeats a key).
    subscript(key: String) -> ParseTree? {
        for entry in entries where entry.key == key {
            return entry.value
        }
        return nil
    }

    func makeIterator() -> IndexingIterator<[(key: String, value: ParseTree)]> {
        entries.makeIterator()
    }

    func removing(_ keys: Set<String>) -> ParseFields {
        ParseFields(entries.filter { !keys.contains($0.key) })
    }

    /// These fields followed by those of `other` whose keys are not here.
    func adding(_ other: ParseFields) -> ParseFields {
        ParseFields(entries + other.entries.filter { self[$0.key] == nil })
    }

    mutating func append(key: String, value: ParseTree) {
        entries.append((key, value))
    }

    func bool(_ key: String) -> Bool { (self[key]?.integer ?? 0) != 0 }
    func int(_ key: String) -> Int? { self[key]?.integer }
    func string(_ key: String) -> String? { self[key]?.string }

    /// Equal when the same keys hold equal values, in any order (JSON objects are unordered).
    static func == (lhs: ParseFields, rhs: ParseFields) -> Bool {
        lhs.count == rhs.count && lhs.entries.allSatisfy { entry in rhs[entry.key] == entry.value }
    }
}

/// Reads libpg_query's JSON into a `ParseTree`.
///
/// A reader of its own rather than Foundation's JSONSerialization, for speed: for the 2 KB tree
/// of a 144-byte SELECT with a join, JSONSerialization plus the conversion of its `Any` values
/// took 160–300 µs on this machine (ten times libpg_query's parse, and most of the inspection),
/// this reader about 20 µs. It is strict JSON (RFC 8259) with a nesting limit, and the tests check
/// it against JSONSerialization on a corpus of parse trees.
enum ParseTreeReader {
    enum Problem: Error, Equatable {
        case nestedTooDeeply
        case unreadable
    }

    /// The deepest nesting of objects and arrays, by one pass over the bytes that does not
    /// recurse (brackets inside strings do not count). Malformed JSON gets some number; `read`
    /// refuses it.
    static func depth(of json: [UInt8]) -> Int {
        var depth = 0
        var deepest = 0
        var inString = false
        var escaped = false
        for byte in json {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""):
                inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            default:
                break
            }
        }
        return deepest
    }

    /// Reads a JSON document. Nesting deeper than `maximumDepth` objects and arrays is refused
    /// as soon as it is met, so the recursion here, and in the walk over the result, is bounded.
    static func read(_ json: [UInt8], maximumDepth: Int) -> Result<ParseTree, Problem> {
        json.withUnsafeBufferPointer { bytes in
            var reader = Reader(bytes: bytes, maximumDepth: maximumDepth)
            do throws(Problem) {
                let value = try reader.value(depth: 0)
                reader.skipWhitespace()
                guard reader.position == bytes.count else { throw .unreadable }
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
    }

    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        let maximumDepth: Int
        var position = 0

        init(bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int) {
            self.bytes = bytes
            self.maximumDepth = maximumDepth
        }

        mutating func value(depth: Int) throws(Problem) -> ParseTree {
            skipWhitespace()
            guard position < bytes.count else { throw .unreadable }
            switch bytes[position] {
            case UInt8(ascii: "{"):
                return try object(depth: depth + 1)
            case UInt8(ascii: "["):
                return try array(depth: depth + 1)
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"):
                try literal("true")
                return .integer(1)
            case UInt8(ascii: "f"):
                try literal("false")
                return .integer(0)
            case UInt8(ascii: "n"):
                try literal("null")
                return .null
            default:
                return try number()
            }
        }

        mutating func object(depth: Int) throws(Problem) -> ParseTree {
            guard depth <= maximumDepth else { throw .nestedTooDeeply }
            position += 1
            // Most parse-tree objects have up to four fields; one allocation instead of three.
            var fields = ParseFields(capacity: 4)
            skipWhitespace()
            if consume(UInt8(ascii: "}")) { return .object(fields) }
            repeat {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw .unreadable }
                let key = try string()
                skipWhitespace()
                guard consume(UInt8(ascii: ":")) else { throw .unreadable }
                fields.append(key: key, value: try value(depth: depth))
                skipWhitespace()
            } while consume(UInt8(ascii: ","))
            guard consume(UInt8(ascii: "}")) else { throw .unreadable }
            return .object(fields)
        }

        mutating func array(depth: Int) throws(Problem) -> ParseTree {
            guard depth <= maximumDepth else { throw .nestedTooDeeply }
            position += 1
            var elements: [ParseTree] = []
            skipWhitespace()
            if consume(UInt8(ascii: "]")) { return .array(elements) }
            repeat {
                elements.append(try value(depth: depth))
                skipWhitespace()
            } while consume(UInt8(ascii: ","))
            guard consume(UInt8(ascii: "]")) else { throw .unreadable }
            return .array(elements)
        }

        /// A string starting at the opening quote. Unescaped runs are copied as they are (the
        /// parser's output is the input's UTF-8); escapes are decoded, surrogate pairs joined,
        /// and a lone surrogate becomes U+FFFD.
        mutating func string() throws(Problem) -> String {
            position += 1
            var decoded: [UInt8] = []
            var runStart = position
            while position < bytes.count {
                let byte = bytes[position]
                if byte == UInt8(ascii: "\"") {
                    let text: String
                    if decoded.isEmpty {
                        text = String(decoding: UnsafeBufferPointer(rebasing: bytes[runStart..<position]), as: UTF8.self)
                    } else {
                        decoded.append(contentsOf: bytes[runStart..<position])
                        text = String(decoding: decoded, as: UTF8.self)
                    }
                    position += 1
                    return text
                }
                if byte < 0x20 { throw .unreadable }
                if byte != UInt8(ascii: "\\") {
                    position += 1
                    continue
                }
                decoded.append(contentsOf: bytes[runStart..<position])
                position += 1
                guard position < bytes.count else { throw .unreadable }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(escape)
                case UInt8(ascii: "b"): decoded.append(0x08)
                case UInt8(ascii: "f"): decoded.append(0x0C)
                case UInt8(ascii: "n"): decoded.append(0x0A)
                case UInt8(ascii: "r"): decoded.append(0x0D)
                case UInt8(ascii: "t"): decoded.append(0x09)
                case UInt8(ascii: "u"):
                    let scalar = try unicodeEscape()
                    decoded.append(contentsOf: String(Character(scalar)).utf8)
                default:
                    throw .unreadable
                }
                runStart = position
            }
            throw .unreadable
        }

        /// The scalar of `\uXXXX` (the `\u` already read), joining a surrogate pair.
        mutating func unicodeEscape() throws(Problem) -> Unicode.Scalar {
            let unit = try hexQuad()
            if (0xD800..<0xDC00).contains(unit), position + 1 < bytes.count,
               bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
                let saved = position
                position += 2
                let low = try hexQuad()
                if (0xDC00..<0xE000).contains(low) {
                    let value = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    return Unicode.Scalar(value) ?? "\u{FFFD}"
                }
                position = saved
            }
            return Unicode.Scalar(unit) ?? "\u{FFFD}"
        }

        mutating func hexQuad() throws(Problem) -> UInt32 {
            guard position + 4 <= bytes.count else { throw .unreadable }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[position]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw .unreadable
                }
                value = value << 4 | UInt32(digit)
                position += 1
            }
            return value
        }

        /// A JSON number. libpg_query prints only integers (locations, enum-like codes, integer
        /// constants); a number with a fraction or exponent is read as `.null`, out of range as
        /// clamped, since no field this module reads holds one.
        mutating func number() throws(Problem) -> ParseTree {
            let start = position
            if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
            let digitsStart = position
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
                position += 1
            }
            guard position > digitsStart else { throw .unreadable }
            guard bytes[digitsStart] != UInt8(ascii: "0") || position - digitsStart == 1 else { throw .unreadable }
            var integral = true
            if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
                integral = false
                position += 1
                let fractionStart = position
                while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
                    position += 1
                }
                guard position > fractionStart else { throw .unreadable }
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
                integral = false
                position += 1
                if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                    position += 1
                }
                let exponentStart = position
                while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
                    position += 1
                }
                guard position > exponentStart else { throw .unreadable }
            }
            guard integral else { return .null }
            var value = 0
            var overflow = false
            let negative = bytes[start] == UInt8(ascii: "-")
            for index in digitsStart..<position {
                let digit = Int(bytes[index] - UInt8(ascii: "0"))
                let (shifted, overflowMultiply) = value.multipliedReportingOverflow(by: 10)
                let (next, overflowAdd) = negative
                    ? shifted.subtractingReportingOverflow(digit)
                    : shifted.addingReportingOverflow(digit)
                if overflowMultiply || overflowAdd {
                    overflow = true
                    break
                }
                value = next
            }
            if overflow { value = negative ? Int.min : Int.max }
            return .integer(value)
        }

        mutating func literal(_ word: String) throws(Problem) {
            for expected in word.utf8 {
                guard position < bytes.count, bytes[position] == expected else { throw .unreadable }
                position += 1
            }
        }

        mutating func consume(_ byte: UInt8) -> Bool {
            guard position < bytes.count, bytes[position] == byte else { return false }
            position += 1
            return true
        }

        mutating func skipWhitespace() {
            while position < bytes.count {
                switch bytes[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return
                }
            }
        }
    }
}

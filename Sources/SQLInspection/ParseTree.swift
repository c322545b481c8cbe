import Foundation

/// libpg_query's JSON parse tree, read into values this module can switch over.
///
/// The JSON is protobuf JSON of PostgreSQL's raw parse nodes. A field typed `Node` holds a
/// wrapper object with one key, the node type: `{"RangeVar": {"relname": "t", …}}`. A field
/// typed with a specific message (DeleteStmt.relation is a RangeVar) holds the fields directly,
/// without the wrapper. Default values are left out: a missing boolean is false, a missing number
/// 0, a missing list empty.
indirect enum ParseTree: Sendable {
    case object([String: ParseTree])
    case array([ParseTree])
    case string(String)
    /// Numbers and booleans (true is 1).
    case integer(Int)
    case null

    subscript(key: String) -> ParseTree? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    var fields: [String: ParseTree]? {
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
    var node: (type: String, fields: [String: ParseTree])? {
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

extension [String: ParseTree] {
    func bool(_ key: String) -> Bool { (self[key]?.integer ?? 0) != 0 }
    func int(_ key: String) -> Int? { self[key]?.integer }
    func string(_ key: String) -> String? { self[key]?.string }
}

enum ParseTreeReader {
    enum Problem: Error {
        case nestedTooDeeply
        case unreadable
    }

    /// Reads libpg_query's JSON. Deeper than `maximumDepth` is refused before any recursion:
    /// Foundation's reader refuses deeper than 512 itself, with an error that does not say why,
    /// and the walk over the tree recurses once per level.
    static func read(_ json: [UInt8], maximumDepth: Int) -> Result<ParseTree, Problem> {
        guard depth(of: json) <= maximumDepth else { return .failure(.nestedTooDeeply) }
        guard let object = try? JSONSerialization.jsonObject(with: Data(json)) else {
            return .failure(.unreadable)
        }
        return .success(convert(object))
    }

    /// The deepest nesting of objects and arrays, by one pass over the bytes (brackets inside
    /// strings do not count).
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
                deepest = Swift.max(deepest, depth)
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            default:
                break
            }
        }
        return deepest
    }

    private static func convert(_ value: Any) -> ParseTree {
        switch value {
        case let text as String:
            return .string(text)
        case let fields as [String: Any]:
            return .object(fields.mapValues(convert))
        case let elements as [Any]:
            return .array(elements.map(convert))
        case let number as Int:
            return .integer(number)
        case let flag as Bool:
            return .integer(flag ? 1 : 0)
        case let number as NSNumber:
            return .integer(number.intValue)
        default:
            return .null
        }
    }
}

import Foundation
import Testing

@testable import SQLInspection

/// The JSON reader for libpg_query's output, checked against Foundation's JSONSerialization (the
/// reference) and against malformed and hostile documents.
@Suite("SQL inspector: parse tree reader")
struct ParseTreeReaderTests {
    /// Statements whose trees cover every kind of JSON value libpg_query prints, and strings
    /// holding everything that needs escaping.
    static let corpus: [String] = [
        "SELECT 1",
        "SELECT -2147483648, 9223372036854775807, 1.5e10, -0.0, 'text'",
        "SELECT E'tab\\there\\nnew line \\\\ backslash \\' quote \"double\" \\x01 \\x1f control'",
        "SELECT 'é ü 日本語 😀 \u{10FFFF}', U&'\\D83D\\DE00', \"Ünïcødé \"\"quoted\"\" name\" FROM \"tàble\"",
        "SELECT $$ dollar \\ \" ' $$, $t$ { [ ] } : , $t$",
        "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "INSERT INTO a.b SELECT * FROM c WHERE d IS NOT NULL AND e = ANY(ARRAY[1, 2, 3])",
        "UPDATE t SET a = DEFAULT, b = b + 1 WHERE c IN (SELECT c FROM u LIMIT 5 OFFSET 2)",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, v numeric(10, 2) DEFAULT 0.5, CHECK (v >= 0))",
        "COPY t (a, b) FROM STDIN WITH (FORMAT csv, DELIMITER ';', NULL '')",
        "EXPLAIN (ANALYZE false, BUFFERS true) SELECT * FROM t FOR UPDATE SKIP LOCKED",
        "DO $$ BEGIN RAISE NOTICE '%', 1; END $$",
        "SELECT B'1010', X'FF', 1::bit(4), true, false, NULL, interval '1 day'",
        "SELECT 1; SELECT 2; -- trailing comment",
    ]

    static func reference(_ json: [UInt8]) throws -> ParseTree {
        let object = try JSONSerialization.jsonObject(with: Data(json), options: [.fragmentsAllowed])
        return convert(object)
    }

    static func convert(_ value: Any) -> ParseTree {
        switch value {
        case let text as String: .string(text)
        case let fields as [String: Any]: .object(ParseFields(fields.map { (key: $0.key, value: convert($0.value)) }))
        case let elements as [Any]: .array(elements.map(convert))
        case let number as NSNumber:
            // Integers as integers; fractions and exponents are not integers to this reader.
            number.doubleValue == number.doubleValue.rounded() && abs(number.doubleValue) < 1e18
                && !"\(number)".contains(".") && !"\(number)".lowercased().contains("e")
                ? .integer(number.intValue) : .null
        default: .null
        }
    }

    @Test(arguments: corpus)
    func readsParseTreesLikeJSONSerialization(sql: String) throws {
        let json = try PgQuery.parseTreeJSON(sql).get()
        let ours = try ParseTreeReader.read(json, maximumDepth: 500).get()
        #expect(ours == (try Self.reference(json)))
    }

    @Test func decodesEscapesAndKeepsUTF8() throws {
        let json = #"{"a": "q\"b\\s\/n\nt\tu\u00e9\u65e5 \ud83d\ude00 raw é", "b": [true, false, null, -12, 0]}"#
        let tree = try ParseTreeReader.read(Array(json.utf8), maximumDepth: 10).get()
        #expect(tree["a"]?.string == "q\"b\\s/n\nt\tu\u{e9}\u{65e5} 😀 raw é")
        #expect(tree["b"]?.elements == [.integer(1), .integer(0), .null, .integer(-12), .integer(0)])
        let lone = try ParseTreeReader.read(Array(#"["\udc00x", "\ud800"]"#.utf8), maximumDepth: 10).get()
        #expect(lone.elements.map(\.string) == ["\u{FFFD}x", "\u{FFFD}"])
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "[,1]", "{\"a\" 1}", "{\"a\":}", "{a:1}", "{\"a\":1,}", "[1] x", "[1][2]",
        "\"unterminated", "\"bad \\q escape\"", "\"\\u12\"", "\"\\u12g4\"", "\"raw \u{1} control\"", "01", "-",
        "1.", ".5", "1e", "tru", "nul", "[true false]", "{\"a\":1 \"b\":2}",
    ])
    func refusesMalformedDocuments(json: String) {
        #expect(ParseTreeReader.read(Array(json.utf8), maximumDepth: 10) == .failure(.unreadable))
    }

    @Test func refusesNestingBeyondTheLimitWithoutRecursingFurther() {
        let limit = 20
        let atLimit = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect((try? ParseTreeReader.read(Array(atLimit.utf8), maximumDepth: limit).get()) != nil)
        let over = String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        #expect(ParseTreeReader.read(Array(over.utf8), maximumDepth: limit) == .failure(.nestedTooDeeply))
        // Far deeper than any stack could recurse: refused at the limit, not by a crash.
        let huge = String(repeating: "{\"a\":[", count: 1_000_000)
        #expect(ParseTreeReader.read(Array(huge.utf8), maximumDepth: 500) == .failure(.nestedTooDeeply))
    }

    @Test func bracketsInsideStringsDoNotCount() throws {
        let json = #"{"a": "[[[[[[[[[[{{{{{{{{{{"}"#
        #expect(try ParseTreeReader.read(Array(json.utf8), maximumDepth: 1).get()["a"]?.string == "[[[[[[[[[[{{{{{{{{{{")
    }

    @Test func numbersOutOfRangeAreClampedAndFractionsIgnored() throws {
        let tree = try ParseTreeReader.read(Array("[99999999999999999999, -99999999999999999999, 1.5, 2e3]".utf8), maximumDepth: 2).get()
        #expect(tree.elements == [.integer(Int.max), .integer(Int.min), .null, .null])
    }
}

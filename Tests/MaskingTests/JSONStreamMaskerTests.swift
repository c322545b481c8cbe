import Foundation
import Testing

@testable import Masking

// MARK: - Helpers

private typealias Decision = JSONStreamMasker.Decision

private func keepAll(_: [JSONPathComponent], _: JSONScalar) -> Decision { .keep }

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Feeds `chunks` in order, then finishes; returns all output.
private func run(
    _ chunks: [ArraySlice<UInt8>],
    maxDepth: Int = 128,
    maxValueBytes: Int = 1 << 20,
    maxKeyBytes: Int = 1 << 16,
    shouldInspect: JSONStreamMasker.InspectFunction? = nil,
    mask: @escaping JSONStreamMasker.MaskFunction = keepAll
) throws -> [UInt8] {
    var masker = JSONStreamMasker(
        maxDepth: maxDepth, maxValueBytes: maxValueBytes, maxKeyBytes: maxKeyBytes,
        shouldInspect: shouldInspect, mask: mask)
    var out: [UInt8] = []
    for chunk in chunks { out += try masker.feed(chunk) }
    out += try masker.finish()
    return out
}

private func runWhole(_ doc: [UInt8], mask: @escaping JSONStreamMasker.MaskFunction = keepAll) throws -> [UInt8] {
    try run([doc[...]], mask: mask)
}

/// Every split of `doc` into two chunks (including empty ones), and byte by byte.
private func splits(_ doc: [UInt8]) -> [[ArraySlice<UInt8>]] {
    var all = (0...doc.count).map { [doc[..<$0], doc[$0...]] }
    all.append(doc.indices.map { doc[$0...$0] })
    return all
}

/// A mask function that replaces values whose path matches any pattern.
private func patternMask(_ patterns: [String], with decision: Decision = .replace("***")) -> JSONStreamMasker.MaskFunction {
    let compiled = patterns.map { JSONPathPattern($0)! }
    return { path, _ in compiled.contains { $0.matches(path) } ? decision : .keep }
}

/// Records every offered scalar (reference type so the escaping closure can append).
private final class Recorder {
    var seen: [([JSONPathComponent], JSONScalar)] = []
    var mask: JSONStreamMasker.MaskFunction {
        { [self] path, value in
            seen.append((path, value))
            return .keep
        }
    }
}

private func errorKind(_ body: () throws -> Void) -> JSONStreamMaskingError.Kind? {
    do {
        try body()
        return nil
    } catch let error as JSONStreamMaskingError {
        return error.kind
    } catch {
        return nil
    }
}

/// Deterministic generator for fuzzing.
private struct MaskerTestRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Documents

private let identityDocuments: [String] = [
    "{}",
    "[]",
    "\"\"",
    "0",
    "-0",
    "12345",
    "-1.5e+10",
    "true",
    "false",
    "null",
    "  \n\t{ }  \r\n",
    #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
    """
    {
      "customers": [
        {
          "id": 1,
          "email": "ann@example.com",
          "card": 4111111111111111,
          "tags": [ "a", "b" ],
          "nested": { "deeper": [ [ 1, 2 ], [ ], { } ] }
        },
        { "id": 2, "email": null }
      ],
      "total": 2.50E-3
    }

    """,
    #"[0,-0,1,-1,0.0,1.25,-3.5e7,2E10,1e-7,6.02e+23,1E+0,123456789012345678901234567890]"#,
    #"{"s":"quote \" backslash \\ slash \/ / b\b f\f n\n r\r t\t u\u0041\u00e9\u20AC"}"#,
    #"{"pair":"\uD83D\uDE00","lone high":"\uD800x","lone low":"\uDC00","reversed":"\uDE00\uD83D","hi end":"\uDBFF"}"#,
    "{\"raw\":\"héllo wörld € 😀 𝄞 \u{2028} \u{7F}\",\"ключ\":\"значение\",\"日本\":[\"語\"]}",
    #"{"e\u006dail":"x","\"quoted\"":1,"":""}"#,
    String(repeating: "[", count: 100) + "1" + String(repeating: "]", count: 100),
    String(repeating: "{\"k\":", count: 60) + "\"deep\"" + String(repeating: "}", count: 60),
    "{\"a\":1}\n{\"a\":2}\n[3]\n\"four\"\n5\ntrue\n",
    "\u{FEFF}{\"bom\":true}",
    "[\"\",\"\\\\\",\"\\\"\",1,\"x\"]",
]

// MARK: - Byte identity

@Suite struct JSONStreamMaskerIdentityTests {
    @Test(arguments: identityDocuments)
    func keepIsByteIdenticalForAnySplit(_ text: String) throws {
        let doc = bytes(text)
        #expect(try runWhole(doc) == doc)
        for chunks in splits(doc) {
            #expect(try run(chunks) == doc)
        }
    }

    @Test(arguments: identityDocuments)
    func notInspectingIsByteIdenticalForAnySplit(_ text: String) throws {
        let doc = bytes(text)
        for chunks in splits(doc) {
            #expect(try run(chunks, shouldInspect: { _ in false }, mask: { _, _ in .replace("never") }) == doc)
        }
    }

    @Test(arguments: identityDocuments)
    func offeredScalarsDoNotDependOnSplits(_ text: String) throws {
        let doc = bytes(text)
        let whole = Recorder()
        _ = try runWhole(doc, mask: whole.mask)
        for chunks in splits(doc) {
            let split = Recorder()
            _ = try run(chunks, mask: split.mask)
            #expect(split.seen.map(\.0) == whole.seen.map(\.0))
            #expect(split.seen.map(\.1) == whole.seen.map(\.1))
        }
    }

    @Test func acceptsEveryInputShape() throws {
        var masker = JSONStreamMasker(mask: keepAll)
        let doc = bytes(#"{"a":[1,"two"]}"#)
        var out = try masker.feed(doc[..<4])  // ArraySlice
        out += try doc[4..<8].withUnsafeBytes { try masker.feed($0) }  // UnsafeRawBufferPointer
        out += try masker.feed(AnyCollection(doc[8...]))  // non-contiguous collection
        out += try masker.finish()
        #expect(out == doc)
        #expect(masker.completedValueCount == 1)
    }

    @Test func emptyAndWhitespaceOnlyStreamsAreAccepted() throws {
        #expect(try runWhole([]) == [])
        #expect(try runWhole(bytes(" \n ")) == bytes(" \n "))
    }
}

// MARK: - Decoding for the callback

@Suite struct JSONStreamMaskerDecodingTests {
    @Test func stringsAreOfferedDecoded() throws {
        let doc = bytes(
            #"["a\"b\\c\/d\be\ff\ng\rh\ti", "\u0041\u00e9\u20ac", "\uD83D\uDE00", "\uD800", "\uDC00x", "\uD800\u0041", "raw é😀", "\u0000"]"#
        )
        for chunks in splits(doc) {
            let recorder = Recorder()
            #expect(try run(chunks, mask: recorder.mask) == doc)
            #expect(
                recorder.seen.map(\.1) == [
                    .string("a\"b\\c/d\u{8}e\u{C}f\ng\rh\ti"),
                    .string("Aé€"),
                    .string("😀"),
                    .string("\u{FFFD}"),
                    .string("\u{FFFD}x"),
                    .string("\u{FFFD}A"),
                    .string("raw é😀"),
                    .string("\u{0}"),
                ])
        }
    }

    @Test func pathsNameKeysAndPositions() throws {
        let doc = bytes(#"{"a":[{"b":1},{"c":[true,false,null,"s"]}],"e\u0073c":-2.5e3, "x":{}}"#)
        let recorder = Recorder()
        _ = try runWhole(doc, mask: recorder.mask)
        #expect(recorder.seen.map(\.0) == [
            [.key("a"), .index(0), .key("b")],
            [.key("a"), .index(1), .key("c"), .index(0)],
            [.key("a"), .index(1), .key("c"), .index(1)],
            [.key("a"), .index(1), .key("c"), .index(3)],
            [.key("esc")],
        ])
        #expect(recorder.seen.map(\.1) == [.number("1"), .bool(true), .bool(false), .string("s"), .number("-2.5e3")])
    }

    @Test func topLevelScalarsHaveTheEmptyPath() throws {
        let recorder = Recorder()
        _ = try runWhole(bytes("\"s\"\n42\ntrue\n"), mask: recorder.mask)
        #expect(recorder.seen.map(\.0) == [[], [], []])
        #expect(recorder.seen.map(\.1) == [.string("s"), .number("42"), .bool(true)])
    }

    @Test func heldBytesStayBoundedAndStructureFlowsImmediately() throws {
        var masker = JSONStreamMasker(mask: keepAll)
        #expect(try masker.feed(bytes(#"{"a": "xy"#)) == bytes(#"{"a": "#))
        #expect(masker.bufferedByteCount == 3)
        #expect(try masker.feed(bytes(#"z", "b": [12"#)) == bytes(#""xyz", "b": ["#))
        #expect(try masker.feed(bytes("3]}")) == bytes("123]}"))
        #expect(masker.bufferedByteCount == 0)
        #expect(try masker.finish() == [])

        // Values that are not inspected are streamed, not held, whatever their size.
        var streaming = JSONStreamMasker(maxValueBytes: 8, shouldInspect: { _ in false }, mask: keepAll)
        var out = try streaming.feed(bytes(#"{"blob":""#))
        for _ in 0..<100 {
            out += try streaming.feed(bytes(String(repeating: "A", count: 1000)))
            #expect(streaming.bufferedByteCount == 0)
        }
        out += try streaming.feed(bytes("\"}"))
        out += try streaming.finish()
        #expect(out.count == 100_000 + 11)
    }
}

// MARK: - Masking

@Suite struct JSONStreamMaskerMaskingTests {
    @Test func masksByPathAcrossAnySplit() throws {
        let doc = bytes(
            #"{"customers":[{"email":"a@x.io","name":"Ann","orders":[{"ssn":"1"},{"ssn":"2"}]},{"email":"b@x.io","name":"Bo"}],"email":"top"}"#
        )
        let expected = bytes(
            #"{"customers":[{"email":"***","name":"Ann","orders":[{"ssn":"1"},{"ssn":null}]},{"email":"***","name":"Bo"}],"email":"top"}"#
        )
        let customers = JSONPathPattern("$.customers[*].email")!
        let ssn = JSONPathPattern("$.customers[0].orders[1].ssn")!
        let mask: JSONStreamMasker.MaskFunction = { path, _ in
            if customers.matches(path) { return .replace("***") }
            if ssn.matches(path) { return .replaceWithNull }
            return .keep
        }
        for chunks in splits(doc) {
            #expect(try run(chunks, mask: mask) == expected)
        }
    }

    @Test func escapedKeysCannotStepAroundARule() throws {
        let doc = bytes(#"[{"e\u006dail":"a"},{"\u0065\u006D\u0061\u0069\u006C":"b"},{"email":"c"},{"Email":"d"}]"#)
        let expected = bytes(#"[{"e\u006dail":"*"},{"\u0065\u006D\u0061\u0069\u006C":"*"},{"email":"*"},{"Email":"d"}]"#)
        for chunks in splits(doc) {
            #expect(try run(chunks, mask: patternMask(["$[*].email"], with: .replace("*"))) == expected)
        }
        let insensitive = JSONPathPattern("$..EMAIL", caseInsensitive: true)!
        let all = try runWhole(doc) { path, _ in insensitive.matches(path) ? .replace("*") : .keep }
        #expect(all == bytes(#"[{"e\u006dail":"*"},{"\u0065\u006D\u0061\u0069\u006C":"*"},{"email":"*"},{"Email":"*"}]"#))
    }

    @Test func recursiveDescentMatchesAtAnyDepth() throws {
        let doc = bytes(#"{"email":"1","a":{"email":"2","b":[{"email":"3"},["x",{"c":{"email":4}}]]},"emails":["5"]}"#)
        let expected = bytes(#"{"email":"~","a":{"email":"~","b":[{"email":"~"},["x",{"c":{"email":"~"}}]]},"emails":["5"]}"#)
        for chunks in splits(doc) {
            #expect(try run(chunks, mask: patternMask(["$..email"], with: .replace("~"))) == expected)
        }
    }

    @Test func numbersAndBooleansCanBeMasked() throws {
        let doc = bytes(#"{"card":4111111111111111,"cvv":123,"amount":12.5,"vip":true,"pin":-0.5e-3}"#)
        let mask: JSONStreamMasker.MaskFunction = { path, value in
            switch value {
            case .number(let text) where text.count >= 13: return .replace("****" + text.suffix(4))
            case .number where path == [.key("cvv")]: return .replaceWithNull
            case .number where path == [.key("pin")]: return .replace("x")
            case .bool: return .replaceWithNull
            default: return .keep
            }
        }
        let expected = bytes(#"{"card":"****1111","cvv":null,"amount":12.5,"vip":null,"pin":"x"}"#)
        for chunks in splits(doc) {
            #expect(try run(chunks, mask: mask) == expected)
        }
        // A top-level number is complete only at the end of the input.
        #expect(try runWhole(bytes("4111111111111111"), mask: mask) == bytes(#""****1111""#))
    }

    @Test func replacementsAreEscapedValidJSON() throws {
        let nasty = "q\"b\\s/\n\r\t\u{8}\u{C}\u{1}\u{1F}é😀\u{2028}"
        let out = try runWhole(bytes(#"{"a":"x","b":["y"]}"#)) { _, _ in .replace(nasty) }
        let parsed = try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any]
        #expect(parsed?["a"] as? String == nasty)
        #expect((parsed?["b"] as? [String])?.first == nasty)
        // And the masker reads its own output back to the same content.
        let recorder = Recorder()
        _ = try runWhole(out, mask: recorder.mask)
        #expect(recorder.seen.map(\.1) == [.string(nasty), .string(nasty)])
    }

    @Test func ndjsonValuesEachStartAtTheRoot() throws {
        let doc = bytes("{\"token\":\"t1\",\"n\":1}\n{\"token\":\"t2\"}\r\n[{\"token\":\"t3\"}]\n\"token\"\n")
        let expected = bytes("{\"token\":\"-\",\"n\":1}\n{\"token\":\"-\"}\r\n[{\"token\":\"t3\"}]\n\"token\"\n")
        for chunks in splits(doc) {
            var masker = JSONStreamMasker(mask: patternMask(["$.token"], with: .replace("-")))
            var out: [UInt8] = []
            for chunk in chunks { out += try masker.feed(chunk) }
            out += try masker.finish()
            #expect(out == expected)
            #expect(masker.completedValueCount == 4)
        }
    }

    @Test func shouldInspectLimitsWhatIsOffered() throws {
        let token = JSONPathPattern("$.data.*.token")!
        let recorder = Recorder()
        let doc = bytes(#"{"data":{"a":{"token":"s1","other":"o"},"b":{"token":2}},"token":"top"}"#)
        var masker = JSONStreamMasker(shouldInspect: { token.matches($0) }, mask: recorder.mask)
        let out = try masker.feed(doc) + masker.finish()
        #expect(out == doc)
        #expect(recorder.seen.map(\.1) == [.string("s1"), .number("2")])
    }
}

// MARK: - Malformed and hostile input

@Suite struct JSONStreamMaskerErrorTests {
    static let malformed: [(String, JSONStreamMaskingError.Kind)] = [
        ("{", .truncated),
        (#"{"a":1"#, .truncated),
        (#"{"a""#, .truncated),
        ("[1,2", .truncated),
        ("-", .truncated),
        ("\"abc", .truncated),
        (#""abc\"#, .truncated),
        (#""\u12"#, .truncated),
        ("tru", .truncated),
        ("[1,2,]", .syntax),
        (#"{"a":1,}"#, .syntax),
        ("[,1]", .syntax),
        (#"{"a" 1}"#, .syntax),
        (#"{"a":1 "b":2}"#, .syntax),
        ("{1:2}", .syntax),
        ("[1 2]", .syntax),
        ("]", .syntax),
        ("}", .syntax),
        ("{]", .syntax),
        ("[}", .syntax),
        ("[1}", .syntax),
        (#"{"a":1]"#, .syntax),
        ("{}}", .syntax),
        ("{}{}", .syntax),
        (#""a""b""#, .syntax),
        ("nul", .truncated),
        ("nulL", .syntax),
        ("True", .syntax),
        ("truex", .syntax),
        ("[truefalse]", .syntax),
        ("'a'", .syntax),
        ("undefined", .syntax),
        ("NaN", .syntax),
        ("[Infinity]", .syntax),
        ("01", .invalidNumber),
        ("-01", .invalidNumber),
        ("1.", .truncated),
        ("[1.]", .invalidNumber),
        ("[.5]", .syntax),
        ("[+1]", .syntax),
        ("[1e]", .invalidNumber),
        ("[1e+]", .invalidNumber),
        ("[-]", .invalidNumber),
        ("[1.5.3]", .syntax),
        ("[0x10]", .syntax),
        ("[1a]", .syntax),
        (#""\x""#, .invalidEscape),
        (#""\U0041""#, .invalidEscape),
        (#""\u12G4""#, .invalidEscape),
        (#""\'""#, .invalidEscape),
        ("\"a\nb\"", .controlCharacterInString),
        ("\"a\tb\"", .controlCharacterInString),
        ("\"\u{0}\"", .controlCharacterInString),
        ("{\"k\u{1F}\":1}", .controlCharacterInString),
        ("[1]x", .syntax),
        ("\u{0}", .syntax),
    ]

    static let invalidUTF8: [[UInt8]] = [
        [0x22, 0xC3, 0x28, 0x22],  // bad continuation
        [0x22, 0xC0, 0x80, 0x22],  // overlong NUL
        [0x22, 0xE0, 0x80, 0x80, 0x22],  // overlong
        [0x22, 0xED, 0xA0, 0x80, 0x22],  // encoded surrogate
        [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // above U+10FFFF
        [0x22, 0xF5, 0x80, 0x80, 0x80, 0x22],
        [0x22, 0x80, 0x22],  // stray continuation
        [0x22, 0xFF, 0x22],
        [0x22, 0xE2, 0x82, 0x22],  // truncated sequence
        [0x7B, 0x22, 0xC3, 0x22, 0x3A, 0x31, 0x7D],  // in a key
    ]

    @Test func malformedDocumentsThrowForAnySplit() {
        for (text, kind) in Self.malformed {
            let doc = bytes(text)
            #expect(errorKind { _ = try runWhole(doc) } == kind, "\(text.debugDescription)")
            for chunks in splits(doc) {
                #expect(errorKind { _ = try run(chunks) } == kind, "\(text.debugDescription)")
            }
        }
    }

    @Test func invalidUTF8InStringsThrows() {
        for doc in Self.invalidUTF8 {
            for chunks in splits(doc) {
                #expect(errorKind { _ = try run(chunks) } == .invalidUTF8, "\(doc)")
            }
        }
        // Outside strings any non-ASCII byte is a syntax error; a partial byte order mark too.
        #expect(errorKind { _ = try runWhole([0xC3, 0xA9]) } == .syntax)
        #expect(errorKind { _ = try runWhole([0xEF, 0xBB, 0x7B, 0x7D]) } == .syntax)
        #expect(errorKind { _ = try runWhole([0xEF, 0xBB]) } == .truncated)
        #expect(errorKind { _ = try runWhole(bytes(" \u{FEFF}{}")) } == .syntax)
    }

    @Test func depthIsBounded() throws {
        let ok = bytes(String(repeating: "[", count: 10) + String(repeating: "]", count: 10))
        #expect(try run([ok[...]], maxDepth: 10) == ok)
        let deep = bytes(String(repeating: "[{\"a\":", count: 5) + "[")
        #expect(errorKind { _ = try run([deep[...]], maxDepth: 10) } == .tooDeep)
        // Hostile depth fails fast with the default limit, without recursion or growth.
        let hostile = [UInt8](repeating: 0x5B, count: 1_000_000)
        var masker = JSONStreamMasker(mask: keepAll)
        #expect(throws: JSONStreamMaskingError(.tooDeep, offset: 128)) { _ = try masker.feed(hostile) }
    }

    @Test func valueSizeIsBoundedForAnySplit() throws {
        let fits = bytes(#"["12345678", 123456789]"#)  // each value is 10 / 9 bytes encoded
        #expect(try run([fits[...]], maxValueBytes: 10) == fits)
        for text in [#"["123456789"]"#, "[12345678901]", "12345678901"] {
            let doc = bytes(text)
            for chunks in splits(doc) {
                #expect(errorKind { _ = try run(chunks, maxValueBytes: 10) } == .valueTooLong, "\(text)")
            }
        }
        let key = bytes(#"{"123456789":1}"#)
        for chunks in splits(key) {
            #expect(errorKind { _ = try run(chunks, maxKeyBytes: 10) } == .keyTooLong)
        }
        // Held bytes never grow beyond the limit, whatever the chunking.
        var masker = JSONStreamMasker(maxValueBytes: 1000, mask: keepAll)
        _ = try masker.feed(bytes("\""))
        var thrown: JSONStreamMaskingError?
        for _ in 0..<100 {
            do {
                _ = try masker.feed(bytes(String(repeating: "x", count: 100)))
                #expect(masker.bufferedByteCount <= 1000)
            } catch {
                thrown = error
                break
            }
        }
        #expect(thrown?.kind == .valueTooLong)
    }

    @Test func errorsAreSticky() throws {
        var masker = JSONStreamMasker(mask: keepAll)
        #expect(try masker.feed(bytes("[1,")) == bytes("[1,"))
        #expect(throws: JSONStreamMaskingError(.syntax, offset: 3)) { _ = try masker.feed(bytes("]")) }
        #expect(throws: JSONStreamMaskingError(.syntax, offset: 3)) { _ = try masker.feed(bytes("2]")) }
        #expect(throws: JSONStreamMaskingError(.syntax, offset: 3)) { _ = try masker.finish() }
        #expect(JSONStreamMaskingError(.syntax, offset: 3).gatehouseError.code == "masking.json.syntax")

        var finished = JSONStreamMasker(mask: keepAll)
        _ = try finished.feed(bytes("{}"))
        _ = try finished.finish()
        #expect(errorKind { _ = try finished.feed(bytes("{}")) } == .alreadyFinished)
    }

    @Test func maskedValueNeverLeaksBeforeAnError() throws {
        // The secret is cut off by malformed input: nothing of it may have been emitted.
        var masker = JSONStreamMasker(mask: { _, _ in .replace("x") })
        var out = try masker.feed(bytes(#"{"s":"secr"#))
        out += (try? masker.feed(bytes("et\u{1}"))) ?? []
        #expect(!String(decoding: out, as: UTF8.self).contains("secr"))
    }
}

// MARK: - Fuzzing and differential checks

/// A generated document and what the masker must report for it.
private indirect enum Model {
    case object([(String, Model)])
    case array([Model])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    static let stringPool: [Character] = [
        "a", "b", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{1}", "\u{1F}", "\u{7F}", "é", "€", "😀", "\u{2028}",
        "\u{FFFF}", "\u{10000}", "\u{10FFFF}",
    ]
    static let numbers = ["0", "-0", "1", "-17", "3.25", "1e9", "-2.5E-3", "6.02e+23", "123456789012345678901234567890", "0.000"]

    static func random(_ rng: inout MaskerTestRNG, depth: Int) -> Model {
        switch Int.random(in: 0..<(depth > 5 ? 4 : 7), using: &rng) {
        case 0: return .string(randomString(&rng))
        case 1: return .number(numbers.randomElement(using: &rng)!)
        case 2: return .bool(Bool.random(using: &rng))
        case 3: return .null
        case 4, 5:
            return .object((0..<Int.random(in: 0...4, using: &rng)).map { _ in
                (randomString(&rng), random(&rng, depth: depth + 1))
            })
        default:
            return .array((0..<Int.random(in: 0...4, using: &rng)).map { _ in random(&rng, depth: depth + 1) })
        }
    }

    static func randomString(_ rng: inout MaskerTestRNG) -> String {
        String((0..<Int.random(in: 0...6, using: &rng)).map { _ in stringPool.randomElement(using: &rng)! })
    }

    /// Serializes with random whitespace and random (but valid) escaping.
    func write(_ rng: inout MaskerTestRNG, into out: inout [UInt8]) {
        func space() {
            for _ in 0..<[0, 0, 0, 1, 2].randomElement(using: &rng)! {
                out.append([0x20, 0x0A, 0x0D, 0x09].randomElement(using: &rng)!)
            }
        }
        space()
        switch self {
        case .object(let members):
            out.append(0x7B)
            for (k, (name, value)) in members.enumerated() {
                if k > 0 { out.append(0x2C) }
                space()
                Model.writeString(name, &rng, into: &out)
                space()
                out.append(0x3A)
                value.write(&rng, into: &out)
            }
            space()
            out.append(0x7D)
        case .array(let elements):
            out.append(0x5B)
            for (k, element) in elements.enumerated() {
                if k > 0 { out.append(0x2C) }
                element.write(&rng, into: &out)
            }
            space()
            out.append(0x5D)
        case .string(let s): Model.writeString(s, &rng, into: &out)
        case .number(let n): out += Array(n.utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .null: out += Array("null".utf8)
        }
        space()
    }

    static func writeString(_ s: String, _ rng: inout MaskerTestRNG, into out: inout [UInt8]) {
        func u(_ unit: UInt32) { out += Array(String(format: "\\u%04X", unit).utf8) }
        out.append(0x22)
        for scalar in s.unicodeScalars {
            let style = Int.random(in: 0..<3, using: &rng)
            switch scalar {
            case "\"": out += style == 0 ? Array(#"\u0022"#.utf8) : [0x5C, 0x22]
            case "\\": out += [0x5C, 0x5C]
            case "/": out += style == 0 ? [0x5C, 0x2F] : [0x2F]
            case "\n": out += style == 0 ? [0x5C, 0x6E] : Array(#"\u000a"#.utf8)
            case "\t": out += [0x5C, 0x74]
            case _ where scalar.value < 0x20: u(scalar.value)
            default:
                if style == 0 {
                    if scalar.value >= 0x10000 {
                        let v = scalar.value - 0x10000
                        u(0xD800 + (v >> 10))
                        u(0xDC00 + (v & 0x3FF))
                    } else {
                        u(scalar.value)
                    }
                } else {
                    out += Array(String(scalar).utf8)
                }
            }
        }
        out.append(0x22)
    }

    /// Scalars in document order, as the masker must offer them.
    func scalars(_ path: [JSONPathComponent] = [], into result: inout [([JSONPathComponent], JSONScalar)]) {
        switch self {
        case .object(let members):
            for (name, value) in members { value.scalars(path + [.key(name)], into: &result) }
        case .array(let elements):
            for (k, element) in elements.enumerated() { element.scalars(path + [.index(k)], into: &result) }
        case .string(let s): result.append((path, .string(s)))
        case .number(let n): result.append((path, .number(n)))
        case .bool(let b): result.append((path, .bool(b)))
        case .null: break
        }
    }
}

@Suite struct JSONStreamMaskerFuzzTests {
    /// Feeds `doc` in random chunk sizes.
    private func randomChunks(_ doc: [UInt8], _ rng: inout MaskerTestRNG) -> [ArraySlice<UInt8>] {
        var chunks: [ArraySlice<UInt8>] = []
        var i = 0
        while i < doc.count {
            let size = Int.random(in: 0...max(1, doc.count / 3), using: &rng)
            chunks.append(doc[i..<min(doc.count, i + size)])
            i += size
        }
        return chunks
    }

    private func outcome(_ body: () throws -> [UInt8]) -> Result<[UInt8], JSONStreamMaskingError> {
        do { return .success(try body()) } catch let error as JSONStreamMaskingError { return .failure(error) } catch {
            Issue.record("unexpected error type \(error)")
            return .failure(JSONStreamMaskingError(.syntax, offset: -1))
        }
    }

    @Test func generatedDocumentsDecodeExactly() throws {
        var rng = MaskerTestRNG(seed: 0x6A73_6F6E_0001)
        for _ in 0..<1500 {
            let model = Model.random(&rng, depth: 0)
            var doc: [UInt8] = []
            model.write(&rng, into: &doc)
            var expected: [([JSONPathComponent], JSONScalar)] = []
            model.scalars(into: &expected)

            let recorder = Recorder()
            let out = try run(randomChunks(doc, &rng), mask: recorder.mask)
            #expect(out == doc)
            #expect(recorder.seen.map(\.0) == expected.map(\.0))
            #expect(recorder.seen.map(\.1) == expected.map(\.1))

            // Mask roughly half the scalars; reading the output back must show the replacements.
            let masked = try run(randomChunks(doc, &rng), mask: { path, _ in
                path.count % 2 == 0 ? .replace("m:\(path.count)") : .keep
            })
            let reread = Recorder()
            _ = try runWhole(masked, mask: reread.mask)
            #expect(reread.seen.map(\.0) == expected.map(\.0))
            #expect(reread.seen.map(\.1) == expected.map { $0.0.count % 2 == 0 ? .string("m:\($0.0.count)") : $0.1 })
            if Set(expected.map(\.0.count)).allSatisfy({ $0 % 2 == 1 }) { #expect(masked == doc) }
        }
    }

    @Test func randomAndMutatedInputNeverTrapsAndIgnoresSplits() {
        var rng = MaskerTestRNG(seed: 0x6A73_6F6E_0002)
        let alphabet = Array(#"{}[]:,"\ /bfnrtu0123456789.eE+-aslxF"#.utf8) + [0x00, 0x0A, 0x1F, 0x7F, 0x80, 0xC3, 0xA9, 0xED, 0xF0, 0xFF]
        var accepted = 0
        var rejected = 0
        for round in 0..<6000 {
            var doc: [UInt8]
            if round % 2 == 0 {
                doc = (0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            } else {
                doc = []
                Model.random(&rng, depth: 0).write(&rng, into: &doc)
                for _ in 0..<Int.random(in: 1...3, using: &rng) where !doc.isEmpty {
                    let at = Int.random(in: 0..<doc.count, using: &rng)
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: doc[at] = alphabet.randomElement(using: &rng)!
                    case 1: doc.remove(at: at)
                    default: doc.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                    }
                }
            }
            let mask: JSONStreamMasker.MaskFunction = { path, _ in path.count == 1 ? .replace("r") : .keep }
            let whole = outcome { try run([doc[...]], maxDepth: 8, maxValueBytes: 64, mask: mask) }
            let split = outcome { try run(randomChunks(doc, &rng), maxDepth: 8, maxValueBytes: 64, mask: mask) }
            switch (whole, split) {
            case (.success(let a), .success(let b)):
                accepted += 1
                #expect(a == b)
            case (.failure(let a), .failure(let b)):
                rejected += 1
                #expect(a.kind == b.kind)
                if a.kind != .valueTooLong && a.kind != .keyTooLong { #expect(a.offset == b.offset) }
            default:
                Issue.record("split changed the outcome for \(doc)")
            }
        }
        #expect(accepted > 100)
        #expect(rejected > 100)
    }
}

// MARK: - Patterns

@Suite struct JSONPathPatternTests {
    @Test func parsesValidPatterns() {
        for text in [
            "$", "$.a", "$.a.b", "$.customers[*].email", "$..email", "$.data.*.token", "$.items[0].ssn", "$['a b']",
            #"$["it's"]"#, #"$['it\'s']"#, "$..[0]", "$..*", "$[*]", "$.a-b_c", "$.ключ", "$[12].x", "$..a..b",
        ] {
            #expect(JSONPathPattern(text) != nil, "\(text)")
        }
    }

    @Test func rejectsInvalidPatterns() {
        for text in [
            "", "a", "$.", "$..", "$...a", "$[", "$[]", "$[a]", "$['a]", "$['a'", "$[-1]", "$[1", "$.a b", "$.a*",
            "$ .a", "$a", "$.[0]", "$[*", "$.a]", "$[1234567890123456789]", " $.a",
        ] {
            #expect(JSONPathPattern(text) == nil, "\(text.debugDescription)")
        }
    }

    @Test func matchesPaths() {
        func m(_ pattern: String, _ path: [JSONPathComponent]) -> Bool { JSONPathPattern(pattern)!.matches(path) }
        #expect(m("$", []))
        #expect(!m("$", [.key("a")]))
        #expect(m("$.customers[*].email", [.key("customers"), .index(3), .key("email")]))
        #expect(!m("$.customers[*].email", [.key("customers"), .key("x"), .index(0), .key("email")]))
        #expect(m("$.customers[*].email", [.key("customers"), .key("x"), .key("email")]))  // * covers members too
        #expect(m("$..email", [.key("email")]))
        #expect(m("$..email", [.key("a"), .index(1), .key("b"), .key("email")]))
        #expect(!m("$..email", [.key("email"), .key("x")]))
        #expect(!m("$..email", [.key("Email")]))
        #expect(m("$.data.*.token", [.key("data"), .key("k"), .key("token")]))
        #expect(m("$.data.*.token", [.key("data"), .index(0), .key("token")]))
        #expect(!m("$.data.*.token", [.key("data"), .key("token")]))
        #expect(m("$.items[0].ssn", [.key("items"), .index(0), .key("ssn")]))
        #expect(!m("$.items[0].ssn", [.key("items"), .index(1), .key("ssn")]))
        #expect(!m("$.items[0]", [.key("items"), .key("0")]))
        #expect(m("$.items['0']", [.key("items"), .key("0")]))
        #expect(m("$['a.b'][\"c]\"]", [.key("a.b"), .key("c]")]))
        #expect(m("$..a..b", [.key("x"), .key("a"), .index(2), .key("y"), .key("b")]))
        #expect(!m("$..a..b", [.key("b"), .key("a")]))
        #expect(m("$..[1]", [.key("x"), .index(1)]))
        #expect(m("$..*", [.key("x"), .index(1)]))
        #expect(!m("$..*", []))
        #expect(JSONPathPattern("$.SECRET", caseInsensitive: true)!.matches([.key("Secret")]))
        #expect(JSONPathPattern("$['Ünï']", caseInsensitive: true)!.matches([.key("üNÏ")]))
        #expect(!JSONPathPattern("$.SECRET")!.matches([.key("Secret")]))
    }

    @Test func fastMatchingAgreesWithTheGeneralAlgorithm() {
        var rng = MaskerTestRNG(seed: 0x6A73_6F6E_0003)
        let names = ["a", "b", "email"]
        let patterns = [
            "$", "$.a", "$..a", "$..*", "$.*", "$[*]", "$[0]", "$..[1]", "$.a..b", "$..a..b", "$..a.b", "$..a[*]",
            "$.*.*", "$..email", "$.a[0].b", "$..*..*", "$..b..a..email", "$['a'][*]..[0]",
        ].map { JSONPathPattern($0)! }
        for _ in 0..<4000 {
            let depth = Int.random(in: 0...(Bool.random(using: &rng) ? 6 : 90), using: &rng)
            let path: [JSONPathComponent] = (0..<depth).map { _ in
                Bool.random(using: &rng) ? .key(names.randomElement(using: &rng)!) : .index(Int.random(in: 0...2, using: &rng))
            }
            for pattern in patterns {
                for descendants in [false, true] {
                    #expect(
                        pattern.matches(path, includingDescendants: descendants)
                            == pattern.matchesGeneral(path, includingDescendants: descendants),
                        "\(pattern) \(JSONPathComponent.render(path))")
                }
            }
        }
        let deep = [JSONPathComponent](repeating: .index(0), count: 100) + [.key("email")]
        #expect(JSONPathPattern("$..email")!.matches(deep))
        #expect(!JSONPathPattern("$..email")!.matches(deep + [.index(0)]))
        #expect(JSONPathPattern("$..email")!.matches(deep + [.index(0)], includingDescendants: true))
    }

    @Test func matchesDescendantsWhenAsked() {
        let secrets = JSONPathPattern("$.secrets")!
        #expect(secrets.matches([.key("secrets"), .index(0), .key("v")], includingDescendants: true))
        #expect(!secrets.matches([.key("secrets"), .index(0), .key("v")]))
        #expect(!secrets.matches([.key("public")], includingDescendants: true))
        #expect(JSONPathPattern("$..token")!.matches([.key("a"), .key("token"), .key("x")], includingDescendants: true))
    }

    @Test func rendersPaths() {
        #expect(JSONPathComponent.render([]) == "$")
        #expect(JSONPathComponent.render([.key("customers"), .index(3), .key("email")]) == "$.customers[3].email")
        let odd: [JSONPathComponent] = [.key("a b"), .key("it's"), .key("*"), .key("")]
        let text = JSONPathComponent.render(odd)
        #expect(text == #"$['a b']['it\'s']['*']['']"#)
        #expect(JSONPathPattern(text)?.matches(odd) == true)
    }
}

// MARK: - Volume

@Suite struct JSONStreamMaskerVolumeTests {
    @Test func fiftyMegabyteDocumentStreams() throws {
        let record = #"{"id":1234567,"email":"someone.long.name@example.com","name":"Some Body \u00e9","card":4111111111111111,"tags":["alpha","beta"],"active":true,"score":-12.75e2}"#
        let chunkSize = 64 * 1024
        let target = 50 * 1024 * 1024
        let recordBytes = bytes(record + ",\n")
        let count = target / recordBytes.count

        let email = JSONPathPattern("$[*].email")!
        let card = JSONPathPattern("$..card")!
        var masked = 0
        var masker = JSONStreamMasker(
            shouldInspect: { email.matches($0) || card.matches($0) },
            mask: { path, _ in
                masked += 1
                return card.matches(path) ? .replaceWithNull : .replace("x")
            })

        var chunk: [UInt8] = [0x5B]
        chunk.reserveCapacity(chunkSize + recordBytes.count)
        var inputSize = 0
        var outputSize = 0
        for k in 0..<count {
            chunk += k == count - 1 ? bytes(record + "]\n") : recordBytes
            if chunk.count >= chunkSize || k == count - 1 {
                inputSize += chunk.count
                outputSize += try masker.feed(chunk).count
                #expect(masker.bufferedByteCount < 64)
                chunk.removeAll(keepingCapacity: true)
            }
        }
        outputSize += try masker.finish().count
        #expect(inputSize >= 49 * 1024 * 1024)
        #expect(masked == 2 * count)
        let saved = ("\"someone.long.name@example.com\"".count - 3) + ("4111111111111111".count - 4)
        #expect(outputSize == inputSize - saved * count)
    }
}

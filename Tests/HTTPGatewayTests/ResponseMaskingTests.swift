import Foundation
import GatehouseCore
@testable import HTTPGateway
import Masking
import Policy
import Testing

private let masker = ValueMasker(hashKey: Array(repeating: UInt8(7), count: 32))

private func rules(
    _ name: String = "pii", paths: [String] = [], detectors: [Detector] = [], strategy: MaskStrategy = .partial(keep: 4)
) -> NamedMask {
    // Made the way the proxy gets them: from the policy, for a principal on a connection.
    let policy = Policy(rules: [PolicyRule(
        name: name, effect: .mask, mask: MaskAction(jsonPaths: paths, detectors: detectors, strategy: strategy))])
    return policy.masks(principal: Principal(subject: "alice", issuer: "test", authMethod: .apiKey), connection: "api")[0]
}

/// Masks `chunks` in order, finishing; returns the text and the tally.
private func run(_ chunks: [[UInt8]], json: Bool = true, _ masks: [NamedMask], window: Int = 4096, maxHeld: Int = 64 * 1024)
    throws(ResponseMaskingError) -> (text: String, tally: MaskTally)
{
    var masking = ResponseMasker(json: json, rules: ResponseMaskRules(masks), masker: masker, textWindow: window, textMaxHeld: maxHeld)
    var out: [UInt8] = []
    for chunk in chunks { out += try masking.feed(chunk) }
    out += try masking.finish()
    return (String(decoding: out, as: UTF8.self), masking.tally)
}

private func run(_ text: String, json: Bool = true, _ masks: [NamedMask]) throws(ResponseMaskingError) -> String {
    try run([Array(text.utf8)], json: json, masks).text
}

private func parse(_ text: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
}

private let customers = """
    {"customers": [
      {"id": 1, "name": "Ada", "email": "ada@example.com", "card": "4111 1111 1111 1111", "ssn": "123-45-6789"},
      {"id": 2, "name": "Grace", "email": "grace@example.com", "card": 4111111111111111, "note": "call 123-45-6789 back"}
    ], "total": 2}
    """

@Suite("Response masking: JSON")
struct JSONResponseMaskingTests {
    @Test func pathsMaskWholeValuesAndDetectorsMaskWhatTheyFind() throws {
        let out = try run(customers, [rules(paths: ["$..email"], detectors: [.paymentCard, .usSSN])])
        let doc = try #require(try parse(out) as? [String: Any])
        let list = try #require(doc["customers"] as? [[String: Any]])
        #expect(list[0]["email"] as? String == masker.mask("ada@example.com", strategy: .partial(keep: 4)))
        #expect(list[0]["card"] as? String == "**** **** **** 1111")
        #expect(list[0]["ssn"] as? String == "***-**-6789")
        #expect(list[0]["name"] as? String == "Ada", "other values pass")
        #expect(list[0]["id"] as? Int == 1, "numbers nothing detects stay numbers")
        // A card stored as a JSON number is found in its text and becomes a masked string.
        #expect(list[1]["card"] as? String == "************1111")
        #expect(list[1]["note"] as? String == "call ***-**-6789 back", "detectors mask inside longer text")
        #expect(doc["total"] as? Int == 2)
        for secret in ["ada@example.com", "grace@example.com", "4111 1111 1111 1111", "4111111111111111", "123-45-6789"] {
            #expect(!out.contains(secret))
        }
    }

    @Test func keysAreNeverMaskedAndOutputIsUnchangedWhenNothingMatches() throws {
        let doc = #"{"ada@example.com": {"ok": true}, "x": [1, 2.5e3, null, "plain"]}"#
        #expect(try run(doc, [rules(paths: ["$.nothing"], detectors: [.email, .paymentCard])]) == doc)
        let masked = try run(#"{"ada@example.com": "ada@example.com"}"#, [rules(detectors: [.email], strategy: .redact)])
        #expect(masked == #"{"ada@example.com": "[redacted]"}"#)
    }

    @Test func aPathCoversEverythingBelowIt() throws {
        let doc = #"{"card": {"number": 4111111111111111, "holder": "Ada", "valid": true, "exp": {"m": 12}}, "id": 7}"#
        let out = try run(doc, [rules(paths: ["$.card"], strategy: .redact)])
        #expect(out == #"{"card": {"number": "[redacted]", "holder": "[redacted]", "valid": null, "exp": {"m": "[redacted]"}}, "id": 7}"#)
    }

    @Test func theFirstRuleInPolicyOrderDecidesAPath() throws {
        let masks = [rules("hash-ids", paths: ["$..id"], strategy: .keyedHash), rules("redact-all", paths: ["$..*"], strategy: .redact)]
        let (out, tally) = try run([Array(#"{"id": "abc", "name": "Ada"}"#.utf8)], masks)
        #expect(out == #"{"id": "\#(masker.mask("abc", strategy: .keyedHash))", "name": "[redacted]"}"#)
        #expect(tally.byPath == [1, 1] && tally.byDetector == [0, 0])
    }

    @Test func eachDetectorUsesTheStrategyOfTheFirstRuleNamingIt() throws {
        let masks = [rules("cards", detectors: [.paymentCard], strategy: .redact), rules("rest", detectors: [.paymentCard, .email], strategy: .partial(keep: 4))]
        let (out, tally) = try run([Array(#"["4111 1111 1111 1111 or ada@example.com"]"#.utf8)], masks)
        #expect(out == #"["[redacted] or **********e.com"]"#)
        #expect(tally.byDetector == [1, 1])
    }

    @Test func hashesAreStableAcrossResponses() throws {
        let masks = [rules(paths: ["$..email"], strategy: .keyedHash)]
        let first = try run(#"{"email": "ada@example.com"}"#, masks)
        let second = try run(#"[{"email": "ada@example.com"}, {"email": "bob@example.com"}]"#, masks)
        let hash = masker.mask("ada@example.com", strategy: .keyedHash)
        #expect(hash.hasPrefix("h:"))
        #expect(first.contains(hash) && second.contains(hash))
        #expect(!second.contains("bob@example.com"))
    }

    @Test func everySplitOfASmallDocumentGivesTheSameOutput() throws {
        let masks = [rules(paths: ["$..email"], detectors: [.paymentCard, .usSSN])]
        let doc = Array(customers.utf8)
        let whole = try run([doc], masks).text
        for split in 0...doc.count {
            #expect(try run([Array(doc[..<split]), Array(doc[split...])], masks).text == whole, "split at \(split)")
        }
        #expect(try run(doc.map { [$0] }, masks).text == whole, "byte by byte")
    }

    @Test func ndjsonLinesAreEachMasked() throws {
        let lines = "{\"email\": \"ada@example.com\", \"n\": 1}\n{\"email\": \"grace@example.com\", \"card\": \"5500 0000 0000 0004\"}\n"
        let out = try run(lines, [rules(paths: ["$.email"], detectors: [.paymentCard], strategy: .redact)])
        #expect(out == "{\"email\": \"[redacted]\", \"n\": 1}\n{\"email\": \"[redacted]\", \"card\": \"[redacted]\"}\n")
    }

    @Test func malformedJSONCutsTheStreamWithoutLeakingTheValueBeingRead() throws {
        let masks = [rules(paths: ["$..email"], detectors: [.paymentCard])]
        var masking = ResponseMasker(json: true, rules: ResponseMaskRules(masks), masker: masker)
        var sent = try masking.feed(Array(#"{"a": "x", "email": "ada@exa"#.utf8))
        #expect(throws: ResponseMaskingError.self) {
            sent += try masking.feed(Array(#"mple.com", }"#.utf8))
        }
        let text = String(decoding: sent, as: UTF8.self)
        #expect(!text.contains("ada"), "the held value never went out: \(text)")
        #expect(throws: ResponseMaskingError.self) { _ = try masking.finish() }
    }

    @Test func aTruncatedDocumentFailsAtTheEnd() throws {
        #expect(throws: ResponseMaskingError.self) { try run(#"{"card": "4111 1111 1111 1111"#, [rules(detectors: [.paymentCard])]) }
    }

    @Test func escapedAndUnicodeValuesAreDecodedBeforeDetection() throws {
        let out = try run(#"{"v": "card\u0020\u0034111 1111 1111 1111 — é", "q": "say \"hi\""}"#, [rules(detectors: [.paymentCard], strategy: .redact)])
        #expect(out == #"{"v": "card [redacted] — é", "q": "say \"hi\""}"#)
    }

    @Test func rulesWithNothingForResponsesDoNotApply() {
        let columnsOnly = Policy(rules: [PolicyRule(name: "sql-only", effect: .mask, mask: MaskAction(columns: ["email"]))])
            .masks(principal: Principal(subject: "alice", issuer: "test", authMethod: .apiKey), connection: "api")
        #expect(columnsOnly.count == 1)
        #expect(ResponseMaskRules.forResponses(columnsOnly) == nil, "a binary download must not be refused for a SQL column rule")
        #expect(ResponseMaskRules.forResponses(columnsOnly + [rules(detectors: [.email])])?.names == ["pii"])
    }

    @Test func anUnreadablePathIsReported() {
        let compiled = ResponseMaskRules([rules(paths: ["$.ok"]), rules("broken", paths: ["$.a b"])])
        #expect(compiled.unreadablePath?.rule == "broken")
        #expect(ResponseMaskRules([rules(paths: ["$..email", "$.a[*].b"])]).unreadablePath == nil)
    }

    @Test func theDecisionNamesTheRulesThatMasked() throws {
        let masks = [rules("emails", paths: ["$..email"]), rules("cards", detectors: [.paymentCard]), rules("unused", paths: ["$.zzz"])]
        let compiled = ResponseMaskRules(masks)
        let (_, tally) = try run([Array(customers.utf8)], masks)
        let request = Decision.allow(rule: "read-anything", reason: "rule read-anything allows GET /customers")
        let decision = compiled.decision(after: tally, request: request)
        #expect(decision.effect == .mask)
        #expect(decision.rule == "emails,cards")
        #expect(decision.reason == "4 values masked by rules emails (2 by JSON path); cards (2 by detector); the request was allowed by rule read-anything")
        let nothing = compiled.decision(after: MaskTally(rules: 3), request: request)
        #expect(nothing.effect == .allow && nothing.rule == "read-anything")
        #expect(nothing.reason?.hasSuffix("mask rules emails, cards, unused found nothing to mask") == true)
        #expect(compiled.withheld("it is gzip-encoded").effect == .deny)
    }
}

@Suite("Response masking: text")
struct TextResponseMaskingTests {
    let masks = [rules(detectors: [.paymentCard, .usSSN, .email])]

    @Test func aValueSplitOverTwoChunksIsMaskedAtEverySplit() throws {
        let text = Array("id,name,card,ssn\n1,Ada,4111 1111 1111 1111,123-45-6789\n2,Bob,none,none\nmail ada@example.com".utf8)
        let whole = try run([text], json: false, masks).text
        #expect(whole == "id,name,card,ssn\n1,Ada,**** **** **** 1111,***-**-6789\n2,Bob,none,none\nmail **********e.com")
        for split in 0...text.count {
            #expect(try run([Array(text[..<split]), Array(text[split...])], json: false, masks).text == whole, "split at \(split)")
        }
        #expect(try run(text.map { [$0] }, json: false, masks).text == whole, "byte by byte")
    }

    @Test func linesAreSentAsSoonAsTheyAreComplete() throws {
        var masking = ResponseMasker(json: false, rules: ResponseMaskRules(masks), masker: masker)
        #expect(try masking.feed(Array("data: card 4111 1111 ".utf8)).isEmpty, "an open line is held")
        #expect(String(decoding: try masking.feed(Array("1111 1111\n\ndata: next".utf8)), as: UTF8.self) == "data: card **** **** **** 1111\n\n")
        #expect(String(decoding: try masking.finish(), as: UTF8.self) == "data: next")
    }

    @Test func longLinesAreSentInBoundedPiecesAndStillMaskedAtEverySplit() throws {
        // No line breaks at all: the window decides what is held; memory stays bounded.
        var line: [UInt8] = []
        var index = 0
        while line.count < 3000 {
            line += Array("word\(index) ".utf8)
            if index % 7 == 0 { line += Array("4111 1111 1111 1111 ".utf8) }
            if index % 11 == 0 { line += Array("someone\(index)@example.com ".utf8) }
            index += 1
        }
        let whole = try run([line], json: false, masks, window: 128).text
        #expect(!whole.contains("4111 1111 1111 1111") && !whole.contains("@example.com"))
        for size in [1, 2, 3, 7, 64, 100, 129, 255, 256, 1000] {
            var masking = ResponseMasker(json: false, rules: ResponseMaskRules(masks), masker: masker, textWindow: 128)
            var out: [UInt8] = []
            var start = 0
            var largestHeld = 0
            while start < line.count {
                let end = min(line.count, start + size)
                out += try masking.feed(Array(line[start..<end]))
                largestHeld = max(largestHeld, start + (end - start) - out.count)
                start = end
            }
            out += try masking.finish()
            #expect(String(decoding: out, as: UTF8.self) == whole, "chunks of \(size)")
            #expect(largestHeld <= 2 * 128 + size, "held \(largestHeld) with chunks of \(size)")
        }
    }

    @Test func aPEMKeyIsHeldUntilItEndsAndAnEndlessOneCutsTheStream() throws {
        let secrets = [rules(detectors: [.secret], strategy: .redact)]
        let pem = "before\n-----BEGIN PRIVATE KEY-----\n" + String(repeating: "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n", count: 40) + "-----END PRIVATE KEY-----\nafter\n"
        let bytes = Array(pem.utf8)
        let out = try run(stride(from: 0, to: bytes.count, by: 50).map { Array(bytes[$0..<min(bytes.count, $0 + 50)]) }, json: false, secrets).text
        #expect(out == "before\n[redacted]\nafter\n")
        #expect(throws: ResponseMaskingError.self) {
            var masking = ResponseMasker(json: false, rules: ResponseMaskRules(secrets), masker: masker, textWindow: 64, textMaxHeld: 1024)
            _ = try masking.feed(Array("-----BEGIN PRIVATE KEY-----\n".utf8))
            for _ in 0..<100 { _ = try masking.feed(Array("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n".utf8)) }
        }
    }
}

@Suite("Response masking: what can be read")
struct ResponseMaskModeTests {
    private func mode(_ type: String?, encoding: [String] = [], transfer: [String] = [], status: Int = 200, length: Int? = nil, detectors: Bool = true, paths: Bool = false) -> ResponseMaskMode {
        ResponseMasking.mode(status: status, contentType: type, contentEncodings: encoding, transferEncodings: transfer, declaredLength: length, hasDetectors: detectors, hasPaths: paths)
    }

    @Test func jsonAndTextTypes() {
        for type in ["application/json", "application/json; charset=utf-8", "application/problem+json", "application/vnd.api+json",
                     "application/x-ndjson", "application/jsonl", "text/json", "APPLICATION/JSON"] {
            #expect(mode(type) == .json, "\(type)")
        }
        for type in ["text/plain", "text/csv; charset=iso-8859-1", "text/event-stream", "text/html; charset=UTF-8", "application/xml",
                     "application/atom+xml", "application/x-www-form-urlencoded", "application/javascript", "application/yaml"] {
            #expect(mode(type) == .text, "\(type)")
        }
        #expect(mode("text/plain", detectors: false) == .untouched, "without masks that read text, text passes")
        #expect(mode("text/csv", paths: true) == .withhold("JSON-path masks apply and it is text/csv, not JSON"),
                "a field masked by path must not leave in another representation")
    }

    @Test func unreadableBodiesAreWithheld() {
        #expect(mode("application/json", encoding: ["gzip"]) == .withhold("it is gzip-encoded"))
        #expect(mode("text/plain", encoding: ["identity, br"]) == .withhold("it is br-encoded"))
        #expect(mode("application/json", transfer: ["gzip, chunked"]) == .withhold("its transfer coding is gzip"))
        #expect(mode("application/octet-stream") == .withhold("the gateway cannot read application/octet-stream content"))
        #expect(mode("image/png", detectors: false) == .withhold("the gateway cannot read image/png content"))
        #expect(mode("multipart/mixed; boundary=x") == .withhold("the gateway cannot read multipart/mixed content"))
        #expect(mode(nil) == .withhold("it has no content type"))
        #expect(mode("text/plain; charset=utf-16") == .withhold("its charset is utf-16"))
        #expect(mode("application/json; charset=utf-16le") == .withhold("its charset is utf-16le"))
        #expect(mode("application/json", status: 206) == .withhold("it is a partial response"))
    }

    @Test func bodilessResponsesPass() {
        #expect(mode("application/json", encoding: ["identity"]) == .json)
        #expect(mode(nil, status: 204) == .untouched)
        #expect(mode("image/png", status: 304) == .untouched)
        #expect(mode(nil, length: 0) == .untouched)
        #expect(mode("application/json", encoding: ["gzip"], status: 304) == .untouched)
    }

    @Test func theUpstreamIsAskedForAnIdentityBodyInOnePiece() {
        let fields = ResponseMasking.upstreamFields([("Accept", "application/json"), ("Accept-Encoding", "gzip, br"), ("Range", "bytes=0-10"), ("If-Range", "\"x\"")])
        #expect(fields.map { "\($0.name): \($0.value)" } == ["Accept: application/json", "Accept-Encoding: identity"])
    }

    @Test func rewrittenBodiesLoseHeadersAboutTheUpstreamBytesAndHeadersAreScanned() {
        let compiled = ResponseMaskRules([rules(detectors: [.email], strategy: .redact)])
        var tally = MaskTally(rules: 1)
        let upstream: HeaderShaping.Fields = [
            ("Content-Type", "application/json"), ("ETag", "\"abc\""), ("Content-Digest", "sha-256=:x:"), ("Accept-Ranges", "bytes"),
            ("Location", "/users/ada@example.com"), ("Cache-Control", "no-store"),
        ]
        let rewritten = ResponseMasking.downstreamFields(upstream, rewritingBody: true, rules: compiled, masker: masker, tally: &tally)
        #expect(rewritten.map { "\($0.name): \($0.value)" } == ["Content-Type: application/json", "Location: /users/[redacted]", "Cache-Control: no-store"])
        #expect(tally.byDetector == [1])
        let untouched = ResponseMasking.downstreamFields(upstream, rewritingBody: false, rules: compiled, masker: masker, tally: &tally)
        #expect(untouched.count == upstream.count)
    }
}

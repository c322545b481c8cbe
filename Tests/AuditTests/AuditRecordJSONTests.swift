import Foundation
import GatehouseCore
import Testing

@testable import Audit

@Suite("Canonical record JSON")
struct AuditRecordJSONTests {
    /// Every optional set, strings with everything JSON must escape, non-ASCII and slashes.
    static let awkward = "quote \" backslash \\ slash / newline \n tab \t cr \r bell \u{07} nul \u{00} del \u{7F} é 漢字 🙂 \u{2028} end"

    static var full: AuditRecord {
        AuditRecord(
            time: Date(timeIntervalSince1970: 1_795_000_000.123),
            node: "node-" + awkward,
            session: "session",
            principal: Principal(
                subject: "alice " + awkward, email: "a@example.com", groups: ["dev", awkward, ""], issuer: "https://idp/x",
                authMethod: .oidc, actors: [Actor(subject: "claude-code", clientID: "cid"), Actor(subject: "outer")],
                client: ClientInfo(address: "127.0.0.1:1", application: "psql")),
            client: ClientInfo(address: "[::1]:5432", application: awkward),
            connection: "prod",
            operation: .init(kind: "sql.query", text: "SELECT '" + awkward + "'", intent: "why"),
            decision: .deny(rule: "rule", reason: awkward),
            outcome: .init(status: "ok", rows: -3, bytes: Int64.max, errorCode: "22012", error: awkward, durationMicros: 0),
            payload: "{\"columns\":[]} " + awkward,
            payloadTruncated: true,
            sealedPayload: "sealed:v1:" + awkward)
    }

    static var sparse: AuditRecord {
        AuditRecord(node: "n", session: "s", principal: nil, client: ClientInfo(), operation: .init(kind: "k", text: ""), decision: .allow())
    }

    @Test(arguments: [full, sparse])
    func matchesJSONEncoderByteForByte(record: AuditRecord) throws {
        let expected = Array(try AuditCanonical.encoder().encode(record))
        #expect(AuditRecordJSON.encode(record) == expected, "\(String(decoding: AuditRecordJSON.encode(record), as: UTF8.self))\n\(String(decoding: expected, as: UTF8.self))")
        #expect(try JSONDecoder().decode(AuditRecord.self, from: Data(AuditRecordJSON.encode(record))) == record)
    }

    @Test func everyControlCharacterEscapesLikeJSONEncoder() throws {
        for scalar in (0..<0x80).compactMap(Unicode.Scalar.init) {
            var record = Self.sparse
            record.operation.text = "a\(Character(scalar))b"
            #expect(AuditRecordJSON.encode(record) == Array(try AuditCanonical.encoder().encode(record)), "U+\(String(scalar.value, radix: 16))")
        }
    }
}

@Suite("Sealed payloads")
struct AuditSealTests {
    @Test func onlyTheSameMaskKeyOpensASeal() throws {
        let seal = AuditSeal(maskKey: Array(repeating: UInt8(1), count: 32))
        let sealed = seal.seal(#"{"rows":[["ada@example.com"]]}"#)
        #expect(sealed.hasPrefix("sealed:v1:") && !sealed.contains("ada"))
        #expect(try seal.open(sealed) == #"{"rows":[["ada@example.com"]]}"#)
        #expect(seal.seal("x") != seal.seal("x"), "a fresh nonce each time")
        let other = AuditSeal(maskKey: Array(repeating: UInt8(2), count: 32))
        #expect(throws: AuditSeal.OpenError.self) { try other.open(sealed) }
        var tampered = Array(sealed)
        // A character in the middle (the last ones may be base64 padding bits the decoder ignores).
        let middle = "sealed:v1:".count + 20
        tampered[middle] = tampered[middle] == "A" ? "B" : "A"
        #expect(throws: AuditSeal.OpenError.self) { try seal.open(String(tampered)) }
    }
}

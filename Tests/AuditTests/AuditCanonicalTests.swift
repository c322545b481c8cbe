import Audit
import Foundation
import GatehouseCore
import Testing

@Suite("Canonical encoding")
struct AuditCanonicalTests {
    @Test(arguments: [1, 2, 17])
    func splicedBodyEqualsPlainEncoding(index: Int) throws {
        var record = Fixture.record(index)
        if index == 2 {
            record.principal = nil
            record.outcome = nil
            record.payload = nil
        }
        if index == 17 {
            record.operation.text = "line\nbreak\ttab \u{0001} </script> \\ \u{1F600}"
        }
        let prevHash = AuditCanonical.hash(of: Array("previous".utf8))
        let plain = try AuditCanonical.encoder().encode(AuditCanonical.Body(seq: Int64(index) * 1_000_000_007, prevHash: prevHash, record: record))
        let spliced = try AuditCanonical.bytes(seq: Int64(index) * 1_000_000_007, prevHash: prevHash, record: record)
        #expect(spliced == Array(plain))
        let decoded = try AuditCanonical.decode(spliced)
        #expect(decoded.record == record)
    }

    /// Freezes the format: a change here makes every existing trail unverifiable by other tools
    /// (and the PostgreSQL store must produce the same bytes).
    @Test func goldenEncoding() throws {
        let record = AuditRecord(
            time: Date(timeIntervalSince1970: 1_700_000_000.123),
            node: "gw-1",
            session: "s-1",
            principal: Principal(subject: "alice", issuer: "https://idp/", authMethod: .oidc, actors: [Actor(subject: "agent")]),
            client: ClientInfo(address: "10.0.0.1:1234"),
            connection: "db",
            operation: .init(kind: "sql.query", text: "SELECT 1"),
            decision: .allow(rule: "r")
        )
        let bytes = try AuditCanonical.bytes(seq: 1, prevHash: AuditEvent.genesisHash, record: record)
        let expected = #"{"prevHash":"0000000000000000000000000000000000000000000000000000000000000000","record":{"client":{"address":"10.0.0.1:1234"},"connection":"db","decision":{"effect":"allow","rule":"r"},"node":"gw-1","operation":{"kind":"sql.query","text":"SELECT 1"},"principal":{"actors":[{"subject":"agent"}],"authMethod":"oidc","client":{},"groups":[],"issuer":"https://idp/","subject":"alice"},"session":"s-1","timeMillis":1700000000123},"seq":1}"#
        #expect(String(decoding: bytes, as: UTF8.self) == expected)
        #expect(AuditCanonical.hash(of: bytes) == AuditCanonical.hash(of: Array(expected.utf8)))
        #expect(AuditCanonical.hash(of: []) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }
}

import NIOCore
import Testing

@testable import PostgresWire

@Suite struct RoundTripTests {
    static let frontendMessages: [FrontendMessage] = [
        .query("SELECT * FROM customers WHERE name = 'Zoë'"),
        .query(""),
        .parse(.init(statementName: "s1", query: "SELECT $1::int, $2", parameterTypes: [23, 0])),
        .parse(.init(statementName: "", query: "SELECT 1")),
        .bind(.init(
            portalName: "p1", statementName: "s1", parameterFormats: [0, 1],
            parameters: [ByteBuffer(string: "42"), nil, ByteBuffer()], resultFormats: [1])),
        .bind(.init(portalName: "", statementName: "")),
        .describe(.statement, "s1"),
        .describe(.portal, ""),
        .execute(portalName: "p1", maxRows: 100),
        .execute(portalName: "", maxRows: 0),
        .close(.statement, "s1"),
        .close(.portal, "p1"),
        .sync, .flush, .terminate,
        .password(ByteBuffer(bytes: cstr("token"))),
        .copyData(ByteBuffer(string: "1\tone\n")),
        .copyDone,
        .copyFail("client gave up"),
        .functionCall(ByteBuffer(bytes: be32(1234) + be16(0))),
    ]

    static let backendMessages: [BackendMessage] = [
        .authentication(.ok),
        .authentication(.cleartextPassword),
        .authentication(.md5Password(salt: [1, 2, 3, 4])),
        .authentication(.sasl(mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])),
        .authentication(.saslContinue(ByteBuffer(string: "r=abc,s=c2FsdA==,i=4096"))),
        .authentication(.saslFinal(ByteBuffer(string: "v=xyz"))),
        .authentication(.unsupported(7)),
        .parameterStatus(name: "server_version", value: "17.2"),
        .backendKeyData(processID: 1234, secretKey: -5678),
        .readyForQuery(.idle), .readyForQuery(.inTransaction), .readyForQuery(.failed),
        .rowDescription([
            FieldDescription(name: "id", tableOID: 16384, columnAttributeNumber: 1, dataTypeOID: 23, dataTypeSize: 4),
            FieldDescription(name: "email", dataTypeOID: 25, dataTypeSize: -1, typeModifier: -1, formatCode: 1),
        ]),
        .rowDescription([]),
        .dataRow([ByteBuffer(string: "1"), nil, ByteBuffer()]),
        .dataRow([]),
        .commandComplete("SELECT 2"),
        .errorResponse(ErrorFields(
            severity: "ERROR", sqlState: "42501", message: "permission denied", detail: "d", hint: "h")),
        .errorResponse(ErrorFields(fields: [UInt8(ascii: "S"): "FATAL", UInt8(ascii: "P"): "15", UInt8(ascii: "R"): "x"])),
        .noticeResponse(ErrorFields(severity: "NOTICE", sqlState: "00000", message: "hello")),
        .parseComplete, .bindComplete, .closeComplete, .noData, .portalSuspended, .emptyQueryResponse,
        .parameterDescription([23, 25, 0]),
        .copyInResponse(CopyResponse(overallFormat: 0, columnFormats: [0, 0])),
        .copyOutResponse(CopyResponse(overallFormat: 1, columnFormats: [1])),
        .copyBothResponse(CopyResponse(overallFormat: 0, columnFormats: [])),
        .copyData(ByteBuffer(string: "row\n")),
        .copyDone,
        .notification(processID: 99, channel: "events", payload: "{\"id\":1}"),
        .negotiateProtocolVersion(ByteBuffer(bytes: be32(0) + be32(1) + cstr("_pq_.x"))),
    ]

    @Test(arguments: frontendMessages)
    func frontend(_ message: FrontendMessage) throws {
        let frame = try singleFrame { PostgresEncoder.frontend(message, into: &$0) }
        #expect(try FrontendMessage.parse(frame) == message)
    }

    @Test(arguments: backendMessages)
    func backend(_ message: BackendMessage) throws {
        let frame = try singleFrame { PostgresEncoder.backend(message, into: &$0) }
        #expect(try BackendMessage.parse(frame) == message)
    }

    @Test func allMessagesInOneStream() throws {
        var out = ByteBuffer()
        for message in Self.backendMessages { PostgresEncoder.backend(message, into: &out) }
        let (frames, leftover) = try decodeFrames(out)
        #expect(leftover == 0)
        #expect(try frames.map(BackendMessage.parse) == Self.backendMessages)
    }

    @Test func countsAreUnsigned16Bit() throws {
        // PostgreSQL 14+ allows 65535 parameters; a signed reading would reject these.
        let parameters = (0..<40_000).map { _ in ByteBuffer?.some(ByteBuffer(string: "x")) }
        let bind = FrontendMessage.bind(.init(portalName: "", statementName: "s", parameters: parameters))
        let frame = try singleFrame { PostgresEncoder.frontend(bind, into: &$0) }
        #expect(try FrontendMessage.parse(frame) == bind)

        let row = BackendMessage.dataRow(Array(repeating: nil, count: 65_535))
        let rowFrame = try singleFrame { PostgresEncoder.backend(row, into: &$0) }
        #expect(try BackendMessage.parse(rowFrame) == row)
    }

    @Test func clientHelpers() throws {
        let password = try singleFrame { PostgresEncoder.password("s3cret", into: &$0) }
        #expect(password.type == UInt8(ascii: "p"))
        #expect(try FrontendMessage.parsePasswordMessage(password.body) == "s3cret")

        let initial = try singleFrame {
            PostgresEncoder.saslInitialResponse(mechanism: "SCRAM-SHA-256", data: Array("n,,n=,r=abc".utf8), into: &$0)
        }
        let parsed = try FrontendMessage.parseSASLInitialResponse(initial.body)
        #expect(parsed.mechanism == "SCRAM-SHA-256")
        #expect(parsed.data == ByteBuffer(string: "n,,n=,r=abc"))

        let response = try singleFrame { PostgresEncoder.saslResponse(Array("c=biws".utf8), into: &$0) }
        #expect(try FrontendMessage.parse(response) == .password(ByteBuffer(string: "c=biws")))

        let terminate = try singleFrame { PostgresEncoder.terminate(into: &$0) }
        #expect(try FrontendMessage.parse(terminate) == .terminate)

        var ssl = ByteBuffer()
        PostgresEncoder.sslRequest(into: &ssl)
        #expect(Array(ssl.readableBytesView) == [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F])
        var cancel = ByteBuffer()
        PostgresEncoder.cancelRequest(processID: 1, secretKey: 2, into: &cancel)
        #expect(Array(cancel.readableBytesView) == [0, 0, 0, 16, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0, 1, 0, 0, 0, 2])
    }

    @Test func serverHelpers() throws {
        let error = try singleFrame {
            PostgresEncoder.errorResponse(sqlState: "28000", message: "token rejected", hint: "get a new token", into: &$0)
        }
        guard case .errorResponse(let fields) = try BackendMessage.parse(error) else {
            Issue.record("not an ErrorResponse")
            return
        }
        #expect(fields.fields[UInt8(ascii: "S")] == "ERROR")
        #expect(fields.fields[UInt8(ascii: "V")] == "ERROR")
        #expect(fields.sqlState == "28000")
        #expect(fields.message == "token rejected")
        #expect(fields.detail == nil)
        #expect(fields.hint == "get a new token")
        // Severity, code and message lead, as the server writes them.
        #expect(Array(error.body.readableBytesView.prefix(7)) == Array("SERROR\0".utf8))

        let notice = try singleFrame { PostgresEncoder.noticeResponse(sqlState: "01000", message: "careful", into: &$0) }
        guard case .noticeResponse(let noticeFields) = try BackendMessage.parse(notice) else {
            Issue.record("not a NoticeResponse")
            return
        }
        #expect(noticeFields.severity == "NOTICE")

        let negotiate = try singleFrame {
            PostgresEncoder.negotiateProtocolVersion(newestMinorVersion: 0, unrecognizedOptions: ["_pq_.a"], into: &$0)
        }
        #expect(try BackendMessage.parse(negotiate) == .negotiateProtocolVersion(ByteBuffer(bytes: be32(0) + be32(1) + cstr("_pq_.a"))))
    }

    @Test func embeddedNULCannotForgeFields() throws {
        let query = try singleFrame { PostgresEncoder.frontend(.query("SELECT 1\0; DROP TABLE x"), into: &$0) }
        #expect(try FrontendMessage.parse(query) == .query("SELECT 1"))

        let error = try singleFrame {
            PostgresEncoder.errorResponse(sqlState: "42501", message: "no\0Mforged", into: &$0)
        }
        guard case .errorResponse(let fields) = try BackendMessage.parse(error) else {
            Issue.record("not an ErrorResponse")
            return
        }
        #expect(fields.message == "no")
        #expect(fields.fields.count == 4)
    }

    @Test func forwardingKeepsBytes() throws {
        let original = frame("Z", [UInt8(ascii: "I")])
        let copy = try singleFrame { PostgresEncoder.frame(original, into: &$0) }
        #expect(copy == original)
    }
}

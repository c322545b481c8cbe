import NIOCore
import Testing

@testable import PostgresWire

@Suite struct MalformedTests {
    static let frontendCases: [(String, PostgresFrame)] = [
        ("Query without NUL", frame("Q", Array("SELECT 1".utf8))),
        ("Query with trailing bytes", frame("Q", cstr("SELECT 1") + [0x41])),
        ("Query invalid UTF-8", frame("Q", [0xFF, 0xFE, 0])),
        ("Parse count beyond body", frame("P", cstr("") + cstr("SELECT $1") + be16(3) + be32(23))),
        ("Parse truncated count", frame("P", cstr("") + cstr("q") + [0])),
        ("Bind negative length", frame("B", cstr("") + cstr("") + be16(0) + be16(1) + be32(-2) + be16(0))),
        ("Bind length beyond body", frame("B", cstr("") + cstr("") + be16(0) + be16(1) + be32(10) + [1, 2] + be16(0))),
        ("Bind huge length", frame("B", cstr("") + cstr("") + be16(0) + be16(1) + be32(Int32.max) + be16(0))),
        ("Bind format count beyond body", frame("B", cstr("") + cstr("") + be16(-1))),
        ("Bind missing result formats", frame("B", cstr("") + cstr("") + be16(0) + be16(0))),
        ("Describe bad target", frame("D", [UInt8(ascii: "X")] + cstr("s"))),
        ("Describe empty", frame("D", [])),
        ("Close unterminated", frame("C", [UInt8(ascii: "S"), 0x61])),
        ("Execute short", frame("E", cstr("") + [0, 0])),
        ("Sync with body", frame("S", [0])),
        ("Terminate with body", frame("X", [1, 2])),
        ("CopyFail unterminated", frame("f", Array("oops".utf8))),
        ("unknown type", frame("z", [])),
        ("NUL type", PostgresFrame(type: 0, body: ByteBuffer())),
    ]

    static let backendCases: [(String, PostgresFrame)] = [
        ("Authentication short", frame("R", [0, 0])),
        ("MD5 salt short", frame("R", be32(5) + [1, 2])),
        ("MD5 salt long", frame("R", be32(5) + [1, 2, 3, 4, 5])),
        ("AuthenticationOk with body", frame("R", be32(0) + [1])),
        ("SASL list unterminated", frame("R", be32(10) + cstr("SCRAM-SHA-256"))),
        ("ParameterStatus missing value", frame("S", cstr("a"))),
        ("BackendKeyData 3.2-length key", frame("K", be32(1) + Array(repeating: 7, count: 32))),
        ("ReadyForQuery bad status", frame("Z", [UInt8(ascii: "X")])),
        ("ReadyForQuery empty", frame("Z", [])),
        ("RowDescription count beyond body", frame("T", be16(-1) + cstr("a"))),
        ("RowDescription truncated field", frame("T", be16(1) + cstr("a") + be32(0))),
        ("DataRow negative length", frame("D", be16(1) + be32(-5))),
        ("DataRow length beyond body", frame("D", be16(1) + be32(100) + [1])),
        ("DataRow count beyond body", frame("D", be16(2) + be32(-1))),
        ("DataRow trailing", frame("D", be16(0) + [0])),
        ("CommandComplete unterminated", frame("C", Array("SELECT".utf8))),
        ("ErrorResponse unterminated list", frame("E", [UInt8(ascii: "M")] + cstr("x"))),
        ("ErrorResponse unterminated value", frame("E", [UInt8(ascii: "M")] + Array("x".utf8))),
        ("NoticeResponse empty", frame("N", [])),
        ("ParseComplete with body", frame("1", [0])),
        ("ParameterDescription short", frame("t", be16(2) + be32(23))),
        ("CopyOutResponse count beyond body", frame("H", [0] + be16(3) + be16(0))),
        ("Notification missing payload", frame("A", be32(1) + cstr("chan"))),
        ("unknown type", frame("?", [])),
    ]

    @Test func frontendBodiesThrow() {
        for (name, frame) in Self.frontendCases {
            do {
                let parsed = try FrontendMessage.parse(frame)
                Issue.record("\(name): parsed as \(parsed)")
            } catch let error as PostgresWireError {
                #expect(error.code == .malformedMessage, "\(name)")
            } catch {
                Issue.record("\(name): \(error)")
            }
        }
    }

    @Test func backendBodiesThrow() {
        for (name, frame) in Self.backendCases {
            do {
                let parsed = try BackendMessage.parse(frame)
                Issue.record("\(name): parsed as \(parsed)")
            } catch let error as PostgresWireError {
                #expect(error.code == .malformedMessage, "\(name)")
            } catch {
                Issue.record("\(name): \(error)")
            }
        }
    }

    @Test func passwordHelpersThrow() throws {
        expectWireError(.malformedMessage) { _ = try FrontendMessage.parsePasswordMessage(buffer("no terminator")) }
        expectWireError(.malformedMessage) { _ = try FrontendMessage.parsePasswordMessage(buffer(cstr("a") + [1])) }
        expectWireError(.malformedMessage) { _ = try FrontendMessage.parseSASLInitialResponse(buffer(cstr("SCRAM-SHA-256") + be32(-2))) }
        expectWireError(.malformedMessage) { _ = try FrontendMessage.parseSASLInitialResponse(buffer(cstr("SCRAM-SHA-256") + be32(50) + [1])) }
        #expect(try FrontendMessage.parseSASLInitialResponse(buffer(cstr("m") + be32(-1))).data == nil)
    }

    @Test func errorsNeverEchoPayload() {
        let secret = "hunter2-secret-token"
        let frames = [
            frame("Q", Array(secret.utf8)),
            frame("p", Array(secret.utf8)),
            frame("E", [UInt8(ascii: "M")] + Array(secret.utf8)),
        ]
        for frame in frames {
            for parse in [
                { _ = try FrontendMessage.parse($0) } as (PostgresFrame) throws -> Void,
                { _ = try BackendMessage.parse($0) },
                { _ = try FrontendMessage.parsePasswordMessage($0.body) },
            ] {
                do { try parse(frame) } catch { #expect(!String(describing: error).contains("hunter2")) }
            }
        }
    }

    @Test func serverTextIsRepairedClientTextIsNot() throws {
        let bad = frame("C", [0x53, 0xFF, 0])  // "S\xFF"
        #expect(try BackendMessage.parse(bad) == .commandComplete("S\u{FFFD}"))
        expectWireError(.malformedMessage) { _ = try FrontendMessage.parse(frame("Q", [0x53, 0xFF, 0])) }
    }
}

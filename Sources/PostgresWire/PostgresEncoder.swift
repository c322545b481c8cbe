import NIOCore

/// Writers. Each appends one complete message (with type byte and length) to `buffer`.
///
/// Strings are written as C strings and cut at any embedded NUL, so no value can end its field early
/// and forge the fields after it. Element counts above 65535 and messages above Int32.max cannot be
/// expressed on the wire; building one is a programming error (messages produced by `parse` never are).
public enum PostgresEncoder {
    // MARK: To a server (the gateway acting as a client)

    public static func startup(_ message: StartupMessage, into buffer: inout ByteBuffer) {
        buffer.writePostgresMessage(type: nil) { body in
            body.writeInteger(message.protocolVersion)
            for parameter in message.parameters {
                // An empty name is the list's terminator; writing one would cut the list short.
                guard parameter.name.utf8.first.map({ $0 != 0 }) ?? false else { continue }
                body.writeCString(parameter.name)
                body.writeCString(parameter.value)
            }
            body.writeInteger(UInt8(0))
        }
    }

    public static func sslRequest(into buffer: inout ByteBuffer) {
        buffer.writeInteger(Int32(8))
        buffer.writeInteger(StartupPacket.sslRequestCode)
    }

    public static func gssEncRequest(into buffer: inout ByteBuffer) {
        buffer.writeInteger(Int32(8))
        buffer.writeInteger(StartupPacket.gssEncRequestCode)
    }

    public static func cancelRequest(processID: Int32, secretKey: Int32, into buffer: inout ByteBuffer) {
        buffer.writeInteger(Int32(16))
        buffer.writeInteger(StartupPacket.cancelRequestCode)
        buffer.writeInteger(processID)
        buffer.writeInteger(secretKey)
    }

    /// Any untyped first packet; the inverse of `PostgresStartupDecoder`.
    public static func startupPacket(_ packet: StartupPacket, into buffer: inout ByteBuffer) {
        switch packet {
        case .startup(let message): startup(message, into: &buffer)
        case .sslRequest: sslRequest(into: &buffer)
        case .gssEncRequest: gssEncRequest(into: &buffer)
        case .cancel(let processID, let secretKey): cancelRequest(processID: processID, secretKey: secretKey, into: &buffer)
        }
    }

    /// 'p' PasswordMessage: a cleartext password or an `MD5Authentication.response`.
    public static func password(_ password: String, into buffer: inout ByteBuffer) {
        buffer.writePostgresMessage(type: UInt8(ascii: "p")) { $0.writeCString(password) }
    }

    /// 'p' SASLInitialResponse.
    public static func saslInitialResponse(mechanism: String, data: [UInt8], into buffer: inout ByteBuffer) {
        buffer.writePostgresMessage(type: UInt8(ascii: "p")) { body in
            body.writeCString(mechanism)
            guard let length = Int32(exactly: data.count) else {
                preconditionFailure("SASL data longer than Int32.max")
            }
            body.writeInteger(length)
            body.writeBytes(data)
        }
    }

    /// 'p' SASLResponse.
    public static func saslResponse(_ data: [UInt8], into buffer: inout ByteBuffer) {
        buffer.writePostgresMessage(type: UInt8(ascii: "p")) { $0.writeBytes(data) }
    }

    public static func terminate(into buffer: inout ByteBuffer) {
        frontend(.terminate, into: &buffer)
    }

    /// Writes a frame unchanged, for forwarding.
    public static func frame(_ frame: PostgresFrame, into buffer: inout ByteBuffer) {
        var body = frame.body
        buffer.writePostgresMessage(type: frame.type) { $0.writeBuffer(&body) }
    }

    public static func frontend(_ message: FrontendMessage, into buffer: inout ByteBuffer) {
        switch message {
        case .query(let query):
            buffer.writePostgresMessage(type: UInt8(ascii: "Q")) { $0.writeCString(query) }
        case .parse(let parse):
            buffer.writePostgresMessage(type: UInt8(ascii: "P")) { body in
                body.writeCString(parse.statementName)
                body.writeCString(parse.query)
                body.writeCount(parse.parameterTypes.count)
                for type in parse.parameterTypes { body.writeInteger(type) }
            }
        case .bind(let bind):
            buffer.writePostgresMessage(type: UInt8(ascii: "B")) { body in
                body.writeCString(bind.portalName)
                body.writeCString(bind.statementName)
                writeFormats(bind.parameterFormats, into: &body)
                body.writeCount(bind.parameters.count)
                for parameter in bind.parameters { writeNullableValue(parameter, into: &body) }
                writeFormats(bind.resultFormats, into: &body)
            }
        case .describe(let target, let name):
            buffer.writePostgresMessage(type: UInt8(ascii: "D")) { body in
                body.writeInteger(target.rawValue)
                body.writeCString(name)
            }
        case .execute(let portalName, let maxRows):
            buffer.writePostgresMessage(type: UInt8(ascii: "E")) { body in
                body.writeCString(portalName)
                body.writeInteger(maxRows)
            }
        case .close(let target, let name):
            buffer.writePostgresMessage(type: UInt8(ascii: "C")) { body in
                body.writeInteger(target.rawValue)
                body.writeCString(name)
            }
        case .sync: writeEmpty(UInt8(ascii: "S"), into: &buffer)
        case .flush: writeEmpty(UInt8(ascii: "H"), into: &buffer)
        case .terminate: writeEmpty(UInt8(ascii: "X"), into: &buffer)
        case .copyDone: writeEmpty(UInt8(ascii: "c"), into: &buffer)
        case .password(let raw): frame(PostgresFrame(type: UInt8(ascii: "p"), body: raw), into: &buffer)
        case .copyData(let raw): frame(PostgresFrame(type: UInt8(ascii: "d"), body: raw), into: &buffer)
        case .functionCall(let raw): frame(PostgresFrame(type: UInt8(ascii: "F"), body: raw), into: &buffer)
        case .copyFail(let message):
            buffer.writePostgresMessage(type: UInt8(ascii: "f")) { $0.writeCString(message) }
        }
    }

    // MARK: To a client (the gateway acting as a server)

    public static func backend(_ message: BackendMessage, into buffer: inout ByteBuffer) {
        switch message {
        case .authentication(let authentication):
            buffer.writePostgresMessage(type: UInt8(ascii: "R")) { body in
                writeAuthentication(authentication, into: &body)
            }
        case .parameterStatus(let name, let value):
            buffer.writePostgresMessage(type: UInt8(ascii: "S")) { body in
                body.writeCString(name)
                body.writeCString(value)
            }
        case .backendKeyData(let processID, let secretKey):
            buffer.writePostgresMessage(type: UInt8(ascii: "K")) { body in
                body.writeInteger(processID)
                body.writeInteger(secretKey)
            }
        case .readyForQuery(let status):
            buffer.writePostgresMessage(type: UInt8(ascii: "Z")) { $0.writeInteger(status.rawValue) }
        case .rowDescription(let fields):
            buffer.writePostgresMessage(type: UInt8(ascii: "T")) { body in
                body.writeCount(fields.count)
                for field in fields {
                    body.writeCString(field.name)
                    body.writeInteger(field.tableOID)
                    body.writeInteger(field.columnAttributeNumber)
                    body.writeInteger(field.dataTypeOID)
                    body.writeInteger(field.dataTypeSize)
                    body.writeInteger(field.typeModifier)
                    body.writeInteger(field.formatCode)
                }
            }
        case .dataRow(let columns):
            buffer.writePostgresMessage(type: UInt8(ascii: "D")) { body in
                body.writeCount(columns.count)
                for column in columns { writeNullableValue(column, into: &body) }
            }
        case .commandComplete(let tag):
            buffer.writePostgresMessage(type: UInt8(ascii: "C")) { $0.writeCString(tag) }
        case .errorResponse(let fields):
            writeErrorFields(type: UInt8(ascii: "E"), fields, into: &buffer)
        case .noticeResponse(let fields):
            writeErrorFields(type: UInt8(ascii: "N"), fields, into: &buffer)
        case .parseComplete: writeEmpty(UInt8(ascii: "1"), into: &buffer)
        case .bindComplete: writeEmpty(UInt8(ascii: "2"), into: &buffer)
        case .closeComplete: writeEmpty(UInt8(ascii: "3"), into: &buffer)
        case .noData: writeEmpty(UInt8(ascii: "n"), into: &buffer)
        case .portalSuspended: writeEmpty(UInt8(ascii: "s"), into: &buffer)
        case .emptyQueryResponse: writeEmpty(UInt8(ascii: "I"), into: &buffer)
        case .copyDone: writeEmpty(UInt8(ascii: "c"), into: &buffer)
        case .parameterDescription(let types):
            buffer.writePostgresMessage(type: UInt8(ascii: "t")) { body in
                body.writeCount(types.count)
                for type in types { body.writeInteger(type) }
            }
        case .copyInResponse(let response): writeCopyResponse(type: UInt8(ascii: "G"), response, into: &buffer)
        case .copyOutResponse(let response): writeCopyResponse(type: UInt8(ascii: "H"), response, into: &buffer)
        case .copyBothResponse(let response): writeCopyResponse(type: UInt8(ascii: "W"), response, into: &buffer)
        case .copyData(let raw): frame(PostgresFrame(type: UInt8(ascii: "d"), body: raw), into: &buffer)
        case .notification(let processID, let channel, let payload):
            buffer.writePostgresMessage(type: UInt8(ascii: "A")) { body in
                body.writeInteger(processID)
                body.writeCString(channel)
                body.writeCString(payload)
            }
        case .negotiateProtocolVersion(let raw):
            frame(PostgresFrame(type: UInt8(ascii: "v"), body: raw), into: &buffer)
        }
    }

    /// 'E' with S and V set to `severity`, C, M, and D/H when given.
    public static func errorResponse(
        severity: String = "ERROR",
        sqlState: String,
        message: String,
        detail: String? = nil,
        hint: String? = nil,
        into buffer: inout ByteBuffer
    ) {
        let fields = ErrorFields(severity: severity, sqlState: sqlState, message: message, detail: detail, hint: hint)
        writeErrorFields(type: UInt8(ascii: "E"), fields, into: &buffer)
    }

    /// 'N' with S and V set to `severity`, C, M, and D/H when given.
    public static func noticeResponse(
        severity: String = "NOTICE",
        sqlState: String,
        message: String,
        detail: String? = nil,
        hint: String? = nil,
        into buffer: inout ByteBuffer
    ) {
        let fields = ErrorFields(severity: severity, sqlState: sqlState, message: message, detail: detail, hint: hint)
        writeErrorFields(type: UInt8(ascii: "N"), fields, into: &buffer)
    }

    /// 'v': the answer to a StartupMessage asking for a newer 3.x minor version or for `_pq_.` options.
    public static func negotiateProtocolVersion(newestMinorVersion: Int32, unrecognizedOptions: [String], into buffer: inout ByteBuffer) {
        buffer.writePostgresMessage(type: UInt8(ascii: "v")) { body in
            body.writeInteger(newestMinorVersion)
            guard let count = Int32(exactly: unrecognizedOptions.count) else {
                preconditionFailure("too many protocol options")
            }
            body.writeInteger(count)
            for option in unrecognizedOptions { body.writeCString(option) }
        }
    }

    // MARK: Pieces

    private static func writeEmpty(_ type: UInt8, into buffer: inout ByteBuffer) {
        buffer.writeInteger(type)
        buffer.writeInteger(Int32(4))
    }

    private static func writeFormats(_ formats: [Int16], into body: inout ByteBuffer) {
        body.writeCount(formats.count)
        for format in formats { body.writeInteger(format) }
    }

    private static func writeNullableValue(_ value: ByteBuffer?, into body: inout ByteBuffer) {
        guard var value else {
            body.writeInteger(Int32(-1))
            return
        }
        guard let length = Int32(exactly: value.readableBytes) else {
            preconditionFailure("value longer than Int32.max")
        }
        body.writeInteger(length)
        body.writeBuffer(&value)
    }

    private static func writeAuthentication(_ authentication: Authentication, into body: inout ByteBuffer) {
        switch authentication {
        case .ok: body.writeInteger(UInt32(0))
        case .cleartextPassword: body.writeInteger(UInt32(3))
        case .md5Password(let salt):
            body.writeInteger(UInt32(5))
            body.writeBytes(salt)
        case .sasl(let mechanisms):
            body.writeInteger(UInt32(10))
            // An empty name would end the list early.
            for mechanism in mechanisms where mechanism.utf8.first.map({ $0 != 0 }) ?? false {
                body.writeCString(mechanism)
            }
            body.writeInteger(UInt8(0))
        case .saslContinue(var data):
            body.writeInteger(UInt32(11))
            body.writeBuffer(&data)
        case .saslFinal(var data):
            body.writeInteger(UInt32(12))
            body.writeBuffer(&data)
        case .unsupported(let code):
            body.writeInteger(code)
        }
    }

    /// Severity, code and message first (the order the server uses), then the rest in code order, so
    /// the bytes do not depend on dictionary order. Code 0 is the terminator and cannot be a field.
    private static func writeErrorFields(type: UInt8, _ fields: ErrorFields, into buffer: inout ByteBuffer) {
        let leading: [UInt8] = [UInt8(ascii: "S"), UInt8(ascii: "V"), UInt8(ascii: "C"), UInt8(ascii: "M")]
        buffer.writePostgresMessage(type: type) { body in
            for code in leading {
                if let value = fields.fields[code] {
                    body.writeInteger(code)
                    body.writeCString(value)
                }
            }
            for (code, value) in fields.fields.sorted(by: { $0.key < $1.key }) where code != 0 && !leading.contains(code) {
                body.writeInteger(code)
                body.writeCString(value)
            }
            body.writeInteger(UInt8(0))
        }
    }

    private static func writeCopyResponse(type: UInt8, _ response: CopyResponse, into buffer: inout ByteBuffer) {
        buffer.writePostgresMessage(type: type) { body in
            body.writeInteger(response.overallFormat)
            body.writeCount(response.columnFormats.count)
            for format in response.columnFormats { body.writeInteger(format) }
        }
    }
}

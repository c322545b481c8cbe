import NIOCore

/// What an 'R' message asks for (or reports).
public enum Authentication: Sendable, Equatable {
    case ok  // 0
    case cleartextPassword  // 3
    /// 5; the salt is 4 bytes.
    case md5Password(salt: [UInt8])
    /// 10
    case sasl(mechanisms: [String])
    /// 11
    case saslContinue(ByteBuffer)
    /// 12
    case saslFinal(ByteBuffer)
    /// Any other request (Kerberos, GSSAPI, SSPI, ...); only its code is kept.
    case unsupported(UInt32)
}

/// The transaction state reported by ReadyForQuery.
public enum TransactionStatus: UInt8, Sendable, Equatable, Hashable {
    case idle = 0x49  // 'I'
    case inTransaction = 0x54  // 'T'
    case failed = 0x45  // 'E'
}

/// One column of a RowDescription.
public struct FieldDescription: Sendable, Equatable, Hashable {
    public var name: String
    public var tableOID: UInt32
    public var columnAttributeNumber: Int16
    public var dataTypeOID: UInt32
    public var dataTypeSize: Int16
    public var typeModifier: Int32
    public var formatCode: Int16

    public init(
        name: String,
        tableOID: UInt32 = 0,
        columnAttributeNumber: Int16 = 0,
        dataTypeOID: UInt32,
        dataTypeSize: Int16,
        typeModifier: Int32 = -1,
        formatCode: Int16 = 0
    ) {
        self.name = name
        self.tableOID = tableOID
        self.columnAttributeNumber = columnAttributeNumber
        self.dataTypeOID = dataTypeOID
        self.dataTypeSize = dataTypeSize
        self.typeModifier = typeModifier
        self.formatCode = formatCode
    }
}

/// The fields of an ErrorResponse or NoticeResponse, keyed by their one-byte codes.
public struct ErrorFields: Sendable, Equatable {
    public var fields: [UInt8: String]

    public init(fields: [UInt8: String] = [:]) {
        self.fields = fields
    }

    public init(severity: String, sqlState: String, message: String, detail: String? = nil, hint: String? = nil) {
        self.fields = [:]
        self.severity = severity
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    /// Reads the non-localized 'V' (sent since 9.6) and falls back to the localized 'S'; sets both.
    public var severity: String? {
        get { fields[UInt8(ascii: "V")] ?? fields[UInt8(ascii: "S")] }
        set {
            fields[UInt8(ascii: "S")] = newValue
            fields[UInt8(ascii: "V")] = newValue
        }
    }

    /// 'C'
    public var sqlState: String? {
        get { fields[UInt8(ascii: "C")] }
        set { fields[UInt8(ascii: "C")] = newValue }
    }

    /// 'M'
    public var message: String? {
        get { fields[UInt8(ascii: "M")] }
        set { fields[UInt8(ascii: "M")] = newValue }
    }

    /// 'D'
    public var detail: String? {
        get { fields[UInt8(ascii: "D")] }
        set { fields[UInt8(ascii: "D")] = newValue }
    }

    /// 'H'
    public var hint: String? {
        get { fields[UInt8(ascii: "H")] }
        set { fields[UInt8(ascii: "H")] = newValue }
    }
}

/// The layout shared by CopyInResponse, CopyOutResponse and CopyBothResponse.
public struct CopyResponse: Sendable, Equatable, Hashable {
    /// 0 text, 1 binary.
    public var overallFormat: Int8
    public var columnFormats: [Int16]

    public init(overallFormat: Int8, columnFormats: [Int16]) {
        self.overallFormat = overallFormat
        self.columnFormats = columnFormats
    }
}

/// A message from server to client, parsed from a `PostgresFrame`.
///
/// Server text is decoded leniently (invalid UTF-8 becomes U+FFFD): before `client_encoding` takes
/// effect the server may speak its own encoding, and that must not end the session. Forward the
/// original frame when exact bytes matter.
public enum BackendMessage: Sendable, Equatable {
    case authentication(Authentication)  // 'R'
    case parameterStatus(name: String, value: String)  // 'S'
    /// 'K'. Protocol 3.0 layout: a 4-byte key (3.2's longer keys are refused as malformed).
    case backendKeyData(processID: Int32, secretKey: Int32)
    case readyForQuery(TransactionStatus)  // 'Z'
    case rowDescription([FieldDescription])  // 'T'
    /// 'D'; `nil` is SQL NULL.
    case dataRow([ByteBuffer?])
    case commandComplete(String)  // 'C'
    case errorResponse(ErrorFields)  // 'E'
    case noticeResponse(ErrorFields)  // 'N'
    case parseComplete  // '1'
    case bindComplete  // '2'
    case closeComplete  // '3'
    case noData  // 'n'
    case portalSuspended  // 's'
    case emptyQueryResponse  // 'I'
    case parameterDescription([UInt32])  // 't'
    case copyInResponse(CopyResponse)  // 'G'
    case copyOutResponse(CopyResponse)  // 'H'
    case copyBothResponse(CopyResponse)  // 'W'
    case copyData(ByteBuffer)  // 'd'
    case copyDone  // 'c'
    case notification(processID: Int32, channel: String, payload: String)  // 'A'
    case negotiateProtocolVersion(ByteBuffer)  // 'v'

    /// Throws `PostgresWireError(.malformedMessage)` for an unknown type or a body that does not fit it.
    public static func parse(_ frame: PostgresFrame) throws -> BackendMessage {
        switch frame.type {
        case UInt8(ascii: "R"):
            return .authentication(try parseAuthentication(frame.body))

        case UInt8(ascii: "S"):
            var r = WireReader(frame.body, context: "ParameterStatus", text: .lossyUTF8)
            let name = try r.cString("name")
            let value = try r.cString("value")
            try r.finish()
            return .parameterStatus(name: name, value: value)

        case UInt8(ascii: "K"):
            var r = WireReader(frame.body, context: "BackendKeyData", text: .lossyUTF8)
            let processID = try r.integer(Int32.self, "process ID")
            let secretKey = try r.integer(Int32.self, "secret key")
            try r.finish()
            return .backendKeyData(processID: processID, secretKey: secretKey)

        case UInt8(ascii: "Z"):
            var r = WireReader(frame.body, context: "ReadyForQuery", text: .lossyUTF8)
            guard let status = TransactionStatus(rawValue: try r.byte("status")) else {
                throw r.malformed("unknown transaction status")
            }
            try r.finish()
            return .readyForQuery(status)

        case UInt8(ascii: "T"):
            var r = WireReader(frame.body, context: "RowDescription", text: .lossyUTF8)
            // A field is at least a NUL and 18 bytes of integers.
            let count = try r.count("field count", minimumElementSize: 19)
            var fields: [FieldDescription] = []
            fields.reserveCapacity(count)
            for _ in 0..<count {
                fields.append(FieldDescription(
                    name: try r.cString("field name"),
                    tableOID: try r.integer(UInt32.self, "table OID"),
                    columnAttributeNumber: try r.integer(Int16.self, "column number"),
                    dataTypeOID: try r.integer(UInt32.self, "type OID"),
                    dataTypeSize: try r.integer(Int16.self, "type size"),
                    typeModifier: try r.integer(Int32.self, "type modifier"),
                    formatCode: try r.integer(Int16.self, "format code")))
            }
            try r.finish()
            return .rowDescription(fields)

        case UInt8(ascii: "D"):
            var r = WireReader(frame.body, context: "DataRow", text: .lossyUTF8)
            let count = try r.count("column count", minimumElementSize: 4)
            var columns: [ByteBuffer?] = []
            columns.reserveCapacity(count)
            for _ in 0..<count { columns.append(try r.nullableValue("column")) }
            try r.finish()
            return .dataRow(columns)

        case UInt8(ascii: "C"):
            var r = WireReader(frame.body, context: "CommandComplete", text: .lossyUTF8)
            let tag = try r.cString("command tag")
            try r.finish()
            return .commandComplete(tag)

        case UInt8(ascii: "E"):
            return .errorResponse(try parseErrorFields(frame.body, context: "ErrorResponse"))
        case UInt8(ascii: "N"):
            return .noticeResponse(try parseErrorFields(frame.body, context: "NoticeResponse"))

        case UInt8(ascii: "1"): return try empty(frame, "ParseComplete", .parseComplete)
        case UInt8(ascii: "2"): return try empty(frame, "BindComplete", .bindComplete)
        case UInt8(ascii: "3"): return try empty(frame, "CloseComplete", .closeComplete)
        case UInt8(ascii: "n"): return try empty(frame, "NoData", .noData)
        case UInt8(ascii: "s"): return try empty(frame, "PortalSuspended", .portalSuspended)
        case UInt8(ascii: "I"): return try empty(frame, "EmptyQueryResponse", .emptyQueryResponse)
        case UInt8(ascii: "c"): return try empty(frame, "CopyDone", .copyDone)

        case UInt8(ascii: "t"):
            var r = WireReader(frame.body, context: "ParameterDescription", text: .lossyUTF8)
            let count = try r.count("parameter count", minimumElementSize: 4)
            var types: [UInt32] = []
            types.reserveCapacity(count)
            for _ in 0..<count { types.append(try r.integer(UInt32.self, "parameter type")) }
            try r.finish()
            return .parameterDescription(types)

        case UInt8(ascii: "G"): return .copyInResponse(try parseCopyResponse(frame.body, context: "CopyInResponse"))
        case UInt8(ascii: "H"): return .copyOutResponse(try parseCopyResponse(frame.body, context: "CopyOutResponse"))
        case UInt8(ascii: "W"): return .copyBothResponse(try parseCopyResponse(frame.body, context: "CopyBothResponse"))
        case UInt8(ascii: "d"): return .copyData(frame.body)

        case UInt8(ascii: "A"):
            var r = WireReader(frame.body, context: "NotificationResponse", text: .lossyUTF8)
            let processID = try r.integer(Int32.self, "process ID")
            let channel = try r.cString("channel")
            let payload = try r.cString("payload")
            try r.finish()
            return .notification(processID: processID, channel: channel, payload: payload)

        case UInt8(ascii: "v"): return .negotiateProtocolVersion(frame.body)

        default:
            throw PostgresWireError(.malformedMessage, "unknown backend message type \(describeType(frame.type))")
        }
    }

    private static func parseAuthentication(_ body: ByteBuffer) throws -> Authentication {
        var r = WireReader(body, context: "Authentication", text: .lossyUTF8)
        let code = try r.integer(UInt32.self, "request code")
        switch code {
        case 0:
            try r.finish()
            return .ok
        case 3:
            try r.finish()
            return .cleartextPassword
        case 5:
            var salt = try r.bytes(4, "MD5 salt")
            try r.finish()
            return .md5Password(salt: salt.readBytes(length: 4) ?? [])
        case 10:
            var mechanisms: [String] = []
            while true {
                let mechanism = try r.cString("SASL mechanism")
                if mechanism.isEmpty { break }
                mechanisms.append(mechanism)
            }
            try r.finish()
            return .sasl(mechanisms: mechanisms)
        case 11: return .saslContinue(r.rest())
        case 12: return .saslFinal(r.rest())
        default: return .unsupported(code)
        }
    }

    private static func parseErrorFields(_ body: ByteBuffer, context: String) throws -> ErrorFields {
        var r = WireReader(body, context: context, text: .lossyUTF8)
        var fields: [UInt8: String] = [:]
        while true {
            let code = try r.byte("field code")
            if code == 0 { break }
            fields[code] = try r.cString("field value")
        }
        try r.finish()
        return ErrorFields(fields: fields)
    }

    private static func parseCopyResponse(_ body: ByteBuffer, context: String) throws -> CopyResponse {
        var r = WireReader(body, context: context, text: .lossyUTF8)
        let overall = try r.integer(Int8.self, "overall format")
        let count = try r.count("column count", minimumElementSize: 2)
        var formats: [Int16] = []
        formats.reserveCapacity(count)
        for _ in 0..<count { formats.append(try r.integer(Int16.self, "column format")) }
        try r.finish()
        return CopyResponse(overallFormat: overall, columnFormats: formats)
    }

    private static func empty(_ frame: PostgresFrame, _ name: String, _ message: BackendMessage) throws -> BackendMessage {
        guard frame.body.readableBytes == 0 else {
            throw PostgresWireError(.malformedMessage, "\(name): unexpected body of \(frame.body.readableBytes) bytes")
        }
        return message
    }
}

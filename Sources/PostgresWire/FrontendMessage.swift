import NIOCore

/// Which object a Describe or Close names: 'S' or 'P' on the wire.
public enum DescribeTarget: UInt8, Sendable, Equatable, Hashable {
    case statement = 0x53  // 'S'
    case portal = 0x50  // 'P'
}

/// A message from client to server, parsed from a `PostgresFrame`.
///
/// Text must be valid UTF-8: the gateway inspects and records the text, so it refuses bytes it would
/// have to reinterpret (pin `client_encoding=UTF8` upstream so the server reads the same text).
public enum FrontendMessage: Sendable, Equatable {
    public struct Parse: Sendable, Equatable {
        public var statementName: String
        public var query: String
        /// Type OIDs; 0 leaves the type for the server to infer.
        public var parameterTypes: [UInt32]

        public init(statementName: String, query: String, parameterTypes: [UInt32] = []) {
            self.statementName = statementName
            self.query = query
            self.parameterTypes = parameterTypes
        }
    }

    public struct Bind: Sendable, Equatable {
        public var portalName: String
        public var statementName: String
        /// Empty: all text; one: applies to all; otherwise one per parameter (0 text, 1 binary).
        public var parameterFormats: [Int16]
        /// `nil` is SQL NULL.
        public var parameters: [ByteBuffer?]
        public var resultFormats: [Int16]

        /// Whether parameter `index` is sent in binary, by the format rule above.
        public func isBinary(parameter index: Int) -> Bool {
            Self.isBinary(parameter: index, formats: parameterFormats)
        }

        /// The same rule for a message that carries formats the same way (a fast-path call).
        public static func isBinary(parameter index: Int, formats: [Int16]) -> Bool {
            formats.count == 1 ? formats[0] == 1 : (index < formats.count && formats[index] == 1)
        }

        public init(
            portalName: String,
            statementName: String,
            parameterFormats: [Int16] = [],
            parameters: [ByteBuffer?] = [],
            resultFormats: [Int16] = []
        ) {
            self.portalName = portalName
            self.statementName = statementName
            self.parameterFormats = parameterFormats
            self.parameters = parameters
            self.resultFormats = resultFormats
        }
    }

    case query(String)  // 'Q'
    case parse(Parse)  // 'P'
    case bind(Bind)  // 'B'
    case describe(DescribeTarget, String)  // 'D'
    case execute(portalName: String, maxRows: Int32)  // 'E'
    case close(DescribeTarget, String)  // 'C'
    case sync  // 'S'
    case flush  // 'H'
    case terminate  // 'X'
    /// 'p': PasswordMessage, SASLInitialResponse or SASLResponse; only the connection state says
    /// which, so the body is kept raw. See `parsePasswordMessage` and `parseSASLInitialResponse`.
    case password(ByteBuffer)
    case copyData(ByteBuffer)  // 'd'
    case copyDone  // 'c'
    case copyFail(String)  // 'f'
    /// 'F': the legacy fast-path call, kept raw so a policy can refuse it without understanding it.
    case functionCall(ByteBuffer)

    /// Throws `PostgresWireError(.malformedMessage)` for an unknown type or a body that does not fit it.
    public static func parse(_ frame: PostgresFrame) throws -> FrontendMessage {
        switch frame.type {
        case UInt8(ascii: "Q"):
            var r = WireReader(frame.body, context: "Query", text: .strictUTF8)
            let query = try r.cString("query")
            try r.finish()
            return .query(query)

        case UInt8(ascii: "P"):
            var r = WireReader(frame.body, context: "Parse", text: .strictUTF8)
            let name = try r.cString("statement name")
            let query = try r.cString("query")
            let count = try r.count("parameter type count", minimumElementSize: 4)
            var types: [UInt32] = []
            types.reserveCapacity(count)
            for _ in 0..<count { types.append(try r.integer(UInt32.self, "parameter type")) }
            try r.finish()
            return .parse(Parse(statementName: name, query: query, parameterTypes: types))

        case UInt8(ascii: "B"):
            var r = WireReader(frame.body, context: "Bind", text: .strictUTF8)
            let portal = try r.cString("portal name")
            let statement = try r.cString("statement name")
            let parameterFormats = try readFormats(&r, "parameter format count")
            let count = try r.count("parameter count", minimumElementSize: 4)
            var parameters: [ByteBuffer?] = []
            parameters.reserveCapacity(count)
            for _ in 0..<count { parameters.append(try r.nullableValue("parameter")) }
            let resultFormats = try readFormats(&r, "result format count")
            try r.finish()
            return .bind(Bind(
                portalName: portal, statementName: statement, parameterFormats: parameterFormats,
                parameters: parameters, resultFormats: resultFormats))

        case UInt8(ascii: "D"), UInt8(ascii: "C"):
            let isDescribe = frame.type == UInt8(ascii: "D")
            var r = WireReader(frame.body, context: isDescribe ? "Describe" : "Close", text: .strictUTF8)
            guard let target = DescribeTarget(rawValue: try r.byte("target")) else {
                throw r.malformed("target is neither 'S' nor 'P'")
            }
            let name = try r.cString("name")
            try r.finish()
            return isDescribe ? .describe(target, name) : .close(target, name)

        case UInt8(ascii: "E"):
            var r = WireReader(frame.body, context: "Execute", text: .strictUTF8)
            let portal = try r.cString("portal name")
            let maxRows = try r.integer(Int32.self, "row limit")
            try r.finish()
            return .execute(portalName: portal, maxRows: maxRows)

        case UInt8(ascii: "S"): return try empty(frame, "Sync", .sync)
        case UInt8(ascii: "H"): return try empty(frame, "Flush", .flush)
        case UInt8(ascii: "X"): return try empty(frame, "Terminate", .terminate)
        case UInt8(ascii: "c"): return try empty(frame, "CopyDone", .copyDone)
        case UInt8(ascii: "p"): return .password(frame.body)
        case UInt8(ascii: "d"): return .copyData(frame.body)
        case UInt8(ascii: "F"): return .functionCall(frame.body)

        case UInt8(ascii: "f"):
            var r = WireReader(frame.body, context: "CopyFail", text: .strictUTF8)
            let message = try r.cString("message")
            try r.finish()
            return .copyFail(message)

        default:
            throw PostgresWireError(.malformedMessage, "unknown frontend message type \(describeType(frame.type))")
        }
    }

    /// The body of a PasswordMessage: one NUL-terminated string (a password, MD5 hash or token).
    public static func parsePasswordMessage(_ body: ByteBuffer) throws -> String {
        var r = WireReader(body, context: "PasswordMessage", text: .strictUTF8)
        let password = try r.cString("password")
        try r.finish()
        return password
    }

    /// The body of a SASLInitialResponse: mechanism name, then Int32 length (-1: no data) and data.
    public static func parseSASLInitialResponse(_ body: ByteBuffer) throws -> (mechanism: String, data: ByteBuffer?) {
        var r = WireReader(body, context: "SASLInitialResponse", text: .strictUTF8)
        let mechanism = try r.cString("mechanism")
        let data = try r.nullableValue("initial response")
        try r.finish()
        return (mechanism, data)
    }

    private static func readFormats(_ r: inout WireReader, _ what: String) throws -> [Int16] {
        let count = try r.count(what, minimumElementSize: 2)
        var formats: [Int16] = []
        formats.reserveCapacity(count)
        for _ in 0..<count { formats.append(try r.integer(Int16.self, "format code")) }
        return formats
    }

    private static func empty(_ frame: PostgresFrame, _ name: String, _ message: FrontendMessage) throws -> FrontendMessage {
        guard frame.body.readableBytes == 0 else {
            throw PostgresWireError(.malformedMessage, "\(name): unexpected body of \(frame.body.readableBytes) bytes")
        }
        return message
    }
}

/// A type byte for an error message: the character if printable, else hex (never more than one byte).
func describeType(_ type: UInt8) -> String {
    if (0x21...0x7E).contains(type) { return "'\(Character(Unicode.Scalar(type)))'" }
    let hex = String(type, radix: 16, uppercase: true)
    return "0x" + (hex.count == 1 ? "0" + hex : hex)
}

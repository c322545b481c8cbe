/// An error from decoding, encoding or authenticating on the PostgreSQL wire.
///
/// `message` is written for logs and for the peer: it names the message kind and what was wrong
/// with it, but never echoes payload bytes, because payloads carry passwords, tokens and query text.
public struct PostgresWireError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable, Hashable, CustomStringConvertible {
        /// A declared length is above the configured maximum.
        case frameTooLarge
        /// A declared length is impossible (below the header size, or wrong for a fixed-size message).
        case malformedLength
        /// A body does not match its message's layout (truncated, trailing bytes, bad count, bad text).
        case malformedMessage
        /// A startup packet asks for a protocol (or a request code) this codec does not speak.
        case unsupportedProtocol
        /// SCRAM exchange failed or the server's answer could not be trusted.
        case authenticationFailed

        public var description: String { rawValue }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public init(code: Code, message: String) {
        self.init(code, message)
    }

    public var description: String { "PostgresWireError.\(code): \(message)" }
}

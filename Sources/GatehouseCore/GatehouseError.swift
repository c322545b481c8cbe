/// An error a user can act on. `message` is written for people and never echoes secrets,
/// tokens or query text; `code` is stable for programs and tests.
public struct GatehouseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: String
    public var message: String

    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

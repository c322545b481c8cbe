import GatehouseCore

/// A path pattern for HTTP rules: `*` matches within one path segment (no `/`), `**` matches
/// across segments, everything else matches itself. `/config/*` matches `/config/db` but not
/// `/config/db/url`; `/export*` matches `/export` and `/exports.csv`; `/**` matches every path;
/// a trailing `/**` also matches the path without it (`/admin/**` matches `/admin`).
/// Patterns are matched against the normalized, percent-decoded path, never the raw one, and a
/// trailing slash of the path is ignored (`/exact` matches `/exact/`), so a deny rule cannot be
/// stepped around by adding one.
public struct PathPattern: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    private let pattern: [UInt8]

    public init(_ text: String) {
        self.text = text
        self.pattern = Array(text.utf8)
    }

    public var description: String { text }

    public func matches(_ path: String) -> Bool {
        var bytes = Array(path.utf8)[...]
        if bytes.count > 1, bytes.last == UInt8(ascii: "/") { bytes = bytes.dropLast() }
        if Self.match(pattern[...], bytes) { return true }
        // `/admin/**` covers `/admin` itself.
        if pattern.count > 3, pattern.suffix(3).elementsEqual("/**".utf8) {
            return Self.match(pattern.dropLast(3), bytes)
        }
        return false
    }

    private static func match(_ pattern: ArraySlice<UInt8>, _ path: ArraySlice<UInt8>) -> Bool {
        var pattern = pattern
        var path = path
        while let first = pattern.first {
            if first == UInt8(ascii: "*") {
                let crossesSegments = pattern.dropFirst().first == UInt8(ascii: "*")
                let rest = pattern.dropFirst(crossesSegments ? 2 : 1)
                // Try every split point; paths and patterns are short (bounded by the listener).
                var candidate = path
                while true {
                    if match(rest, candidate) { return true }
                    guard let next = candidate.first, crossesSegments || next != UInt8(ascii: "/") else { return false }
                    candidate = candidate.dropFirst()
                }
            }
            guard path.first == first else { return false }
            pattern = pattern.dropFirst()
            path = path.dropFirst()
        }
        return path.isEmpty
    }
}

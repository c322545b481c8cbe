extension String {
    /// The longest prefix within `limit` UTF-8 bytes that ends on a character boundary, and whether
    /// anything was cut. Caps on recorded text are in bytes, because bytes are what fill a store.
    public func truncated(toUTF8Bytes limit: Int) -> (text: String, truncated: Bool) {
        guard utf8.count > limit else { return (self, false) }
        var end = utf8.index(utf8.startIndex, offsetBy: Swift.max(0, limit))
        while end > startIndex, String.Index(end, within: self) == nil {
            end = utf8.index(before: end)
        }
        return (String(self[..<end]), true)
    }
}

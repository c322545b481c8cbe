/// What a sensitive value becomes.
public enum MaskStrategy: Sendable, Hashable {
    /// The whole value becomes `ValueMasker.redactionMarker` (`[redacted]`), whatever its length:
    /// not even the length survives.
    case redact
    /// Every character becomes `*` except separators (space, tab, line breaks and `-` `.` `+` `(` `)` `:` `/`), which are
    /// kept so the shape stays readable (`**** **** **** 1111`, `***-**-6789`), and except the last
    /// `keep` significant (non-separator) characters. Length in characters is preserved.
    ///
    /// Short values are not revealed: nothing is kept when the value has at most `keep`
    /// significant characters, and never more than half of them (rounded down) otherwise. A value
    /// of separators only is masked entirely. Characters are grapheme clusters, so a multi-byte
    /// character becomes one `*` and is never split.
    case partial(keep: Int = MaskStrategy.defaultKeep)
    /// `ValueMasker.hashPrefix` (`h:`) and the first 16 lowercase hex digits (64 bits) of
    /// HMAC-SHA256 under the gateway's key, over the value's exact UTF-8 bytes (no normalisation).
    /// Stable for a key, so masked values still join and group; unlinkable without the key.
    case keyedHash

    public static let defaultKeep = 4
}

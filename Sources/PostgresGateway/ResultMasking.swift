import Foundation
import Masking
import NIOConcurrencyHelpers
import NIOCore
import Policy
import PostgresWire
import SQLInspection

/// The columns of a database that mask rules name, read from its catalog, so the table OID and
/// column number a RowDescription carries map to real tables and columns.
struct CatalogSnapshot: Sendable {
    struct Column: Sendable, Hashable {
        var schema: String
        var table: String
        var name: String
        /// The tables this one is a partition or inheritance child of (`schema.table`): a rule
        /// naming the parent's column covers the child's.
        var parents: [String] = []

        func matches(_ pattern: ColumnPattern) -> Bool {
            if pattern.matches(schema: schema, table: table, column: name) { return true }
            return parents.contains { parent in
                let parts = parent.split(separator: ".", maxSplits: 1).map(String.init)
                return parts.count == 2 && pattern.matches(schema: parts[0], table: parts[1], column: name)
            }
        }
    }

    struct Key: Hashable, Sendable {
        var table: UInt32
        var column: Int16
    }

    /// Every table, view and materialized view the snapshot saw (known tables whose columns are
    /// not listed are not masked by column).
    var tables: Set<UInt32> = []
    /// Only the columns some mask rule's pattern matches.
    var maskable: [Key: Column] = [:]

    /// Tables, views, materialized views, foreign and partitioned tables outside the system schemas.
    static let query = """
        SELECT c.oid, a.attnum, n.nspname, c.relname, a.attname, \
        (SELECT string_agg(pn.nspname || '.' || p.relname, ',') FROM pg_catalog.pg_inherits i \
        JOIN pg_catalog.pg_class p ON p.oid = i.inhparent JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
        WHERE i.inhrelid = c.oid) \
        FROM pg_catalog.pg_attribute a \
        JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'm', 'f', 'p') \
        AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
        """

    /// Bounds the memory one database's catalog can take in the gateway.
    static let maximumColumns = 2_000_000

    /// Adds one row of `query`'s result (text format); false when the row is not understood.
    mutating func add(row: [ByteBuffer?], patterns: [ColumnPattern]) -> Bool {
        guard row.count == 6, let oidText = row[0].map({ String(buffer: $0) }), let table = UInt32(oidText),
              let numberText = row[1].map({ String(buffer: $0) }), let number = Int16(numberText),
              let schema = row[2].map({ String(buffer: $0) }), let relation = row[3].map({ String(buffer: $0) }),
              let name = row[4].map({ String(buffer: $0) }) else { return false }
        tables.insert(table)
        let parents = row[5].map { String(buffer: $0).split(separator: ",").map(String.init) } ?? []
        let column = Column(schema: schema, table: relation, name: name, parents: parents)
        if patterns.contains(where: column.matches) {
            maskable[Key(table: table, column: number)] = column
        }
        return true
    }
}

/// Catalog snapshots per connection, shared by every session, refreshed after `lifetime`.
final class CatalogCache: Sendable {
    private let entries = NIOLockedValueBox<[String: (snapshot: CatalogSnapshot, loaded: ContinuousClock.Instant)]>([:])
    let lifetime: Duration

    init(lifetime: Duration = .seconds(60)) {
        self.lifetime = lifetime
    }

    func fresh(_ connection: String) -> CatalogSnapshot? {
        entries.withLockedValue { entries in
            guard let entry = entries[connection], ContinuousClock.now - entry.loaded < lifetime else { return nil }
            return entry.snapshot
        }
    }

    func store(_ snapshot: CatalogSnapshot, for connection: String) {
        entries.withLockedValue { $0[connection] = (snapshot, ContinuousClock.now) }
    }
}

/// How the values of one result column are masked.
enum ColumnMasking: Sendable, Equatable {
    case none
    /// Every value, whole, with the rule's strategy (the column is masked by name, or computed
    /// from a masked column).
    case whole(rule: String, strategy: MaskStrategy)
    /// Values are scanned by the detectors; what they find is masked.
    case detect
}

/// Rewrites the rows of one result: built from its RowDescription and the masks in force, then
/// applied to each DataRow as it passes. Holds one row at a time, never more.
struct ResultMaskPlan: Sendable {
    let columns: [ColumnMasking]
    let typeOIDs: [UInt32]
    let binary: [Bool]
    let detectors: Set<Detector>
    let detectorStrategy: MaskStrategy

    /// Nil when nothing in this result is masked.
    init?(
        fields: [FieldDescription], resultFormats: [Int16]?, masks: [NamedMask], catalog: CatalogSnapshot?,
        statement: SQLStatement?
    ) {
        guard !masks.isEmpty, !fields.isEmpty else { return nil }
        let columnRules = masks.filter { !$0.action.columns.isEmpty }
        detectors = masks.reduce(into: Set<Detector>()) { $0.formUnion($1.action.detectors) }
        detectorStrategy = masks.first { !$0.action.detectors.isEmpty }?.action.strategy ?? .redact
        let derivedRule = Self.maskedColumnSource(statement, masks: columnRules)
        var columns: [ColumnMasking] = []
        for field in fields {
            var masking: ColumnMasking = detectors.isEmpty ? .none : .detect
            if !columnRules.isEmpty {
                if field.tableOID != 0, field.columnAttributeNumber > 0, let catalog, catalog.tables.contains(field.tableOID) {
                    if let column = catalog.maskable[.init(table: field.tableOID, column: field.columnAttributeNumber)],
                       let rule = columnRules.first(where: { rule in rule.action.columns.contains(where: column.matches) }) {
                        masking = .whole(rule: rule.rule, strategy: rule.action.strategy)
                    }
                } else if let derivedRule {
                    // Computed, or from a table the snapshot does not know (created since):
                    // treated as possibly derived. A keyed hash of a computed column would hash
                    // whatever the agent computes (`SELECT 'guess'`), an oracle for the hash of any
                    // value: such columns are redacted instead.
                    let strategy: MaskStrategy = derivedRule.action.strategy == .keyedHash ? .redact : derivedRule.action.strategy
                    masking = .whole(rule: derivedRule.rule, strategy: strategy)
                }
            }
            columns.append(masking)
        }
        guard columns.contains(where: { $0 != .none }) else { return nil }
        self.columns = columns
        typeOIDs = fields.map(\.dataTypeOID)
        binary = fields.indices.map { index in
            switch resultFormats {
            case nil: fields[index].formatCode == 1
            case let formats? where formats.count == 1: formats[0] == 1
            case let formats?: index < formats.count && formats[index] == 1
            }
        }
    }

    /// The first column rule a statement could have computed values from: it names one of the
    /// rule's columns anywhere, refers to whole rows, or could not be read. A computed result
    /// column of such a statement is masked whole.
    static func maskedColumnSource(_ statement: SQLStatement?, masks: [NamedMask]) -> NamedMask? {
        masks.first { rule in
            guard !rule.action.columns.isEmpty else { return false }
            guard let statement, !statement.isUnknown else { return true }
            // SQL run from a string (query_to_xml, table_to_xml, dblink) reads what the text
            // does not name.
            if statement.referencesWholeRows || statement.flags.contains(.dynamicSQL) { return true }
            return statement.columnReferences.contains { name in
                rule.action.columns.contains { $0.matches(schema: nil, table: nil, column: name) }
            }
        }
    }

    /// Names of the rules that mask whole columns here, for the trail.
    var rules: [String] {
        var seen = Set<String>()
        return columns.compactMap { column in
            if case .whole(let rule, _) = column, seen.insert(rule).inserted { return rule }
            return nil
        }
    }

    /// The row with its masked values rewritten and lengths recomputed; nil when nothing changed.
    func apply(to body: ByteBuffer, masker: ValueMasker, allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard case .dataRow(let values)? = try? BackendMessage.parse(PostgresFrame(type: UInt8(ascii: "D"), body: body)),
              values.count == columns.count else {
            // A row that does not fit its description is not passed on unmasked.
            return Self.encode(Array(repeating: nil, count: max(columns.count, 0)), allocator: allocator)
        }
        var changed = false
        var output: [ByteBuffer?] = values
        for index in values.indices {
            guard let value = values[index] else { continue }
            let replacement = mask(value, column: index, masker: masker, allocator: allocator)
            switch replacement {
            case .unchanged: continue
            case .null: output[index] = nil
            case .value(let bytes): output[index] = bytes
            }
            changed = true
        }
        return changed ? Self.encode(output, allocator: allocator) : nil
    }

    enum Replacement {
        case unchanged
        case null
        case value(ByteBuffer)
    }

    func mask(_ value: ByteBuffer, column: Int, masker: ValueMasker, allocator: ByteBufferAllocator) -> Replacement {
        let type = typeOIDs[column]
        let isBinary = binary[column]
        let kind = Self.textKind(type)
        switch columns[column] {
        case .none:
            return .unchanged
        case .whole(_, let strategy):
            // Only text-like types can hold a masked value; anything else becomes NULL.
            guard let kind, let text = Self.text(of: value, kind: kind, binary: isBinary) else { return .null }
            let masked = masker.mask(utf8: text, strategy: strategy)
            return .value(Self.encode(masked, kind: kind, binary: isBinary, allocator: allocator))
        case .detect:
            if let kind {
                guard let text = Self.text(of: value, kind: kind, binary: isBinary) else { return .null }
                guard let masked = masker.maskDetected(in: text, detectors: detectors, strategy: detectorStrategy) else { return .unchanged }
                if kind == .json || kind == .jsonb {
                    // Detected spans never hold quotes or backslashes, so the JSON stays valid.
                    return .value(Self.encode(masked, kind: kind, binary: isBinary, allocator: allocator, quoteJSON: false))
                }
                return .value(Self.encode(masked, kind: kind, binary: isBinary, allocator: allocator))
            }
            // A number or other value: what a detector finds in its text cannot be partly
            // masked in its type, so the value goes.
            let text: [UInt8]
            if isBinary {
                if Self.cannotHoldText(type) { return .unchanged }
                // Binary values the gateway cannot read as text (arrays, records, bytea, types
                // of extensions) could hold anything: they go.
                guard let readable = BinaryValue.readableText(value, typeOID: type) else { return .null }
                text = Array(readable.utf8)
            } else {
                text = Array(value.readableBytesView)
            }
            return masker.detect(in: text, detectors: detectors).isEmpty ? .unchanged : .null
        }
    }

    /// Binary types whose values cannot spell out a detectable value (too short, or not digits
    /// and letters at all): booleans, small integers, dates and times, UUIDs.
    static func cannotHoldText(_ type: UInt32) -> Bool {
        [16, 21, 23, 26, 1082, 1083, 1114, 1184, 1186, 1266, 2950].contains(type)
    }

    enum TextKind {
        case plain
        case json
        case jsonb
    }

    /// Types whose values are text in both formats (jsonb's binary form is a version byte, then text).
    static func textKind(_ type: UInt32) -> TextKind? {
        switch type {
        case 25, 1043, 1042, 19, 142, 705: .plain  // text, varchar, bpchar, name, xml, unknown
        case 114: .json
        case 3802: .jsonb
        default: nil
        }
    }

    static func text(of value: ByteBuffer, kind: TextKind, binary: Bool) -> [UInt8]? {
        var bytes = Array(value.readableBytesView)
        if kind == .jsonb && binary {
            guard bytes.first == 1 else { return nil }
            bytes.removeFirst()
        }
        return bytes
    }

    static func encode(_ masked: [UInt8], kind: TextKind, binary: Bool, allocator: ByteBufferAllocator, quoteJSON: Bool = true) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: masked.count + 3)
        if kind == .jsonb && binary { buffer.writeInteger(UInt8(1)) }
        if kind != .plain && quoteJSON {
            // A masked JSON value is a JSON string, so the column stays valid JSON.
            var json = JSONStringWriter()
            json.write(masked)
            buffer.writeBytes(json.bytes)
        } else {
            buffer.writeBytes(masked)
        }
        return buffer
    }

    /// A DataRow body from its values.
    static func encode(_ values: [ByteBuffer?], allocator: ByteBufferAllocator) -> ByteBuffer {
        PostgresFrame.backend(.dataRow(values), allocator: allocator).body
    }
}

/// A JSON string literal of UTF-8 text.
struct JSONStringWriter {
    var bytes: [UInt8] = []

    mutating func write(_ text: [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text {
            switch byte {
            case UInt8(ascii: "\""): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0..<0x20: bytes += Array(String(format: "\\u%04x", byte).utf8)
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

/// Error and notice texts can quote values (`invalid input syntax for type integer: "…"`,
/// `Key (email)=(…) already exists`): under masks, what detectors find is masked, and when the
/// statement touches masked columns every quoted value goes.
enum ErrorMasking {
    static func mask(
        _ fields: ErrorFields, masks: [NamedMask], statementTouchesMaskedColumns: Bool, masker: ValueMasker
    ) -> ErrorFields? {
        let detectors = masks.reduce(into: Set<Detector>()) { $0.formUnion($1.action.detectors) }
        let strategy = masks.first { !$0.action.detectors.isEmpty }?.action.strategy ?? .redact
        var result = fields
        var changed = false
        // Message, detail, hint, context (where), internal query.
        for code in [UInt8(ascii: "M"), UInt8(ascii: "D"), UInt8(ascii: "H"), UInt8(ascii: "W"), UInt8(ascii: "q")] {
            guard var text = result.fields[code] else { continue }
            if statementTouchesMaskedColumns {
                text = redactQuoted(text)
            }
            if !detectors.isEmpty, let masked = masker.maskDetected(in: text, detectors: detectors, strategy: strategy) {
                text = masked
            }
            if text != result.fields[code] {
                result.fields[code] = text
                changed = true
            }
        }
        return changed ? result : nil
    }

    /// `"value"` and `=(value)` become `"[redacted]"` and `=([redacted])`.
    static func redactQuoted(_ text: String) -> String {
        var output = ""
        var rest = Substring(text)
        while let start = rest.firstIndex(where: { $0 == "\"" || $0 == "=" }) {
            output += rest[..<start]
            let opener = rest[start]
            if opener == "=" {
                let after = rest.index(after: start)
                guard after < rest.endIndex, rest[after] == "(", let close = rest[after...].lastIndex(of: ")") else {
                    output.append(opener)
                    rest = rest[rest.index(after: start)...]
                    continue
                }
                output += "=([redacted])"
                rest = rest[rest.index(after: close)...]
                continue
            }
            let after = rest.index(after: start)
            guard let close = rest[after...].firstIndex(of: "\"") else {
                output += "\"[redacted]"
                rest = rest[rest.endIndex...]
                break
            }
            output += "\"[redacted]\""
            rest = rest[rest.index(after: close)...]
        }
        return output + rest
    }
}

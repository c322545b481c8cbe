/// Classifies PostgreSQL SQL with PostgreSQL's own parser (libpg_query), for the policy engine.
///
/// Pure and thread-safe: libpg_query keeps its parser state per thread and every result is freed
/// before returning. All input is treated as hostile: it is bounded in size, checked for NUL
/// characters, parsed on a stack sized for its worst case (see `DeepWork`), and its parse tree is
/// bounded in depth. Whatever cannot be understood is `unknown` and writes, never a read.
///
/// Cost, measured on the 2-core build machine with `-O` (debug builds are several times slower):
/// a pgbench UPDATE (70 bytes) takes about 15–20 µs; a 144-byte SELECT with a join about 50 µs,
/// of which libpg_query's parse is about 12 µs, reading its 2 KB of JSON 20 µs and the walk 13 µs;
/// a 1.4 KB SELECT of 150 columns about 0.6 ms. Time and memory grow with the parse tree: a 1 MiB
/// INSERT … VALUES takes about 0.3 s and 100 MB while its tree is held, so callers that admit
/// large inputs should bound how many are inspected at once. Inputs over `DeepWork.inlineLimit`
/// (1 KiB), and trees deeper than `DeepWork.inlineTreeDepth`, also pay about 25 µs for a thread.
public enum SQLInspector {
    /// Larger inputs are not parsed: they are `unknown` with `.tooLarge`. One MiB holds any
    /// statement an agent writes by hand and bounds the parser's time and memory.
    public static let maximumInputBytes = 1024 * 1024

    /// Parse trees nested deeper than this (in JSON objects and arrays, two or three per SQL
    /// level) are `unknown` with `.nestedTooDeeply`. It bounds the recursion of the JSON reader
    /// and of the walk; a tree this deep is a couple of hundred chained operators or UNIONs, which
    /// no one writes by hand.
    public static let maximumTreeDepth = 500

    public static func inspect(_ sql: String) -> SQLInspection {
        let byteCount = sql.utf8.count
        guard byteCount <= maximumInputBytes else {
            return failed(sql, byteCount, .tooLarge(bytes: byteCount, limit: maximumInputBytes))
        }
        guard !sql.utf8.contains(0) else {
            return failed(sql, byteCount, .containsNUL)
        }
        let parsed = DeepWork.run(inputBytes: byteCount) { PgQuery.parseTreeJSON(sql) }
        let json: [UInt8]
        switch parsed {
        case .success(let bytes)?:
            json = bytes
        case .failure(let error)?:
            return failed(sql, byteCount, .syntaxError(message: error.message, cursorPosition: error.cursorPosition))
        case nil:
            return failed(sql, byteCount, .unreadableParseTree)
        }
        let depth = ParseTreeReader.depth(of: json)
        guard depth <= maximumTreeDepth else {
            return failed(sql, byteCount, .nestedTooDeeply)
        }
        let inspection = DeepWork.run(treeDepth: depth) { classify(json, sql, byteCount) }
        return inspection ?? failed(sql, byteCount, .unreadableParseTree)
    }

    /// libpg_query's fingerprint of the input (16 hex digits): equal for statements that differ
    /// only in constants, comments and whitespace, so it groups "the same query" for review
    /// queues and statistics. Nil for input `inspect` would refuse before or while parsing.
    public static func fingerprint(_ sql: String) -> String? {
        let byteCount = sql.utf8.count
        guard byteCount <= maximumInputBytes, !sql.utf8.contains(0) else { return nil }
        let outcome = DeepWork.run(inputBytes: byteCount) { try? PgQuery.fingerprint(sql).get() }
        return outcome ?? nil
    }

    /// Reads libpg_query's JSON and classifies each statement.
    private static func classify(_ json: [UInt8], _ sql: String, _ byteCount: Int) -> SQLInspection {
        let tree: ParseTree
        switch ParseTreeReader.read(json, maximumDepth: maximumTreeDepth) {
        case .success(let value):
            tree = value
        case .failure(.nestedTooDeeply):
            return failed(sql, byteCount, .nestedTooDeeply)
        case .failure(.unreadable):
            return failed(sql, byteCount, .unreadableParseTree)
        }
        // {"version": 150001, "stmts": [{"stmt": {…}, "stmt_location": …, "stmt_len": …}, …]};
        // "stmts" is left out when there is no statement.
        let rawStatements: [ParseTree]
        switch tree["stmts"] {
        case nil where tree.fields != nil:
            rawStatements = []
        case .array(let elements)?:
            rawStatements = elements
        default:
            return failed(sql, byteCount, .unreadableParseTree)
        }

        let bytes = Array(sql.utf8)
        var statements: [SQLStatement] = []
        statements.reserveCapacity(rawStatements.count)
        for raw in rawStatements {
            guard let fields = raw.fields, let node = fields["stmt"] else {
                return failed(sql, byteCount, .unreadableParseTree)
            }
            let range = statementRange(
                location: fields.int("stmt_location") ?? 0, length: fields.int("stmt_len") ?? 0, in: bytes
            )
            let text = String(decoding: bytes[range], as: UTF8.self)
            statements.append(StatementClassifier(text: text, utf8Range: range).classify(node))
        }
        return SQLInspection(statements: statements)
    }

    /// A statement's bytes from the parser's stmt_location and stmt_len: byte offsets into the
    /// input, where a missing location is 0 and a missing (0) length means "to the end". Clamped
    /// to the input, then trimmed of surrounding whitespace.
    static func statementRange(location: Int, length: Int, in bytes: [UInt8]) -> Range<Int> {
        let start = min(max(location, 0), bytes.count)
        let end = length > 0 ? min(start + length, bytes.count) : bytes.count
        var lower = start
        var upper = max(end, start)
        while lower < upper, isWhitespace(bytes[lower]) { lower += 1 }
        while upper > lower, isWhitespace(bytes[upper - 1]) { upper -= 1 }
        return lower..<upper
    }

    /// PostgreSQL's scanner whitespace: space, tab, newline, carriage return, form feed (and
    /// vertical tab).
    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (0x09...0x0D).contains(byte)
    }

    /// The whole input as one unknown statement: whoever reads only `statements` still sees that
    /// something it cannot allow by kind is there.
    private static func failed(_ sql: String, _ byteCount: Int, _ failure: SQLInspectionFailure) -> SQLInspection {
        let statement = SQLStatement(text: sql, utf8Range: 0..<byteCount, kind: .unknown, writes: true)
        return SQLInspection(statements: [statement], failure: failure)
    }
}

/// Classifies PostgreSQL SQL with PostgreSQL's own parser (libpg_query), for the policy engine.
///
/// Pure and thread-safe: libpg_query keeps its parser state per thread and every result is freed
/// before returning. All input is treated as hostile: it is bounded in size, checked for NUL
/// characters, parsed on a stack sized for its worst case (see `DeepWork`), and its parse tree is
/// bounded in depth. Whatever cannot be understood is `unknown` and writes, never a read.
///
/// Cost, measured on the 2-core build machine with a debug build: a short statement (a pgbench
/// UPDATE) takes tens of microseconds, most of it reading libpg_query's JSON, which grows with
/// the statement; the parse itself is a few microseconds. Inputs above `DeepWork.inlineLimit`
/// (2 KiB) also pay for starting a thread, tens of microseconds. A 1 MiB INSERT … VALUES takes on
/// the order of a second and a few hundred MB while its tree is held, so callers that admit such
/// inputs should bound how many are inspected at once.
public enum SQLInspector {
    /// Larger inputs are not parsed: they are `unknown` with `.tooLarge`. One MiB holds any
    /// statement an agent writes by hand and bounds the parser's time and memory.
    public static let maximumInputBytes = 1024 * 1024

    /// Parse trees nested deeper than this (in JSON objects and arrays, a few per SQL level) are
    /// `unknown` with `.nestedTooDeeply`. Foundation's JSON reader stops at 512; a tree this deep
    /// is a few hundred chained operators or UNIONs, which no one writes by hand.
    public static let maximumTreeDepth = 500

    public static func inspect(_ sql: String) -> SQLInspection {
        let byteCount = sql.utf8.count
        guard byteCount <= maximumInputBytes else {
            return failed(sql, byteCount, .tooLarge(bytes: byteCount, limit: maximumInputBytes))
        }
        guard !sql.utf8.contains(0) else {
            return failed(sql, byteCount, .containsNUL)
        }
        let outcome = DeepWork.run(inputBytes: byteCount) { inspectParsing(sql, byteCount) }
        return outcome ?? failed(sql, byteCount, .unreadableParseTree)
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

    private static func inspectParsing(_ sql: String, _ byteCount: Int) -> SQLInspection {
        let json: [UInt8]
        switch PgQuery.parseTreeJSON(sql) {
        case .success(let bytes):
            json = bytes
        case .failure(let error):
            return failed(sql, byteCount, .syntaxError(message: error.message, cursorPosition: error.cursorPosition))
        }
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

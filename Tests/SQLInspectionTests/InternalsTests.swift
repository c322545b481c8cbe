import Testing

@testable import SQLInspection

/// The parts that real SQL rarely reaches: parse trees of shapes this version of libpg_query does
/// not print, and the parser's location fields at their edges.
@Suite("SQL inspector: internals")
struct InternalsTests {
    static func classify(_ json: String) throws -> SQLStatement {
        let tree = try ParseTreeReader.read(Array(json.utf8), maximumDepth: 100).get()
        return StatementClassifier(text: "x", utf8Range: 0..<1).classify(tree)
    }

    @Test func anUnknownStatementTypeIsUnknownAndWrites() throws {
        let statement = try Self.classify(#"{"FutureStmt": {"relation": {"relname": "t"}}}"#)
        #expect(statement.kind == .unknown)
        #expect(statement.writes)
    }

    @Test func aStatementTypeThatCannotStandAloneIsUnknown() throws {
        #expect(try Self.classify(#"{"PLAssignStmt": {"name": "x"}}"#).kind == .unknown)
        #expect(try Self.classify(#"{"RawStmt": {}}"#).kind == .unknown)
        #expect(try Self.classify(#"{"not a node": 1}"#).kind == .unknown)
    }

    @Test func anUnexpectedStatementInsideASelectMakesItUnknown() throws {
        // A SELECT holding anything but queries (here a DROP inside a subquery) is not understood.
        let statement = try Self.classify(#"""
            {"SelectStmt": {"fromClause": [{"RangeSubselect": {"subquery": {"DropStmt": {"removeType": "OBJECT_TABLE"}}}}]}}
            """#)
        #expect(statement.kind == .unknown)
    }

    @Test func aWithQueryOfAnUnexpectedTypeIsUnknown() throws {
        let statement = try Self.classify(#"""
            {"SelectStmt": {"withClause": {"ctes": [{"CommonTableExpr": {"ctename": "x", "ctequery": {"VacuumStmt": {}}}}]}}}
            """#)
        #expect(statement.kind == .unknown)
    }

    @Test func aModificationWithoutATargetIsUnknown() throws {
        #expect(try Self.classify(#"{"DeleteStmt": {"whereClause": {}}}"#).kind == .unknown)
    }

    @Test func aRelationWithoutANameIsUnknown() throws {
        #expect(try Self.classify(#"{"SelectStmt": {"fromClause": [{"RangeVar": {"schemaname": "s"}}]}}"#).kind == .unknown)
    }

    @Test func unknownNodeTypesAreStillSearched() throws {
        // A node type this module has never heard of is walked like any other: the relation and
        // the call inside it are found.
        let statement = try Self.classify(#"""
            {"SelectStmt": {"targetList": [{"NewExpr": {"inner": [{"FuncCall": {"funcname": [{"String": {"sval": "pg_read_file"}}]}}],
             "source": {"RangeVar": {"relname": "hidden", "location": 3}}}}]}}
            """#)
        #expect(statement.kind == .select)
        #expect(statement.functions == ["pg_read_file"])
        #expect(statement.relations == [read("hidden")])
        #expect(statement.flags.contains(.serverFileAccess))
    }

    @Test func jsonDepthIsMeasuredOutsideStrings() {
        #expect(ParseTreeReader.depth(of: Array(#"{"a": [1, {"b": "[[[{{{"}]}"#.utf8)) == 3)
        #expect(ParseTreeReader.depth(of: Array(#"{"a": "\"[[["}"#.utf8)) == 1)
        #expect(ParseTreeReader.depth(of: Array("[]".utf8)) == 1)
        #expect(ParseTreeReader.depth(of: Array("1".utf8)) == 0)
    }

    @Test func statementRangesFollowTheParsersConventions() {
        let bytes = Array("SELECT 1;  DELETE FROM t  ".utf8)
        // stmt_location and stmt_len both present.
        #expect(SQLInspector.statementRange(location: 0, length: 8, in: bytes) == 0..<8)
        // Last statement: no stmt_len, to the end, trimmed.
        #expect(SQLInspector.statementRange(location: 9, length: 0, in: bytes) == 11..<24)
        // Neither present: the whole input, trimmed.
        #expect(SQLInspector.statementRange(location: 0, length: 0, in: Array("  SELECT 1 ".utf8)) == 2..<10)
        // Out of range values are clamped rather than trusted.
        #expect(SQLInspector.statementRange(location: 500, length: 10, in: bytes) == bytes.count..<bytes.count)
        #expect(SQLInspector.statementRange(location: -3, length: 1_000, in: bytes) == 0..<24)
    }

    @Test func booleanOptionsReadLikePostgres() {
        #expect(StatementClassifier.booleanOption(nil))
        #expect(!StatementClassifier.booleanOption(.object(["String": .object(["sval": .string("OFF")])])))
        #expect(!StatementClassifier.booleanOption(.object(["Integer": .object([:])])))
        #expect(StatementClassifier.booleanOption(.object(["Integer": .object(["ival": .integer(1)])])))
        #expect(!StatementClassifier.booleanOption(.object(["Boolean": .object([:])])))
        // Anything unexpected counts as on: EXPLAIN then looks as risky as what it explains.
        #expect(StatementClassifier.booleanOption(.object(["String": .object(["sval": .string("maybe")])])))
        #expect(StatementClassifier.booleanOption(.object(["A_Const": .object([:])])))
    }

    /// The longest input built by `make` whose tree is still read on the caller's thread.
    static func deepestInline(_ make: (Int) -> String) throws -> String {
        var count = 1
        while ParseTreeReader.depth(of: try PgQuery.parseTreeJSON(make(count + 1)).get()) <= DeepWork.inlineTreeDepth {
            count += 1
        }
        return make(count)
    }

    @Test func theWorstCasesKeptOnTheCallersThreadFitInASmallStack() throws {
        // Parsing inputs up to DeepWork.inlineLimit, and reading and walking trees up to
        // DeepWork.inlineTreeDepth, happen on the caller's thread. Their worst cases must fit in
        // 256 KiB (Darwin's secondary threads have 512 KiB; a debug build needs about 128 KiB);
        // an overflow here crashes the test run.
        let inputs = [
            "SELECT 1" + String(repeating: "+1", count: (DeepWork.inlineLimit - 8) / 2),
            try Self.deepestInline { "SELECT 1" + String(repeating: "+1", count: $0) },
            try Self.deepestInline { "SELECT 1" + String(repeating: " UNION SELECT 1", count: $0) },
            try Self.deepestInline { "SELECT " + String(repeating: "(SELECT ", count: $0) + "1" + String(repeating: ")", count: $0) },
        ]
        let inspections = inputs.compactMap { sql in
            DeepWork.onNewThread(stackBytes: 256 * 1024) { SQLInspector.inspect(sql) }
        }
        #expect(inspections.map(\.failure) == [.nestedTooDeeply, nil, nil, nil])
    }

    @Test func treesDeeperThanTheInlineLimitAreReadOnTheirOwnThread() {
        // A short input with a tree near the depth limit: read and walked inline, it would need
        // about 450 KiB of stack in a debug build, so on a 256 KiB thread this only passes if the
        // work moves to a thread of its own.
        let sql = "SELECT 1" + String(repeating: "+1", count: 240)
        #expect(sql.utf8.count <= DeepWork.inlineLimit)
        let inspection = DeepWork.onNewThread(stackBytes: 256 * 1024) { SQLInspector.inspect(sql) }
        #expect(inspection?.failure == nil)
        #expect(inspection?.statements.map(\.kind) == [.select])
    }

    @Test func theStackForDeepWorkGrowsWithTheInput() {
        #expect(DeepWork.stackBytes(forInputBytes: 0) >= 256 * 1024)
        // The measured worst case is 64 bytes of parser stack per input byte.
        let forOneMiB = DeepWork.stackBytes(forInputBytes: SQLInspector.maximumInputBytes)
        #expect(forOneMiB >= 64 * SQLInspector.maximumInputBytes * 2)
        #expect(forOneMiB % (64 * 1024) == 0)
        #expect(DeepWork.run(inputBytes: 100_000) { 42 } == 42)
    }
}

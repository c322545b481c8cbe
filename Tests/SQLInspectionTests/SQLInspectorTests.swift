import SQLInspection
import Testing

/// How the input is read: comments, string forms, identifiers, splitting, bounds. These are the
/// places a home-made lexer gets wrong and an attacker aims at.
@Suite("SQL inspector: reading the input")
struct SQLInspectorTests {
    // MARK: Comments

    @Test func nestedBlockCommentsHideWhatTheyContain() {
        // PostgreSQL nests block comments: the first */ closes only the inner one, so the DROP
        // and DELETE are still inside the comment.
        let inspection = SQLInspector.inspect("SELECT 1 /* outer /* inner */ DROP TABLE t; */ ; /* x */")
        #expect(inspection.statements.map(\.kind) == [.select])
        #expect(!inspection.writes)
    }

    @Test func textAfterANestedCommentClosesIsSQL() {
        let inspection = SQLInspector.inspect("/* a /* b */ c */ DROP TABLE t")
        #expect(inspection.statements.map(\.kind) == [.drop])
        #expect(inspection.statements.first?.relationsWritten == [table("t")])
    }

    @Test func lineCommentsHideKeywordsToTheEndOfTheLineOnly() {
        let hidden = SQLInspector.inspect("SELECT 1 -- ; DROP TABLE t")
        #expect(hidden.statements.map(\.kind) == [.select])
        let nextLine = SQLInspector.inspect("SELECT 1 -- harmless\n; DELETE FROM t")
        #expect(nextLine.statements.map(\.kind) == [.select, .delete])
    }

    @Test func anUnterminatedCommentIsASyntaxError() {
        let inspection = SQLInspector.inspect("SELECT 1 /* /* */ DROP TABLE t")
        #expect(inspection.isUnknown)
        #expect(inspection.writes)
        guard case .syntaxError? = inspection.failure else {
            Issue.record("expected a syntax error, got \(String(describing: inspection.failure))")
            return
        }
    }

    // MARK: Strings

    @Test func keywordsInsideStringLiteralsAreData() {
        let statement = only("SELECT 'DROP TABLE t; DELETE FROM u' AS text")
        #expect(statement.kind == .select)
        #expect(statement.relations.isEmpty)
    }

    @Test func anEscapedQuoteInAnEscapeStringKeepsTheStringOpen() {
        // In E'…' a backslash escapes the quote: everything up to the last quote is one string.
        let statement = only("SELECT E'it\\'s; DROP TABLE t; --'")
        #expect(statement.kind == .select)
        #expect(!statement.writes)
    }

    @Test func aBackslashInAPlainStringEscapesNothing() {
        // With standard_conforming_strings on (PostgreSQL's default, and libpg_query's), '\' is a
        // complete string, so the DROP that follows is a statement.
        let inspection = SQLInspector.inspect("SELECT '\\'; DROP TABLE t; --'")
        #expect(inspection.statements.map(\.kind) == [.select, .drop])
    }

    @Test func dollarQuotedStringsHideStatementsUntilTheirOwnTag() {
        let statement = only("SELECT $tag$ ; DROP TABLE t; $other$ ; $tag$")
        #expect(statement.kind == .select)
        let after = SQLInspector.inspect("SELECT $$ x $$; DROP TABLE t")
        #expect(after.statements.map(\.kind) == [.select, .drop])
    }

    @Test func unicodeEscapeStringsAreStrings() {
        let statement = only("SELECT U&'\\0044ROP TABLE t; \\+000044ELETE'")
        #expect(statement.kind == .select)
        #expect(statement.relations.isEmpty)
    }

    @Test func unicodeEscapedIdentifiersNameRelations() {
        // U&"d\0061t\0061" is the identifier "data".
        let statement = only("SELECT * FROM U&\"d\\0061t\\0061\"")
        #expect(statement.relations == [read("data")])
    }

    // MARK: Identifiers and case

    @Test func aQuotedKeywordIsAName() {
        let statement = only("SELECT * FROM \"DELETE\" WHERE \"DROP\" = 1")
        #expect(statement.kind == .select)
        #expect(!statement.writes)
        #expect(statement.relations == [read("DELETE")])
    }

    @Test func keywordsAreCaseInsensitiveAndUnquotedNamesFold() {
        let statement = only("dElEtE fRoM MySchema.MyTable wHeRe Id = 1")
        #expect(statement.kind == .delete)
        #expect(statement.relations == [written("mytable", schema: "myschema")])
        #expect(!statement.flags.contains(.updateOrDeleteWithoutWhere))
    }

    @Test func quotedNamesKeepTheirCase() {
        let statement = only("UPDATE \"Sales\".\"Orders\" SET total = 0 WHERE id = 1")
        #expect(statement.relations == [written("Orders", schema: "Sales")])
    }

    // MARK: Splitting

    @Test func everyStatementOfAStringIsClassified() {
        let inspection = SQLInspector.inspect("SELECT 1; DROP TABLE t")
        #expect(inspection.statements.map(\.kind) == [.select, .drop])
        #expect(inspection.statements.map(\.text) == ["SELECT 1", "DROP TABLE t"])
        #expect(inspection.writes)
        #expect(!inspection.isUnknown)
    }

    @Test func statementTextsAreCutAtUTF8ByteOffsets() {
        // 'é' and '日本' take more bytes than characters: offsets must be bytes.
        let sql = "SELECT 'é' AS a;\n  INSERT INTO t VALUES ('日本');  DELETE FROM u WHERE x = 'ü'  "
        let inspection = SQLInspector.inspect(sql)
        #expect(inspection.statements.map(\.text) == [
            "SELECT 'é' AS a",
            "INSERT INTO t VALUES ('日本')",
            "DELETE FROM u WHERE x = 'ü'",
        ])
        let bytes = Array(sql.utf8)
        for statement in inspection.statements {
            #expect(String(decoding: bytes[statement.utf8Range], as: UTF8.self) == statement.text)
        }
    }

    @Test func aSemicolonInsideAStringDoesNotSplit() {
        let inspection = SQLInspector.inspect("INSERT INTO log VALUES ('a;b'); SELECT ';'")
        #expect(inspection.statements.map(\.kind) == [.insert, .select])
        #expect(inspection.statements.map(\.text) == ["INSERT INTO log VALUES ('a;b')", "SELECT ';'"])
    }

    @Test func emptyStatementsBetweenSemicolonsAreNotStatements() {
        let inspection = SQLInspector.inspect(";; SELECT 1;;")
        #expect(inspection.statements.map(\.kind) == [.select])
        #expect(inspection.statements.first?.text == "SELECT 1")
    }

    // MARK: Bounds and failures

    @Test func emptyInputHasNoStatements() {
        for sql in ["", "   \n\t", "-- only a comment", "/* only */ /* comments */", ";"] {
            let inspection = SQLInspector.inspect(sql)
            #expect(inspection.statements.isEmpty, "\(sql)")
            #expect(inspection.failure == nil, "\(sql)")
            #expect(!inspection.writes, "\(sql)")
            #expect(!inspection.isUnknown, "\(sql)")
        }
    }

    @Test(arguments: [
        "SELEC 1",
        "DELETE FROM",
        "SELECT * FROM t WHERE",
        "garbage in, garbage out",
        "SELECT 'unterminated",
        "SELECT 1; DROP TABLE t; THEN",
        "\u{1F600}",
    ])
    func unparseableInputIsUnknownAndWrites(sql: String) {
        let inspection = SQLInspector.inspect(sql)
        #expect(inspection.isUnknown)
        #expect(inspection.writes)
        #expect(inspection.statements.map(\.kind) == [.unknown])
        #expect(inspection.statements.first?.text == sql)
        guard case .syntaxError(let message, _)? = inspection.failure else {
            Issue.record("expected a syntax error for \(sql)")
            return
        }
        #expect(!message.isEmpty)
    }

    @Test func oneBadStatementMakesTheWholeStringUnknown() {
        // PostgreSQL parses a simple-query string as a whole: none of it runs if any is invalid,
        // and none of it may be classified as a read.
        let inspection = SQLInspector.inspect("SELECT 1; SELEC 2")
        #expect(inspection.statements.map(\.kind) == [.unknown])
        #expect(inspection.writes)
    }

    @Test func inputOverTheLimitIsUnknownWithoutParsing() {
        let sql = "SELECT '" + String(repeating: "x", count: 2 * 1024 * 1024) + "'"
        let inspection = SQLInspector.inspect(sql)
        #expect(inspection.failure == .tooLarge(bytes: sql.utf8.count, limit: SQLInspector.maximumInputBytes))
        #expect(inspection.statements.map(\.kind) == [.unknown])
        #expect(inspection.writes)
    }

    @Test func inputJustUnderTheLimitIsParsed() {
        let padding = SQLInspector.maximumInputBytes - 100
        let sql = "SELECT '" + String(repeating: "x", count: padding) + "'; DELETE FROM t"
        let inspection = SQLInspector.inspect(sql)
        #expect(inspection.failure == nil)
        #expect(inspection.statements.map(\.kind) == [.select, .delete])
    }

    @Test func aNULCharacterIsRefused() {
        // The C parser would stop at the NUL and never see the DROP.
        let inspection = SQLInspector.inspect("SELECT 1\u{0}; DROP TABLE t")
        #expect(inspection.failure == .containsNUL)
        #expect(inspection.writes)
    }

    @Test func deeplyChainedOperatorsAreUnknownAndDoNotCrash() {
        // 100 000 chained additions: libpg_query prints one C stack frame per level, which
        // overflows an ordinary thread's stack; the inspector gives it a stack of its own and then
        // refuses the tree's depth.
        let sql = "SELECT 1" + String(repeating: "+1", count: 100_000)
        let inspection = SQLInspector.inspect(sql)
        #expect(inspection.failure == .nestedTooDeeply)
        #expect(inspection.writes)
    }

    @Test func deepButReasonableNestingIsUnderstood() {
        let sql = "SELECT * FROM t WHERE a = " + String(repeating: "(", count: 40) + "1" + String(repeating: ")", count: 40)
            + " AND b = 1" + String(repeating: " + 1", count: 40)
        let statement = only(sql)
        #expect(statement.kind == .select)
        #expect(statement.relations == [read("t")])
    }

    @Test func deeplyNestedParenthesesAreASyntaxErrorNotACrash() {
        let sql = "SELECT " + String(repeating: "(", count: 200_000) + "1" + String(repeating: ")", count: 200_000)
        let inspection = SQLInspector.inspect(sql)
        #expect(inspection.isUnknown)
        #expect(inspection.writes)
    }

    @Test func inspectionIsSafeFromManyThreadsAtOnce() async {
        let inputs = [
            ("SELECT * FROM a", SQLStatementKind.select),
            ("WITH d AS (DELETE FROM b RETURNING *) SELECT * FROM d", .delete),
            ("UPDATE c SET x = 1 WHERE id = 2", .update),
            ("SELECT 1" + String(repeating: " + 1", count: 1_000), .unknown),
        ]
        let kinds = await withTaskGroup(of: (Int, SQLStatementKind?).self) { group in
            for round in 0..<200 {
                let index = round % inputs.count
                group.addTask { (index, SQLInspector.inspect(inputs[index].0).statements.first?.kind) }
            }
            var results: [(Int, SQLStatementKind?)] = []
            for await result in group {
                results.append(result)
            }
            return results
        }
        #expect(kinds.count == 200)
        for (index, kind) in kinds {
            #expect(kind == inputs[index].1)
        }
    }

    // MARK: Fingerprint

    @Test func fingerprintsGroupStatementsThatDifferOnlyInConstants() throws {
        let first = try #require(SQLInspector.fingerprint("SELECT * FROM t WHERE id = 1"))
        let second = try #require(SQLInspector.fingerprint("select *  from t /* c */ where id = 42"))
        let other = try #require(SQLInspector.fingerprint("SELECT * FROM u WHERE id = 1"))
        #expect(first == second)
        #expect(first != other)
        #expect(SQLInspector.fingerprint("SELEC 1") == nil)
        #expect(SQLInspector.fingerprint("SELECT 1\u{0}") == nil)
    }
}

@Suite("Column references")
struct ColumnReferenceTests {
    @Test(arguments: [
        ("SELECT email, c.card_number FROM customers c WHERE id = 1", ["email", "card_number", "id"], false),
        ("SELECT lower(\"Email\") FROM t", ["Email"], false),
        ("SELECT count(*) FROM customers", [], false),
        ("SELECT * FROM customers", [], true),
        ("SELECT c.* FROM customers c", [], true),
        ("SELECT c FROM customers c", ["c"], true),
        ("SELECT row_to_json(customers) FROM customers", ["customers"], true),
        ("SELECT s FROM (SELECT email FROM customers) s", ["s", "email"], true),
        ("WITH w AS (SELECT email FROM customers) SELECT w FROM w", ["email", "w"], true),
        ("SELECT (SELECT max(email) FROM customers) AS m", ["email"], false),
        ("SELECT a FROM t UNION SELECT b FROM u", ["a", "b"], false),
        ("SELECT lower(x) FROM customers AS t(i, n, x)", ["x"], true),
        ("SELECT y FROM (SELECT email FROM customers) AS s(y)", ["y", "email"], true),
    ])
    func referencesAreCollectedEverywhere(sql: String, columns: [String], wholeRows: Bool) {
        let statement = SQLInspector.inspect(sql).statements[0]
        #expect(statement.columnReferences == columns, "\(sql)")
        #expect(statement.referencesWholeRows == wholeRows, "\(sql)")
    }
}

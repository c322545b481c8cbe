/// What one SQL string does, statement by statement, as PostgreSQL's own parser reads it.
///
/// The inspection fails closed: input it cannot read completely (too large, not parseable, a
/// parse tree nested beyond what it walks) carries a `failure` and a single `unknown` statement
/// that writes, so code that only looks at `statements` still sees something it must not allow
/// by accident.
public struct SQLInspection: Sendable, Hashable {
    /// The statements in input order. Empty for input that holds no statement (empty, or only
    /// whitespace and comments), which PostgreSQL answers with an empty-query response.
    public var statements: [SQLStatement]
    /// Why the input as a whole could not be understood; nil when every statement was parsed.
    public var failure: SQLInspectionFailure?

    public init(statements: [SQLStatement], failure: SQLInspectionFailure? = nil) {
        self.statements = statements
        self.failure = failure
    }

    /// True when some part of the input could not be classified: a failure, or a statement (or
    /// the statement inside an EXPLAIN or PREPARE) of kind `unknown`.
    public var isUnknown: Bool {
        failure != nil || statements.contains { $0.isUnknown }
    }

    /// True when any statement may change stored state, or cannot be known not to.
    public var writes: Bool {
        statements.contains { $0.writes }
    }

    /// Every flag raised by any statement.
    public var flags: Set<SQLStatementFlag> {
        statements.reduce(into: []) { $0.formUnion($1.flags) }
    }
}

/// Why a whole input was not understood. Parser messages can quote the input (`syntax error at or
/// near "…"`): treat them like the SQL text itself when recording them.
public enum SQLInspectionFailure: Sendable, Hashable {
    /// Larger than `SQLInspector.maximumInputBytes`; not parsed at all.
    case tooLarge(bytes: Int, limit: Int)
    /// Contains a NUL character. The parser reads C strings and would see only the part before
    /// it, so what it classified would not be what was sent.
    case containsNUL
    /// PostgreSQL's parser refused it. `cursorPosition` is 1-based, in characters, 0 if unknown.
    case syntaxError(message: String, cursorPosition: Int)
    /// The parse tree nests deeper than the inspector walks (`SQLInspector.maximumTreeDepth`),
    /// for example hundreds of chained operators or UNIONs.
    case nestedTooDeeply
    /// The parser's output was not what this module expects (a libpg_query version mismatch, or a
    /// helper thread that could not be started). Never expected; reported rather than guessed.
    case unreadableParseTree
}

/// One statement of the input, classified.
public struct SQLStatement: Sendable, Hashable {
    /// The statement's text: from the input, without the separating `;` and surrounding
    /// whitespace (comments before it are kept, as the parser includes them).
    public var text: String
    /// Where `text` is in the input, in UTF-8 bytes (the parser's locations are byte offsets).
    public var utf8Range: Range<Int>
    public var kind: SQLStatementKind
    /// True when the statement may change stored data, schema, privileges, files, sequences or
    /// other sessions' view of the server, or when its effect cannot be known from its text (DO,
    /// CALL, EXECUTE, unknown). Holding write access to any relation implies it. A function
    /// written by users can write through a SELECT: `functions` names every call so a policy can
    /// allow-list them.
    public var writes: Bool
    /// Relations named in the statement (tables, views, sequences…), each with the access the
    /// statement needs; a relation both read and written appears twice. In order of first
    /// appearance. Names of WITH queries are not relations and are left out.
    public var relations: [SQLRelationAccess]
    /// Functions and procedures called by name, lower-cased, schema-qualified when written so
    /// (`pg_catalog.pg_read_file`), each once, in order of first appearance. Operators, casts,
    /// triggers, defaults and view bodies can call functions too; those are not visible here.
    public var functions: [String]
    /// The subset of `functions` that `SQLFunctionCatalog.dangerous` lists.
    public var dangerousFunctions: [String]
    public var flags: Set<SQLStatementFlag>
    /// For PREPARE, EXECUTE and DEALLOCATE: the prepared statement's name (nil for DEALLOCATE
    /// ALL). For DECLARE, FETCH, MOVE and CLOSE: the cursor's name.
    public var objectName: String?
    /// Column names the statement references anywhere (select list, conditions, subqueries, WITH
    /// queries, function arguments), as PostgreSQL folds them, each once, in input order. The
    /// table each belongs to is not resolved (that needs the catalog); masking uses them to tell
    /// whether a computed result column may be derived from a masked one.
    public var columnReferences: [String]
    /// True when some reference may expand to whole rows or to columns not named in the text:
    /// `*`, `t.*`, a relation or alias used as a value (`SELECT c FROM customers c`,
    /// `row_to_json(c)`), or an alias that renames columns (`FROM customers AS t(i, n, x)`).
    public var referencesWholeRows: Bool
    /// Boxed in an array: a struct cannot hold an optional of itself.
    private var inner: [SQLStatement]

    public init(
        text: String,
        utf8Range: Range<Int>,
        kind: SQLStatementKind,
        writes: Bool,
        relations: [SQLRelationAccess] = [],
        functions: [String] = [],
        dangerousFunctions: [String] = [],
        flags: Set<SQLStatementFlag> = [],
        objectName: String? = nil,
        innerStatement: SQLStatement? = nil,
        columnReferences: [String] = [],
        referencesWholeRows: Bool = false
    ) {
        self.text = text
        self.utf8Range = utf8Range
        self.kind = kind
        self.writes = writes
        self.relations = relations
        self.functions = functions
        self.dangerousFunctions = dangerousFunctions
        self.flags = flags
        self.objectName = objectName
        self.columnReferences = columnReferences
        self.referencesWholeRows = referencesWholeRows
        self.inner = innerStatement.map { [$0] } ?? []
    }

    /// The statement that EXPLAIN plans (and with ANALYZE runs), that PREPARE prepares, or that
    /// DECLARE opens a cursor on, classified on its own. Its text is the outer statement's.
    public var innerStatement: SQLStatement? {
        get { inner.first }
        set { inner = newValue.map { [$0] } ?? [] }
    }

    /// True when this statement or the one inside it is of kind `unknown`.
    public var isUnknown: Bool {
        kind == .unknown || (innerStatement?.isUnknown ?? false)
    }

    public var relationsRead: [SQLRelation] {
        relations.filter { $0.access == .read }.map(\.relation)
    }

    public var relationsWritten: [SQLRelation] {
        relations.filter { $0.access == .write }.map(\.relation)
    }
}

/// What a statement is, by what it does rather than only by its first keyword: a SELECT whose
/// WITH clause deletes is a `delete`, `SELECT … INTO` is a `create`.
public enum SQLStatementKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// SELECT, VALUES, TABLE: reads (unless `flags` or `writes` say otherwise, e.g. FOR UPDATE).
    case select
    case insert
    case update
    case delete
    case merge
    /// CREATE of any object, CREATE TABLE AS, SELECT INTO, IMPORT FOREIGN SCHEMA.
    case create
    /// ALTER of any object, RENAME, COMMENT ON, SECURITY LABEL, REASSIGN OWNED, ALTER SYSTEM.
    case alter
    /// DROP of any object, DROP OWNED.
    case drop
    case truncate
    /// COPY … TO STDOUT or to a server file (see `serverFileAccess`): an export.
    case copyTo
    /// COPY … FROM STDIN or from a server file: an import, writes its table.
    case copyFrom
    /// COPY … TO/FROM PROGRAM: runs a shell command on the database server.
    case copyProgram
    /// BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, two-phase commit.
    case transaction
    /// SET, RESET, SET ROLE, SET SESSION AUTHORIZATION, SET TRANSACTION, SET CONSTRAINTS.
    case setConfiguration
    /// SHOW.
    case showConfiguration
    /// EXPLAIN without ANALYZE: plans the inner statement, does not run it.
    case explain
    /// EXPLAIN ANALYZE: runs the inner statement; writes when it does.
    case explainAnalyze
    case prepare
    /// EXECUTE of a prepared statement: what runs is whatever was prepared under that name.
    case execute
    case deallocate
    /// DO: an anonymous code block whose effect cannot be known from its text.
    case doBlock
    /// CALL of a procedure.
    case call
    /// GRANT, REVOKE (privileges and role membership), ALTER DEFAULT PRIVILEGES.
    case grant
    /// LOCK TABLE.
    case lock
    /// VACUUM, ANALYZE, CLUSTER, REINDEX, REFRESH MATERIALIZED VIEW, CHECKPOINT.
    case maintenance
    /// LISTEN, UNLISTEN, NOTIFY.
    case notification
    /// DECLARE, FETCH, MOVE, CLOSE.
    case cursor
    /// DISCARD, LOAD.
    case utility
    /// Not understood. Always treated as writing.
    case unknown
}

/// Facts about a statement that matter to a policy beyond its kind.
public enum SQLStatementFlag: String, Sendable, Hashable, CaseIterable, Codable {
    /// An UPDATE or DELETE (anywhere in the statement) without a WHERE clause: every row.
    case updateOrDeleteWithoutWhere
    /// COPY … TO PROGRAM: a shell command on the server receives the data.
    case copyToProgram
    /// COPY … FROM PROGRAM: a shell command on the server produces the data.
    case copyFromProgram
    /// Reads or writes files on the database server: COPY to or from a file, LOAD, or a function
    /// in `SQLFunctionCatalog.serverFileAccess`.
    case serverFileAccess
    /// Calls a function in `SQLFunctionCatalog.dangerous` (listed in `dangerousFunctions`).
    case dangerousFunction
    /// Changes server settings: SET, RESET, set_config(), ALTER SYSTEM, ALTER ROLE/DATABASE …
    /// SET, BEGIN with transaction modes, an UPDATE of pg_settings, DISCARD ALL.
    case setsConfiguration
    /// May change the identity the session acts as: SET ROLE, SET SESSION AUTHORIZATION, their
    /// RESET forms, RESET ALL, DISCARD ALL, set_config() of role or session_authorization (or of
    /// a setting named by an expression).
    case changesRole
    /// Runs SQL that is only a string here: a DO block, or functions such as dblink and
    /// query_to_xml (`SQLFunctionCatalog.runsSQLText`).
    case dynamicSQL
    /// A data-modifying statement inside another one: in a WITH clause, in COPY (…) TO, in the
    /// actions of a rule or the body of a SQL function being defined.
    case nestedDataModification
    /// SELECT … FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE: takes row locks, which needs
    /// UPDATE privilege and blocks writers.
    case locksRows
}

/// A relation as the statement names it. Identifiers are as PostgreSQL folds them: unquoted
/// names lower-cased, quoted names exactly as written.
public struct SQLRelation: Sendable, Hashable, CustomStringConvertible {
    /// The database part of a three-part name (`db.schema.table`), rarely given.
    public var catalog: String?
    /// Nil when the statement does not name a schema: `search_path` decides which one it is.
    public var schema: String?
    public var name: String

    public init(catalog: String? = nil, schema: String? = nil, name: String) {
        self.catalog = catalog
        self.schema = schema
        self.name = name
    }

    /// The name as written, parts joined with dots.
    public var qualifiedName: String {
        [catalog, schema, name].compactMap { $0 }.joined(separator: ".")
    }

    public var description: String { qualifiedName }
}

/// Which class of privilege a statement needs on a relation.
public enum SQLAccess: String, Sendable, Hashable, CaseIterable, Codable {
    /// Read: SELECT privilege, or only looking (EXPLAIN without ANALYZE, LOCK … ACCESS SHARE).
    case read
    /// Write: changes its rows (INSERT, UPDATE, DELETE, MERGE, COPY FROM, TRUNCATE), its
    /// definition or privileges (DDL, GRANT), its storage (maintenance), or locks it beyond
    /// ACCESS SHARE.
    case write
}

public struct SQLRelationAccess: Sendable, Hashable, CustomStringConvertible {
    public var relation: SQLRelation
    public var access: SQLAccess

    public init(_ relation: SQLRelation, _ access: SQLAccess) {
        self.relation = relation
        self.access = access
    }

    public var description: String { "\(access.rawValue) \(relation.qualifiedName)" }
}

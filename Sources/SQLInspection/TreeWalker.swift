/// Visits every node of a statement's parse tree and collects what a policy needs: relations with
/// their access, function calls, data-modifying statements wherever they are nested, and a few
/// facts that only show deep in the tree.
///
/// The walk is generic on purpose: it descends into every field of every node, known or not, so
/// a function call or a table inside a subquery, a WITH query, a VALUES list, a default
/// expression or a node type added by a later PostgreSQL is still found. Only the nodes that mean
/// something to a policy (RangeVar, FuncCall, SELECT/INSERT/UPDATE/DELETE/MERGE, WITH) get
/// special handling.
struct TreeWalker {
    /// Where in the tree the walk is.
    struct Scope {
        /// The access a relation named here needs.
        var access: SQLAccess
        /// Names of WITH queries visible here: an unqualified relation with one of these names is
        /// the WITH query, not a table.
        var withQueryNames: Set<String>
        var depth: Int

        static let top = Scope(access: .read, withQueryNames: [], depth: 0)

        /// Where a statement writes: a table named as a target is always a table, never a WITH
        /// query, and everything named inside it is written.
        var target: Scope {
            Scope(access: .write, withQueryNames: [], depth: depth)
        }

        var reading: Scope {
            Scope(access: .read, withQueryNames: withQueryNames, depth: depth)
        }
    }

    /// Something found at a position in the input, so results come out in input order however
    /// the JSON reader ordered the object keys.
    struct Found<Value: Hashable>: Hashable {
        var value: Value
        var location: Int
        var sequence: Int
    }

    /// Statements PostgreSQL's grammar allows inside a SELECT, INSERT, UPDATE, DELETE, MERGE or
    /// COPY: subqueries and the queries of WITH clauses. Anything else found nested there is not
    /// understood.
    static let queryStatementTypes: Set<String> = ["SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"]

    /// The walk refuses to go deeper than this; the JSON reader's own limit keeps real trees well
    /// below it, so reaching it means something is wrong and the statement is `unknown`.
    static let maximumDepth = 1_000

    private(set) var relations: [Found<SQLRelationAccess>] = []
    private(set) var functions: [Found<String>] = []
    /// Column names referenced anywhere (select list, WHERE, subqueries, function arguments…),
    /// and whether any reference is `*` or a whole row (`t`, `t.*`, `row_to_json(t)`).
    private(set) var columnNames: [Found<String>] = []
    private(set) var referencesStar = false
    /// Single-name references that may be whole rows: decided at the end, against `rowNames`.
    private var singleNameReferences: Set<String> = []
    /// Names a whole row can be referred to by: relations, aliases, WITH queries.
    private var rowNames: Set<String> = []
    /// An alias renames the columns of what it names.
    private var renamesColumns = false
    /// Data-modifying statements below the statement being classified, by kind.
    private(set) var nestedDataModifications: [SQLStatementKind] = []
    /// Statement node types found below the statement being classified.
    private(set) var nestedStatementTypes: Set<String> = []
    private(set) var updateOrDeleteWithoutWhere = false
    private(set) var locksRows = false
    /// SELECT … INTO: creates a table.
    private(set) var selectsInto = false
    /// set_config() of a setting that changes the session's identity, or of a setting named by an
    /// expression.
    private(set) var setsIdentityThroughFunction = false
    /// Something in the tree was not shaped as expected, or the walk went too deep.
    private(set) var notUnderstood = false
    private var sequence = 0

    // MARK: Entry points for the classifier

    /// Walks a statement node as the statement being classified (not as a nested one).
    mutating func visitStatement(type: String, fields: ParseFields, scope: Scope = .top) {
        visitNode(type: type, fields: fields, scope: scope, nested: false)
    }

    /// Walks the fields of a statement: the ones named in `targets` as written, the rest as read.
    mutating func visitFields(_ fields: ParseFields, targets: Set<String>, scope: Scope = .top) {
        for (key, value) in fields {
            visit(value, targets.contains(key) ? scope.target : scope.reading)
        }
    }

    mutating func visit(_ tree: ParseTree, _ scope: Scope) {
        guard scope.depth < Self.maximumDepth else {
            notUnderstood = true
            return
        }
        var scope = scope
        scope.depth += 1
        switch tree {
        case .array(let elements):
            for element in elements {
                visit(element, scope)
            }
        case .object(let object):
            if let alias = object.string("aliasname") {
                rowNames.insert(alias)
                // `FROM customers AS t(i, n, x)` renames columns: names in the text no longer
                // say which columns are read.
                if !(object["colnames"]?.elements.isEmpty ?? true) { renamesColumns = true }
            }
            if let node = tree.node {
                visitNode(type: node.type, fields: node.fields, scope: scope, nested: true)
            } else if object["relname"] != nil {
                // A field typed RangeVar (DeleteStmt.relation, IntoClause.rel…) has no wrapper.
                visitRangeVar(object, scope)
            } else {
                visitFields(object, scope)
            }
        case .string, .integer, .null:
            break
        }
    }

    /// Walks a call given without its node wrapper (CallStmt.funccall).
    mutating func visitFunctionCall(_ fields: ParseFields, _ scope: Scope) {
        visitFuncCall(fields, scope)
    }

    // MARK: Nodes

    private mutating func visitNode(type: String, fields: ParseFields, scope: Scope, nested: Bool) {
        if nested, type.hasSuffix("Stmt") {
            nestedStatementTypes.insert(type)
        }
        switch type {
        case "RangeVar":
            visitRangeVar(fields, scope)
        case "ColumnRef":
            visitColumnRef(fields)
        case "FuncCall":
            visitFuncCall(fields, scope)
        case "SelectStmt":
            visitSelect(fields, scope)
        case "InsertStmt":
            visitModification(.insert, fields, scope, nested: nested)
        case "UpdateStmt":
            visitModification(.update, fields, scope, nested: nested)
        case "DeleteStmt":
            visitModification(.delete, fields, scope, nested: nested)
        case "MergeStmt":
            visitModification(.merge, fields, scope, nested: nested)
        default:
            if nested, StatementClassifier.definitionKind(type) != nil {
                // A definition inside another (CREATE SCHEMA s CREATE TABLE t …): the relations it
                // changes are written, as when it stands alone.
                visitFields(fields, targets: StatementClassifier.changedRelationFields, scope: scope)
            } else {
                visitFields(fields, scope)
            }
        }
    }

    /// Every field, under the WITH queries the node defines (if any).
    private mutating func visitFields(_ fields: ParseFields, _ scope: Scope) {
        let inner = withQueries(fields, scope)
        for (key, value) in fields where key != "withClause" {
            visit(value, inner)
        }
    }

    private mutating func visitRangeVar(_ fields: ParseFields, _ scope: Scope) {
        guard let name = fields.string("relname") else {
            notUnderstood = true
            return
        }
        let schema = fields.string("schemaname")
        let catalog = fields.string("catalogname")
        if schema == nil, catalog == nil, scope.access == .read, scope.withQueryNames.contains(name) {
            return
        }
        let relation = SQLRelation(catalog: catalog, schema: schema, name: name)
        relations.append(found(SQLRelationAccess(relation, scope.access), at: fields.int("location")))
        rowNames.insert(name)
        if let alias = fields["alias"]?.fields {
            if let name = alias.string("aliasname") { rowNames.insert(name) }
            if !(alias["colnames"]?.elements.isEmpty ?? true) { renamesColumns = true }
        }
    }

    /// `a`, `t.a`, `s.t.a`, `*`, `t.*`: the last part names the column (or is a star).
    private mutating func visitColumnRef(_ fields: ParseFields) {
        let parts = fields["fields"]?.elements ?? []
        guard let last = parts.last else {
            notUnderstood = true
            return
        }
        if let name = last.stringNodeValue {
            columnNames.append(found(name, at: fields.int("location")))
            if parts.count == 1 { singleNameReferences.insert(name) }
        } else if last.node?.type == "A_Star" {
            referencesStar = true
        } else {
            notUnderstood = true
        }
    }

    /// True when a reference may stand for a whole row: a star, or a single name that is also a
    /// relation, alias or WITH query of the statement (`SELECT c FROM customers c`).
    var referencesWholeRows: Bool {
        referencesStar || renamesColumns || !singleNameReferences.isDisjoint(with: rowNames)
    }

    private mutating func visitFuncCall(_ fields: ParseFields, _ scope: Scope) {
        let parts = (fields["funcname"]?.elements ?? []).compactMap(\.stringNodeValue)
        guard !parts.isEmpty else {
            notUnderstood = true
            return
        }
        let name = parts.map { $0.lowercased() }.joined(separator: ".")
        functions.append(found(name, at: fields.int("location")))
        if parts.last?.lowercased() == "set_config" {
            // set_config(name, value, is_local): only a constant name can be checked.
            let settingName = fields["args"]?.elements.first.flatMap(Self.constantString)
            if settingName.map({ SQLFunctionCatalog.identitySettings.contains($0.lowercased()) }) ?? true {
                setsIdentityThroughFunction = true
            }
        }
        for (key, value) in fields where key != "funcname" {
            visit(value, scope.reading)
        }
    }

    /// SELECT, VALUES, TABLE, and set operations (whose branches, larg and rarg, are SelectStmt
    /// fields without a wrapper).
    private mutating func visitSelect(_ fields: ParseFields, _ scope: Scope) {
        if let into = fields["intoClause"] {
            selectsInto = true
            visit(into, scope.target)
        }
        if !(fields["lockingClause"]?.elements.isEmpty ?? true) {
            locksRows = true
        }
        let inner = withQueries(fields, scope)
        for (key, value) in fields where key != "withClause" && key != "intoClause" {
            if key == "larg" || key == "rarg", let branch = value.fields {
                var branchScope = inner
                branchScope.depth += 1
                visitSelect(branch, branchScope)
            } else {
                visit(value, inner)
            }
        }
    }

    /// INSERT, UPDATE, DELETE, MERGE: the target relation is written, everything else is read.
    private mutating func visitModification(
        _ kind: SQLStatementKind, _ fields: ParseFields, _ scope: Scope, nested: Bool
    ) {
        if nested {
            nestedDataModifications.append(kind)
        }
        if kind == .update || kind == .delete, fields["whereClause"] == nil {
            updateOrDeleteWithoutWhere = true
        }
        let inner = withQueries(fields, scope)
        if let target = fields["relation"] {
            visit(target, scope.target)
        } else {
            notUnderstood = true
        }
        for (key, value) in fields where key != "withClause" && key != "relation" {
            visit(value, inner.reading)
        }
    }

    // MARK: WITH

    /// Walks the WITH queries a node defines and returns the scope for the rest of the node, in
    /// which their names are visible. Visibility follows PostgreSQL: without RECURSIVE a WITH
    /// query sees only the ones before it (a later name means a table), with RECURSIVE it sees
    /// all of them.
    private mutating func withQueries(_ fields: ParseFields, _ scope: Scope) -> Scope {
        guard let withClause = fields["withClause"]?.fields else { return scope }
        let recursive = withClause.bool("recursive")
        let definitions = (withClause["ctes"]?.elements ?? []).map { element -> ParseFields? in
            guard let node = element.node, node.type == "CommonTableExpr" else { return nil }
            return node.fields
        }
        let names = definitions.compactMap { $0?.string("ctename") }
        guard names.count == definitions.count else {
            notUnderstood = true
            return scope
        }
        rowNames.formUnion(names)
        var visible = scope.withQueryNames
        if recursive {
            visible.formUnion(names)
        }
        for case let definition? in definitions {
            var queryScope = scope.reading
            queryScope.withQueryNames = visible
            queryScope.depth += 1
            if let query = definition["ctequery"], let node = query.node, Self.queryStatementTypes.contains(node.type) {
                visit(query, queryScope)
            } else {
                notUnderstood = true
            }
            // SEARCH and CYCLE clauses hold expressions too.
            for (key, value) in definition where key != "ctequery" {
                visit(value, queryScope)
            }
            if !recursive, let name = definition.string("ctename") {
                visible.insert(name)
            }
        }
        var inner = scope
        inner.withQueryNames.formUnion(names)
        return inner
    }

    // MARK: Helpers

    private mutating func found<Value>(_ value: Value, at location: Int?) -> Found<Value> {
        sequence += 1
        // Nodes without a location (they are rare) sort after those with one, in walk order.
        return Found(value: value, location: location ?? Int.max, sequence: sequence)
    }

    /// The text of a string constant (`'role'`), nil for anything else.
    static func constantString(_ tree: ParseTree) -> String? {
        guard let node = tree.node, node.type == "A_Const" else { return nil }
        return node.fields["sval"]?["sval"]?.string ?? (node.fields["sval"] != nil ? "" : nil)
    }

    /// Items in input order, each value once (at its first appearance).
    static func inInputOrder<Value>(_ items: [Found<Value>]) -> [Value] {
        var seen = Set<Value>()
        return items
            .sorted { ($0.location, $0.sequence) < ($1.location, $1.sequence) }
            .compactMap { seen.insert($0.value).inserted ? $0.value : nil }
    }
}

/// Turns one top-level parse node into an `SQLStatement`.
///
/// Every PostgreSQL 15 statement node type is named here with its kind; a type that is not (a
/// newer PostgreSQL's, or one that cannot stand at the top) is `unknown`, as is a statement whose
/// tree holds something the walk does not understand.
struct StatementClassifier {
    let text: String
    let utf8Range: Range<Int>

    func classify(_ statement: ParseTree) -> SQLStatement {
        guard let node = statement.node else { return unknown }
        return classify(type: node.type, fields: node.fields)
    }

    var unknown: SQLStatement {
        SQLStatement(text: text, utf8Range: utf8Range, kind: .unknown, writes: true)
    }

    // MARK: Kinds by node type

    static let createTypes: Set<String> = [
        "CreateStmt", "CreateTableAsStmt", "CreateSchemaStmt", "CreateFunctionStmt", "CreateTrigStmt",
        "CreateEventTrigStmt", "CreateExtensionStmt", "CreateRoleStmt", "CreatedbStmt", "CreateSeqStmt",
        "CreateDomainStmt", "CreateEnumStmt", "CreateRangeStmt", "CompositeTypeStmt", "DefineStmt",
        "ViewStmt", "IndexStmt", "RuleStmt", "CreatePolicyStmt", "CreatePublicationStmt",
        "CreateSubscriptionStmt", "CreateForeignServerStmt", "CreateFdwStmt", "CreateForeignTableStmt",
        "CreateUserMappingStmt", "CreateTableSpaceStmt", "CreateAmStmt", "CreateCastStmt",
        "CreateConversionStmt", "CreateOpClassStmt", "CreateOpFamilyStmt", "CreatePLangStmt",
        "CreateStatsStmt", "CreateTransformStmt", "ImportForeignSchemaStmt",
    ]

    static let alterTypes: Set<String> = [
        "AlterCollationStmt", "AlterDatabaseRefreshCollStmt", "AlterDatabaseSetStmt", "AlterDatabaseStmt",
        "AlterDomainStmt", "AlterEnumStmt", "AlterEventTrigStmt", "AlterExtensionContentsStmt",
        "AlterExtensionStmt", "AlterFdwStmt", "AlterForeignServerStmt", "AlterFunctionStmt",
        "AlterObjectDependsStmt", "AlterObjectSchemaStmt", "AlterOpFamilyStmt", "AlterOperatorStmt",
        "AlterOwnerStmt", "AlterPolicyStmt", "AlterPublicationStmt", "AlterRoleSetStmt", "AlterRoleStmt",
        "AlterSeqStmt", "AlterStatsStmt", "AlterSubscriptionStmt", "AlterSystemStmt",
        "AlterTSConfigurationStmt", "AlterTSDictionaryStmt", "AlterTableMoveAllStmt",
        "AlterTableSpaceOptionsStmt", "AlterTableStmt", "AlterTypeStmt", "AlterUserMappingStmt",
        "RenameStmt", "CommentStmt", "SecLabelStmt", "ReassignOwnedStmt",
    ]

    /// ALTER statements that change settings (for the server, a database or a role).
    static let settingAlterTypes: Set<String> = ["AlterSystemStmt", "AlterDatabaseSetStmt", "AlterRoleSetStmt"]

    static let dropTypes: Set<String> = [
        "DropStmt", "DropOwnedStmt", "DropRoleStmt", "DropSubscriptionStmt", "DropTableSpaceStmt",
        "DropUserMappingStmt", "DropdbStmt",
    ]

    static let grantTypes: Set<String> = ["GrantStmt", "GrantRoleStmt", "AlterDefaultPrivilegesStmt"]

    static let maintenanceTypes: Set<String> = [
        "VacuumStmt", "ClusterStmt", "ReindexStmt", "RefreshMatViewStmt", "CheckPointStmt",
    ]

    /// Fields of DDL, GRANT and maintenance statements that name the relation the statement
    /// changes (CREATE TABLE's `relation`, CREATE VIEW's `view`, CREATE TABLE AS's `into`, GRANT's
    /// `objects`, VACUUM's `rels`…). Other relations they name (a view's query, a foreign key's
    /// table, a parent table) are read.
    static let changedRelationFields: Set<String> = [
        "relation", "relations", "view", "sequence", "into", "typevar", "table", "objects", "rels",
    ]

    /// DROP object types whose objects are relations (listed as name parts, not RangeVars).
    static let relationDropTypes: Set<String> = [
        "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_INDEX", "OBJECT_SEQUENCE",
        "OBJECT_FOREIGN_TABLE",
    ]

    // MARK: Classification

    private func classify(type: String, fields: ParseFields) -> SQLStatement {
        var walker = TreeWalker()
        var result = Draft()
        /// For statements that hold SQL of their own (SELECT, DML, COPY), which nested statements
        /// the walk may meet; nil for those whose nested statements are definitions (DDL).
        var allowedNested: Set<String>? = TreeWalker.queryStatementTypes

        switch type {
        case "SelectStmt":
            walker.visitStatement(type: type, fields: fields)
            result.kind = walker.selectsInto ? .create : .select
            result.writes = walker.selectsInto || walker.locksRows
        case "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt":
            walker.visitStatement(type: type, fields: fields)
            result.kind = Self.modificationKinds[type] ?? .unknown
            result.writes = true
        case "CopyStmt":
            classifyCopy(fields, &walker, &result)
        case "ExplainStmt":
            return classifyExplain(fields)
        case "PrepareStmt":
            return classifyPrepare(fields)
        case "DeclareCursorStmt":
            return classifyDeclareCursor(fields)
        case "ExecuteStmt":
            // What runs is whatever was prepared under this name: the caller knows, not the text.
            walker.visitFields(fields, targets: [])
            result.kind = .execute
            result.writes = true
            result.objectName = fields.string("name")
        case "DeallocateStmt":
            result.kind = .deallocate
            result.objectName = fields.string("name")
        case "DoStmt":
            // The body is code in some procedural language; its dynamic SQL cannot be known.
            walker.visitFields(fields, targets: [])
            result.kind = .doBlock
            result.writes = true
            result.flags.insert(.dynamicSQL)
        case "CallStmt":
            if let call = fields["funccall"]?.fields {
                walker.visitFunctionCall(call, .top)
            } else {
                return unknown
            }
            result.kind = .call
            result.writes = true
        case "TransactionStmt":
            classifyTransaction(fields, &result)
        case "VariableSetStmt":
            classifySet(fields, &result)
        case "ConstraintsSetStmt":
            result.kind = .setConfiguration
            result.flags.insert(.setsConfiguration)
        case "VariableShowStmt":
            result.kind = .showConfiguration
        case "TruncateStmt":
            walker.visitFields(fields, targets: ["relations"])
            result.kind = .truncate
            result.writes = true
        case "LockStmt":
            // LOCK … IN ACCESS SHARE MODE needs SELECT; every stronger mode needs a write
            // privilege (PostgreSQL's LockTableAclCheck) and blocks writers.
            let readOnly = fields.int("mode") == 1
            walker.visitFields(fields, targets: readOnly ? [] : ["relations"])
            result.kind = .lock
        case "ListenStmt", "UnlistenStmt":
            result.kind = .notification
        case "NotifyStmt":
            // Delivers a message other sessions act on.
            result.kind = .notification
            result.writes = true
        case "FetchStmt", "ClosePortalStmt":
            result.kind = .cursor
            result.objectName = fields.string("portalname")
        case "DiscardStmt":
            result.kind = .utility
            if fields.string("target") == "DISCARD_ALL" {
                // DISCARD ALL includes RESET ALL and SET SESSION AUTHORIZATION DEFAULT.
                result.flags.formUnion([.setsConfiguration, .changesRole])
            }
        case "LoadStmt":
            // Loads a shared library file into the server process.
            result.kind = .utility
            result.writes = true
            result.flags.insert(.serverFileAccess)
        case "DropStmt":
            classifyDrop(fields, &walker, &result)
            allowedNested = nil
        default:
            guard let kind = Self.definitionKind(type) else { return unknown }
            allowedNested = nil
            if type == "CreateForeignTableStmt", let base = fields["base"]?.fields {
                // CREATE FOREIGN TABLE wraps a CREATE TABLE.
                walker.visitFields(base.adding(fields.removing(["base"])), targets: Self.changedRelationFields)
            } else {
                walker.visitFields(fields, targets: Self.changedRelationFields)
            }
            result.kind = kind
            result.writes = true
            if Self.settingAlterTypes.contains(type) {
                result.flags.insert(.setsConfiguration)
            }
        }

        if walker.notUnderstood {
            return unknown
        }
        if let allowedNested, !walker.nestedStatementTypes.isSubset(of: allowedNested) {
            return unknown
        }
        return finish(result, walker)
    }

    static let modificationKinds: [String: SQLStatementKind] = [
        "InsertStmt": .insert, "UpdateStmt": .update, "DeleteStmt": .delete, "MergeStmt": .merge,
    ]

    static func definitionKind(_ type: String) -> SQLStatementKind? {
        if createTypes.contains(type) { return .create }
        if alterTypes.contains(type) { return .alter }
        if dropTypes.contains(type) { return .drop }
        if grantTypes.contains(type) { return .grant }
        if maintenanceTypes.contains(type) { return .maintenance }
        return nil
    }

    /// COPY: which way, to or from what, and the relation or query.
    private func classifyCopy(_ fields: ParseFields, _ walker: inout TreeWalker, _ result: inout Draft) {
        let isFrom = fields.bool("is_from")
        let isProgram = fields.bool("is_program")
        let hasFile = fields.string("filename") != nil
        // COPY FROM writes its table; COPY TO reads it, or runs its query.
        walker.visitFields(fields, targets: isFrom ? ["relation"] : [])
        if isProgram {
            result.kind = .copyProgram
            result.flags.insert(isFrom ? .copyFromProgram : .copyToProgram)
            result.writes = true
        } else {
            result.kind = isFrom ? .copyFrom : .copyTo
            if hasFile {
                result.flags.insert(.serverFileAccess)
            }
            // COPY TO a server file writes that file.
            result.writes = isFrom || hasFile
        }
    }

    /// EXPLAIN plans its statement; with ANALYZE it runs it, so it is as risky as the statement.
    private func classifyExplain(_ fields: ParseFields) -> SQLStatement {
        guard let query = fields["query"] else { return unknown }
        let inner = classify(query)
        guard !inner.isUnknown else { return unknown }
        var analyze = false
        for option in fields["options"]?.elements ?? [] {
            guard let element = option.node, element.type == "DefElem" else { return unknown }
            if element.fields.string("defname")?.lowercased() == "analyze" {
                analyze = Self.booleanOption(element.fields["arg"])
            }
        }
        if analyze {
            var statement = inner
            statement.kind = .explainAnalyze
            statement.objectName = nil
            statement.innerStatement = inner
            return statement
        }
        // Nothing runs: the relations are only looked at, and no flag about running applies.
        var seen = Set<SQLRelationAccess>()
        let relations = inner.relations
            .map { SQLRelationAccess($0.relation, .read) }
            .filter { seen.insert($0).inserted }
        return SQLStatement(
            text: text, utf8Range: utf8Range, kind: .explain, writes: false,
            relations: relations, functions: inner.functions, innerStatement: inner
        )
    }

    /// An option's boolean value the way PostgreSQL reads it (defGetBoolean): no value is true;
    /// false, off, no and 0 are false. Anything else counts as true, which can only make EXPLAIN
    /// look riskier.
    static func booleanOption(_ value: ParseTree?) -> Bool {
        guard let value else { return true }
        guard let node = value.node else { return true }
        switch node.type {
        case "String":
            let text = node.fields.string("sval")?.lowercased() ?? ""
            return !["false", "off", "no", "0"].contains(text)
        case "Integer":
            return (node.fields.int("ival") ?? 0) != 0
        case "Boolean":
            return node.fields.bool("boolval")
        default:
            return true
        }
    }

    /// PREPARE: nothing runs yet, but EXECUTE will run exactly this, so it is reported as what it
    /// prepares.
    private func classifyPrepare(_ fields: ParseFields) -> SQLStatement {
        guard let query = fields["query"] else { return unknown }
        var walker = TreeWalker()
        // Parameter types are type names, but walk them like everything else.
        walker.visitFields(fields.removing(["query"]), targets: [])
        let inner = classify(query)
        guard !inner.isUnknown, !walker.notUnderstood else { return unknown }
        var statement = inner
        statement.kind = .prepare
        statement.objectName = fields.string("name")
        statement.innerStatement = inner
        return statement
    }

    /// DECLARE … CURSOR FOR <query>: the query runs as the cursor is fetched.
    private func classifyDeclareCursor(_ fields: ParseFields) -> SQLStatement {
        guard let query = fields["query"] else { return unknown }
        let inner = classify(query)
        guard !inner.isUnknown else { return unknown }
        var statement = inner
        statement.kind = .cursor
        statement.objectName = fields.string("portalname")
        statement.innerStatement = inner
        return statement
    }

    private func classifyTransaction(_ fields: ParseFields, _ result: inout Draft) {
        result.kind = .transaction
        switch fields.string("kind") {
        case "TRANS_STMT_COMMIT_PREPARED", "TRANS_STMT_ROLLBACK_PREPARED":
            // Finishes a prepared transaction, possibly another session's.
            result.writes = true
        default:
            break
        }
        // BEGIN ISOLATION LEVEL … / READ WRITE sets transaction settings.
        if !(fields["options"]?.elements.isEmpty ?? true) {
            result.flags.insert(.setsConfiguration)
        }
    }

    private func classifySet(_ fields: ParseFields, _ result: inout Draft) {
        result.kind = .setConfiguration
        result.flags.insert(.setsConfiguration)
        let name = fields.string("name")?.lowercased() ?? ""
        if fields.string("kind") == "VAR_RESET_ALL" || SQLFunctionCatalog.identitySettings.contains(name) {
            result.flags.insert(.changesRole)
        }
    }

    /// DROP: objects are name lists, not RangeVars; those of relation types are relations.
    private func classifyDrop(_ fields: ParseFields, _ walker: inout TreeWalker, _ result: inout Draft) {
        result.kind = .drop
        result.writes = true
        walker.visitFields(fields.removing(["objects"]), targets: [])
        guard Self.relationDropTypes.contains(fields.string("removeType") ?? "") else { return }
        for object in fields["objects"]?.elements ?? [] {
            let parts = (object.node?.fields["items"]?.elements ?? []).compactMap(\.stringNodeValue)
            switch parts.count {
            case 1: result.droppedRelations.append(SQLRelation(name: parts[0]))
            case 2: result.droppedRelations.append(SQLRelation(schema: parts[0], name: parts[1]))
            case 3: result.droppedRelations.append(SQLRelation(catalog: parts[0], schema: parts[1], name: parts[2]))
            default: result.notUnderstood = true
            }
        }
    }

    // MARK: Finishing

    /// What the switch decided before the walk's findings are folded in.
    private struct Draft {
        var kind: SQLStatementKind = .unknown
        var writes = false
        var flags: Set<SQLStatementFlag> = []
        var objectName: String?
        var droppedRelations: [SQLRelation] = []
        var notUnderstood = false
    }

    /// Kinds of data modification by how much they can destroy, for a statement that does several
    /// (a SELECT or INSERT whose WITH clause deletes is reported as the worst of them).
    static let modificationRank: [SQLStatementKind: Int] = [
        .select: 0, .insert: 1, .update: 2, .merge: 3, .delete: 4,
    ]

    private func finish(_ draft: Draft, _ walker: TreeWalker) -> SQLStatement {
        guard !draft.notUnderstood else { return unknown }
        var kind = draft.kind
        var writes = draft.writes
        var flags = draft.flags

        if !walker.nestedDataModifications.isEmpty {
            flags.insert(.nestedDataModification)
            writes = true
            if Self.modificationRank[kind] != nil {
                kind = ([kind] + walker.nestedDataModifications).max {
                    (Self.modificationRank[$0] ?? 0) < (Self.modificationRank[$1] ?? 0)
                } ?? kind
            }
        }
        if walker.updateOrDeleteWithoutWhere {
            flags.insert(.updateOrDeleteWithoutWhere)
        }
        if walker.locksRows {
            flags.insert(.locksRows)
        }

        let functions = TreeWalker.inInputOrder(walker.functions)
        var dangerous: [String] = []
        for function in functions {
            let name = String(function.split(separator: ".").last ?? "")
            if SQLFunctionCatalog.isDangerous(name) {
                dangerous.append(function)
                flags.insert(.dangerousFunction)
            }
            if SQLFunctionCatalog.serverFileAccess.contains(name) {
                flags.insert(.serverFileAccess)
            }
            if SQLFunctionCatalog.runsSQL(name) {
                flags.insert(.dynamicSQL)
            }
            if SQLFunctionCatalog.writes(name) {
                writes = true
            }
            if name == "set_config" {
                flags.insert(.setsConfiguration)
            }
        }
        if walker.setsIdentityThroughFunction {
            flags.insert(.changesRole)
        }

        var relations = TreeWalker.inInputOrder(walker.relations)
        for relation in draft.droppedRelations {
            let access = SQLRelationAccess(relation, .write)
            if !relations.contains(access) {
                relations.append(access)
            }
        }
        if relations.contains(where: { $0.access == .write }) {
            writes = true
        }
        // pg_settings is a view over the settings: updating it is SET, of any setting (role too).
        if relations.contains(where: {
            $0.access == .write && $0.relation.name == "pg_settings" && ($0.relation.schema ?? "pg_catalog") == "pg_catalog"
        }) {
            flags.insert(.setsConfiguration)
            flags.insert(.changesRole)
        }

        return SQLStatement(
            text: text, utf8Range: utf8Range, kind: kind, writes: writes || kind == .unknown,
            relations: relations, functions: functions, dangerousFunctions: dangerous,
            flags: flags, objectName: draft.objectName,
            columnReferences: TreeWalker.inInputOrder(walker.columnNames),
            referencesWholeRows: walker.referencesWholeRows
        )
    }
}

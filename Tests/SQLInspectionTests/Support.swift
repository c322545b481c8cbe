import SQLInspection
import Testing

/// The only statement of `sql`; records an issue (and returns an unknown placeholder) otherwise.
func only(_ sql: String, sourceLocation: SourceLocation = #_sourceLocation) -> SQLStatement {
    let inspection = SQLInspector.inspect(sql)
    #expect(inspection.failure == nil, "\(sql)", sourceLocation: sourceLocation)
    #expect(inspection.statements.count == 1, "\(sql)", sourceLocation: sourceLocation)
    return inspection.statements.first
        ?? SQLStatement(text: "", utf8Range: 0..<0, kind: .unknown, writes: true)
}

func table(_ name: String, schema: String? = nil) -> SQLRelation {
    SQLRelation(schema: schema, name: name)
}

func read(_ name: String, schema: String? = nil) -> SQLRelationAccess {
    SQLRelationAccess(table(name, schema: schema), .read)
}

func written(_ name: String, schema: String? = nil) -> SQLRelationAccess {
    SQLRelationAccess(table(name, schema: schema), .write)
}

// Drives PostgresNIO (the Swift client) against whatever PGHOST/PGPORT/PGDATABASE/PGUSER/PGPASSWORD
// name, and prints what it saw, one line per step. The integration tests run it directly against
// PostgreSQL and through the gateway and compare the output.
import Foundation
import Logging
import PostgresNIO

let environment = ProcessInfo.processInfo.environment
let configuration = PostgresConnection.Configuration(
    host: environment["PGHOST"] ?? "127.0.0.1",
    port: Int(environment["PGPORT"] ?? "5432") ?? 5432,
    username: environment["PGUSER"] ?? "postgres",
    password: environment["PGPASSWORD"],
    database: environment["PGDATABASE"],
    tls: .disable)
let logger = Logger(label: "probe")
let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)

func show(_ label: String, _ value: some CustomStringConvertible) {
    print("\(label): \(value)")
}

/// Runs a statement whose rows (if any) are not needed.
func run(_ query: PostgresQuery) async throws {
    let rows: PostgresRowSequence = try await connection.query(query, logger: logger)
    for try await _ in rows {}
}

// A plain query (PostgresNIO always uses the extended protocol, unnamed statements, binary results).
for try await count in try await connection.query("SELECT count(*)::int FROM customers", logger: logger).decode(Int.self) {
    show("customers", count)
}
// Bound parameters.
let id = 7
for try await (email, name) in try await connection.query("SELECT email, full_name FROM customers WHERE id = \(id)", logger: logger).decode((String, String).self) {
    show("customer 7", "\(email) \(name)")
}
// A transaction rolled back, then one committed.
try await run("CREATE TEMP TABLE probe (a int, b text)")
try await run("BEGIN")
try await run("INSERT INTO probe VALUES (\(1), \("rolled back"))")
try await run("ROLLBACK")
try await run("BEGIN")
try await run("INSERT INTO probe VALUES (\(2), \("kept"))")
try await run("COMMIT")
// COPY FROM STDIN.
try await connection.copyFrom(table: "probe", columns: ["a", "b"], logger: logger) { writer in
    var buffer = ByteBuffer()
    for row in 10..<15 {
        buffer.writeString("\(row)\tcopied \(row)\n")
    }
    try await writer.write(buffer)
}
for try await (count, sum) in try await connection.query("SELECT count(*)::int, sum(a)::int FROM probe", logger: logger).decode((Int, Int).self) {
    show("probe rows", "\(count) sum \(sum)")
}
// An error, then the connection still works.
do {
    try await run("SELECT 1/0")
    show("division", "no error")
} catch let error as PSQLError {
    show("division", error.serverInfo?[.sqlState] ?? "?")
}
for try await value in try await connection.query("SELECT 'still usable'::text", logger: logger).decode(String.self) {
    show("after error", value)
}
try await connection.closeGracefully()

import Metrics

/// The PostgreSQL gateway's share of the gateway metrics, created once rather than per statement.
enum PostgresMetrics {
    static let statements = Counter(label: "gatehouse_requests_total", dimensions: [("protocol", "postgres"), ("decision", "allow")])
    static let refusedStatements = Counter(label: "gatehouse_requests_total", dimensions: [("protocol", "postgres"), ("decision", "error")])
    static let deniedStatements = Counter(label: "gatehouse_requests_total", dimensions: [("protocol", "postgres"), ("decision", "deny")])
    static let heldStatements = Counter(label: "gatehouse_requests_total", dimensions: [("protocol", "postgres"), ("decision", "review")])
    static let limitedStatements = Counter(label: "gatehouse_row_limits_total", dimensions: [("protocol", "postgres")])
    static let allowedSessions = Counter(label: "gatehouse_sessions_total", dimensions: [("protocol", "postgres"), ("decision", "allow")])
    static let deniedSessions = Counter(label: "gatehouse_sessions_total", dimensions: [("protocol", "postgres"), ("decision", "deny")])
    static let statementDuration = Timer(label: "gatehouse_request_duration_seconds", dimensions: [("protocol", "postgres")])
}

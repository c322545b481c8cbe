import Foundation

/// One thing that happened at the gateway, as the audit trail keeps it. The store adds the sequence
/// number and the hash chain (`AuditEvent`); everything here is covered by the event's hash.
public struct AuditRecord: Sendable, Codable, Equatable {
    /// Milliseconds since 1970 (UTC). An integer, so the canonical encoding is exact.
    public var timeMillis: Int64
    /// The gateway node that recorded the event.
    public var node: String
    /// Groups the events of one client connection (or one HTTP token session).
    public var session: String
    /// The verified identity; nil when the request was refused before an identity was established.
    public var principal: Principal?
    /// Where the request came from, also when no identity could be established.
    public var client: ClientInfo
    /// The configured connection the request targets, if any.
    public var connection: String?
    public var operation: Operation
    public var decision: Decision
    public var outcome: Outcome?
    /// The (masked) response, cut at the configured cap.
    public var payload: String?
    /// True when `payload` was cut at the cap.
    public var payloadTruncated: Bool?
    /// The unmasked result, sealed for auditors (`AuditSeal`), when a mask rule lets the trail keep it.
    public var sealedPayload: String?

    public init(
        time: Date = Date(),
        node: String,
        session: String,
        principal: Principal?,
        client: ClientInfo,
        connection: String? = nil,
        operation: Operation,
        decision: Decision,
        outcome: Outcome? = nil,
        payload: String? = nil,
        payloadTruncated: Bool? = nil,
        sealedPayload: String? = nil
    ) {
        self.timeMillis = Int64((time.timeIntervalSince1970 * 1000).rounded(.down))
        self.node = node
        self.session = session
        self.principal = principal
        self.client = client
        self.connection = connection
        self.operation = operation
        self.decision = decision
        self.outcome = outcome
        self.payload = payload
        self.payloadTruncated = payloadTruncated
        self.sealedPayload = sealedPayload
    }

    public var time: Date { Date(timeIntervalSince1970: Double(timeMillis) / 1000) }

    /// What was asked for. `text` is the exact operation (SQL, `METHOD /path`, argv) with secrets
    /// already removed by the listener.
    public struct Operation: Sendable, Codable, Equatable {
        /// Protocol-qualified kind, e.g. `identity.verify`, `sql.query`, `http.request`.
        public var kind: String
        public var text: String
        /// Why the agent says it is doing this, when it says so.
        public var intent: String?

        public init(kind: String, text: String, intent: String? = nil) {
            self.kind = kind
            self.text = text
            self.intent = intent
        }
    }

    /// How it ended.
    public struct Outcome: Sendable, Codable, Equatable {
        public var status: String?
        public var rows: Int64?
        public var bytes: Int64?
        /// Error code (SQLSTATE, HTTP status, rejection reason code).
        public var errorCode: String?
        public var error: String?
        public var durationMicros: Int64?

        public init(
            status: String? = nil,
            rows: Int64? = nil,
            bytes: Int64? = nil,
            errorCode: String? = nil,
            error: String? = nil,
            durationMicros: Int64? = nil
        ) {
            self.status = status
            self.rows = rows
            self.bytes = bytes
            self.errorCode = errorCode
            self.error = error
            self.durationMicros = durationMicros
        }
    }
}

/// An audit record as the trail holds it: numbered and chained to the one before.
public struct AuditEvent: Sendable, Codable, Equatable {
    /// 1, 2, 3, ... with no gaps.
    public var seq: Int64
    /// `hash` of event `seq - 1`; `AuditEvent.genesisHash` for the first.
    public var prevHash: String
    /// Lower-case hex SHA-256 over `canonicalBytes`.
    public var hash: String
    public var record: AuditRecord

    public init(seq: Int64, prevHash: String, hash: String, record: AuditRecord) {
        self.seq = seq
        self.prevHash = prevHash
        self.hash = hash
        self.record = record
    }

    public static let genesisHash = String(repeating: "0", count: 64)
}

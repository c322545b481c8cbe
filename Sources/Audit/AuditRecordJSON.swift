import GatehouseCore

/// The canonical JSON of an `AuditRecord`, written by hand: the same bytes `JSONEncoder` with
/// sorted keys produces (a test holds them equal, field by field), at a fraction of the cost,
/// because every statement through the gateway pays for it. Keys are written in sorted order.
enum AuditRecordJSON {
    static func encode(_ record: AuditRecord) -> [UInt8] {
        var json = JSONWriter(capacity: 512 + (record.payload?.utf8.count ?? 0) + (record.sealedPayload?.utf8.count ?? 0))
        json.beginObject()
        json.key("client")
        write(record.client, into: &json)
        json.member("connection", record.connection)
        json.key("decision")
        json.beginObject()
        json.member("effect", record.decision.effect.rawValue)
        json.member("reason", record.decision.reason)
        json.member("rule", record.decision.rule)
        json.endObject()
        json.member("node", record.node)
        json.key("operation")
        json.beginObject()
        json.member("intent", record.operation.intent)
        json.member("kind", record.operation.kind)
        json.member("text", record.operation.text)
        json.endObject()
        if let outcome = record.outcome {
            json.key("outcome")
            json.beginObject()
            json.member("bytes", outcome.bytes)
            json.member("durationMicros", outcome.durationMicros)
            json.member("error", outcome.error)
            json.member("errorCode", outcome.errorCode)
            json.member("rows", outcome.rows)
            json.member("status", outcome.status)
            json.endObject()
        }
        json.member("payload", record.payload)
        json.member("payloadTruncated", record.payloadTruncated)
        if let principal = record.principal {
            json.key("principal")
            json.beginObject()
            json.key("actors")
            json.beginArray()
            for actor in principal.actors {
                json.beginObject()
                json.member("clientID", actor.clientID)
                json.member("subject", actor.subject)
                json.endObject()
            }
            json.endArray()
            json.member("authMethod", principal.authMethod.rawValue)
            json.key("client")
            write(principal.client, into: &json)
            json.member("email", principal.email)
            json.key("groups")
            json.beginArray()
            for group in principal.groups { json.string(group) }
            json.endArray()
            json.member("issuer", principal.issuer)
            json.member("subject", principal.subject)
            json.endObject()
        }
        json.member("sealedPayload", record.sealedPayload)
        json.member("session", record.session)
        json.member("timeMillis", record.timeMillis)
        json.endObject()
        return json.bytes
    }

    private static func write(_ client: ClientInfo, into json: inout JSONWriter) {
        json.beginObject()
        json.member("address", client.address)
        json.member("application", client.application)
        json.endObject()
    }
}

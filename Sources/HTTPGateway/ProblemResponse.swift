import Foundation
import GatehouseCore
import HTTPTypes
import Identity
import Hummingbird
import NIOCore

/// RFC 9457 problem documents, the one error shape of every HTTP endpoint. `detail` is written
/// for clients and never carries internals or secrets; `rule` names the policy rule that decided.
public enum ProblemResponse {
    public static func make(
        _ status: HTTPResponse.Status, _ detail: String, rule: String? = nil, connection: String? = nil
    ) throws -> Response {
        var document: [String: JSONValue] = [
            "type": .string("about:blank"),
            "title": .string(status.reasonPhrase),
            "status": .number(Double(status.code)),
            "detail": .string(detail),
        ]
        if let rule { document["rule"] = .string(rule) }
        if let connection { document["connection"] = .string(connection) }
        var response = try json(document, status: status)
        response.headers[.contentType] = "application/problem+json"
        return response
    }

    public static func json(_ value: [String: JSONValue], status: HTTPResponse.Status = .ok) throws -> Response {
        try json(encoding: value, status: status)
    }

    /// Any encodable value as the JSON body (dates as ISO 8601).
    public static func json(encoding value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: try bytes(encoding: value)))
    }

    public static func bytes(_ value: [String: JSONValue]) throws -> ByteBuffer {
        try bytes(encoding: value)
    }

    public static func bytes(encoding value: some Encodable) throws -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        var body = try encoder.encode(value)
        body.append(UInt8(ascii: "\n"))
        return ByteBuffer(bytes: body)
    }
}

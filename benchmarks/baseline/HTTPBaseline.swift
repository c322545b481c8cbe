import AsyncHTTPClient
import Foundation
import Hummingbird
import HTTPTypes
import NIOCore

/// A reverse proxy in the fewest lines the libraries allow: every request forwarded with its path,
/// query, method, headers (but Authorization) and body, one header added, the response streamed.
enum HTTPBaseline {
    static func run(port: Int, upstream: String, header: String, value: String) async throws {
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(
            redirectConfiguration: .disallow, connectionPool: .init(idleTimeout: .seconds(60)), decompression: .disabled))
        let base = upstream.hasSuffix("/") ? String(upstream.dropLast()) : upstream
        let router = Router()
        router.on("**", method: .get) { request, _ -> Response in
            try await forward(request, client: client, base: base, header: header, value: value)
        }
        router.on("**", method: .post) { request, _ -> Response in
            try await forward(request, client: client, base: base, header: header, value: value)
        }
        let application = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { _ in
                FileHandle.standardOutput.write(Data("ready\n".utf8))
            })
        try await application.runService()
        try await client.shutdown()
    }

    static func forward(_ request: Request, client: HTTPClient, base: String, header: String, value: String) async throws -> Response {
        var outgoing = HTTPClientRequest(url: base + (request.head.path ?? "/"))
        outgoing.method = .init(rawValue: request.method.rawValue)
        for field in request.headers where field.name != .authorization && field.name != .connection && field.name != .transferEncoding {
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        outgoing.headers.add(name: header, value: value)
        if let length = request.headers[.contentLength].flatMap(Int64.init), length > 0 {
            outgoing.body = .stream(request.body, length: .known(length))
        } else if request.headers[.transferEncoding] != nil {
            outgoing.body = .stream(request.body, length: .unknown)
        }
        let answer = try await client.execute(outgoing, timeout: .seconds(30))
        var headers = HTTPFields()
        for field in answer.headers where field.name.lowercased() != "connection" && field.name.lowercased() != "transfer-encoding" {
            if let name = HTTPField.Name(field.name) { headers.append(HTTPField(name: name, value: field.value)) }
        }
        let length = answer.headers.first(name: "content-length").flatMap(Int.init)
        return Response(
            status: .init(code: Int(answer.status.code), reasonPhrase: answer.status.reasonPhrase),
            headers: headers,
            body: ResponseBody(contentLength: length) { writer in
                for try await chunk in answer.body { try await writer.write(chunk) }
                try await writer.finish(nil)
            })
    }
}

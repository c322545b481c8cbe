import Foundation
import GatehouseCore
import Yams

/// Reads and validates a configuration file. Reports every problem with its line, never stops at
/// the first, and never echoes a value that might be a secret.
public enum ConfigLoader {
    /// Config files are small; anything larger is a mistake (or an attack on the parser).
    public static let maximumFileBytes = 1024 * 1024

    public static func load(
        path: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> GatehouseConfig {
        let data: Data
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            if let size = attributes[.size] as? Int, size > maximumFileBytes {
                throw ConfigError(problems: [ConfigProblem(file: path, line: 1, message: "configuration is larger than \(maximumFileBytes) bytes")])
            }
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError(problems: [ConfigProblem(file: path, line: 1, message: "cannot read configuration file")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(problems: [ConfigProblem(file: path, line: 1, message: "configuration is not UTF-8 text")])
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try parse(yaml: text, file: path, baseDirectory: directory, environment: environment)
    }

    public static func parse(
        yaml: String,
        file: String,
        baseDirectory: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> GatehouseConfig {
        let reader = ConfigReader(file: file, environment: environment, baseDirectory: baseDirectory)
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: yaml) else {
                throw ConfigError(problems: [ConfigProblem(file: file, line: 1, message: "configuration is empty")])
            }
            root = node
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError(problems: [syntaxProblem(error, file: file, yaml: yaml)])
        }
        let config = build(root, reader: reader)
        guard reader.problems.isEmpty, let config else {
            throw ConfigError(problems: reader.problems.sorted { $0.line < $1.line })
        }
        return config
    }

    private static func syntaxProblem(_ error: Error, file: String, yaml: String) -> ConfigProblem {
        if let yamlError = error as? YamlError {
            switch yamlError {
            case .duplicatedKeysInMapping(let duplicates, let context):
                let key = duplicates.sorted().first ?? ""
                return ConfigProblem(
                    file: file,
                    line: secondOccurrence(ofKey: key, in: yaml, from: context.mark.line) ?? context.mark.line,
                    message: "key '\(key)' appears more than once in the same mapping")
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                return ConfigProblem(file: file, line: mark.line, message: "YAML syntax error: \(problem)")
            default:
                break
            }
        }
        return ConfigProblem(file: file, line: 1, message: "YAML syntax error")
    }

    /// Yams reports where the mapping starts; people want the line of the repeated key.
    private static func secondOccurrence(ofKey key: String, in yaml: String, from line: Int) -> Int? {
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
        var seen = 0
        for index in max(0, line - 1)..<lines.count {
            let trimmed = lines[index].drop { $0 == " " || $0 == "-" }
            if trimmed.hasPrefix("\(key):") {
                seen += 1
                if seen == 2 { return index + 1 }
            }
        }
        return nil
    }

    private static func build(_ root: Node, reader: ConfigReader) -> GatehouseConfig? {
        guard let top = ConfigSection(root, path: "", reader: reader) else { return nil }
        let resolve = reader.resolvePath

        let dev = top.bool("dev") ?? false

        let gatewaySection = top.section("gateway")
        let node = gatewaySection?.string("node") ?? ProcessInfo.processInfo.hostName
        let stateDirectory = resolve(gatewaySection?.string("state_dir") ?? "var")
        gatewaySection?.finish()
        func statePath(_ value: String?, default name: String) -> String {
            value.map(resolve) ?? URL(fileURLWithPath: stateDirectory).appendingPathComponent(name).path
        }

        let adminSection = top.section("admin")
        let adminListen = adminSection?.listenAddress("listen", default: "127.0.0.1:9090") ?? ListenAddress(host: "127.0.0.1", port: 9090)
        let adminTLS = adminSection?.section("tls")
        let admin = GatehouseConfig.Admin(
            listen: adminListen,
            tlsCertificate: adminTLS?.string("certificate", required: true).map(reader.resolvePath),
            tlsKey: adminTLS?.string("key", required: true).map(reader.resolvePath))
        adminTLS?.finish()
        adminSection?.finish()
        if !adminListen.isLoopback, adminTLS == nil {
            // Approvers' tokens travel in every reviews API call.
            reader.report(line: adminSection?.lineOf("listen") ?? 1,
                          "admin.listen \(adminListen) is reachable from other machines and needs admin.tls (certificate and key)")
        }
        if dev, adminTLS != nil {
            // The gateway fetches the development issuer's keys from this listener, over plain HTTP.
            reader.report(line: adminSection?.lineOf("tls") ?? top.lineOf("dev"),
                          "dev: true keeps the admin listener on plain HTTP on loopback; remove admin.tls or dev")
        }
        if dev && !adminListen.isLoopback {
            reader.report(line: adminSection?.lineOf("listen") ?? top.lineOf("dev"),
                          "dev: true is allowed only when every listener is on loopback; admin.listen is \(adminListen)")
        }
        if dev && adminListen.port == 0 {
            // The development issuer's URL is derived from this address, so it must be known upfront.
            reader.report(line: adminSection?.lineOf("listen") ?? top.lineOf("dev"),
                          "dev: true needs a fixed admin.listen port (the development issuer's URL contains it)")
        }

        let postgres = buildPostgres(top.section("postgres"), reader: reader)
        if dev, let listen = postgres.listen, !listen.isLoopback {
            reader.report(line: top.section("postgres")?.lineOf("listen") ?? top.lineOf("dev"),
                          "dev: true is allowed only when every listener is on loopback; postgres.listen is \(listen)")
        }
        let httpSection = top.section("http")
        let httpTLS = httpSection?.section("tls")
        let http = GatehouseConfig.HTTP(
            listen: httpSection?.listenAddress("listen"),
            tlsCertificate: httpTLS?.string("certificate", required: true).map(reader.resolvePath),
            tlsKey: httpTLS?.string("key", required: true).map(reader.resolvePath),
            maxRecordedBodyBytes: httpSection?.int("max_recorded_body_bytes", in: 0...(4 * 1024 * 1024)) ?? 16 * 1024,
            idleTimeoutSeconds: httpSection?.int("idle_timeout_seconds", in: 1...3600) ?? 60)
        httpTLS?.finish()
        httpSection?.finish()
        if let listen = http.listen, !listen.isLoopback, httpTLS == nil {
            // Bearer tokens travel in every request's headers.
            reader.report(line: httpSection?.lineOf("listen") ?? 1,
                          "http.listen \(listen) is reachable from other machines and needs http.tls (certificate and key)")
        }
        if dev, let listen = http.listen, !listen.isLoopback {
            reader.report(line: httpSection?.lineOf("listen") ?? top.lineOf("dev"),
                          "dev: true is allowed only when every listener is on loopback; http.listen is \(listen)")
        }
        let identity = buildIdentity(top.section("identity"), reader: reader, statePath: statePath)
        let audit = buildAudit(top.section("audit"), statePath: statePath)
        let connections = buildConnections(top, reader: reader)
        let policy = buildPolicy(top.section("policy"), connections: connections, reader: reader, statePath: statePath)
        let reviews = buildReviews(top.section("reviews"), reader: reader, statePath: statePath)
        let mcpSection = top.section("mcp")
        let mcp = GatehouseConfig.MCP(
            enabled: mcpSection?.bool("enabled") ?? true,
            publicURL: mcpSection?.url("public_url")?.absoluteString.trimmingCharacters(in: CharacterSet(charactersIn: "/")),
            callTimeoutSeconds: mcpSection?.int("call_timeout_seconds", in: 1...86_400) ?? reviews.timeoutSeconds + 60)
        mcpSection?.finish()
        if mcp.enabled, mcp.publicURL == nil, let listen = http.listen, listen.isUnspecified {
            reader.report(line: mcpSection?.line ?? httpSection?.lineOf("listen") ?? 1,
                          "the MCP server needs mcp.public_url (how clients reach \(listen)), or mcp.enabled: false")
        }
        if reviews.webhook != nil, reviews.publicURL == nil, admin.listen.isUnspecified {
            reader.report(line: top.section("reviews")?.lineOf("webhook") ?? 1,
                          "review links need reviews.public_url (how approvers reach \(admin.listen)); the admin listener's own address names no host")
        }
        if http.listen == nil, let command = connections.first(where: { $0.kind == .command }) {
            reader.report(line: command.line, "command connection \(command.name) is served on the HTTP listener (POST /c/\(command.name)/exec); set http.listen")
        }
        // A review nobody may decide is a refusal that takes five minutes: say so now.
        if reviews.approvers.isEmpty {
            if let rule = policy.policy.rules.first(where: { $0.effect == .review && $0.approvers.isEmpty }) {
                reader.report(line: top.section("reviews")?.line ?? top.lineOf("policy"),
                              "review rule '\(rule.name)' has no approvers: set reviews.approvers (groups) or the rule's approvers")
            }
            if policy.policy.unknownForAgents == .review || policy.policy.unknownForPeople == .review {
                reader.report(line: top.section("reviews")?.line ?? top.lineOf("policy"),
                              "unclassified statements go to review, and reviews.approvers names no group to decide them")
            }
        }
        top.finish()

        return GatehouseConfig(
            sourcePath: reader.file,
            dev: dev,
            gateway: .init(node: node, stateDirectory: stateDirectory),
            admin: admin,
            identity: identity,
            audit: audit,
            postgres: postgres,
            http: http,
            connections: connections,
            reviews: reviews,
            mcp: mcp,
            policy: policy.policy,
            maskKey: policy.maskKey,
            maskKeyPath: policy.maskKeyPath
        )
    }

    private static func buildIdentity(
        _ section: ConfigSection?,
        reader: ConfigReader,
        statePath: (String?, String) -> String
    ) -> GatehouseConfig.Identity {
        var issuers: [GatehouseConfig.Issuer] = []
        var seenNames: [String: Int] = [:]
        var seenIssuers: [String: Int] = [:]
        for (path, node) in section?.sequence("issuers") ?? [] {
            guard let entry = ConfigSection(node, path: path, reader: reader) else { continue }
            let name = entry.string("name", required: true)
            let issuerURL = entry.url("issuer", required: true)
            let discovery = entry.url("discovery_url")
            // Keys fetched over plain http can be swapped by anyone on the path, so only loopback
            // (the tests' and the demo's providers) may use it.
            for (key, url) in [("issuer", issuerURL), ("discovery_url", discovery)] {
                if let url, url.scheme?.lowercased() == "http", !Loopback.contains(host: url.host ?? "") {
                    reader.report(line: entry.lineOf(key), "\(path).\(key) must use https (plain http is allowed only on loopback)")
                }
            }
            let audiences = entry.strings("audiences") ?? []
            if audiences.isEmpty {
                reader.report(line: entry.line, "\(path) needs 'audiences': the aud values a token must carry for this gateway")
            }
            let issuer = GatehouseConfig.Issuer(
                name: name ?? "",
                issuer: issuerURL?.absoluteString ?? "",
                discoveryURL: discovery?.absoluteString,
                audiences: audiences,
                groupsClaim: entry.string("groups_claim") ?? "groups",
                emailClaim: entry.string("email_claim") ?? "email",
                clientIDClaims: entry.strings("client_id_claims") ?? ["azp", "client_id"],
                agents: entry.stringMap("agents") ?? [:]
            )
            entry.finish()
            if let name {
                if let first = seenNames[name] {
                    reader.report(line: entry.lineOf("name"), "issuer name '\(name)' is already used on line \(first)")
                } else if name == GatehouseConfig.Identity.devIssuerName {
                    reader.report(line: entry.lineOf("name"), "issuer name '\(name)' is reserved for the development issuer")
                } else {
                    seenNames[name] = entry.lineOf("name")
                }
            }
            if let issuerURL {
                if let first = seenIssuers[issuerURL.absoluteString] {
                    reader.report(line: entry.lineOf("issuer"), "issuer \(issuerURL.absoluteString) is already configured on line \(first)")
                } else {
                    seenIssuers[issuerURL.absoluteString] = entry.lineOf("issuer")
                }
            }
            issuers.append(issuer)
        }
        let identity = GatehouseConfig.Identity(
            clockSkewSeconds: section?.int("clock_skew_seconds", in: 0...300) ?? 60,
            jwksRefreshSeconds: section?.int("jwks_refresh_seconds", in: 10...86_400) ?? 300,
            jwksMinRefetchSeconds: section?.int("jwks_min_refetch_seconds", in: 1...3600) ?? 30,
            tokenCacheSeconds: section?.int("token_cache_seconds", in: 0...300) ?? 60,
            issuers: issuers,
            apiKeysPath: statePath(section?.string("api_keys"), "api-keys.sqlite"),
            devKeyPath: statePath(section?.string("dev_key"), "dev-issuer.key")
        )
        section?.finish()
        return identity
    }

    private static func buildReviews(
        _ section: ConfigSection?, reader: ConfigReader, statePath: (String?, String) -> String
    ) -> GatehouseConfig.Reviews {
        var webhook: GatehouseConfig.Reviews.Webhook?
        if let hook = section?.section("webhook") {
            if let text = hook.string("url", required: true) {
                if SecretReference(reference: text) != nil, let secret = hook.secret("url") {
                    webhook = .init(target: .secret(secret), includeOperation: true)
                } else if let url = hook.url("url") {
                    webhook = .init(target: .url(url), includeOperation: true)
                }
            }
            if let include = hook.bool("include_operation") { webhook?.includeOperation = include }
            hook.finish()
        }
        let publicURL = section?.url("public_url")?.absoluteString
        let reviews = GatehouseConfig.Reviews(
            approvers: section?.strings("approvers") ?? [],
            timeoutSeconds: section?.int("timeout_seconds", in: 1...86_400) ?? 300,
            path: statePath(section?.string("path"), "reviews.sqlite"),
            publicURL: publicURL.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 },
            webhook: webhook,
            maxGrantMinutes: section?.int("max_grant_minutes", in: 1...10_080) ?? 480,
            accessApprovals: section?.int("access_approvals", in: 1...5) ?? 1,
            retentionDays: section?.int("retention_days", in: 1...3650) ?? 90)
        section?.finish()
        return reviews
    }

    private static func buildAudit(_ section: ConfigSection?, statePath: (String?, String) -> String) -> GatehouseConfig.Audit {
        let audit = GatehouseConfig.Audit(
            path: statePath(section?.string("path"), "audit.sqlite"),
            signingKeyPath: statePath(section?.string("signing_key"), "audit-signing.key"),
            durability: section?.choice("durability", as: GatehouseConfig.Audit.Durability.self) ?? .normal,
            checkpointEvery: section?.int("checkpoint_every", in: 1...1_000_000) ?? 1000,
            maxBatch: section?.int("max_batch", in: 1...10_000) ?? 512,
            maxPayloadBytes: section?.int("max_payload_bytes", in: 0...(4 * 1024 * 1024)) ?? 64 * 1024
        )
        section?.finish()
        return audit
    }

    private static func buildPostgres(_ section: ConfigSection?, reader: ConfigReader) -> GatehouseConfig.Postgres {
        let tls = section?.section("tls")
        let certificate = tls?.string("certificate").map(reader.resolvePath)
        let key = tls?.string("key").map(reader.resolvePath)
        if (certificate == nil) != (key == nil) {
            reader.report(line: tls?.line ?? 1, "postgres.tls needs both certificate and key")
        }
        let requireTLS = tls?.bool("require") ?? false
        if requireTLS && certificate == nil {
            reader.report(line: tls?.lineOf("require") ?? 1, "postgres.tls.require needs a certificate and key")
        }
        tls?.finish()
        let postgres = GatehouseConfig.Postgres(
            listen: section?.listenAddress("listen"),
            tlsCertificate: certificate,
            tlsKey: key,
            requireTLS: requireTLS,
            maxFrameBytes: section?.int("max_frame_bytes", in: 1024...(1 << 30)) ?? 64 << 20,
            maxRecordedRows: section?.int("max_recorded_rows", in: 0...100_000) ?? 100,
            maxConnections: section?.int("max_connections", in: 1...100_000) ?? 1000)
        section?.finish()
        return postgres
    }

    private static func buildConnections(_ top: ConfigSection, reader: ConfigReader) -> [GatehouseConfig.Connection] {
        var connections: [GatehouseConfig.Connection] = []
        var seen: [String: Int] = [:]
        var seenHosts: [String: Int] = [:]
        for (path, node) in top.sequence("connections") ?? [] {
            guard let entry = ConfigSection(node, path: path, reader: reader) else { continue }
            let name = entry.string("name", required: true)
            if let name, !name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) {
                reader.report(line: entry.lineOf("name"), "\(path).name may contain only letters, digits, '-' and '_'")
            }
            let kind = entry.choice("type", as: GatehouseConfig.Connection.Kind.self, required: true)
            let schemes: Set<String> = switch kind {
            case .postgres: ["postgres", "postgresql"]
            case .http: ["http", "https"]
            case .command: []
            case nil: ["postgres", "postgresql", "http", "https"]
            }
            var command: GatehouseConfig.Connection.CommandOptions?
            if kind == .command {
                command = buildCommandOptions(entry, path: path, reader: reader)
            } else if entry.has("command") {
                reader.report(line: entry.lineOf("command"), "\(path).command is only for command connections")
                _ = entry.node("command")
            }
            let upstream = kind == .command
                ? command.map { URL(fileURLWithPath: $0.executable) }
                : entry.url("upstream", required: true, schemes: schemes)
            if let upstream, upstream.password != nil {
                reader.report(line: entry.lineOf("upstream"), "\(path).upstream must not contain a password; use 'password: env:NAME'")
            }
            let username = entry.string("username")
            let password = entry.secret("password")
            let description = entry.string("description")
            let allowSection = entry.section("allow")
            let allow = GatehouseConfig.Connection.Access(
                groups: allowSection?.strings("groups") ?? [],
                subjects: allowSection?.strings("subjects") ?? [],
                agents: allowSection?.strings("agents") ?? [])
            allowSection?.finish()
            // An https upstream is verified unless the config says otherwise.
            let defaultTLS: GatehouseConfig.Connection.UpstreamTLS = upstream?.scheme?.lowercased() == "https" ? .verifyFull : .disable
            let upstreamTLS = entry.choice("tls", as: GatehouseConfig.Connection.UpstreamTLS.self) ?? defaultTLS
            let caFile = entry.string("ca_file").map(reader.resolvePath)
            if kind == .postgres && username == nil {
                reader.report(line: entry.line, "\(path) needs 'username': the role the gateway logs in as")
            }
            var http: GatehouseConfig.Connection.HTTPOptions?
            if kind == .http {
                http = buildHTTPOptions(entry, path: path, reader: reader)
                for key in ["username", "password"] where entry.has(key) {
                    reader.report(line: entry.lineOf(key), "\(path).\(key) is for postgres connections; an http connection injects 'credential'")
                }
            } else if kind == .postgres || kind == .command {
                for key in ["credential", "hosts", "timeouts", "requests"] where entry.has(key) {
                    reader.report(line: entry.lineOf(key), "\(path).\(key) is only for http connections")
                    _ = entry.node(key)
                }
            }
            if kind == .command {
                for key in ["upstream", "username", "password", "tls", "ca_file"] where entry.has(key) {
                    reader.report(line: entry.lineOf(key), "\(path).\(key) is not for command connections; see 'command'")
                    _ = entry.node(key)
                }
            }
            entry.finish()
            for host in http?.hosts ?? [] {
                if let first = seenHosts[host] {
                    reader.report(line: entry.lineOf("hosts"), "host '\(host)' already routes to the connection on line \(first)")
                } else {
                    seenHosts[host] = entry.lineOf("hosts")
                }
            }
            if let name {
                if let first = seen[name] {
                    reader.report(line: entry.lineOf("name"), "connection name '\(name)' is already used on line \(first)")
                } else {
                    seen[name] = entry.lineOf("name")
                }
            }
            if let name, let kind, let upstream {
                connections.append(.init(name: name, kind: kind, upstream: upstream, username: username,
                                         password: password, description: description, allow: allow,
                                         upstreamTLS: upstreamTLS, caFile: caFile, http: http, command: command, line: entry.line))
            }
        }
        return connections
    }

    private static func buildCommandOptions(
        _ entry: ConfigSection, path: String, reader: ConfigReader
    ) -> GatehouseConfig.Connection.CommandOptions? {
        guard let section = entry.section("command", required: true) else { return nil }
        defer { section.finish() }
        guard let executable = section.string("executable", required: true) else { return nil }
        if !executable.hasPrefix("/") {
            reader.report(line: section.lineOf("executable"), "\(path).command.executable must be an absolute path (the gateway does not search PATH)")
        }
        func secrets(_ key: String) -> [String: SecretReference] {
            guard let map = section.section(key) else { return [:] }
            defer { map.finish() }
            var result: [String: SecretReference] = [:]
            for name in map.order {
                if !Self.isEnvironmentName(name) {
                    reader.report(line: map.lineOf(name), "\(path).command.\(key).\(name) is not an environment variable name")
                }
                if let reference = map.secret(name, required: true) { result[name] = reference }
            }
            return result
        }
        let environment = section.stringMap("environment") ?? [:]
        for name in environment.keys where !Self.isEnvironmentName(name) {
            reader.report(line: section.lineOf("environment"), "\(path).command.environment.\(name) is not an environment variable name")
        }
        let options = GatehouseConfig.Connection.CommandOptions(
            executable: executable,
            arguments: section.strings("args") ?? [],
            environment: environment,
            secrets: secrets("secrets"),
            secretFiles: secrets("secret_files"),
            workingDirectory: section.string("working_directory").map(reader.resolvePath),
            timeoutSeconds: section.int("timeout_seconds", in: 1...3600) ?? 30,
            maxOutputBytes: section.int("max_output_bytes", in: 1024...(64 << 20)) ?? 1 << 20,
            maxInputBytes: section.int("max_input_bytes", in: 0...(64 << 20)) ?? 1 << 20,
            forbiddenOptions: section.strings("forbidden_options") ?? [],
            maxConcurrent: section.int("max_concurrent", in: 1...1000) ?? 8)
        for option in options.forbiddenOptions where !option.hasPrefix("-") || option == "-" || option == "--" {
            reader.report(line: section.lineOf("forbidden_options"), "\(path).command.forbidden_options: '\(option)' is not an option (like --server or -s)")
        }
        let names = [Set(options.environment.keys), Set(options.secrets.keys), Set(options.secretFiles.keys)]
        let overlap = names[0].intersection(names[1]).union(names[0].intersection(names[2])).union(names[1].intersection(names[2]))
        for name in overlap.sorted() {
            reader.report(line: section.line, "\(path).command sets \(name) twice")
        }
        return options
    }

    static func isEnvironmentName(_ name: String) -> Bool {
        let scalars = Array(name.unicodeScalars)
        func letter(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) || ("A"..."Z").contains(c) || c == "_" }
        guard let first = scalars.first, letter(first) else { return false }
        return scalars.allSatisfy { letter($0) || ("0"..."9").contains($0) }
    }

    private static func buildHTTPOptions(_ entry: ConfigSection, path: String, reader: ConfigReader) -> GatehouseConfig.Connection.HTTPOptions {
        var credential: GatehouseConfig.Connection.Credential?
        if let section = entry.section("credential") {
            let forms = ["header", "bearer", "basic", "query"].filter(section.has)
            if forms.count != 1 {
                reader.report(line: section.line, "\(path).credential needs exactly one of: header (with value), bearer, basic (username, password), query (with value)")
            }
            switch forms.first {
            case "header":
                let name = section.string("header")
                if let name, !name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) {
                    reader.report(line: section.lineOf("header"), "\(path).credential.header '\(name)' is not a valid header name")
                }
                if let name, let value = section.secret("value", required: true) {
                    credential = .header(name: name, value: value)
                }
            case "bearer":
                credential = section.secret("bearer").map { .bearer($0) }
            case "basic":
                if let basic = section.section("basic") {
                    if let username = basic.string("username", required: true), let password = basic.secret("password", required: true) {
                        credential = .basic(username: username, password: password)
                    }
                    basic.finish()
                }
            case "query":
                if let name = section.string("query"), let value = section.secret("value", required: true) {
                    credential = .query(name: name, value: value)
                }
            default:
                break
            }
            for form in forms.dropFirst() { _ = section.node(form) }
            if forms.first == "bearer" || forms.first == "basic" { _ = section.node("value") }
            section.finish()
        }
        let timeouts = entry.section("timeouts")
        let connect = timeouts?.int("connect_seconds", in: 1...300) ?? 5
        let read = timeouts?.int("read_seconds", in: 1...86_400) ?? 60
        let total = timeouts?.int("total_seconds", in: 1...86_400) ?? 300
        timeouts?.finish()

        var rules: [GatehouseConfig.Connection.RequestRule] = []
        var seen: Set<String> = []
        for (rulePath, node) in entry.sequence("requests") ?? [] {
            guard let rule = ConfigSection(node, path: rulePath, reader: reader) else { continue }
            let name = rule.string("name", required: true) ?? ""
            if !name.isEmpty, !seen.insert(name).inserted {
                reader.report(line: rule.lineOf("name"), "request rule name '\(name)' is used twice in \(path)")
            }
            let (methods, paths) = rule.httpMatchers()
            rules.append(.init(
                name: name,
                effect: rule.choice("effect", as: GatehouseConfig.Connection.RequestRule.Effect.self) ?? .allow,
                methods: methods,
                paths: paths,
                groups: rule.strings("groups") ?? [],
                subjects: rule.strings("subjects") ?? [],
                agents: rule.strings("agents") ?? [],
                line: rule.line))
            rule.finish()
        }
        let hosts = (entry.strings("hosts") ?? []).map { $0.lowercased() }
        for host in hosts where host.contains(":") || host.contains("/") || host.isEmpty {
            reader.report(line: entry.lineOf("hosts"), "\(path).hosts: '\(host)' must be a bare host name (no port, scheme or path)")
        }
        return .init(
            credential: credential,
            hosts: hosts,
            connectTimeoutSeconds: connect,
            readTimeoutSeconds: read,
            totalTimeoutSeconds: max(total, 1),
            requests: rules)
    }
}

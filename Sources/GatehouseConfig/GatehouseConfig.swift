import Foundation
import GatehouseCore
import Policy

/// The whole gateway configuration, validated. Produced only by `ConfigLoader`, so every value here
/// has been checked and every relative path resolved against the config file's directory.
public struct GatehouseConfig: Sendable {
    /// The file it was loaded from, for messages.
    public var sourcePath: String
    /// Enables the built-in development issuer. Refused unless every listener is on loopback.
    public var dev: Bool
    public var gateway: Gateway
    public var admin: Admin
    public var identity: Identity
    public var audit: Audit
    public var postgres: Postgres
    public var http: HTTP
    public var connections: [Connection]
    public var reviews: Reviews
    public var mcp: MCP
    /// Every rule of `policy` and of the connections' `requests`, validated.
    public var policy: Policy
    /// Key of the masks' keyed hash; nil: a random key kept at `maskKeyPath`, made on first use.
    public var maskKey: SecretReference?
    public var maskKeyPath: String

    /// The HTTP gateway's listener. Absent `listen` means the gateway does not proxy HTTP.
    public struct HTTP: Sendable {
        public var listen: ListenAddress?
        /// PEM certificate chain and private key; required unless the listener is on loopback.
        public var tlsCertificate: String?
        public var tlsKey: String?
        /// Request and response body bytes kept in the audit trail per exchange.
        public var maxRecordedBodyBytes: Int

        public var scheme: String { tlsCertificate == nil ? "http" : "https" }
        /// A client connection with no traffic for this long is closed.
        public var idleTimeoutSeconds: Int
    }

    /// The PostgreSQL listener. Absent `listen` means the gateway does not speak PostgreSQL.
    public struct Postgres: Sendable {
        public var listen: ListenAddress?
        /// PEM certificate chain and private key for TLS to clients; without them SSLRequest is refused.
        public var tlsCertificate: String?
        public var tlsKey: String?
        /// Refuse any client that did not negotiate TLS (tokens travel as passwords).
        public var requireTLS: Bool
        /// Largest frame accepted from a client; larger ones end the session before memory is taken.
        public var maxFrameBytes: Int
        /// Result rows kept in the audit trail per statement.
        public var maxRecordedRows: Int
        /// Client connections served at once; more are refused (SQLSTATE 53300) before login.
        public var maxConnections: Int
    }

    /// The MCP server on the HTTP listener (`/mcp`).
    public struct MCP: Sendable {
        public var enabled: Bool
        /// How MCP clients reach the HTTP listener (the resource URL is `<public_url>/mcp`).
        public var publicURL: String?
        /// A tool call, a held one included, gives up after this long.
        public var callTimeoutSeconds: Int
    }

    /// Just-in-time approval: who approves, how long a held operation waits, where reviews are
    /// kept and announced.
    public struct Reviews: Sendable {
        /// Groups whose members may approve (a review rule may narrow it with `approvers`).
        public var approvers: [String]
        public var timeoutSeconds: Int
        /// SQLite file of reviews and grants.
        public var path: String
        /// Base of the approve and deny links in notifications; the admin listener's URL if unset.
        public var publicURL: String?
        public var webhook: Webhook?
        public var maxGrantMinutes: Int
        public var accessApprovals: Int
        /// Closed reviews are forgotten from the review store after this many days.
        public var retentionDays: Int

        public struct Webhook: Sendable {
            public enum Target: Sendable {
                case url(URL)
                /// A webhook URL is itself a credential (Slack's are); it may live in a secret.
                case secret(SecretReference)
            }

            public var target: Target
            /// Put the held statement or request in the message (cut at 1000 bytes).
            public var includeOperation: Bool
        }
    }

    public struct Gateway: Sendable {
        /// Recorded in every audit event, so events from several replicas can be told apart.
        public var node: String
        /// Directory for state the gateway creates itself (keys, stores) unless a path says otherwise.
        public var stateDirectory: String
    }

    public struct Admin: Sendable {
        public var listen: ListenAddress
        /// PEM certificate chain and private key; required unless the listener is on loopback
        /// (approvers' tokens travel in every reviews API call).
        public var tlsCertificate: String? = nil
        public var tlsKey: String? = nil

        public var scheme: String { tlsCertificate == nil ? "http" : "https" }

        /// The listener's own URL.
        public var url: String { "\(scheme)://\(listen)" }

        /// The URL the CLI on this machine uses: loopback when the listener is bound to every interface.
        public var localURL: String { "\(scheme)://\(listen.local)" }
    }

    public struct Identity: Sendable {
        public var clockSkewSeconds: Int
        public var jwksRefreshSeconds: Int
        /// Lower bound between two fetches of one issuer's keys triggered by unknown `kid`s, so a
        /// stream of forged tokens cannot turn the gateway into a load generator against the IdP.
        public var jwksMinRefetchSeconds: Int
        /// How long a verified JWT is remembered (0: verify every time).
        public var tokenCacheSeconds: Int
        public var issuers: [Issuer]
        /// SQLite file holding the service-account keys (salted hashes only).
        public var apiKeysPath: String
        /// Private key of the development issuer (created on first use).
        public var devKeyPath: String
        /// Audience the development issuer puts in its tokens and the gateway expects back.
        public static let devAudience = "gatehouse"
        /// Name of the development issuer in readiness checks and metrics; not available to others.
        public static let devIssuerName = "dev"
    }

    public struct Issuer: Sendable {
        public var name: String
        /// Exact `iss` value; discovery is fetched from `<issuer>/.well-known/openid-configuration`.
        public var issuer: String
        /// Overrides the discovery document location for providers that publish it elsewhere.
        public var discoveryURL: String?
        /// A token must name at least one of these in `aud`.
        public var audiences: [String]
        public var groupsClaim: String
        public var emailClaim: String
        /// Claims naming the OAuth client, checked in order, for the client-id → agent mapping.
        public var clientIDClaims: [String]
        /// OAuth client id → agent name, for agents whose tokens carry no `act` claim.
        public var agents: [String: String]
    }

    public struct Audit: Sendable {
        public enum Durability: String, Sendable, CaseIterable {
            /// Survives a crash of the gateway process (SQLite WAL commit).
            case normal
            /// Also survives power loss (fsync on every commit).
            case fsync
        }

        public var path: String
        public var signingKeyPath: String
        public var durability: Durability
        public var checkpointEvery: Int
        public var maxBatch: Int
        /// Response payload bytes kept per event; the rest is cut and the event says so.
        public var maxPayloadBytes: Int
    }

    public struct Connection: Sendable {
        public enum Kind: String, Sendable, CaseIterable {
            case postgres
            case http
            /// A command-line tool run with credentials only the gateway holds.
            case command
        }

        public struct Access: Sendable, Equatable {
            public var groups: [String]
            public var subjects: [String]
            public var agents: [String]

            public init(groups: [String] = [], subjects: [String] = [], agents: [String] = []) {
                self.groups = groups
                self.subjects = subjects
                self.agents = agents
            }
        }

        /// Like libpq's sslmode, for the gateway's own connection upstream.
        public enum UpstreamTLS: String, Sendable, CaseIterable {
            case disable
            case require
            case verifyFull = "verify-full"
        }

        public var name: String
        public var kind: Kind
        public var upstream: URL
        public var username: String?
        public var password: SecretReference?
        public var description: String?
        /// Who may use the connection at all. Empty lists everywhere: nobody (fail closed).
        public var allow: Access
        public var upstreamTLS: UpstreamTLS
        /// PEM roots for `verify-full` against a private CA; the system roots otherwise.
        public var caFile: String?
        /// Settings only HTTP connections have.
        public var http: HTTPOptions?
        /// Settings only command connections have.
        public var command: CommandOptions?

        /// A command connection: what runs, with which credentials, for how long. The caller adds
        /// arguments after `arguments`; nothing goes through a shell.
        public struct CommandOptions: Sendable {
            /// Absolute path; no PATH search.
            public var executable: String
            public var arguments: [String]
            /// Plain settings for the tool's environment (not secrets).
            public var environment: [String: String]
            /// Environment variables set to a secret's value.
            public var secrets: [String: SecretReference]
            /// Environment variables set to the path of a private temporary file holding a secret.
            public var secretFiles: [String: SecretReference]
            public var workingDirectory: String?
            public var timeoutSeconds: Int
            /// stdout and stderr together; beyond it the run is stopped.
            public var maxOutputBytes: Int
            public var maxInputBytes: Int
            /// Options a caller may never pass (`--server`, `-s`, `--kubeconfig`): the fixed
            /// arguments and credentials cannot be overridden from the caller's side.
            public var forbiddenOptions: [String]
            /// Runs of this tool at once; more are refused (429).
            public var maxConcurrent: Int
        }

        /// The credential an HTTP connection adds to every forwarded request.
        public enum Credential: Sendable {
            case header(name: String, value: SecretReference)
            case bearer(SecretReference)
            case basic(username: String, password: SecretReference)
            case query(name: String, value: SecretReference)
        }

        /// One request rule: who, which methods, which paths, allow or deny.
        public struct RequestRule: Sendable {
            public enum Effect: String, Sendable, CaseIterable {
                case allow
                case deny
            }

            public var name: String
            public var effect: Effect
            public var methods: [String]
            public var paths: [String]
            public var groups: [String]
            public var subjects: [String]
            public var agents: [String]
            public var line: Int
        }

        public struct HTTPOptions: Sendable {
            public var credential: Credential?
            /// Host names that reach this connection directly, besides `/c/NAME/`.
            public var hosts: [String]
            public var connectTimeoutSeconds: Int
            public var readTimeoutSeconds: Int
            public var totalTimeoutSeconds: Int
            public var requests: [RequestRule]
        }
        /// Line in the config file, for later diagnostics about this connection.
        public var line: Int
    }
}

/// `host:port` for a listener. Port 0 asks the system for a free port (tests).
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` and `[v6]:port`.
    public init?(_ text: String) {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"),
                  text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        guard !host.isEmpty, let number = Int(port), (0...65535).contains(number) else { return nil }
        self.host = String(host)
        self.port = number
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// True only for addresses no other machine can reach.
    public var isLoopback: Bool { Loopback.contains(host: host) }

    /// Bound to every interface: not an address anyone can connect to by that name.
    public var isUnspecified: Bool { host == "0.0.0.0" || host == "::" || host.isEmpty }

    /// Where a process on this machine reaches the listener: loopback when it is bound to every
    /// interface.
    public var local: ListenAddress {
        guard isUnspecified else { return self }
        return ListenAddress(host: host == "::" ? "::1" : "127.0.0.1", port: port)
    }
}

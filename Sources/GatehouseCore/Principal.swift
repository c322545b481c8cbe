/// Who is behind a request: the person (or service account) a verified token names, the agents
/// acting for them, and where the request came from. The same value serves every protocol.
public struct Principal: Sendable, Codable, Equatable {
    /// The person or service account the credential belongs to (`sub`, or the API key's name).
    public var subject: String
    public var email: String?
    public var groups: [String]
    /// Who vouched for the identity: an OIDC issuer URL, or `gatehouse:api-key`.
    public var issuer: String
    public var authMethod: AuthMethod
    /// Actors acting on the subject's behalf, the one making this request first (RFC 8693 `act`,
    /// outermost first). Empty when the subject acts directly.
    public var actors: [Actor]
    public var client: ClientInfo

    public init(
        subject: String,
        email: String? = nil,
        groups: [String] = [],
        issuer: String,
        authMethod: AuthMethod,
        actors: [Actor] = [],
        client: ClientInfo = ClientInfo()
    ) {
        self.subject = subject
        self.email = email
        self.groups = groups
        self.issuer = issuer
        self.authMethod = authMethod
        self.actors = actors
        self.client = client
    }

    /// The agent making the request on the subject's behalf, if any.
    public var agent: String? { actors.first?.subject }

    public enum AuthMethod: String, Sendable, Codable, Equatable {
        case oidc
        case apiKey = "api-key"
    }
}

/// One link of a delegation chain: an agent (or service) acting for the principal.
public struct Actor: Sendable, Codable, Equatable {
    public var subject: String
    /// The OAuth client the actor used, when the token says so.
    public var clientID: String?

    public init(subject: String, clientID: String? = nil) {
        self.subject = subject
        self.clientID = clientID
    }
}

/// Where a request came from, as the listener saw it.
public struct ClientInfo: Sendable, Codable, Equatable {
    /// Peer address, `ip:port`.
    public var address: String?
    /// What the client calls itself (User-Agent, `application_name`, ...).
    public var application: String?

    public init(address: String? = nil, application: String? = nil) {
        self.address = address
        self.application = application
    }
}

/// What the gateway trusts an OIDC issuer for. Built from the configuration by the server.
public struct IssuerSettings: Sendable {
    public var name: String
    /// Exact `iss` value tokens must carry.
    public var issuer: String
    public var discoveryURL: String
    public var audiences: [String]
    public var groupsClaim: String
    public var emailClaim: String
    public var clientIDClaims: [String]
    /// OAuth client id → agent name, used when a token has no `act` claim.
    public var agents: [String: String]

    public init(
        name: String,
        issuer: String,
        discoveryURL: String? = nil,
        audiences: [String],
        groupsClaim: String = "groups",
        emailClaim: String = "email",
        clientIDClaims: [String] = ["azp", "client_id"],
        agents: [String: String] = [:]
    ) {
        self.name = name
        self.issuer = issuer
        let base = issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
        self.discoveryURL = discoveryURL ?? base + "/.well-known/openid-configuration"
        self.audiences = audiences
        self.groupsClaim = groupsClaim
        self.emailClaim = emailClaim
        self.clientIDClaims = clientIDClaims
        self.agents = agents
    }
}

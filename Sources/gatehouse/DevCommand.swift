import ArgumentParser
import Foundation
import GatehouseConfig
import GatehouseServer
import Identity

struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Development helpers (need dev: true in the configuration).",
        subcommands: [Token.self]
    )

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a token signed by the gateway's development issuer.")

        @OptionGroup var options: ConfigOption

        @Option(help: "The person the token names.")
        var subject: String

        @Option(help: "Comma-separated groups.")
        var groups: String = ""

        @Option(help: "The agent acting for the person (recorded as the RFC 8693 act claim).")
        var actor: String?

        @Option(help: "Email claim.")
        var email: String?

        @Option(help: "Lifetime in seconds.")
        var ttl: Int = 3600

        func run() async throws {
            let config = try options.load()
            guard config.dev else {
                throw fail("the development issuer is disabled; set dev: true in \(options.config) (loopback only)")
            }
            guard (1...86_400).contains(ttl) else { throw fail("--ttl must be between 1 and 86400 seconds") }
            let issuer = try DevIssuer(
                keyPath: config.identity.devKeyPath,
                issuerURL: Gateway.devIssuerURL(config),
                audience: GatehouseConfig.Identity.devAudience)
            let groupList = groups.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            print(try await issuer.token(.init(subject: subject, email: email, groups: groupList, actor: actor, lifetime: TimeInterval(ttl))))
        }
    }
}

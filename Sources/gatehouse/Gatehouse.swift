import ArgumentParser
import Foundation
import GatehouseConfig
import GatehouseServer
import Logging

@main
struct Gatehouse: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatehouse",
        abstract: "An identity-aware gateway for AI coding agents.",
        subcommands: [Serve.self, Check.self, PolicyCommand.self, AuditCommand.self, SessionsCommand.self, ReviewsCommand.self, AccessCommand.self, ExecCommand.self, KeysCommand.self, DevCommand.self]
    )
}

/// `--config FILE`, shared by every command that reads the configuration.
struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Configuration file (YAML).")
    var config: String = "gatehouse.yaml"

    /// Loads and validates, or prints every problem as FILE:LINE: message and exits 1.
    func load() throws -> GatehouseConfig {
        do {
            return try ConfigLoader.load(path: config)
        } catch {
            for problem in error.problems {
                printError(problem.description)
            }
            throw ExitCode(1)
        }
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Fails with a short message and exit 1, for errors a user can act on.
func fail(_ message: String) -> ExitCode {
    printError("gatehouse: \(message)")
    return ExitCode(1)
}

func bootstrapLogging() {
    let level = ProcessInfo.processInfo.environment["GATEHOUSE_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = JSONLogHandler(label: label)
        handler.logLevel = level
        return handler
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway until SIGINT or SIGTERM.")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        let config = try options.load()
        bootstrapLogging()
        let logger = Logger(label: "gatehouse")
        let gateway: Gateway
        do {
            gateway = try await Gateway(config: config, logger: logger)
        } catch {
            throw fail("cannot start: \(error)")
        }
        let devIssuer = config.dev ? Gateway.devIssuerURL(config) : nil
        try await gateway.run { bound in
            var admin = config.admin.listen
            admin.port = bound.admin
            var line = "gatehouse ready: admin \(config.admin.scheme)://\(admin)"
            if let port = bound.postgres, let host = config.postgres.listen?.host { line += ", postgres \(host):\(port)" }
            if let port = bound.http, let host = config.http.listen?.host { line += ", http \(host):\(port)" }
            if let devIssuer { line += ", dev issuer \(devIssuer)" }
            // Written unbuffered: scripts wait for this line on a pipe.
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate a configuration file.")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        let config = try options.load()
        print("\(options.config): ok (\(config.identity.issuers.count) issuer(s), \(config.connections.count) connection(s)\(config.dev ? ", dev issuer" : ""))")
    }
}

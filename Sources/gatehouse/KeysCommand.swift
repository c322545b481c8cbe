import ArgumentParser
import Foundation
import Identity

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Manage gateway API keys for service accounts.",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key and print it once; only a salted hash is kept.")

        @OptionGroup var options: ConfigOption

        @Option(help: "Service account name (becomes the principal's subject).")
        var name: String

        @Option(help: "Comma-separated groups.")
        var groups: String = ""

        func run() async throws {
            let config = try options.load()
            let store = try APIKeyStore(path: config.identity.apiKeysPath)
            let groupList = groups.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            do {
                let (info, key) = try store.create(name: name, groups: groupList)
                printError("created key \(info.id) for \(info.name); it is shown once, store it now:")
                print(key)
            } catch {
                throw fail("\(error)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (never their secrets).")

        @OptionGroup var options: ConfigOption

        func run() async throws {
            let config = try options.load()
            let store = try APIKeyStore(path: config.identity.apiKeysPath)
            for key in try store.list() {
                let state = key.revokedAt.map { "revoked \($0.formatted(.iso8601))" } ?? "active"
                print("\(key.id)  \(key.name)  groups=\(key.groups.joined(separator: ","))  created \(key.createdAt.formatted(.iso8601))  \(state)")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by id or name; it stops working at once.")

        @OptionGroup var options: ConfigOption

        @Argument(help: "Key id or the name of an active key.")
        var key: String

        func run() async throws {
            let config = try options.load()
            let store = try APIKeyStore(path: config.identity.apiKeysPath)
            do {
                let info = try store.revoke(key)
                print("revoked \(info.id) (\(info.name))")
            } catch {
                throw fail("\(error)")
            }
        }
    }
}

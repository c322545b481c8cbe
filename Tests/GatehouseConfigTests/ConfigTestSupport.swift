@testable import GatehouseConfig

/// Loads YAML as `gatehouse.yaml` in /etc/gatehouse, the way every config test does.
func loadConfig(_ yaml: String, environment: [String: String] = [:]) throws(ConfigError) -> GatehouseConfig {
    try ConfigLoader.parse(yaml: yaml, file: "gatehouse.yaml", baseDirectory: "/etc/gatehouse", environment: environment)
}

/// Every problem loading the YAML reports, as FILE:LINE: message; empty when it loads.
func configProblems(_ yaml: String, environment: [String: String] = [:]) -> [String] {
    do {
        _ = try loadConfig(yaml, environment: environment)
        return []
    } catch {
        return error.problems.map(\.description)
    }
}

import Foundation
import Yams

/// Collects problems while a YAML tree is read, so `gatehouse check` can report all of them at once.
final class ConfigReader {
    let file: String
    let environment: [String: String]
    /// Relative paths in the file are relative to the file, not to wherever the gateway was started.
    let baseDirectory: String
    private(set) var problems: [ConfigProblem] = []

    init(file: String, environment: [String: String], baseDirectory: String) {
        self.file = file
        self.environment = environment
        self.baseDirectory = baseDirectory
    }

    func resolvePath(_ path: String) -> String {
        path.hasPrefix("/") ? path : URL(fileURLWithPath: baseDirectory).appendingPathComponent(path).standardizedFileURL.path
    }

    func report(_ node: Node?, _ message: String) {
        report(line: node?.mark?.line ?? 1, message)
    }

    func report(line: Int, _ message: String) {
        problems.append(ConfigProblem(file: file, line: line, message: message))
    }

    /// A scalar's text with `${VAR}` and `${VAR:-default}` replaced from the environment. Expansion
    /// happens after YAML parsing, so a value from the environment can never change the structure.
    func text(_ node: Node, at path: String) -> String? {
        guard case .scalar(let scalar) = node else {
            report(node, "\(path) must be a single value")
            return nil
        }
        return expand(scalar.string, node: node, path: path)
    }

    private func expand(_ raw: String, node: Node, path: String) -> String? {
        guard raw.contains("${") else { return raw }
        var result = ""
        var rest = Substring(raw)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                report(node, "\(path): unterminated ${ in value")
                return nil
            }
            let expression = rest[start.upperBound..<end]
            let name: Substring
            let fallback: Substring?
            if let separator = expression.range(of: ":-") {
                name = expression[..<separator.lowerBound]
                fallback = expression[separator.upperBound...]
            } else {
                name = expression
                fallback = nil
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                report(node, "\(path): '${\(expression)}' is not a valid variable reference")
                return nil
            }
            if let value = environment[String(name)], !value.isEmpty {
                result += value
            } else if let fallback {
                result += fallback
            } else {
                report(node, "\(path): environment variable \(name) is not set")
                return nil
            }
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }
}

/// A YAML mapping being read. Every key read is remembered, so `finish()` can name unknown keys,
/// which are almost always typos that would otherwise silently disable a setting.
final class ConfigSection {
    let reader: ConfigReader
    let path: String
    let node: Node
    private var entries: [String: (key: Node, value: Node)] = [:]
    private(set) var order: [String] = []
    private var known: Set<String> = []

    /// Nil (with a problem reported) when `node` is not a mapping.
    init?(_ node: Node, path: String, reader: ConfigReader) {
        self.reader = reader
        self.path = path
        self.node = node
        guard case .mapping(let mapping) = node else {
            reader.report(node, "\(path) must be a mapping of keys to values")
            return nil
        }
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else {
                reader.report(key, "\(path): keys must be plain names")
                continue
            }
            if entries[scalar.string] != nil {
                reader.report(key, "\(path): key '\(scalar.string)' appears more than once")
                continue
            }
            entries[scalar.string] = (key, value)
            order.append(scalar.string)
        }
    }

    var line: Int { node.mark?.line ?? 1 }

    private func qualified(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// Whether the key is present, without marking it as read.
    func has(_ key: String) -> Bool { entries[key] != nil }

    func node(_ key: String, required: Bool = false) -> Node? {
        known.insert(key)
        guard let entry = entries[key] else {
            if required { reader.report(node, "\(path.isEmpty ? "configuration" : path) is missing required key '\(key)'") }
            return nil
        }
        if case .scalar(let scalar) = entry.value, scalar.tag.rawValue == Tag.Name.null.rawValue || (scalar.string.isEmpty && scalar.style == .plain) {
            if required { reader.report(entry.key, "\(qualified(key)) must have a value") }
            return nil
        }
        return entry.value
    }

    func string(_ key: String, required: Bool = false) -> String? {
        guard let value = node(key, required: required) else { return nil }
        guard let text = reader.text(value, at: qualified(key)) else { return nil }
        if text.isEmpty {
            reader.report(value, "\(qualified(key)) must not be empty")
            return nil
        }
        return text
    }

    func int(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let value = node(key), let text = reader.text(value, at: qualified(key)) else { return nil }
        guard let number = Int(text), range.contains(number) else {
            reader.report(value, "\(qualified(key)) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return number
    }

    func bool(_ key: String) -> Bool? {
        guard let value = node(key), let text = reader.text(value, at: qualified(key)) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            reader.report(value, "\(qualified(key)) must be true or false")
            return nil
        }
    }

    func choice<T: RawRepresentable & CaseIterable>(_ key: String, as type: T.Type, required: Bool = false) -> T? where T.RawValue == String {
        guard let value = node(key, required: required), let text = reader.text(value, at: qualified(key)) else { return nil }
        guard let choice = T(rawValue: text) else {
            let allowed = T.allCases.map(\.rawValue).joined(separator: ", ")
            reader.report(value, "\(qualified(key)) must be one of: \(allowed)")
            return nil
        }
        return choice
    }

    /// A list of strings; a single string is accepted as a list of one.
    func strings(_ key: String) -> [String]? {
        guard let value = node(key) else { return nil }
        switch value {
        case .sequence(let sequence):
            return sequence.enumerated().compactMap { index, item in reader.text(item, at: "\(qualified(key))[\(index)]") }
        case .scalar:
            return reader.text(value, at: qualified(key)).map { [$0] }
        default:
            reader.report(value, "\(qualified(key)) must be a list of values")
            return nil
        }
    }

    func section(_ key: String, required: Bool = false) -> ConfigSection? {
        guard let value = node(key, required: required) else { return nil }
        return ConfigSection(value, path: qualified(key), reader: reader)
    }

    func sequence(_ key: String) -> [(path: String, node: Node)]? {
        guard let value = node(key) else { return nil }
        guard case .sequence(let sequence) = value else {
            reader.report(value, "\(qualified(key)) must be a list")
            return nil
        }
        return sequence.enumerated().map { ("\(qualified(key))[\($0.offset)]", $0.element) }
    }

    /// A string-to-string mapping, e.g. client id → agent name.
    func stringMap(_ key: String) -> [String: String]? {
        guard let section = section(key) else { return nil }
        var result: [String: String] = [:]
        for name in section.order {
            if let value = section.string(name) { result[name] = value }
        }
        return result
    }

    /// A secret must be a reference; a literal is refused without echoing it.
    func secret(_ key: String, required: Bool = false) -> SecretReference? {
        guard let value = node(key, required: required), let text = reader.text(value, at: qualified(key)) else { return nil }
        switch SecretReference(reference: text) {
        case .file(let path): return .file(reader.resolvePath(path))
        case let reference?: return reference
        case nil:
            reader.report(value, "\(qualified(key)) is a secret and must be a reference (env:NAME or file:PATH), not a literal value")
            return nil
        }
    }

    /// An absolute http(s) URL with a host.
    func url(_ key: String, required: Bool = false, schemes: Set<String> = ["http", "https"]) -> URL? {
        guard let value = node(key, required: required), let text = reader.text(value, at: qualified(key)) else { return nil }
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), schemes.contains(scheme),
              let host = url.host, !host.isEmpty else {
            let allowed = schemes.sorted().joined(separator: " or ")
            reader.report(value, "\(qualified(key)) must be an absolute \(allowed) URL with a host")
            return nil
        }
        return url
    }

    func listenAddress(_ key: String, default fallback: String? = nil) -> ListenAddress? {
        guard let value = node(key) else { return fallback.flatMap(ListenAddress.init) }
        guard let text = reader.text(value, at: qualified(key)) else { return nil }
        guard let address = ListenAddress(text) else {
            reader.report(value, "\(qualified(key)) must be host:port, e.g. 127.0.0.1:9090")
            return nil
        }
        return address
    }

    func lineOf(_ key: String) -> Int { entries[key]?.key.mark?.line ?? line }

    /// `methods` (upper-cased, letters only) and `paths` (default every path; each must start
    /// with `/`; an empty list is refused, as it would match nothing: a deny rule that silently
    /// never applies), as HTTP rules write them.
    func httpMatchers() -> (methods: [String], paths: [String]) {
        let methods = (strings("methods") ?? []).map { $0.uppercased() }
        for method in methods where !method.allSatisfy({ $0.isLetter }) {
            reader.report(line: lineOf("methods"), "\(path).methods: '\(method)' is not an HTTP method")
        }
        let paths = strings("paths") ?? ["/**"]
        if paths.isEmpty {
            reader.report(line: lineOf("paths"), "\(path).paths must not be empty (leave it out to cover every path)")
        }
        for pattern in paths where !pattern.hasPrefix("/") {
            reader.report(line: lineOf("paths"), "\(path).paths: '\(pattern)' must start with '/'")
        }
        return (methods, paths)
    }

    /// Reports every key that no accessor asked for.
    func finish() {
        for key in order where !known.contains(key) {
            let expected = known.sorted().joined(separator: ", ")
            reader.report(entries[key]?.key, "unknown key '\(key)' in \(path.isEmpty ? "configuration" : path) (expected one of: \(expected))")
        }
    }
}

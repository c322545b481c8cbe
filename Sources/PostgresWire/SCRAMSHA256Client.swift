import Crypto
import CryptoExtras

/// The client side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL uses it, for logging in to the
/// real server with a password the gateway holds.
///
/// - The gs2 header is `n,,`: no channel binding (this is SCRAM-SHA-256, not -PLUS).
/// - PostgreSQL takes the user from the StartupMessage and ignores SCRAM's, so `username` defaults to
///   empty, as libpq sends it; it exists so RFC test vectors can be checked.
/// - SASLprep is not applied: the password is used as its UTF-8 bytes. ASCII passwords are unaffected;
///   a non-ASCII password that SASLprep would change (non-ASCII spaces, compatibility forms, soft
///   hyphens) fails against a server that stored its SASLprep'd form.
///
/// Order: `clientFirstMessage()` → `handleServerFirst(_:)` → `verifyServerFinal(_:)`. Only after the
/// last one succeeds has the server proved it knows the password; until then, trust nothing it sent.
public struct SCRAMSHA256Client: Sendable {
    public static let mechanism = "SCRAM-SHA-256"

    /// Iteration counts outside this range are refused: below RFC 7677's minimum invites cheap offline
    /// guessing of a captured proof, and a huge count lets a rogue server burn the gateway's CPU.
    public static let defaultAcceptedIterations: ClosedRange<Int> = 4096...1_000_000

    private enum State: Sendable {
        case initial
        case sentClientFirst
        case sentClientFinal(serverSignature: [UInt8])
        case failed
    }

    private let password: [UInt8]
    private let clientNonce: String
    private let clientFirstBare: String
    private let acceptedIterations: ClosedRange<Int>
    private var state: State = .initial

    /// - Parameters:
    ///   - nonce: printable ASCII without commas; tests inject one, otherwise 18 random bytes in base64.
    ///   - acceptedIterations: widen only for a server known to use a lower `scram_iterations`.
    public init(
        password: String,
        username: String = "",
        nonce: String? = nil,
        acceptedIterations: ClosedRange<Int> = SCRAMSHA256Client.defaultAcceptedIterations
    ) {
        self.password = Array(password.utf8)
        let nonce = nonce ?? Self.randomNonce()
        self.clientNonce = nonce
        self.clientFirstBare = "n=\(Self.escape(username)),r=\(nonce)"
        self.acceptedIterations = acceptedIterations
    }

    /// The data of the SASLInitialResponse.
    public mutating func clientFirstMessage() -> [UInt8] {
        if case .initial = state { state = .sentClientFirst }
        return Array(("n,," + clientFirstBare).utf8)
    }

    /// Takes the data of AuthenticationSASLContinue and returns the data of the SASLResponse.
    public mutating func handleServerFirst(_ message: [UInt8]) throws -> [UInt8] {
        guard case .sentClientFirst = state else { throw Self.failure("server-first-message out of order") }
        state = .failed
        guard let serverFirst = Self.ascii(message) else { throw Self.failure("server-first-message is not printable ASCII") }
        let attributes = serverFirst.split(separator: ",", omittingEmptySubsequences: false)
        guard attributes.count >= 3 else { throw Self.failure("server-first-message is incomplete") }
        if attributes[0].hasPrefix("m=") { throw Self.failure("server requires an unsupported SCRAM extension") }
        guard attributes[0].hasPrefix("r="), attributes[1].hasPrefix("s="), attributes[2].hasPrefix("i=") else {
            throw Self.failure("server-first-message is malformed")
        }
        let nonce = attributes[0].dropFirst(2)
        // The server must extend our nonce, not replace it: otherwise this could be a replayed exchange.
        guard nonce.count > clientNonce.count, nonce.hasPrefix(clientNonce) else {
            throw Self.failure("server nonce does not extend the client nonce")
        }
        guard let salt = Base64.decode(attributes[1].dropFirst(2).utf8), !salt.isEmpty else {
            throw Self.failure("salt is not valid base64")
        }
        let iterationText = attributes[2].dropFirst(2)
        guard !iterationText.isEmpty, iterationText.count <= 10, iterationText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let iterations = Int(iterationText)
        else { throw Self.failure("iteration count is not a number") }
        guard acceptedIterations.contains(iterations) else {
            throw Self.failure("iteration count \(iterations) outside the accepted \(acceptedIterations.lowerBound)...\(acceptedIterations.upperBound)")
        }

        let saltedPassword: SymmetricKey
        do {
            saltedPassword = try KDF.Insecure.PBKDF2.deriveKey(
                from: password, salt: salt, using: .sha256, outputByteCount: 32, unsafeUncheckedRounds: iterations)
        } catch {
            throw Self.failure("key derivation failed")
        }
        let clientKey = Array(HMAC<SHA256>.authenticationCode(for: Array("Client Key".utf8), using: saltedPassword))
        let storedKey = SymmetricKey(data: SHA256.hash(data: clientKey))
        let serverKey = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array("Server Key".utf8), using: saltedPassword))

        let clientFinalWithoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(clientFinalWithoutProof)".utf8)
        let clientSignature = Array(HMAC<SHA256>.authenticationCode(for: authMessage, using: storedKey))
        let proof = zip(clientKey, clientSignature).map { $0 ^ $1 }
        let serverSignature = Array(HMAC<SHA256>.authenticationCode(for: authMessage, using: serverKey))

        state = .sentClientFinal(serverSignature: serverSignature)
        return Array("\(clientFinalWithoutProof),p=\(Base64.encode(proof))".utf8)
    }

    /// Takes the data of AuthenticationSASLFinal; throws unless the server proved it knows the password.
    public func verifyServerFinal(_ message: [UInt8]) throws {
        guard case .sentClientFinal(let expected) = state else { throw Self.failure("server-final-message out of order") }
        guard let serverFinal = Self.ascii(message) else { throw Self.failure("server-final-message is not printable ASCII") }
        let first = serverFinal.split(separator: ",", maxSplits: 1, omittingEmptySubsequences: false)[0]
        if first.hasPrefix("e=") {
            let reason = first.dropFirst(2)
            // RFC 5802's error values are short lowercase tokens; anything else is not repeated.
            let safe = reason.count <= 40 && reason.allSatisfy { ("a"..."z").contains($0) || $0 == "-" }
            throw Self.failure("server reported an error" + (safe && !reason.isEmpty ? ": \(reason)" : ""))
        }
        guard first.hasPrefix("v="), let signature = Base64.decode(first.dropFirst(2).utf8) else {
            throw Self.failure("server-final-message is malformed")
        }
        guard Self.constantTimeEqual(signature, expected) else {
            throw Self.failure("server signature does not match")
        }
    }

    private static func failure(_ message: String) -> PostgresWireError {
        PostgresWireError(.authenticationFailed, "SCRAM-SHA-256: \(message)")
    }

    /// SCRAM messages are printable ASCII; refusing anything else keeps every later step byte-exact.
    private static func ascii(_ bytes: [UInt8]) -> String? {
        guard !bytes.isEmpty, bytes.count <= 4096, bytes.allSatisfy({ (0x20...0x7E).contains($0) }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func escape(_ username: String) -> String {
        var escaped = ""
        for character in username {
            switch character {
            case "=": escaped += "=3D"
            case ",": escaped += "=2C"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    private static func randomNonce() -> String {
        var generator = SystemRandomNumberGenerator()
        return Base64.encode((0..<18).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// Time depends only on the lengths, which are public (32 bytes).
    private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}

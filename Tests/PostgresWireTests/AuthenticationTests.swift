import NIOCore
import Testing

@testable import PostgresWire

@Suite struct AuthenticationTests {
    static let serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"

    @Test func scramRFC7677Vector() throws {
        var client = SCRAMSHA256Client(password: "pencil", username: "user", nonce: "rOprNGfwEbeRWgbNEkqO")
        #expect(String(decoding: client.clientFirstMessage(), as: UTF8.self) == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        let clientFinal = try client.handleServerFirst(Array(Self.serverFirst.utf8))
        #expect(String(decoding: clientFinal, as: UTF8.self)
            == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        try client.verifyServerFinal(Array("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".utf8))
    }

    @Test func postgresStyleClientFirst() {
        var client = SCRAMSHA256Client(password: "x", nonce: "abc")
        #expect(String(decoding: client.clientFirstMessage(), as: UTF8.self) == "n,,n=,r=abc")
        #expect(SCRAMSHA256Client.mechanism == "SCRAM-SHA-256")

        var random = SCRAMSHA256Client(password: "x")
        let first = String(decoding: random.clientFirstMessage(), as: UTF8.self)
        #expect(first.hasPrefix("n,,n=,r=") && first.count == "n,,n=,r=".count + 24)
    }

    @Test func usernameIsEscaped() {
        var client = SCRAMSHA256Client(password: "x", username: "a=b,c", nonce: "n")
        #expect(String(decoding: client.clientFirstMessage(), as: UTF8.self) == "n,,n=a=3Db=2Cc,r=n")
    }

    func afterFirst(_ serverFirst: String, acceptedIterations: ClosedRange<Int> = SCRAMSHA256Client.defaultAcceptedIterations) throws {
        var client = SCRAMSHA256Client(password: "pencil", nonce: "rOprNGfwEbeRWgbNEkqO", acceptedIterations: acceptedIterations)
        _ = client.clientFirstMessage()
        _ = try client.handleServerFirst(Array(serverFirst.utf8))
    }

    @Test func hostileServerFirstRejected() {
        let cases = [
            "r=someoneElsesNonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  // nonce replaced
            "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  // nonce not extended
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=not*base64,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=999999999999999999999",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-4096",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2000000",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==",
            "m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096",
            "",
            "r=rOprNGfwEbeRWgbNEkqOxyz\u{7F},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ]
        for serverFirst in cases {
            expectWireError(.authenticationFailed) { try afterFirst(serverFirst) }
        }
        // A lower count is accepted only when the caller widens the range.
        #expect(throws: Never.self) {
            try afterFirst("r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", acceptedIterations: 1...4096)
        }
    }

    @Test func serverFinalChecked() throws {
        func ready() throws -> SCRAMSHA256Client {
            var client = SCRAMSHA256Client(password: "pencil", username: "user", nonce: "rOprNGfwEbeRWgbNEkqO")
            _ = client.clientFirstMessage()
            _ = try client.handleServerFirst(Array(Self.serverFirst.utf8))
            return client
        }
        let client = try ready()
        for bad in [
            "v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",  // wrong signature
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",  // bad base64
            "v=",
            "e=invalid-proof",
            "x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            "",
        ] {
            expectWireError(.authenticationFailed) { try client.verifyServerFinal(Array(bad.utf8)) }
        }
        do {
            try client.verifyServerFinal(Array("e=invalid-proof".utf8))
        } catch let error as PostgresWireError {
            #expect(error.message.hasSuffix("invalid-proof"))
        }
        // Extensions after the verifier are allowed.
        try client.verifyServerFinal(Array("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=1".utf8))
    }

    @Test func outOfOrderRejected() throws {
        var client = SCRAMSHA256Client(password: "pencil", nonce: "rOprNGfwEbeRWgbNEkqO")
        expectWireError(.authenticationFailed) { _ = try client.handleServerFirst(Array(Self.serverFirst.utf8)) }
        expectWireError(.authenticationFailed) { try client.verifyServerFinal(Array("v=AAAA".utf8)) }
        _ = client.clientFirstMessage()
        expectWireError(.authenticationFailed) { _ = try client.handleServerFirst(Array("garbage".utf8)) }
        // A failed exchange stays failed.
        expectWireError(.authenticationFailed) { _ = try client.handleServerFirst(Array(Self.serverFirst.utf8)) }
    }

    @Test func md5KnownValues() {
        // Computed with Python hashlib.
        #expect(MD5Authentication.response(user: "postgres", password: "secret", salt: [1, 2, 3, 4])
            == "md5bb41a296aab6baccb36ff243a562abff")
        #expect(MD5Authentication.response(user: "user", password: "pencil", salt: [0xDE, 0xAD, 0xBE, 0xEF])
            == "md50f5b636d891e9860623ac8ca91fc9dfc")
    }

    @Test func base64() {
        for bytes: [UInt8] in [[], [0], [0, 1], [0, 1, 2], [0xFF, 0xEE, 0xDD, 0xCC]] {
            #expect(Base64.decode(Base64.encode(bytes).utf8) == bytes)
        }
        #expect(Base64.encode(Array("n,,".utf8)) == "biws")
        for bad in ["A", "AB=C", "A===", "====", "AB==AB==", "AB\u{0}=", "ab!d"] {
            #expect(Base64.decode(bad.utf8) == nil, "\(bad)")
        }
    }
}

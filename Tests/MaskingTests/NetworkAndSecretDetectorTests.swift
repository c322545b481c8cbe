import Testing

@testable import Masking

@Suite("IP address detector")
struct IPDetectorTests {
    @Test(arguments: [
        "192.168.1.1", "10.0.0.1", "8.8.8.8", "255.255.255.255", "0.0.0.0", "172.16.254.3", "100.64.0.10",
        "2001:db8::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:db8:85a3::8a2e:370:7334",
        "fe80::1", "fe80::", "::1", "::ffff:192.0.2.128", "64:ff9b::192.0.2.33", "1:2:3:4:5:6:7:8",
        "FE80::0202:B3FF:FE1E:8329", "1:2:3:4:5:6:1.2.3.4",
    ])
    func findsAddresses(address: String) {
        for context in contexts {
            #expect(found(.ipAddress, in: context(address)) == [address], "\(context(address))")
        }
    }

    @Test func portsPrefixesAndZonesStayOutside() {
        #expect(found(.ipAddress, in: "host 10.0.0.1:8080 up") == ["10.0.0.1"])
        #expect(found(.ipAddress, in: "192.168.0.0/16") == ["192.168.0.0"])
        #expect(found(.ipAddress, in: "[2001:db8::1]:443") == ["2001:db8::1"])
        #expect(found(.ipAddress, in: "fe80::1%eth0") == ["fe80::1"])
        #expect(found(.ipAddress, in: "peer fe80::1: timeout") == ["fe80::1"])
        #expect(found(.ipAddress, in: "from 10.0.0.1.") == ["10.0.0.1"])
    }

    @Test(arguments: [
        "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.02.03.04", "10.0.0.01", "192.168.1", "v1.2.3.4", "10.0.0.256",
        "1.2.3.4a", "1.3.6.1.4.1.343", "12-10.0.0.1",
        "::", "std::vector<int>", "Foo::Bar", "a::b", "x[1::2]", "dead::beef", "10:30:00", "00:1a:2b:3c:4d:5e",
        "2024-01-15T10:30:00Z", "1::2::3", "12345::1", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
        "::ffff:1.2.3.4.5", "fe80::1g", "123e4567-e89b-12d3-a456-426614174000", "cafe babe face",
    ])
    func ignoresNonAddresses(text: String) {
        #expect(found(.ipAddress, in: text).isEmpty, "\(text)")
    }
}

@Suite("Secret detector")
struct SecretDetectorTests {
    static let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    static let pem = """
        -----BEGIN RSA PRIVATE KEY-----
        MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu
        KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm
        -----END RSA PRIVATE KEY-----
        """

    @Test(arguments: [
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        "ghp_" + String(repeating: "a1B2", count: 9),
        "gho_" + String(repeating: "Z", count: 36),
        "ghs_" + String(repeating: "x9", count: 20),
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxp-1234567890-abcdef",
        "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live_51H8abcdefghijklmnopqrstuvwxyz",
        jwt,
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
        "eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4R0NNIn0..aXYxMjM0NTY3ODk.Y2lwaGVydGV4dA.dGFnMTIzNDU2Nzg5",
        pem,
        "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ])
    func findsSecrets(secret: String) {
        for context in contexts {
            #expect(found(.secret, in: context(secret)) == [secret], "\(context(secret))")
        }
    }

    @Test func bearerTokensAndAssignments() {
        #expect(found(.secret, in: "Authorization: Bearer \(Self.jwt)") == [Self.jwt])
        #expect(found(.secret, in: "aws_access_key_id=AKIAIOSFODNN7EXAMPLE\n") == ["AKIAIOSFODNN7EXAMPLE"])
    }

    @Test func aPrivateKeyWithoutItsEndRunsToTheEndOfTheValue() {
        let text = "key: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpY"
        #expect(found(.secret, in: text) == ["-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpY"])
        // An END line of another label is content, not the end.
        let mixed = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END CERTIFICATE-----\nBBBB\n-----END PRIVATE KEY----- tail"
        #expect(found(.secret, in: mixed) == [String(mixed.dropLast(5))])
    }

    @Test(arguments: [
        "AKIA123", "AKIAIOSFODNN7EXAMPLEX", "xAKIAIOSFODNN7EXAMPLE", "AKIAiosfodnn7example",
        "ghp_short", "ghx_" + String(repeating: "a", count: 36), "ghp_" + String(repeating: "a", count: 35),
        "github_pat_short", "xoxb-short", "xoxz-1234567890-abcdef",
        "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQ", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQeX",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc", "pk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_short",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0",
        "eyJustAWordHere.something.else",
        "prefix-eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.sig",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        "-----BEGIN private key-----",
        "the private key is stored elsewhere",
        "a4f9c2e1b3d5a7f9c2e1b3d5a7f9c2e1b3d5a7f9",
    ])
    func ignoresNonSecrets(text: String) {
        #expect(found(.secret, in: text).isEmpty, "\(text)")
    }
}

import Testing

@testable import Masking

@Suite("Email detector")
struct EmailDetectorTests {
    @Test(arguments: [
        ("john@example.com", "john@example.com"),
        ("john.doe+tag@mail.example.co.uk", "john.doe+tag@mail.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("first_last@sub-domain.example.org", "first_last@sub-domain.example.org"),
        ("user%relay@example.com", "user%relay@example.com"),
        ("a@b.co", "a@b.co"),
        ("ANN@EXAMPLE.COM", "ANN@EXAMPLE.COM"),
        ("email=ann@x.io&page=2", "ann@x.io"),
        ("<ann@x.io>", "ann@x.io"),
        ("'ann@x.io'", "ann@x.io"),
        ("mailto:ann@x.io", "ann@x.io"),
        ("write to ann@x.io.", "ann@x.io"),
        ("https://user:ann@host.example.com/path", "ann@host.example.com"),
        ("jürgen@müller.de", "jürgen@müller.de"),
        ("邮箱：用户@例子.广告", "用户@例子.广告"),
        ("user@xn--80ak6aa92e.xn--p1ai", "user@xn--80ak6aa92e.xn--p1ai"),
        ("9876@numbers.example.net", "9876@numbers.example.net"),
        ("a.b-c_d@e-f.gh", "a.b-c_d@e-f.gh"),
        ("log\\nann@x.io", "ann@x.io"),
        ("_service@example.com", "_service@example.com"),
        ("--ann@example.com", "ann@example.com"),
    ])
    func findsAddresses(text: String, expected: String) {
        for context in contexts {
            #expect(found(.email, in: context(text)) == [expected], "\(context(text))")
        }
    }

    @Test(arguments: [
        "@mention in a tweet",
        "user@localhost",
        "trailing user@",
        "@example.com",
        "npm install left-pad@1.3.0",
        "icon@2x.png",
        "user@10.0.0.1",
        "a..b@example.com",
        "ann.@example.com",
        "ann@-example.com",
        "ann@example-.com",
        "ann@example.c",
        "ann@example.com_backup",
        "ann@example.c0m",
        "foo @ bar.com",
        "user@@example.com",
        "2024-01-15T10:30:00Z",
        String(repeating: "a", count: 65) + "@example.com",
        "ann@" + String(repeating: "a", count: 64) + ".com",
        "ann@" + String(repeating: "abcdefghi.", count: 26) + "com",
        "no addresses in this ordinary sentence, just words.",
    ])
    func ignoresNonAddresses(text: String) {
        #expect(found(.email, in: text).isEmpty, "\(text)")
    }
}

@Suite("Phone detector")
struct PhoneDetectorTests {
    @Test(arguments: [
        "+14155552671",
        "+1 415 555 2671",
        "+1-415-555-2671",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+49 30 901820",
        "+33 1 42 68 53 00",
        "+1 (555) 123-4567",
        "+91.98765.43210",
        "+8613800138000",
        "+123456789012345",
        "(555) 123-4567",
        "(555)123-4567",
        "(555) 123 4567",
        "555-123-4567",
        "555.123.4567",
        "1-555-123-4567",
        "1.555.123.4567",
        "212-555-0123",
    ])
    func findsNumbers(number: String) {
        for context in contexts {
            #expect(found(.phone, in: context(number)) == [number], "\(context(number))")
        }
    }

    @Test func sentenceEndsAndLabelsStayOutside() {
        #expect(found(.phone, in: "Call +1 415 555 2671.") == ["+1 415 555 2671"])
        #expect(found(.phone, in: "tel:555-123-4567, fax: (555) 765-4321") == ["555-123-4567", "(555) 765-4321"])
        #expect(found(.phone, in: "[+44 20 7946 0958]") == ["+44 20 7946 0958"])
    }

    @Test(arguments: [
        "14155552671",
        "4155552671",
        "order 1234567890",
        "2024-01-15",
        "+2024-01-15",
        "+1234567",
        "+1234567890123456",
        "+0 123 456 7890",
        "123-456-7890",
        "055-123-4567",
        "555-123-45678",
        "555-1234-567",
        "555-123.4567",
        "v555-123-4567",
        "12-555-123-4567",
        "555-123-4567-89",
        "(555 123-4567",
        "+44 (20 7946 0958",
        "10:30:00+01:00",
        "2024-01-15T10:30:00+01:00",
        "123e4567-e89b-12d3-a456-426614174000",
        "version 1.2.3",
        "ISBN 978-3-16-148410-0",
        "3+14155552671",
        "1.5e+10",
        "prices rose by 5.5% to 1,234,567.89",
    ])
    func ignoresNonNumbers(text: String) {
        #expect(found(.phone, in: text).isEmpty, "\(text)")
    }
}

import Testing

@testable import Masking

@Suite("SSN detector")
struct SSNDetectorTests {
    @Test(arguments: ["123-45-6789", "078-05-1120", "001-01-0001", "899-99-9999", "665-12-3456", "667-01-0001"])
    func findsSSNs(ssn: String) {
        for context in contexts {
            #expect(found(.usSSN, in: context(ssn)) == [ssn], "\(context(ssn))")
        }
        #expect(found(.usSSN, in: "SSN: \(ssn).") == [ssn])
    }

    @Test(arguments: [
        "000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000",
        "123456789", "123 45 6789", "1234-56-7890", "123-45-67890", "a123-45-6789", "123-45-6789x",
        "12-123-45-6789", "123-45-6789-1", "2024-01-15", "123-4-56789", "12-345-6789",
    ])
    func ignoresNonSSNs(text: String) {
        #expect(found(.usSSN, in: text).isEmpty, "\(text)")
    }
}

@Suite("National ID detector")
struct NationalIDDetectorTests {
    @Test(arguments: [
        "AB123456C", "AB 12 34 56 C", "AB 123456 C", "ab123456c", "JG103759A", "CE 12 34 56 D", "ZY123456B",
        "12345678Z", "12345678-Z", "87654321X", "11111111h", "00000000T",
        "X1234567L", "X-1234567-L", "Y1234567X", "Z1234567R",
    ])
    func findsIDs(id: String) {
        for context in contexts {
            #expect(found(.nationalID, in: context(id)) == [id], "\(context(id))")
        }
    }

    @Test(arguments: [
        "QQ123456C",      // Q never first: HMRC's specimen
        "DA123456C", "FA123456C", "IA123456C", "UA123456C", "VA123456C",
        "AD123456C", "AO123456C", "AV123456C",
        "GB123456C", "BG123456C", "KN123456C", "NK123456C", "NT123456C", "TN123456C", "ZZ123456C",
        "AB123456E",      // suffix beyond D
        "ab 12 34 56 c", "at 12 34 56 a", "Ab123456C", "aB123456c", "AB123456c",
        "AB12345C", "AB1234567C", "XAB123456C", "AB123456Cx", "AB123456",
        "12345678A",      // wrong check letter
        "123456789Z", "1234567Z", "x12345678Z", "12345678Zy", "1-12345678Z",
        "X1234567A", "X-1234567L", "W1234567L", "X12345678L",
        "build 20240115T103000Z",
    ])
    func ignoresNonIDs(text: String) {
        #expect(found(.nationalID, in: text).isEmpty, "\(text)")
    }
}

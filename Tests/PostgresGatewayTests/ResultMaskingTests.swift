import Masking
import NIOCore
import Policy
import PostgresWire
import SQLInspection
import Testing

@testable import PostgresGateway

@Suite("Masking result rows")
struct ResultMaskingTests {
    static let customers: UInt32 = 16_400
    static let masker = ValueMasker(hashKey: Array(repeating: 7, count: 32))
    static let pii = NamedMask(rule: "pii", action: MaskAction(
        columns: ["customers.email", "customers.card_number"], detectors: [.usSSN], strategy: .partial(keep: 4)))

    static var catalog: CatalogSnapshot {
        var snapshot = CatalogSnapshot()
        let patterns = pii.action.columns
        for (number, name) in [(1, "id"), (2, "email"), (3, "card_number"), (4, "note")] {
            let row = ["\(customers)", "\(number)", "public", "customers", name].map { Optional(ByteBuffer(string: $0)) } + [nil]
            let added = snapshot.add(row: row, patterns: patterns)
            #expect(added)
        }
        return snapshot
    }

    static func field(_ name: String, table: UInt32 = customers, column: Int16, type: UInt32 = 25, format: Int16 = 0) -> FieldDescription {
        FieldDescription(name: name, tableOID: table, columnAttributeNumber: column, dataTypeOID: type, dataTypeSize: -1, formatCode: format)
    }

    static func row(_ values: [ByteBuffer?]) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        PostgresEncoder.backend(.dataRow(values), into: &buffer)
        buffer.moveReaderIndex(forwardBy: 5)
        return buffer
    }

    static func values(_ body: ByteBuffer) -> [String?] {
        guard case .dataRow(let values)? = try? BackendMessage.parse(PostgresFrame(type: UInt8(ascii: "D"), body: body)) else { return [] }
        return values.map { $0.map { String(buffer: $0) } }
    }

    static func plan(_ fields: [FieldDescription], sql: String, formats: [Int16]? = nil) -> ResultMaskPlan? {
        ResultMaskPlan(fields: fields, resultFormats: formats, masks: [pii], catalog: catalog,
                       statement: SQLInspector.inspect(sql).statements.first)
    }

    @Test func columnsNamedByTheRuleAreMaskedAndOthersPass() throws {
        let plan = try #require(Self.plan(
            [Self.field("id", column: 1, type: 23), Self.field("email", column: 2), Self.field("note", column: 4)],
            sql: "SELECT id, email, note FROM customers"))
        let masked = try #require(plan.apply(
            to: Self.row([ByteBuffer(string: "7"), ByteBuffer(string: "ada@example.com"), ByteBuffer(string: "ssn 123-45-6789 on file")]),
            masker: Self.masker, allocator: ByteBufferAllocator()))
        let values = Self.values(masked)
        #expect(values[0] == "7")
        #expect(values[1] != "ada@example.com" && values[1]?.hasSuffix(".com") == true)
        #expect(values[2] == "ssn ***-**-6789 on file", "detectors mask what they find inside other text")
    }

    @Test func anAliasDoesNotHideTheColumnsOrigin() throws {
        let plan = try #require(Self.plan([Self.field("e", column: 2)], sql: "SELECT email AS e FROM customers"))
        #expect(plan.columns == [.whole(rule: "pii", strategy: .partial(keep: 4))])
    }

    @Test(arguments: [
        "SELECT lower(email) FROM customers",
        "SELECT c.email || '' FROM customers c",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT c FROM customers c",
        "SELECT x FROM (SELECT * FROM customers) x",
        "WITH t AS (SELECT card_number FROM customers) SELECT upper(card_number) FROM t",
        "SELECT json_build_object('e', email) FROM customers",
        "SELEC garbage",
        "SELECT lower(x) FROM customers AS t(i, n, x)",
        "SELECT query_to_xml('select * from customers', true, false, '')",
    ])
    func computedColumnsFromMaskedOnesAreMaskedWhole(sql: String) throws {
        let plan = try #require(Self.plan([Self.field("?column?", table: 0, column: 0)], sql: sql), "\(sql)")
        #expect(plan.columns == [.whole(rule: "pii", strategy: .partial(keep: 4))], "\(sql)")
    }

    @Test func computedColumnsFromOtherColumnsAreOnlyScanned() throws {
        let plan = try #require(Self.plan([Self.field("count", table: 0, column: 0, type: 20)], sql: "SELECT count(*) FROM customers"))
        #expect(plan.columns == [.detect])
        #expect(plan.apply(to: Self.row([ByteBuffer(string: "50")]), masker: Self.masker, allocator: ByteBufferAllocator()) == nil)
    }

    @Test func aTableTheCatalogDoesNotKnowIsTreatedAsDerived() throws {
        let plan = try #require(Self.plan([Self.field("email", table: 99_999, column: 2)], sql: "SELECT email FROM newer_table"))
        #expect(plan.columns == [.whole(rule: "pii", strategy: .partial(keep: 4))])
    }

    @Test func valuesThatCannotHoldAMaskBecomeNull() throws {
        // A card number stored as bigint, and a masked jsonb value in binary format.
        let plan = try #require(ResultMaskPlan(
            fields: [Self.field("card_number", column: 3, type: 20, format: 1), Self.field("doc", table: 0, column: 0, type: 3802, format: 1)],
            resultFormats: nil, masks: [Self.pii], catalog: Self.catalog, statement: SQLInspector.inspect("SELECT card_number, to_jsonb(c) FROM customers c").statements[0]))
        var card = ByteBuffer()
        card.writeInteger(Int64(4_111_111_111_111_111))
        var jsonb = ByteBuffer()
        jsonb.writeInteger(UInt8(1))
        jsonb.writeString(#"{"email": "ada@example.com"}"#)
        let masked = try #require(plan.apply(to: Self.row([card, jsonb]), masker: Self.masker, allocator: ByteBufferAllocator()))
        guard case .dataRow(let values) = try BackendMessage.parse(PostgresFrame(type: UInt8(ascii: "D"), body: masked)) else {
            Issue.record("not a data row")
            return
        }
        #expect(values[0] == nil)
        var document = try #require(values[1])
        #expect(document.readInteger(as: UInt8.self) == 1, "jsonb keeps its version byte")
        let text = String(buffer: document)
        #expect(text.hasPrefix("\"") && text.hasSuffix("\"") && !text.contains("ada"), "a masked JSON value is a JSON string: \(text)")
    }

    @Test func aNumberADetectorRecognisesIsRemoved() throws {
        let cards = NamedMask(rule: "cards", action: MaskAction(detectors: [.paymentCard]))
        let plan = try #require(ResultMaskPlan(
            fields: [Self.field("n", table: 0, column: 0, type: 1700)], resultFormats: nil, masks: [cards], catalog: nil, statement: nil))
        let masked = try #require(plan.apply(to: Self.row([ByteBuffer(string: "4111111111111111")]), masker: Self.masker, allocator: ByteBufferAllocator()))
        #expect(Self.values(masked) == [nil])
        #expect(plan.apply(to: Self.row([ByteBuffer(string: "42")]), masker: Self.masker, allocator: ByteBufferAllocator()) == nil)
    }

    @Test func aKeyedHashIsNotOfferedOnComputedColumns() throws {
        // `SELECT 'guess'` would otherwise hash any value the agent likes under the gateway's key.
        let hashed = NamedMask(rule: "h", action: MaskAction(columns: ["email"], strategy: .keyedHash))
        let plan = try #require(ResultMaskPlan(
            fields: [Self.field("g", table: 0, column: 0)], resultFormats: nil, masks: [hashed], catalog: Self.catalog,
            statement: SQLInspector.inspect("SELECT 'ada@example.com' AS g, email FROM customers").statements[0]))
        #expect(plan.columns == [.whole(rule: "h", strategy: .redact)])
    }

    @Test func binaryNumbersAreReadForTheDetectorsAndUnreadableValuesGo() throws {
        var card = ByteBuffer()
        for value: Int16 in [4, 3, 0, 0, 4111, 1111, 1111, 1111] { card.writeInteger(value) }
        #expect(BinaryValue.numericText(card) == "4111111111111111")
        var amount = ByteBuffer()
        for value: Int16 in [2, 0, 0, 2, 12, 5000] { amount.writeInteger(value) }
        #expect(BinaryValue.numericText(amount) == "12.50")
        var small = ByteBuffer()
        for value: Int16 in [1, -1, 0x4000, 2, 500] { small.writeInteger(value) }
        #expect(BinaryValue.numericText(small) == "-0.05")
        let cards = NamedMask(rule: "cards", action: MaskAction(detectors: [.paymentCard]))
        let plan = try #require(ResultMaskPlan(
            fields: [Self.field("n", table: 0, column: 0, type: 1700, format: 1), Self.field("a", table: 0, column: 0, type: 1009, format: 1),
                     Self.field("t", table: 0, column: 0, type: 1184, format: 1), Self.field("m", table: 0, column: 0, type: 1700, format: 1)],
            resultFormats: nil, masks: [cards], catalog: nil, statement: nil))
        var stamp = ByteBuffer()
        stamp.writeInteger(Int64(1))
        let masked = try #require(plan.apply(to: Self.row([card, ByteBuffer(string: "array"), stamp, amount]), masker: Self.masker, allocator: ByteBufferAllocator()))
        guard case .dataRow(let values) = try BackendMessage.parse(PostgresFrame(type: UInt8(ascii: "D"), body: masked)) else { return }
        #expect(values[0] == nil, "a card kept as numeric goes")
        #expect(values[1] == nil, "an array the gateway cannot read goes")
        #expect(values[2] == stamp && values[3] == amount, "timestamps and ordinary amounts pass")
    }

    @Test func keyedHashesAreStableSoMaskedValuesStillJoin() throws {
        let hashed = NamedMask(rule: "h", action: MaskAction(columns: ["email"], strategy: .keyedHash))
        let plan = try #require(ResultMaskPlan(
            fields: [Self.field("email", column: 2)], resultFormats: [1], masks: [hashed], catalog: Self.catalog, statement: nil))
        let first = Self.values(try #require(plan.apply(to: Self.row([ByteBuffer(string: "ada@example.com")]), masker: Self.masker, allocator: ByteBufferAllocator())))
        let again = Self.values(try #require(plan.apply(to: Self.row([ByteBuffer(string: "ada@example.com")]), masker: Self.masker, allocator: ByteBufferAllocator())))
        let other = Self.values(try #require(plan.apply(to: Self.row([ByteBuffer(string: "bob@example.com")]), masker: Self.masker, allocator: ByteBufferAllocator())))
        #expect(first == again && first != other)
        #expect(first[0]?.hasPrefix("h:") == true)
    }

    @Test func aRowThatDoesNotFitItsDescriptionPassesNothing() throws {
        let plan = try #require(Self.plan([Self.field("email", column: 2), Self.field("id", column: 1, type: 23)], sql: "SELECT email, id FROM customers"))
        let masked = try #require(plan.apply(to: Self.row([ByteBuffer(string: "ada@example.com")]), masker: Self.masker, allocator: ByteBufferAllocator()))
        #expect(Self.values(masked) == [nil, nil])
    }

    @Test func errorTextsLoseQuotedValuesAndDetectedOnes() {
        let fields = ErrorFields(severity: "ERROR", sqlState: "22P02", message: #"invalid input syntax for type integer: "ada@example.com""#,
                                 detail: "Key (email)=(ada@example.com) already exists.")
        let masked = ErrorMasking.mask(fields, masks: [Self.pii], statementTouchesMaskedColumns: true, masker: Self.masker)
        #expect(masked?.message == #"invalid input syntax for type integer: "[redacted]""#)
        #expect(masked?.detail == "Key (email)=([redacted]) already exists.")
        let ssn = ErrorFields(severity: "ERROR", sqlState: "23505", message: "value 123-45-6789 is taken")
        #expect(ErrorMasking.mask(ssn, masks: [Self.pii], statementTouchesMaskedColumns: false, masker: Self.masker)?.message == "value ***-**-6789 is taken")
        #expect(ErrorMasking.mask(ErrorFields(severity: "ERROR", sqlState: "42P01", message: "relation x does not exist"),
                                  masks: [Self.pii], statementTouchesMaskedColumns: false, masker: Self.masker) == nil)
    }
}

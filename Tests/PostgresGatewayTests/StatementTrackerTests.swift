import NIOCore
import PostgresWire
import Testing

@testable import PostgresGateway

@Suite("Matching responses to statements")
struct StatementTrackerTests {
    let now = ContinuousClock.now

    func statement(_ seq: Int, _ sql: String, formats: [Int16]? = nil) -> StatementTracker.Statement {
        .init(id: seq, started: now, resultFormats: formats)
    }

    func row(_ values: String?...) -> BackendMessage {
        .dataRow(values.map { $0.map { ByteBuffer(string: $0) } })
    }

    func columns(_ names: String...) -> BackendMessage {
        .rowDescription(names.map { FieldDescription(name: $0, dataTypeOID: 25, dataTypeSize: -1) })
    }

    @Test func eachExecuteIsMatchedToItsOwnPortalWhateverTheBindOrder() {
        // Bind P1, Bind P2, Execute P2, Execute P1: the rows of P2 come first and are P2's.
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.bindSent(statement(1, "SELECT name"))
        tracker.bindSent(statement(2, "SELECT email"))
        tracker.executeSent(statement(2, "SELECT email"))
        tracker.executeSent(statement(1, "SELECT name"))
        tracker.syncSent()
        #expect(tracker.receive(.bindComplete, now: now).isEmpty)
        #expect(tracker.receive(.bindComplete, now: now).isEmpty)
        #expect(tracker.frontStatementID == 2)
        _ = tracker.receive(row("ada@example.com"), now: now)
        #expect(tracker.receive(.commandComplete("SELECT 1"), now: now).map(\.statement.id) == [2])
        #expect(tracker.frontStatementID == 1)
        _ = tracker.receive(row("Ada"), now: now)
        #expect(tracker.receive(.commandComplete("SELECT 1"), now: now).map(\.statement.id) == [1])
        #expect(tracker.receive(.readyForQuery(.idle), now: now).isEmpty)
        #expect(tracker.inFlight == 0)
    }

    @Test func aFailedParseSkipsTheQueryBehindItAndTheNextQueryIsPlacedRight() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.parseSent(name: "s1")
        tracker.querySent(statement(5, "SELECT email"))
        tracker.syncSent()
        tracker.querySent(statement(6, "SELECT name"))
        let skipped = tracker.receive(.errorResponse(ErrorFields(severity: "ERROR", sqlState: "42P01", message: "no")), now: now)
        #expect(skipped.map(\.statement.id) == [5] && skipped[0].skipped)
        #expect(tracker.takeEvents().count == 1, "the name the failed Parse defined is reported")
        #expect(tracker.receive(.readyForQuery(.idle), now: now).isEmpty)
        #expect(tracker.frontStatementID == 6)
    }

    @Test func aDescribeIsAnsweredIntoItsBoxAndLeavesTheQueue() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        let box = RowDescriptionBox()
        tracker.parseSent(name: "s1")
        tracker.describeSent(box, injected: true)
        tracker.syncSent()
        _ = tracker.receive(.parseComplete, now: now)
        #expect(tracker.frontDescribe?.injected == true)
        _ = tracker.receive(.parameterDescription([]), now: now)
        _ = tracker.receive(columns("email"), now: now)
        #expect(box.fields?.map(\.name) == ["email"])
        #expect(tracker.frontDescribe == nil)
        _ = tracker.receive(.readyForQuery(.idle), now: now)
        #expect(tracker.inFlight == 0)
    }

    @Test func aFailedBindIsRecordedOnceWithItsError() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.bindSent(statement(1, "SELECT $1::int"))
        tracker.executeSent(statement(1, "SELECT $1::int"))
        tracker.syncSent()
        let finished = tracker.receive(.errorResponse(ErrorFields(severity: "ERROR", sqlState: "22P02", message: "bad")), now: now)
        #expect(finished.count == 1 && finished[0].sqlState == "22P02")
        #expect(tracker.receive(.readyForQuery(.idle), now: now).isEmpty)
    }

    @Test func aCloseIsReportedWhenTheServerConfirmsIt() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.closeSent(.statement, "s1")
        tracker.syncSent()
        _ = tracker.receive(.closeComplete, now: now)
        guard case .closed(.statement, "s1")? = tracker.takeEvents().first else {
            Issue.record("no close event")
            return
        }
    }

    @Test func aSimpleQueryWithSeveralStatementsEndsAtReadyForQuery() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.querySent(statement(1, "SELECT 1; SELECT 2"))
        #expect(tracker.receive(columns("a"), now: now).isEmpty)
        #expect(tracker.receive(row("1"), now: now).isEmpty)
        #expect(tracker.receive(.commandComplete("SELECT 1"), now: now).isEmpty)
        #expect(tracker.receive(row("2"), now: now).isEmpty)
        #expect(tracker.receive(.commandComplete("SELECT 1"), now: now).isEmpty)
        let done = tracker.receive(.readyForQuery(.idle), now: now)
        #expect(done.count == 1)
        #expect(done.first?.commandTags == ["SELECT 1", "SELECT 1"])
        #expect(done.first?.rows == 2)
        #expect(tracker.inFlight == 0)
    }

    @Test func eachStatementOfASplitQueryGetsItsOwnOutcome() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.querySent([statement(1, "SELECT 1"), statement(2, "UPDATE t SET x = 1"), statement(3, "SELECT 3")])
        _ = tracker.receive(columns("a"), now: now)
        _ = tracker.receive(row("1"), now: now)
        let first = tracker.receive(.commandComplete("SELECT 1"), now: now)
        #expect(first.map(\.statement.id) == [1])
        #expect(first.first?.recordedRows == [["1"]] && first.first?.columns == ["a"])
        #expect(tracker.receive(.commandComplete("UPDATE 4"), now: now).map(\.commandTags) == [["UPDATE 4"]])
        _ = tracker.receive(columns("c"), now: now)
        _ = tracker.receive(row("3"), now: now)
        #expect(tracker.receive(.commandComplete("SELECT 1"), now: now).isEmpty, "the last one ends at ReadyForQuery")
        let last = tracker.receive(.readyForQuery(.idle), now: now)
        #expect(last.map(\.statement.id) == [3] && last.first?.recordedRows == [["3"]])
        #expect(tracker.inFlight == 0)
    }

    @Test func anErrorInASplitQuerySkipsTheRestOfIt() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.querySent([statement(1, "SELECT 1/0"), statement(2, "DELETE FROM t"), statement(3, "SELECT 3")])
        let failed = tracker.receive(.errorResponse(ErrorFields(severity: "ERROR", sqlState: "22012", message: "division by zero")), now: now)
        #expect(failed.map(\.statement.id) == [1, 2])
        #expect(failed[0].sqlState == "22012" && !failed[0].skipped)
        #expect(failed[1].skipped, "the DELETE never ran")
        let last = tracker.receive(.readyForQuery(.idle), now: now)
        #expect(last.map(\.statement.id) == [3] && last[0].skipped)
        #expect(tracker.inFlight == 0)
    }

    @Test func anErrorInTheLastStatementOfASplitQueryIsItsOwn() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.querySent([statement(1, "SELECT 1"), statement(2, "SELECT 1/0")])
        #expect(tracker.receive(.commandComplete("SELECT 1"), now: now).map(\.statement.id) == [1])
        _ = tracker.receive(.errorResponse(ErrorFields(severity: "ERROR", sqlState: "22012", message: "x")), now: now)
        let last = tracker.receive(.readyForQuery(.idle), now: now)
        #expect(last.map(\.statement.id) == [2] && last[0].sqlState == "22012" && !last[0].skipped)
    }

    @Test func anErrorInAPipelineSkipsEveryExecuteUntilSync() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.executeSent(statement(1, "INSERT 1"))
        tracker.executeSent(statement(2, "SELECT 1/0"))
        tracker.executeSent(statement(3, "INSERT 3"))
        tracker.syncSent()
        tracker.executeSent(statement(4, "SELECT 4"))
        tracker.syncSent()

        #expect(tracker.receive(.commandComplete("INSERT 0 1"), now: now).map(\.statement.id) == [1])
        let failed = tracker.receive(.errorResponse(ErrorFields(severity: "ERROR", sqlState: "22012", message: "division by zero")), now: now)
        #expect(failed.map(\.statement.id) == [2, 3])
        #expect(failed[0].sqlState == "22012" && !failed[0].skipped)
        #expect(failed[1].skipped)
        #expect(tracker.receive(.readyForQuery(.idle), now: now).isEmpty)
        #expect(tracker.receive(.commandComplete("SELECT 1"), now: now).map(\.statement.id) == [4])
        #expect(tracker.receive(.readyForQuery(.idle), now: now).isEmpty)
        #expect(tracker.inFlight == 0)
    }

    @Test func aQuerySentAfterAnExtendedErrorIsSkippedUntilSync() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.executeSent(statement(1, "SELECT 1/0"))
        tracker.querySent(statement(2, "SELECT 2"))
        tracker.syncSent()
        tracker.querySent(statement(3, "SELECT 3"))
        let failed = tracker.receive(.errorResponse(ErrorFields(severity: "ERROR", sqlState: "22012", message: "x")), now: now)
        #expect(failed.map(\.statement.id) == [1, 2] && failed[1].skipped)
        #expect(tracker.receive(.readyForQuery(.idle), now: now).isEmpty)
        _ = tracker.receive(.commandComplete("SELECT 1"), now: now)
        #expect(tracker.receive(.readyForQuery(.idle), now: now).map(\.statement.id) == [3])
        #expect(tracker.inFlight == 0)
    }

    @Test func syncsSentWithACopyExecuteGetNoReadyForQuery() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        // libpq: Parse/Bind/Execute/Sync, then CopyData, CopyDone, Sync.
        tracker.executeSent(statement(1, "COPY t FROM STDIN"))
        tracker.syncSent()
        #expect(tracker.receive(.copyInResponse(CopyResponse(overallFormat: 0, columnFormats: [0])), now: now).isEmpty)
        tracker.syncSent()
        #expect(tracker.receive(.commandComplete("COPY 2"), now: now).map(\.statement.id) == [1])
        #expect(tracker.receive(.readyForQuery(.idle), now: now).isEmpty)
        #expect(tracker.inFlight == 0)
        tracker.querySent(statement(2, "SELECT 1"))
        _ = tracker.receive(.commandComplete("SELECT 1"), now: now)
        #expect(tracker.receive(.readyForQuery(.idle), now: now).map(\.statement.id) == [2])
    }

    @Test func rowsBeyondTheCapAreCountedNotKept() {
        var tracker = StatementTracker(maxRecordedRows: 2)
        tracker.executeSent(statement(1, "SELECT n"))
        _ = tracker.receive(columns("n"), now: now)
        for n in 0..<5 {
            if tracker.wantsRowValues {
                _ = tracker.receive(row("\(n)"), now: now)
            } else {
                tracker.countRow()
            }
        }
        let done = tracker.receive(.commandComplete("SELECT 5"), now: now)
        #expect(done.first?.rows == 5)
        #expect(done.first?.recordedRows == [["0"], ["1"]])
    }

    @Test func aSuspendedPortalFinishesItsExecute() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.executeSent(statement(1, "SELECT n"))
        _ = tracker.receive(row("1"), now: now)
        let done = tracker.receive(.portalSuspended, now: now)
        #expect(done.first?.suspended == true && done.first?.rows == 1)
    }

    @Test func binaryResultsAreRecordedAsHexAndNullsStayNull() {
        var tracker = StatementTracker(maxRecordedRows: 10)
        tracker.executeSent(statement(1, "SELECT id, name", formats: [1]))
        _ = tracker.receive(columns("id", "name"), now: now)
        _ = tracker.receive(.dataRow([ByteBuffer(bytes: [0, 0, 0, 7]), nil]), now: now)
        let done = tracker.receive(.commandComplete("SELECT 1"), now: now)
        #expect(done.first?.recordedRows == [["\\x00000007", nil]])
    }

    @Test func binaryParametersOfCommonTypesAreReadable() {
        #expect(BinaryValue.text(ByteBuffer(bytes: [0, 7]), typeOID: 21) == "7")
        #expect(BinaryValue.text(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFE]), typeOID: 23) == "-2")
        #expect(BinaryValue.text(ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 1, 0]), typeOID: 20) == "256")
        #expect(BinaryValue.text(ByteBuffer(bytes: [1]), typeOID: 16) == "true")
        #expect(BinaryValue.text(ByteBuffer(string: "héllo"), typeOID: 25) == "héllo")
        // A size that does not fit the type is not trusted.
        #expect(BinaryValue.text(ByteBuffer(bytes: [0, 7, 1]), typeOID: 21) == "\\x000701")
    }

    @Test func theIntentCommentIsFound() {
        #expect(ClientSession.intent(in: "  /* intent: find late orders */ SELECT 1") == "find late orders")
        #expect(ClientSession.intent(in: "/* just a comment */ SELECT 1") == nil)
        #expect(ClientSession.intent(in: "SELECT 1 /* intent: too late */") == nil)
        // Comments that open and close on shared characters must not trap.
        #expect(ClientSession.intent(in: "/*/ select 1") == nil)
        #expect(ClientSession.intent(in: "/*") == nil)
        #expect(ClientSession.intent(in: "/**/") == nil)
        #expect(ClientSession.intent(in: "/*intent:x*/") == "x")
    }
}

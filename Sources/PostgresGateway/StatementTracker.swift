import Foundation
import NIOCore
import PostgresWire

/// Matches the server's responses to the statements that caused them, so each statement's outcome
/// (tag, rows, SQLSTATE, the first rows) can be recorded. Pure: fed backend messages in order, it
/// returns the statements they finished. The server answers strictly in order, and after an error
/// in the extended protocol it skips everything up to the next Sync; this mirrors both rules.
struct StatementTracker {
    struct Statement: Sendable {
        /// Numbers the session's statements. Responses can finish a statement before its request
        /// event is committed (an error for a Parse sent ahead of the Execute), so the event's
        /// sequence number is joined to the outcome by this id, not carried here.
        var id: Int
        var started: ContinuousClock.Instant
        /// Result formats the client asked for in Bind (extended protocol); they decide how rows
        /// are encoded, whatever a statement-level Describe said.
        var resultFormats: [Int16]? = nil
        /// What the policy said about it (row limit, the inspected statement).
        var controls: StatementControls? = nil
    }

    struct Outcome: Sendable {
        var statement: Statement
        var commandTags: [String] = []
        var rows: Int64 = 0
        /// COPY FROM STDIN data the client sent for this statement.
        var copiedBytes: Int64 = 0
        var columns: [String] = []
        /// 0 text, 1 binary, per column, from the RowDescription.
        var columnFormats: [Int16] = []
        var recordedRows: [[String?]] = []
        /// The same first rows before masking, when a mask rule lets the trail keep them sealed.
        var unmaskedRows: [[String?]]?
        var sqlState: String?
        var errorMessage: String?
        /// True when the server never ran it (an earlier error in the same pipeline).
        var skipped = false
        var suspended = false
        var finished: ContinuousClock.Instant?
    }

    /// What the server owes an answer for, one entry per frontend message that gets one, in order.
    private enum Entry {
        /// A simple Query, or the last statement of one that holds several: finished by ReadyForQuery.
        case simpleQuery(Outcome)
        /// A statement of a multi-statement simple Query other than the last: finished by its own
        /// CommandComplete (or an error, after which the server runs none of the rest).
        case queryPart(Outcome)
        /// Parse: ParseComplete. `statement` is set for a refused statement's stand-in, whose
        /// error is the statement's outcome; `name` when the Parse defined a name the session
        /// keeps (forgotten again if the server refuses the Parse).
        case parse(Outcome?, name: String?)
        /// Bind: BindComplete. An error is the outcome of the statement it binds.
        case bind(Outcome)
        /// Describe: ParameterDescription (for a statement) and RowDescription or NoData.
        case describe(RowDescriptionBox?, injected: Bool)
        case execute(Outcome)
        /// Close: CloseComplete; the session forgets the statement or portal only then.
        case close(DescribeTarget, String)
        case sync
    }

    let maxRecordedRows: Int
    private var queue: [Entry] = []
    private var head = 0

    init(maxRecordedRows: Int) {
        self.maxRecordedRows = maxRecordedRows
    }

    var inFlight: Int { queue.count - head }

    mutating func querySent(_ statement: Statement) {
        queue.append(.simpleQuery(Outcome(statement: statement)))
    }

    /// One simple Query holding these statements, in order (as the SQL parser split it).
    mutating func querySent(_ statements: [Statement]) {
        guard let last = statements.last else { return }
        for statement in statements.dropLast() {
            queue.append(.queryPart(Outcome(statement: statement)))
        }
        queue.append(.simpleQuery(Outcome(statement: last)))
    }

    mutating func parseSent(refused statement: Statement? = nil, name: String? = nil) {
        queue.append(.parse(statement.map { Outcome(statement: $0) }, name: name))
    }

    mutating func bindSent(_ statement: Statement) {
        queue.append(.bind(Outcome(statement: statement)))
    }

    mutating func describeSent(_ description: RowDescriptionBox?, injected: Bool) {
        queue.append(.describe(description, injected: injected))
    }

    mutating func executeSent(_ statement: Statement) {
        queue.append(.execute(Outcome(statement: statement)))
    }

    mutating func closeSent(_ target: DescribeTarget, _ name: String) {
        queue.append(.close(target, name))
    }

    mutating func syncSent() {
        queue.append(.sync)
    }

    /// Whether rows of the statement now running are still wanted in full (else only counted).
    var wantsRowValues: Bool {
        switch front {
        case .simpleQuery(let outcome), .queryPart(let outcome), .execute(let outcome): outcome.recordedRows.count < maxRecordedRows
        default: false
        }
    }

    /// Records an error on the statement being answered without the server having failed (a
    /// result the gateway stopped at a row limit).
    mutating func markFailed(sqlState: String, message: String) {
        update { outcome in
            outcome.sqlState = sqlState
            outcome.errorMessage = message
        }
    }

    /// Counts COPY FROM STDIN data toward the statement being run (the one in copy-in mode).
    mutating func copyDataSent(bytes: Int) {
        update { $0.copiedBytes += Int64(bytes) }
    }

    /// Counts a DataRow without decoding it, once enough rows have been kept.
    mutating func countRow() {
        update { $0.rows += 1 }
    }

    /// What the session learns from the server's answers besides outcomes.
    enum Event {
        /// A Parse the server refused had defined this name: it does not exist.
        case parseFailed(name: String)
        case closed(DescribeTarget, String)
        /// A Close the server skipped after an error: nothing was closed.
        case closeSkipped(DescribeTarget, String)
    }

    private(set) var events: [Event] = []

    mutating func takeEvents() -> [Event] {
        defer { events.removeAll() }
        return events
    }

    mutating func receive(_ message: BackendMessage, now: ContinuousClock.Instant) -> [Outcome] {
        switch message {
        case .parseComplete:
            if case .parse = front { head += 1 }
        case .bindComplete:
            if case .bind = front { head += 1 }
        case .closeComplete:
            if case .close(let target, let name) = front {
                events.append(.closed(target, name))
                head += 1
            }
        case .parameterDescription:
            break
        case .rowDescription(let fields):
            if case .describe(let box, _) = front {
                box?.fields = fields
                head += 1
                return []
            }
            update { outcome in
                outcome.columns = fields.map(\.name)
                switch outcome.statement.resultFormats {
                case nil: outcome.columnFormats = fields.map(\.formatCode)
                case let formats? where formats.count == 1: outcome.columnFormats = Array(repeating: formats[0], count: fields.count)
                case let formats?: outcome.columnFormats = formats
                }
            }
        case .noData:
            if case .describe(let box, _) = front {
                box?.fields = []
                head += 1
            }
        case .dataRow(let values):
            let maxRecordedRows = self.maxRecordedRows
            update { outcome in
                outcome.rows += 1
                if outcome.recordedRows.count < maxRecordedRows {
                    let formats = outcome.columnFormats
                    outcome.recordedRows.append(values.enumerated().map { index, value in
                        value.map { Self.text($0, binary: index < formats.count && formats[index] == 1) }
                    })
                }
            }
        case .commandComplete(let tag):
            switch front {
            case .simpleQuery: update { $0.commandTags.append(tag) }
            case .queryPart: return finishQueryPart(now: now) { $0.commandTags.append(tag) }
            default: return finishExecute(now: now) { $0.commandTags.append(tag) }
            }
        case .emptyQueryResponse:
            if case .execute = front { return finishExecute(now: now) { _ in } }
            if case .queryPart = front { return finishQueryPart(now: now) { _ in } }
        case .portalSuspended:
            return finishExecute(now: now) { $0.suspended = true }
        case .errorResponse(let fields):
            return receiveError(fields, now: now)
        case .copyInResponse:
            // During COPY FROM STDIN the server ignores Sync; the Syncs a client sent along with the
            // Execute that started the copy will get no ReadyForQuery of their own.
            if case .execute = front {
                while head + 1 < queue.count, case .sync = queue[head + 1] {
                    queue.remove(at: head + 1)
                }
            }
        case .readyForQuery:
            var finished: [Outcome] = []
            // Ends one simple query, or one Sync (with anything before it the server never answered).
            while head < queue.count {
                let entry = queue[head]
                head += 1
                switch entry {
                case .simpleQuery(var outcome):
                    outcome.finished = now
                    finished.append(outcome)
                    compact()
                    return finished
                case .queryPart(var outcome):
                    // The server answered fewer statements than the parser found.
                    outcome.skipped = outcome.commandTags.isEmpty && outcome.sqlState == nil
                    outcome.finished = now
                    finished.append(outcome)
                case .execute(var outcome), .bind(var outcome), .parse(var outcome?, _):
                    outcome.skipped = true
                    outcome.finished = now
                    finished.append(outcome)
                case .parse, .describe, .close:
                    continue
                case .sync:
                    compact()
                    return finished
                }
            }
            compact()
            return finished
        default:
            break
        }
        return []
    }

    private mutating func receiveError(_ fields: ErrorFields, now: ContinuousClock.Instant) -> [Outcome] {
        func failed(_ outcome: Outcome) -> Outcome {
            var outcome = outcome
            outcome.sqlState = fields.sqlState
            outcome.errorMessage = fields.message
            outcome.finished = now
            return outcome
        }
        var finished: [Outcome] = []
        // A failed Parse the session keeps no outcome for: its error is the outcome of the
        // statement it was sent for (the Bind or Execute behind it).
        var carried: ErrorFields?
        switch front {
        case .simpleQuery:
            update { outcome in
                outcome.sqlState = fields.sqlState
                outcome.errorMessage = fields.message
            }
            return []
        case .queryPart(let outcome):
            finished.append(failed(outcome))
            head += 1
            // The server runs none of the query's later statements.
            while case .queryPart(var skipped) = front {
                skipped.skipped = true
                skipped.finished = now
                finished.append(skipped)
                head += 1
            }
            update { $0.skipped = true }
            return finished
        case .parse(let outcome, let name):
            if let outcome { finished.append(failed(outcome)) } else { carried = fields }
            if let name { events.append(.parseFailed(name: name)) }
            head += 1
        case .bind(let outcome), .execute(let outcome):
            finished.append(failed(outcome))
            head += 1
        case .describe, .close:
            head += 1
        case .sync, nil:
            // Not an answer to anything the session sent (a FATAL before closing, say).
            return []
        }
        // The server now discards every message until Sync, simple queries included, and answers
        // none of them: those statements never ran. A statement already finished with the error
        // (its Bind failed) is not recorded again as skipped.
        while let entry = front {
            switch entry {
            case .execute(var skipped), .bind(var skipped), .simpleQuery(var skipped), .queryPart(var skipped), .parse(var skipped?, _):
                let isExtended = switch entry {
                case .bind, .execute: true
                default: false
                }
                if carried != nil && isExtended {
                    finished.append(failed(skipped))
                    carried = nil
                } else if !finished.contains(where: { $0.statement.id == skipped.statement.id }) {
                    skipped.skipped = true
                    skipped.finished = now
                    finished.append(skipped)
                }
                head += 1
                continue
            case .parse(nil, let name):
                if let name { events.append(.parseFailed(name: name)) }
                head += 1
                continue
            case .describe:
                head += 1
                continue
            case .close(let target, let name):
                events.append(.closeSkipped(target, name))
                head += 1
                continue
            case .sync:
                break
            }
            break
        }
        return finished
    }

    private var front: Entry? { head < queue.count ? queue[head] : nil }

    /// The statement the server's next response belongs to.
    var frontStatement: Statement? {
        switch front {
        case .simpleQuery(let outcome), .queryPart(let outcome), .execute(let outcome): outcome.statement
        default: nil
        }
    }

    var frontStatementID: Int? { frontStatement?.id }

    /// The refused statement whose stand-in the server is answering, if it is one.
    var frontRefusalID: Int? {
        switch front {
        case .parse(let outcome?, _): outcome.statement.id
        case .simpleQuery(let outcome), .queryPart(let outcome), .bind(let outcome): outcome.statement.id
        default: nil
        }
    }

    /// True when the server is answering a simple Query.
    var frontIsSimpleQuery: Bool {
        switch front {
        case .simpleQuery, .queryPart: true
        default: false
        }
    }

    /// True when the statement now answered is an extended-protocol execution.
    var frontIsExecute: Bool {
        if case .execute = front { return true }
        return false
    }

    /// The Describe the server is answering: whose columns, and whether the gateway sent it.
    var frontDescribe: (description: RowDescriptionBox?, injected: Bool)? {
        if case .describe(let box, let injected) = front { return (box, injected) }
        return nil
    }

    private mutating func update(_ change: (inout Outcome) -> Void) {
        guard head < queue.count else { return }
        switch queue[head] {
        case .simpleQuery(var outcome):
            change(&outcome)
            queue[head] = .simpleQuery(outcome)
        case .queryPart(var outcome):
            change(&outcome)
            queue[head] = .queryPart(outcome)
        case .execute(var outcome):
            change(&outcome)
            queue[head] = .execute(outcome)
        default:
            break
        }
    }

    private mutating func finishQueryPart(now: ContinuousClock.Instant, _ change: (inout Outcome) -> Void) -> [Outcome] {
        guard case .queryPart(var outcome) = front else { return [] }
        change(&outcome)
        outcome.finished = now
        head += 1
        return [outcome]
    }

    private mutating func finishExecute(now: ContinuousClock.Instant, _ change: (inout Outcome) -> Void) -> [Outcome] {
        guard case .execute(var outcome) = front else { return [] }
        change(&outcome)
        outcome.finished = now
        head += 1
        return [outcome]
    }

    private mutating func compact() {
        if head > 64 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
    }

    /// Longest value kept in the trail; a 1 GB bytea must not be turned into a 2 GB string.
    static let maxValueBytes = 1024

    /// A column value as the trail shows it: text as is, binary-format values as hex, either cut at
    /// `maxValueBytes` with the full length noted.
    static func text(_ buffer: ByteBuffer, binary: Bool) -> String {
        let length = buffer.readableBytes
        let kept = buffer.getSlice(at: buffer.readerIndex, length: min(length, binary ? maxValueBytes / 2 : maxValueBytes)) ?? ByteBuffer()
        var text = binary ? BinaryValue.hex(kept) : String(buffer: kept)
        if kept.readableBytes < length { text += "…(\(length) bytes)" }
        return text
    }
}

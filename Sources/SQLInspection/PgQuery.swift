import CPgQuery

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The few libpg_query calls this module makes. Each copies what it needs out of the C result and
/// frees the result before returning, on every path: libpg_query allocates its results with
/// malloc and a per-thread memory context, and a leak here would be one per statement the gateway
/// sees.
enum PgQuery {
    /// What PostgreSQL's parser said when it refused the input.
    struct ParserError: Error, Sendable, Hashable {
        var message: String
        /// As PostgreSQL reports it: 1-based, in characters of the input; 0 when unknown.
        var cursorPosition: Int
    }

    /// The parse tree as libpg_query prints it: JSON of PostgreSQL's raw parse nodes.
    static func parseTreeJSON(_ sql: String) -> Result<[UInt8], ParserError> {
        let result = pg_query_parse(sql)
        defer { pg_query_free_parse_result(result) }
        if let error = result.error {
            return .failure(ParserError(error.pointee))
        }
        guard let tree = result.parse_tree else {
            return .failure(ParserError(message: "libpg_query returned no parse tree", cursorPosition: 0))
        }
        // Copied out as bytes: the JSON reader wants bytes, and the C buffer dies with the result.
        return .success(Array(UnsafeRawBufferPointer(start: tree, count: strlen(tree))))
    }

    /// libpg_query's fingerprint: equal for statements that differ only in constants, comments
    /// and whitespace.
    static func fingerprint(_ sql: String) -> Result<String, ParserError> {
        let result = pg_query_fingerprint(sql)
        defer { pg_query_free_fingerprint_result(result) }
        if let error = result.error {
            return .failure(ParserError(error.pointee))
        }
        guard let text = result.fingerprint_str else {
            return .failure(ParserError(message: "libpg_query returned no fingerprint", cursorPosition: 0))
        }
        return .success(String(cString: text))
    }
}

extension PgQuery.ParserError {
    init(_ error: PgQueryError) {
        self.init(
            message: error.message.map { String(cString: $0) } ?? "syntax error",
            cursorPosition: Int(error.cursorpos)
        )
    }
}

/// Runs work that recurses as deep as the parse tree on a thread with a stack big enough for it.
///
/// libpg_query prints its parse tree with one C recursion per tree level, and PostgreSQL's grammar
/// builds left-deep trees from operator chains without bound: `SELECT 1+1+1+…` nests one level per
/// two bytes. Measured here (libpg_query 15-4.0, x86-64), printing costs about 128 bytes of stack
/// per level, so 64 bytes per input byte: 8 MiB of stack overflows at about 130 KiB of `+1`, and a
/// 512 KiB thread at about 8 KiB. Reading the JSON and walking the tree recurse once or twice per
/// JSON level too, with large frames in debug builds (about 450 KiB at the 500-level limit). A
/// stack overflow is a crash of the whole gateway, so work that could need more than a small,
/// always-available stack runs on a thread of its own: parsing by the input's size, reading and
/// walking by the depth of the JSON (measured first, by a scan that does not recurse).
///
/// Work kept on the caller's thread needs at most about 128 KiB of stack in a debug build
/// (measured; a test runs the worst cases on a 256 KiB thread): inside the 512 KiB that the
/// smallest common thread stacks have (Darwin's secondary threads; Linux threads get 8 MiB).
enum DeepWork {
    /// Inputs up to this many bytes are parsed on the caller's thread: at most 64 KiB of parser
    /// stack.
    static let inlineLimit = 1024

    /// Trees up to this JSON depth are read and walked on the caller's thread. Ordinary
    /// statements are far shallower: a join with a subquery is about 20, three nested subqueries
    /// in a WITH query about 35.
    static let inlineTreeDepth = 128

    /// Stack for reading and walking a tree deeper than `inlineTreeDepth` (and at most
    /// `SQLInspector.maximumTreeDepth`): several times what a debug build needs at the limit.
    static let treeStackBytes = 4 * 1024 * 1024

    /// Stack for parsing on a dedicated thread: twice the measured worst case per input byte,
    /// plus room for libpg_query's own frames. Only touched pages cost memory; the rest is
    /// address space.
    static func stackBytes(forInputBytes count: Int) -> Int {
        let wanted = 256 * 1024 + 128 * count
        let granule = 64 * 1024
        return (wanted + granule - 1) / granule * granule
    }

    /// Runs libpg_query work on the calling thread when the input is small, otherwise on a new
    /// thread with a stack sized for the input, waiting for it. Returns nil only when no such
    /// thread could be started (the caller treats that as "not understood").
    static func run<Value>(inputBytes: Int, _ body: () -> Value) -> Value? {
        if inputBytes <= inlineLimit {
            return body()
        }
        return onNewThread(stackBytes: stackBytes(forInputBytes: inputBytes), body)
    }

    /// Runs the reading and walking of a tree of JSON depth `treeDepth` on the calling thread
    /// when it is shallow, otherwise on a new thread with `treeStackBytes`.
    static func run<Value>(treeDepth: Int, _ body: () -> Value) -> Value? {
        if treeDepth <= inlineTreeDepth {
            return body()
        }
        return onNewThread(stackBytes: treeStackBytes, body)
    }

    /// Runs `body` on a new thread with `stackBytes` of stack and waits for it; nil when the
    /// thread could not be started.
    static func onNewThread<Value>(stackBytes: Int, _ body: () -> Value) -> Value? {
        withoutActuallyEscaping(body) { body in
            let job = ThreadJob<Value>(body)
            return job.runOnNewThread(stackBytes: stackBytes) ? job.result : nil
        }
    }
}

/// A body and its result, handed to a new thread through an opaque pointer. Unchecked Sendable:
/// the body runs exactly once, on the new thread, while the creating thread waits in
/// `pthread_join`, which orders the write of `result` before the read.
private final class ThreadJob<Value>: @unchecked Sendable {
    private let body: () -> Value
    private(set) var result: Value?

    init(_ body: @escaping () -> Value) {
        self.body = body
    }

    func execute() {
        result = body()
    }

    /// Starts the thread and joins it. False when the thread could not be created.
    func runOnNewThread(stackBytes: Int) -> Bool {
        var attributes = pthread_attr_t()
        guard pthread_attr_init(&attributes) == 0 else { return false }
        defer { pthread_attr_destroy(&attributes) }
        guard pthread_attr_setstacksize(&attributes, stackBytes) == 0 else { return false }

        // Retained until after the join, so the thread never sees a freed box.
        let context = Unmanaged.passRetained(ThreadJobBox(self)).toOpaque()
        defer { Unmanaged<ThreadJobBox>.fromOpaque(context).release() }

        #if canImport(Darwin)
        var thread: pthread_t?
        #else
        var thread = pthread_t()
        #endif
        let created = pthread_create(&thread, &attributes, { raw in
            #if canImport(Darwin)
            let context = raw
            #else
            guard let context = raw else { return nil }
            #endif
            Unmanaged<ThreadJobBox>.fromOpaque(context).takeUnretainedValue().run()
            return nil
        }, context)
        guard created == 0 else { return false }
        #if canImport(Darwin)
        guard let thread else { return false }
        #endif
        pthread_join(thread, nil)
        return true
    }
}

/// Type-erases a `ThreadJob` so the C entry point (which cannot be generic) can run it.
private final class ThreadJobBox {
    let run: () -> Void

    init<Value>(_ job: ThreadJob<Value>) {
        run = { job.execute() }
    }
}

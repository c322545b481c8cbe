import SQLInspection
import Testing

/// Mutated SQL must never trap, and whatever comes back must keep the promises a policy relies on.
@Suite("SQL inspector: mutated input")
struct FuzzTests {
    static let seeds = [
        "WITH x AS (DELETE FROM s.t WHERE a = 'q''uote' RETURNING *) SELECT * FROM x, u WHERE b IN (SELECT f(c) FROM v)",
        "COPY (SELECT * FROM t) TO PROGRAM 'gzip > /tmp/x'; SET ROLE admin; EXPLAIN ANALYZE UPDATE t SET a = 1",
        "SELECT $t$ body ; $t$, E'\\'', U&'\\0041', \"Quoted\".\"Name\" FROM db.s.t /* /* nested */ */ -- line",
        "PREPARE p (int) AS INSERT INTO a SELECT * FROM b WHERE id = $1; EXECUTE p(1); DO $$ BEGIN END $$",
        "SELECT pg_read_file('/etc/passwd'), set_config('role', 'x', false), dblink_exec('c', 'DROP TABLE t')",
    ]
    /// Bytes that matter to SQL's lexer and grammar.
    static let alphabet = Array("();,'\"$\\/*-+ \n\tSELECTFROMWHEREDELETEWITHAS_01é".unicodeScalars)

    @Test func mutatedStatementsKeepTheInvariants() {
        var generator = SplitMix64(seed: 0x5EED_5A1)
        for round in 0..<3_000 {
            var scalars = Array(Self.seeds[round % Self.seeds.count].unicodeScalars)
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                let position = Int.random(in: 0...scalars.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0:
                    scalars.insert(Self.alphabet.randomElement(using: &generator) ?? " ", at: position)
                case 1 where position < scalars.count:
                    scalars.remove(at: position)
                default:
                    let length = Int.random(in: 0...min(8, scalars.count - min(position, scalars.count)), using: &generator)
                    scalars.insert(contentsOf: scalars[min(position, scalars.count - length)...].prefix(length), at: position)
                }
            }
            var sql = ""
            sql.unicodeScalars.append(contentsOf: scalars)
            check(sql)
        }
    }

    func check(_ sql: String) {
        let inspection = SQLInspector.inspect(sql)
        let byteCount = sql.utf8.count
        if inspection.failure != nil {
            #expect(inspection.statements.map(\.kind) == [.unknown], "\(sql)")
            #expect(inspection.writes, "\(sql)")
        }
        for statement in inspection.statements {
            #expect(statement.utf8Range.lowerBound >= 0 && statement.utf8Range.upperBound <= byteCount, "\(sql)")
            if statement.kind == .unknown || statement.relations.contains(where: { $0.access == .write }) {
                #expect(statement.writes, "\(sql)")
            }
            #expect(Set(statement.dangerousFunctions).isSubset(of: statement.functions), "\(sql)")
            #expect(statement.flags.contains(.dangerousFunction) == !statement.dangerousFunctions.isEmpty, "\(sql)")
        }
    }
}

/// A small deterministic generator, so a failure names a reproducible input.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

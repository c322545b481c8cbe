import NIOCore
import Testing

@testable import PostgresWire

/// Random and mutated input must produce messages or `PostgresWireError`s, never a trap.
@Suite struct FuzzTests {
    static let types = Array("QPBDECSHXpdcfFRKZTNE123nsItGHWAv?".utf8) + [0, 0xFF]

    func sample(_ rng: inout SplitMix64) -> [UInt8] {
        // Mostly tiny values, so counts and lengths often land near the body's real size.
        let length = Int.random(in: 0...24, using: &rng)
        return (0..<length).map { _ in
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: 0
            case 1: UInt8.random(in: 0...3, using: &rng)
            case 2: 0xFF
            default: UInt8.random(in: .min ... .max, using: &rng)
            }
        }
    }

    @Test func randomBodiesNeverTrap() {
        var rng = SplitMix64(seed: 0x5EED_0001)
        var parsed = 0
        for _ in 0..<20_000 {
            let type = Self.types.randomElement(using: &rng) ?? 0
            let f = PostgresFrame(type: type, body: ByteBuffer(bytes: sample(&rng)))
            if (try? FrontendMessage.parse(f)) != nil { parsed += 1 }
            if (try? BackendMessage.parse(f)) != nil { parsed += 1 }
            _ = try? FrontendMessage.parsePasswordMessage(f.body)
            _ = try? FrontendMessage.parseSASLInitialResponse(f.body)
        }
        #expect(parsed > 0)
    }

    @Test func mutatedValidMessagesNeverTrap() throws {
        var rng = SplitMix64(seed: 0x5EED_0002)
        var valid: [PostgresFrame] = []
        for message in RoundTripTests.frontendMessages {
            valid.append(try singleFrame { PostgresEncoder.frontend(message, into: &$0) })
        }
        for message in RoundTripTests.backendMessages {
            valid.append(try singleFrame { PostgresEncoder.backend(message, into: &$0) })
        }
        for _ in 0..<20_000 {
            guard var f = valid.randomElement(using: &rng) else { continue }
            var bytes = Array(f.body.readableBytesView)
            switch Int.random(in: 0..<3, using: &rng) {
            case 0 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: .min ... .max, using: &rng)
            case 1 where !bytes.isEmpty:
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng))
            default:
                bytes.append(contentsOf: sample(&rng))
            }
            f.body = ByteBuffer(bytes: bytes)
            _ = try? FrontendMessage.parse(f)
            _ = try? BackendMessage.parse(f)
        }
    }

    @Test func randomStreamsNeverTrapTheDecoders() {
        var rng = SplitMix64(seed: 0x5EED_0003)
        for _ in 0..<5_000 {
            var bytes = sample(&rng)
            // Plant plausible headers so the decoders get past the length checks sometimes.
            if Bool.random(using: &rng) {
                bytes = [Self.types.randomElement(using: &rng) ?? 0] + be32(Int32.random(in: -8...40, using: &rng)) + bytes
            }
            var frameDecoder = PostgresFrameDecoder(maximumFrameLength: 64)
            var input = ByteBuffer(bytes: bytes)
            while let frame = try? frameDecoder.decode(buffer: &input) {
                _ = try? BackendMessage.parse(frame)
            }

            var startupDecoder = PostgresStartupDecoder(maximumLength: 64)
            var startupInput = ByteBuffer(bytes: be32(Int32.random(in: -8...40, using: &rng)) + be32(196_608) + sample(&rng))
            while (try? startupDecoder.decode(buffer: &startupInput)) ?? nil != nil {}
        }
    }
}

import NIOCore
import Testing

@testable import PostgresWire

/// Deterministic so a failing fuzz case can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

func buffer(_ string: String) -> ByteBuffer { ByteBuffer(string: string) }

/// Runs the frame decoder over `bytes` as one read and returns every complete frame.
func decodeFrames(_ bytes: ByteBuffer, maximumFrameLength: Int = 64 << 20) throws -> (frames: [PostgresFrame], leftover: Int) {
    var decoder = PostgresFrameDecoder(maximumFrameLength: maximumFrameLength)
    var input = bytes
    var frames: [PostgresFrame] = []
    while let frame = try decoder.decode(buffer: &input) { frames.append(frame) }
    return (frames, input.readableBytes)
}

/// Encodes with `write`, splits with the frame decoder and requires exactly one frame and no leftovers.
func singleFrame(_ write: (inout ByteBuffer) -> Void) throws -> PostgresFrame {
    var out = ByteBuffer()
    write(&out)
    let (frames, leftover) = try decodeFrames(out)
    #expect(leftover == 0)
    try #require(frames.count == 1)
    return frames[0]
}

func frame(_ type: Character, _ body: [UInt8]) -> PostgresFrame {
    PostgresFrame(type: UInt8(ascii: type.unicodeScalars.first!), body: ByteBuffer(bytes: body))
}

/// Big-endian helpers for hand-built bodies.
func be16(_ v: Int16) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
func be32(_ v: Int32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
func cstr(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

func expectWireError(_ code: PostgresWireError.Code, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected PostgresWireError.\(code), nothing thrown", sourceLocation: sourceLocation)
    } catch let error as PostgresWireError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected PostgresWireError.\(code), got \(error)", sourceLocation: sourceLocation)
    }
}

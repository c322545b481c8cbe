import NIOCore
import NIOTestUtils
import Testing

@testable import PostgresWire

@Suite struct FrameDecoderTests {
    @Test func verifierDripFedAndBatched() throws {
        var pairs: [(ByteBuffer, [PostgresFrame])] = []
        let samples: [PostgresFrame] = [
            frame("Q", cstr("SELECT 1")),
            frame("S", []),
            frame("d", Array(repeating: 0xAB, count: 300)),
            frame("D", be16(2) + be32(-1) + be32(3) + Array("abc".utf8)),
        ]
        for sample in samples {
            var bytes = ByteBuffer()
            PostgresEncoder.frame(sample, into: &bytes)
            pairs.append((bytes, [sample]))
        }
        var two = ByteBuffer()
        PostgresEncoder.frame(samples[0], into: &two)
        PostgresEncoder.frame(samples[1], into: &two)
        pairs.append((two, [samples[0], samples[1]]))
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { PostgresFrameDecoder() }
    }

    @Test func oversizedLengthRejectedFromTheHeaderAlone() throws {
        var header = ByteBuffer()
        header.writeInteger(UInt8(ascii: "Q"))
        header.writeInteger(Int32.max)
        var decoder = PostgresFrameDecoder()
        expectWireError(.frameTooLarge) { _ = try decoder.decode(buffer: &header) }

        // Four bytes are not yet a header: nothing to judge, nothing thrown.
        var partial = ByteBuffer(bytes: [UInt8(ascii: "Q"), 0x7F, 0xFF, 0xFF])
        var fresh = PostgresFrameDecoder()
        #expect(try fresh.decode(buffer: &partial) == nil)
        #expect(partial.readableBytes == 4)
    }

    @Test func maximumIsInclusive() throws {
        var exact = ByteBuffer()
        PostgresEncoder.frame(frame("d", Array(repeating: 1, count: 96)), into: &exact)
        let (frames, _) = try decodeFrames(exact, maximumFrameLength: 100)
        #expect(frames.count == 1)

        var over = ByteBuffer()
        PostgresEncoder.frame(frame("d", Array(repeating: 1, count: 97)), into: &over)
        expectWireError(.frameTooLarge) { _ = try decodeFrames(over, maximumFrameLength: 100) }
    }

    @Test(arguments: [Int32(0), 3, -1, Int32.min])
    func lengthBelowFourRejected(length: Int32) {
        var bytes = ByteBuffer()
        bytes.writeInteger(UInt8(ascii: "Q"))
        bytes.writeInteger(length)
        var decoder = PostgresFrameDecoder()
        expectWireError(.malformedLength) { _ = try decoder.decode(buffer: &bytes) }
    }

    @Test func incompleteBodyWaitsWithoutConsuming() throws {
        var bytes = ByteBuffer()
        PostgresEncoder.frame(frame("Q", cstr("SELECT 42")), into: &bytes)
        var truncated = bytes.getSlice(at: 0, length: bytes.readableBytes - 1)!
        var decoder = PostgresFrameDecoder()
        #expect(try decoder.decode(buffer: &truncated) == nil)
        #expect(truncated.readableBytes == bytes.readableBytes - 1)
    }

    @Test func emptyBodyFrame() throws {
        let (frames, leftover) = try decodeFrames(buffer([UInt8(ascii: "S"), 0, 0, 0, 4]))
        #expect(frames == [frame("S", [])])
        #expect(leftover == 0)
    }
}

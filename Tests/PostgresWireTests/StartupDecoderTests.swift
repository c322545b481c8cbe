import NIOCore
import NIOTestUtils
import Testing

@testable import PostgresWire

@Suite struct StartupDecoderTests {
    static let message = StartupMessage(parameters: [
        StartupParameter(name: "user", value: "alice"),
        StartupParameter(name: "database", value: "prod-db"),
        StartupParameter(name: "application_name", value: "psql ✓"),
    ])

    func encoded(_ packet: StartupPacket) -> ByteBuffer {
        var out = ByteBuffer()
        PostgresEncoder.startupPacket(packet, into: &out)
        return out
    }

    func decodeAll(_ bytes: [UInt8], maximumLength: Int = 10_000) throws -> [StartupPacket] {
        var decoder = PostgresStartupDecoder(maximumLength: maximumLength)
        var input = ByteBuffer(bytes: bytes)
        var packets: [StartupPacket] = []
        while let packet = try decoder.decode(buffer: &input) { packets.append(packet) }
        return packets
    }

    func packet(length: Int32? = nil, code: UInt32, _ rest: [UInt8]) -> [UInt8] {
        let total = length ?? Int32(8 + rest.count)
        return be32(total) + be32(Int32(bitPattern: code)) + rest
    }

    @Test func verifierDripFedAndBatched() throws {
        // Encryption requests are checked separately: they must not be followed by buffered bytes,
        // which the verifier's batched phase does on purpose.
        let packets: [StartupPacket] = [
            .startup(Self.message),
            .startup(StartupMessage(parameters: [])),
            .startup(StartupMessage(protocolVersion: 196_610, parameters: [StartupParameter(name: "user", value: "u")])),
            .cancel(processID: 4242, secretKey: -17),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: packets.map { (encoded($0), [$0]) },
            decoderFactory: { PostgresStartupDecoder() })
    }

    @Test func startupParametersAndSubscript() throws {
        let decoded = try decodeAll(Array(encoded(.startup(Self.message)).readableBytesView))
        #expect(decoded == [.startup(Self.message)])
        guard case .startup(let message) = decoded.first else { return }
        #expect(message["user"] == "alice")
        #expect(message["database"] == "prod-db")
        #expect(message["password"] == nil)
        #expect(message.majorVersion == 3 && message.minorVersion == 0)
    }

    @Test func encryptionRequestsDripFed() throws {
        for request in [StartupPacket.sslRequest, .gssEncRequest] {
            let bytes = Array(encoded(request).readableBytesView)
            var decoder = PostgresStartupDecoder()
            var accumulated = ByteBuffer()
            var results: [StartupPacket] = []
            for byte in bytes {
                accumulated.writeInteger(byte)
                if let packet = try decoder.decode(buffer: &accumulated) { results.append(packet) }
            }
            #expect(results == [request])
            // After the server's 'N' the client continues in the clear on the same decoder.
            var next = encoded(.startup(Self.message))
            #expect(try decoder.decode(buffer: &next) == .startup(Self.message))
        }
    }

    @Test func dataBufferedBehindAnEncryptionRequestIsRefused() {
        for request in [StartupPacket.sslRequest, .gssEncRequest] {
            var bytes = encoded(request)
            var injected = encoded(.startup(Self.message))
            bytes.writeBuffer(&injected)
            var decoder = PostgresStartupDecoder()
            expectWireError(.malformedMessage) { _ = try decoder.decode(buffer: &bytes) }
        }
    }

    @Test func unsupportedProtocolsRejectedBeforeTheBody() {
        // Protocol 2.0 and 4.0, and an unknown 1234.x request code; body never sent.
        for code: UInt32 in [0x0002_0000, 0x0004_0000, 0x04D2_1631, 0] {
            expectWireError(.unsupportedProtocol) { _ = try decodeAll(packet(length: 100, code: code, [])) }
        }
    }

    @Test func lengthsAreBounded() {
        expectWireError(.frameTooLarge) { _ = try decodeAll(be32(10_001)) }
        expectWireError(.frameTooLarge) { _ = try decodeAll(be32(Int32.max)) }
        expectWireError(.malformedLength) { _ = try decodeAll(be32(7)) }
        expectWireError(.malformedLength) { _ = try decodeAll(be32(-8)) }
        expectWireError(.malformedLength) { _ = try decodeAll(packet(length: 12, code: 80_877_103, [])) }
        expectWireError(.malformedLength) { _ = try decodeAll(packet(length: 12, code: 80_877_102, [])) }
    }

    @Test func malformedParameterLists() {
        let v3: UInt32 = 196_608
        // No final terminator.
        expectWireError(.malformedMessage) { _ = try decodeAll(packet(code: v3, cstr("user") + cstr("alice"))) }
        // Name without value.
        expectWireError(.malformedMessage) { _ = try decodeAll(packet(code: v3, cstr("user") + [0])) }
        // Unterminated value.
        expectWireError(.malformedMessage) { _ = try decodeAll(packet(code: v3, cstr("user") + Array("alice".utf8))) }
        // Bytes after the terminator.
        expectWireError(.malformedMessage) { _ = try decodeAll(packet(code: v3, cstr("user") + cstr("a") + [0, 0x41])) }
        // The same name twice: the server would take the last, a checker might take the first.
        expectWireError(.malformedMessage) {
            _ = try decodeAll(packet(code: v3, cstr("user") + cstr("alice") + cstr("user") + cstr("postgres") + [0]))
        }
        // Invalid UTF-8.
        expectWireError(.malformedMessage) { _ = try decodeAll(packet(code: v3, cstr("user") + [0xC3, 0x28, 0] + [0])) }
    }

    @Test func encoderSkipsParametersThatWouldEndTheList() throws {
        let message = StartupMessage(parameters: [
            StartupParameter(name: "", value: "x"),
            StartupParameter(name: "user", value: "bob\0injected"),
        ])
        let decoded = try decodeAll(Array(encoded(.startup(message)).readableBytesView))
        #expect(decoded == [.startup(StartupMessage(parameters: [StartupParameter(name: "user", value: "bob")]))])
    }
}

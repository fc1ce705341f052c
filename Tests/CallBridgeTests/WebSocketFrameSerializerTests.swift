import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import CallBridge
@testable import CallBridgeCore

/// `WebSocketFrameSerializer`, as `WebSocketConnectionHandler` writes frames with it, against NIO's own codec: what it
/// writes NIO's `WebSocketFrameDecoder` reads back, and byte for byte what NIO's `WebSocketFrameEncoder` writes.
@Suite struct WebSocketFrameSerializerTests {
    static let allocator = ByteBufferAllocator()

    /// Everything `handler` writes for `frames`, one buffer per write.
    static func encode(_ frames: [WebSocketFrame], with handler: any ChannelHandler) throws -> [ByteBuffer] {
        let channel = EmbeddedChannel(handler: handler)
        for frame in frames { try channel.writeOutbound(frame) }
        var buffers: [ByteBuffer] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
        return buffers
    }

    /// The handler that frames what the application writes (a server's: it masks only frames that carry a key).
    static func ours() -> WebSocketConnectionHandler {
        WebSocketConnectionHandler(role: .server)
    }

    static func bytes(_ buffers: [ByteBuffer]) -> [UInt8] {
        buffers.flatMap { Array($0.readableBytesView) }
    }

    /// NIO's decoder on `bytes`: the frames it reads.
    static func decode(_ bytes: [UInt8]) throws -> [WebSocketFrame] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 17)))
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        var frames: [WebSocketFrame] = []
        while let frame = try channel.readInbound(as: WebSocketFrame.self) { frames.append(frame) }
        return frames
    }

    /// A payload of `count` seeded bytes, with the frame header's room in front (as the bridge makes them) or none.
    static func payload(_ count: Int, headroom: Bool, rng: inout SplitMix64) -> ByteBuffer {
        var buffer = headroom ? Self.allocator.webSocketPayload(capacity: count) : Self.allocator.buffer(capacity: count)
        buffer.writeBytes((0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        return buffer
    }

    static func key(_ rng: inout SplitMix64) -> WebSocketMaskingKey {
        .random(using: &rng)
    }

    /// Data frames of every length class (7-, 16- and 64-bit lengths, at their edges), control frames, a fragment.
    static func frames(masked: Bool) -> [WebSocketFrame] {
        var rng = SplitMix64(state: masked ? 1 : 2)
        var frames: [WebSocketFrame] = []
        for opcode in [WebSocketOpcode.text, .binary] {
            for length in [0, 1, 125, 126, 300, 65535, 65536] {
                let data = Self.payload(length, headroom: length % 2 == 0, rng: &rng)
                frames.append(WebSocketFrame(fin: true, opcode: opcode, maskKey: masked ? Self.key(&rng) : nil, data: data))
            }
        }
        for opcode in [WebSocketOpcode.ping, .pong, .connectionClose] {
            for length in [0, 2, 125] {
                let data = Self.payload(length, headroom: true, rng: &rng)
                frames.append(WebSocketFrame(fin: true, opcode: opcode, maskKey: masked ? Self.key(&rng) : nil, data: data))
            }
        }
        frames.append(WebSocketFrame(fin: false, opcode: .text, maskKey: masked ? Self.key(&rng) : nil, data: Self.payload(9, headroom: true, rng: &rng)))
        frames.append(WebSocketFrame(fin: true, opcode: .continuation, maskKey: masked ? Self.key(&rng) : nil, data: Self.payload(7, headroom: false, rng: &rng)))
        return frames
    }

    @Test(arguments: [true, false])
    func framesRoundTripThroughNIOsDecoderAndMatchNIOsEncoder(masked: Bool) throws {
        let frames = Self.frames(masked: masked)
        let payloads = frames.map { Array($0.data.readableBytesView) }
        let ours = Self.bytes(try Self.encode(frames, with: Self.ours()))
        // The payloads the test still holds are as they were: masking copied them instead of writing through.
        #expect(frames.map { Array($0.data.readableBytesView) } == payloads)
        #expect(ours == Self.bytes(try Self.encode(frames, with: WebSocketFrameEncoder())))

        let decoded = try Self.decode(ours)
        try #require(decoded.count == frames.count)
        for (index, (frame, sent)) in zip(decoded, frames).enumerated() {
            #expect(frame.opcode == sent.opcode, "frame \(index)")
            #expect(frame.fin == sent.fin, "frame \(index)")
            #expect(!frame.rsv1 && !frame.rsv2 && !frame.rsv3, "frame \(index)")
            #expect(frame.maskKey == sent.maskKey, "frame \(index)")
            #expect(Array(frame.unmaskedData.readableBytesView) == payloads[index], "frame \(index) (\(sent.data.readableBytes) bytes)")
            let wire = WebSocketWireFrame(firstByte: 0, maskKey: frame.maskKey?.wireOrder, payload: frame.data)
            #expect(Array(wire.unmaskedPayload(allocator: Self.allocator).readableBytesView) == payloads[index], "frame \(index)")
        }
    }

    /// A frame built where it will be written from (`sendNow`): the payload after room for the header, framed in
    /// place. Byte for byte NIO's encoding of the same frame, for every length class, masked or not.
    @Test(arguments: [true, false])
    func aFrameFramedInItsOwnArrayMatchesNIOsEncoder(masked: Bool) throws {
        var rng = SplitMix64(state: masked ? 3 : 4)
        for length in [0, 1, 125, 126, 300, 65535, 65536] {
            let payload = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let key = masked ? Self.key(&rng) : nil
            let room = WebSocketFrameSerializer.maximumHeaderLength
            var frame = [UInt8](repeating: 0xEE, count: room) + payload
            let start = frame.withUnsafeMutableBytes {
                WebSocketFrameSerializer.encodeInPlace(firstByte: 0x81, key: key?.wireOrder, frame: $0, payloadStart: room)
            }
            let nio = WebSocketFrame(fin: true, opcode: .text, maskKey: key, data: ByteBuffer(bytes: payload))
            let expected = Self.bytes(try Self.encode([nio], with: WebSocketFrameEncoder()))
            #expect(Array(frame[start...]) == expected, "\(length) bytes")
            #expect(frame[..<start].allSatisfy { $0 == 0xEE }, "\(length) bytes: written before the header")
        }
    }

    @Test func reservedBitsAndExtensionDataAreWrittenAsNIOWritesThem() throws {
        var rng = SplitMix64(state: 3)
        var frames: [WebSocketFrame] = []
        for bits in 0..<8 {
            for extensionLength in [0, 1, 3, 130] {
                let key = bits % 2 == 0 ? Self.key(&rng) : nil
                let extensionData = extensionLength == 0 ? nil : Self.payload(extensionLength, headroom: true, rng: &rng)
                frames.append(WebSocketFrame(
                    fin: bits != 5, rsv1: bits & 1 != 0, rsv2: bits & 2 != 0, rsv3: bits & 4 != 0, opcode: .binary,
                    maskKey: key, data: Self.payload(21 + bits, headroom: bits < 4, rng: &rng), extensionData: extensionData
                ))
            }
        }
        let ours = Self.bytes(try Self.encode(frames, with: Self.ours()))
        #expect(ours == Self.bytes(try Self.encode(frames, with: WebSocketFrameEncoder())))
    }

    @Test func throughThePipelineAFrameIsOneBufferUnlessALargeUnmaskedPayloadGoesAsItIs() throws {
        var rng = SplitMix64(state: 4)
        let masked = WebSocketFrame(fin: true, opcode: .text, maskKey: Self.key(&rng), data: Self.payload(300, headroom: true, rng: &rng))
        #expect(try Self.encode([masked], with: Self.ours()).map(\.readableBytes) == [2 + 2 + 4 + 300])
        let small = WebSocketFrame(fin: true, opcode: .text, data: Self.payload(WebSocketFrameSerializer.copyLimit, headroom: true, rng: &rng))
        #expect(try Self.encode([small], with: Self.ours()).map(\.readableBytes) == [2 + 2 + WebSocketFrameSerializer.copyLimit])
        let large = WebSocketFrame(fin: true, opcode: .binary, data: Self.payload(WebSocketFrameSerializer.copyLimit + 1, headroom: true, rng: &rng))
        let buffers = try Self.encode([large, large], with: Self.ours())
        #expect(buffers.map(\.readableBytes) == [4, WebSocketFrameSerializer.copyLimit + 1, 4, WebSocketFrameSerializer.copyLimit + 1])
        #expect(buffers[1].withVeryUnsafeBytes { $0.baseAddress } == large.data.withVeryUnsafeBytes { $0.baseAddress })
    }

    @Test func aPayloadOnlyTheEncoderHoldsGetsTheHeaderInItsHeadroomAndIsMaskedInPlace() throws {
        var rng = SplitMix64(state: 5)
        let key = Self.key(&rng)
        for length in [0, 125, 126, 300, 65536] {
            for masked in [true, false] {
                var payload = Self.payload(length, headroom: true, rng: &rng)
                let plain = Array(payload.readableBytesView)
                let storage = payload.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
                let frame = WebSocketFrame(fin: true, opcode: .binary, maskKey: masked ? key : nil, data: ByteBuffer(bytes: plain))
                let firstByte = WebSocketFrameSerializer.firstByte(of: frame)
                #expect(WebSocketFrameSerializer.encodeInPlace(firstByte: firstByte, key: masked ? key.wireOrder : nil, payload: &payload))
                #expect(payload.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) } == storage, "copied (\(length) bytes)")
                #expect(Array(payload.readableBytesView) == Self.bytes(try Self.encode([frame], with: WebSocketFrameEncoder())))
            }
        }
    }

    @Test func aSharedOrCrampedPayloadIsLeftAlone() throws {
        var rng = SplitMix64(state: 6)
        let key = Self.key(&rng).wireOrder
        var shared = Self.payload(40, headroom: true, rng: &rng)
        let other = shared
        #expect(!WebSocketFrameSerializer.encodeInPlace(firstByte: 0x82, key: key, payload: &shared))
        #expect(shared == other && shared.readerIndex == 14)
        var cramped = Self.payload(200, headroom: false, rng: &rng)
        cramped.moveReaderIndex(forwardBy: 7)  // room for a short header but not for this one (2 + 2 + 4)
        let before = Array(cramped.readableBytesView)
        #expect(!WebSocketFrameSerializer.encodeInPlace(firstByte: 0x82, key: key, payload: &cramped))
        #expect(Array(cramped.readableBytesView) == before)
    }

    @Test func inboundUnmaskingMatchesNIOs() {
        var rng = SplitMix64(state: 8)
        for length in [0, 1, 5, 125, 300, 1000] {
            let key = Self.key(&rng)
            let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: key, data: Self.payload(length, headroom: false, rng: &rng))
            let wire = WebSocketWireFrame(firstByte: 0x81, maskKey: key.wireOrder, payload: frame.data)
            #expect(wire.unmaskedPayload(allocator: Self.allocator) == frame.unmaskedData, "length \(length)")
            var joined = ByteBuffer(bytes: [7])
            wire.appendUnmaskedPayload(to: &joined)
            #expect(Array(joined.readableBytesView) == [7] + Array(frame.unmaskedData.readableBytesView), "length \(length)")
            #expect(wire.text() == String(buffer: frame.unmaskedData), "length \(length)")
        }
        // Unmasked: the frame's own buffer, not a copy.
        let plain = WebSocketWireFrame(firstByte: 0x82, maskKey: nil, payload: Self.payload(50, headroom: false, rng: &rng))
        let unmasked = plain.unmaskedPayload(allocator: Self.allocator)
        #expect(unmasked.withVeryUnsafeBytes { $0.baseAddress } == plain.payload.withVeryUnsafeBytes { $0.baseAddress })
    }
}

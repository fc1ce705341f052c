import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
import Synchronization
import Testing

@testable import CallBridge
@testable import CallBridgeCore

/// The raw-NIO WebSocket plumbing (Sources/CallBridge/Net) on `EmbeddedChannel`s: bytes in, bytes out.
@Suite struct WebSocketPlumbingTests {
    /// What reaches the application: messages and the peer's close.
    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = WebSocketInboundMessage
        var messages: [WebSocketInboundMessage] = []
        var peerClosed: [WebSocketPeerClosed] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.messages.append(Self.unwrapInboundIn(data))
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let closed = event as? WebSocketPeerClosed { self.peerClosed.append(closed) }
        }

        var texts: [String] {
            self.messages.map { message in
                switch message {
                case .text(let b): String(buffer: b)
                case .binary(let b): "binary:\(b.readableBytes)"
                }
            }
        }
    }

    /// One frame as it is on the wire.
    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, mask: [UInt8]? = [0x37, 0xFA, 0x21, 0x3D]) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        if payload.count < 126 {
            bytes.append(maskBit | UInt8(payload.count))
        } else {
            bytes.append(maskBit | 126)
            bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        if let mask {
            bytes += mask
            bytes += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        } else {
            bytes += payload
        }
        return bytes
    }

    struct Frame: Equatable {
        var fin: Bool
        var opcode: UInt8
        var masked: Bool
        var payload: [UInt8]
    }

    /// Every frame written so far, parsed (the encoder may write a header and its payload separately).
    static func written(_ channel: EmbeddedChannel) throws -> [Frame] {
        var buffers: [ByteBuffer] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
        return Self.frames(in: buffers)
    }

    /// The frames in buffers written one after another.
    static func frames(in buffers: [ByteBuffer]) -> [Frame] {
        let bytes = buffers.flatMap { Array($0.readableBytesView) }
        var frames: [Frame] = []
        var i = 0
        while i < bytes.count {
            let fin = bytes[i] & 0x80 != 0
            let opcode = bytes[i] & 0x0F
            let masked = bytes[i + 1] & 0x80 != 0
            var length = Int(bytes[i + 1] & 0x7F)
            i += 2
            if length == 126 {
                length = Int(bytes[i]) << 8 | Int(bytes[i + 1])
                i += 2
            }
            var payload: [UInt8]
            if masked {
                let mask = Array(bytes[i..<(i + 4)])
                i += 4
                payload = bytes[i..<(i + length)].enumerated().map { $0.element ^ mask[$0.offset % 4] }
            } else {
                payload = Array(bytes[i..<(i + length)])
            }
            i += length
            frames.append(Frame(fin: fin, opcode: opcode, masked: masked, payload: payload))
        }
        return frames
    }

    static func connection(
        role: WebSocketConnectionHandler.Role,
        configuration: WebSocketConnectionHandler.Configuration = .init()
    ) throws -> (EmbeddedChannel, Collector) {
        let channel = EmbeddedChannel()
        let collector = Collector()
        try WebSocketConnectionHandler.addHandlers(to: channel.pipeline.syncOperations, role: role, configuration: configuration)
        try channel.pipeline.syncOperations.addHandler(collector)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return (channel, collector)
    }

    static func inbound(_ channel: EmbeddedChannel, _ bytes: [UInt8]) throws {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
    }

    @Test func framesSplitAtEveryByteAreReassembled() throws {
        let (channel, collector) = try Self.connection(role: .server)
        let payload = Array(String(repeating: "media ", count: 40).utf8)  // 240 bytes: a 16-bit length
        let wire = Self.frame(0x1, payload) + Self.frame(0x2, [1, 2, 3])
        for byte in wire { try Self.inbound(channel, [byte]) }
        #expect(collector.texts == [String(decoding: payload, as: UTF8.self), "binary:3"])
        #expect(try Self.written(channel).isEmpty)
    }

    @Test func fragmentsAreJoinedWithAPingAnsweredInBetween() throws {
        let (channel, collector) = try Self.connection(role: .server)
        try Self.inbound(channel, Self.frame(0x1, Array("Hel".utf8), fin: false))
        try Self.inbound(channel, Self.frame(0x9, Array("are you there".utf8)))
        try Self.inbound(channel, Self.frame(0x0, Array("lo, ".utf8), fin: false))
        try Self.inbound(channel, Self.frame(0x0, Array("world".utf8)))
        #expect(collector.texts == ["Hello, world"])
        // The pong carries the ping's payload; a server does not mask.
        #expect(try Self.written(channel) == [Frame(fin: true, opcode: 0xA, masked: false, payload: Array("are you there".utf8))])
    }

    /// What a receiver is handed instead of the pipeline's messages.
    final class Receiver: WebSocketMessageReceiver {
        var received: [String] = []
        func webSocketText(_ text: String) { self.received.append(text) }
        func webSocketBinary(_ data: ByteBuffer) { self.received.append("binary:\(data.readableBytes)") }
    }

    @Test func aReceiverGetsWholeUnmaskedMessagesAndThePipelineNone() throws {
        let (channel, collector) = try Self.connection(role: .server)
        let receiver = Receiver()
        try channel.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self).receiver = receiver
        // Two messages in one read, one of them fragmented, and a masked text split across reads.
        try Self.inbound(channel, Self.frame(0x1, Array("one".utf8)) + Self.frame(0x1, Array("tw".utf8), fin: false) + Self.frame(0x0, Array("o".utf8)))
        let third = Self.frame(0x1, Array(String(repeating: "é", count: 100).utf8)) + Self.frame(0x2, [9, 9])
        try Self.inbound(channel, Array(third.prefix(7)))
        try Self.inbound(channel, Array(third.dropFirst(7)))
        #expect(receiver.received == ["one", "two", String(repeating: "é", count: 100), "binary:2"])
        #expect(collector.messages.isEmpty)
        // Control frames are still handled here; the peer's close still goes down the pipeline.
        try Self.inbound(channel, Self.frame(0x8, [0x03, 0xE8]))
        #expect(collector.peerClosed == [WebSocketPeerClosed(code: 1000)])
        #expect(try Self.written(channel) == [Frame(fin: true, opcode: 0x8, masked: false, payload: [0x03, 0xE8])])
    }

    /// A receiver that reads text in place: each message's bytes, copied out during the call.
    final class BytesReceiver: WebSocketTextBytesReceiver {
        var received: [[UInt8]] = []
        func webSocketText(bytes: UnsafeRawBufferPointer) { self.received.append(Array(bytes)) }
        func webSocketBinary(_ data: ByteBuffer) { self.received.append([0xFF, UInt8(data.readableBytes)]) }
    }

    /// Masked (the scratch array reused, a longer message growing it), unmasked, fragmented and split across reads:
    /// the bytes handed over are each message's payload, unmasked, and nothing reaches the pipeline.
    @Test func aBytesReceiverReadsEachTextMessageInPlaceUnmasked() throws {
        let (channel, collector) = try Self.connection(role: .server)
        let receiver = BytesReceiver()
        try channel.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self).receiver = receiver
        let long = Array(String(repeating: "media ", count: 50).utf8)
        let split = Self.frame(0x1, long, mask: [9, 8, 7, 6])
        try Self.inbound(channel, Self.frame(0x1, Array("short".utf8)) + Self.frame(0x1, Array("plain".utf8), mask: nil))
        try Self.inbound(channel, Array(split.prefix(9)))
        try Self.inbound(channel, Array(split.dropFirst(9)) + Self.frame(0x1, Array("tiny".utf8)))
        try Self.inbound(channel, Self.frame(0x1, Array("jo".utf8), fin: false) + Self.frame(0x0, Array("ined".utf8)) + Self.frame(0x2, [1, 2]))
        #expect(receiver.received == [Array("short".utf8), Array("plain".utf8), long, Array("tiny".utf8), Array("joined".utf8), [0xFF, 2]])
        #expect(collector.messages.isEmpty)
    }

    @Test func sendTextWritesOneFrameStraightToTheTransportMaskedAsAClient() throws {
        for role in [WebSocketConnectionHandler.Role.client, .server] {
            let (channel, _) = try Self.connection(role: role)
            let connection = try channel.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
            var addresses: [UInt?] = []
            for text in ["hello", String(repeating: "x", count: 300)] {
                var payload = channel.allocator.webSocketPayload(capacity: text.utf8.count)
                payload.writeString(text)
                addresses.append(payload.withUnsafeReadableBytes { $0.baseAddress.map { UInt(bitPattern: $0) } })
                connection.send(text: consume payload)
            }
            connection.flush()
            // Handed over whole, each payload got its header in its headroom (and its masking) in place: the bytes
            // written are the payload's own storage, the header just before it.
            var buffers: [ByteBuffer] = []
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
            let written = buffers.map { buffer in buffer.withUnsafeReadableBytes { $0.baseAddress.map { UInt(bitPattern: $0) } } }
            let headers = role == .client ? [2 + 4, 4 + 4] : [2, 4]
            #expect(written == zip(addresses, headers).map { address, header in address.map { $0 - UInt(header) } })
            #expect(
                Self.frames(in: buffers) == [
                    Frame(fin: true, opcode: 0x1, masked: role == .client, payload: Array("hello".utf8)),
                    Frame(fin: true, opcode: 0x1, masked: role == .client, payload: Array(String(repeating: "x", count: 300).utf8)),
                ]
            )
            // Once closing, nothing more goes out.
            _ = channel.close()
            _ = try Self.written(channel)
            connection.send(text: ByteBuffer(string: "late"))
            connection.flush()
            #expect(try Self.written(channel).isEmpty)
        }
    }

    @Test(arguments: [
        // Reserved bits (no extension is ever negotiated).
        ([0xC1, 0x80, 1, 2, 3, 4], 1002),
        // A fragmented ping.
        ([0x09, 0x80, 1, 2, 3, 4], 1002),
        // A ping of 126 bytes (control frames are at most 125).
        ([0x89, 0xFE, 0x00, 0x7E], 1002),
        // A 64-bit length over the limit, refused before any of the payload arrives.
        ([0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0], 1009),
        // An unknown opcode.
        ([0x83, 0x80, 1, 2, 3, 4], 1002),
    ] as [([UInt8], UInt16)])
    func aFramingErrorClosesWithItsCodeAndNothingMoreIsRead(wire: [UInt8], code: UInt16) throws {
        let (channel, collector) = try Self.connection(role: .server, configuration: .init(maximumMessageSize: 1 << 16))
        try Self.inbound(channel, wire)
        #expect(try Self.written(channel) == [Frame(fin: true, opcode: 0x8, masked: false, payload: [UInt8(code >> 8), UInt8(code & 0xFF)])])
        try Self.inbound(channel, Self.frame(0x1, Array("after".utf8)))
        #expect(collector.messages.isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(!channel.isActive)
    }

    @Test func aClientMasksEverythingItSends() throws {
        let (channel, _) = try Self.connection(role: .client)
        try Self.inbound(channel, Self.frame(0x9, [7, 7], mask: nil))
        var buffer = channel.allocator.webSocketPayload(capacity: 5)
        buffer.writeString("hello")
        try channel.writeOutbound(WebSocketFrame(fin: true, opcode: .text, data: buffer))
        let frames = try Self.written(channel)
        #expect(frames == [Frame(fin: true, opcode: 0xA, masked: true, payload: [7, 7]), Frame(fin: true, opcode: 0x1, masked: true, payload: Array("hello".utf8))])
    }

    @Test func aContinuationWithNothingToContinueIsAProtocolError() throws {
        let (channel, collector) = try Self.connection(role: .server)
        try Self.inbound(channel, Self.frame(0x0, Array("orphan".utf8)))
        #expect(collector.messages.isEmpty)
        #expect(try Self.written(channel) == [Frame(fin: true, opcode: 0x8, masked: false, payload: [0x03, 0xEA])])  // 1002
        // No close frame comes back: the connection goes after the close timeout.
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(!channel.isActive)
    }

    @Test func closingSendsACloseFrameAndWaitsForThePeers() throws {
        let (channel, collector) = try Self.connection(role: .client)
        let closed = channel.close()
        let frames = try Self.written(channel)
        #expect(frames.count == 1 && frames[0].opcode == 0x8 && frames[0].masked && frames[0].payload == [0x03, 0xE8])  // 1000
        #expect(channel.isActive)
        // Writes after our close frame fail; the peer's close frame ends the connection.
        let late = channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "late")))
        var lateFailed = false
        late.whenFailure { _ in lateFailed = true }
        #expect(lateFailed)
        try Self.inbound(channel, Self.frame(0x8, [0x03, 0xE8], mask: nil))
        #expect(collector.peerClosed == [WebSocketPeerClosed(code: 1000)])
        #expect(!channel.isActive)
        channel.embeddedEventLoop.run()
        var closeCompleted = false
        closed.whenSuccess { closeCompleted = true }
        #expect(closeCompleted)
    }

    @Test func aPeerThatAnswersPingsStaysAndOneThatStopsIsClosed() throws {
        let (channel, _) = try Self.connection(role: .client, configuration: .init(pingInterval: .seconds(20)))
        channel.embeddedEventLoop.advanceTime(by: .seconds(19))
        #expect(try Self.written(channel).isEmpty)
        // Two intervals, each ping answered with its own payload: the connection stays.
        for _ in 0..<2 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(20))
            let frames = try Self.written(channel)
            #expect(frames.count == 1 && frames[0].opcode == 0x9 && frames[0].masked && frames[0].payload.count == 8)
            try Self.inbound(channel, Self.frame(0xA, frames[0].payload, mask: nil))
        }
        // A pong with the wrong payload does not answer the next ping; silence until the next interval closes with 1001.
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        #expect(try Self.written(channel).map(\.opcode) == [0x9])
        try Self.inbound(channel, Self.frame(0xA, [1, 2, 3], mask: nil))
        // (The pings went at 20, 40 and 60 s, and it is 79 s now: the next interval ends in a second.)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        let closing = try Self.written(channel)
        #expect(closing.count == 1 && closing[0].opcode == 0x8 && closing[0].payload == [0x03, 0xE9])
        #expect(channel.isActive)
        // No more pings while closing; the close timeout ends the connection.
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(!channel.isActive)
        #expect(try Self.written(channel).isEmpty)
    }

    @Test func thePeersCloseIsAnsweredWithItsCode() throws {
        let (channel, collector) = try Self.connection(role: .server)
        try Self.inbound(channel, Self.frame(0x8, [0x0F, 0xA0] + Array("bye".utf8)))  // 4000
        #expect(collector.peerClosed == [WebSocketPeerClosed(code: 4000, reason: "bye")])
        #expect(try Self.written(channel) == [Frame(fin: true, opcode: 0x8, masked: false, payload: [0x0F, 0xA0])])
        #expect(!channel.isActive)
    }

    @Test func aFrameInTheSameReadAsThe101ReachesTheApplication() throws {
        let channel = EmbeddedChannel()
        let collector = Collector()
        let upgraded = channel.eventLoop.makePromise(of: Void.self)
        try WebSocketClientChannel.configure(
            pipeline: channel.pipeline.syncOperations,
            target: try #require(WebSocketClientChannel.Target(url: "ws://bridge.example:8080/twilio/media?x=1")),
            headers: ["X-Twilio-Signature": "c2lnbmVk"],
            requestKey: "dGhlIHNhbXBsZSBub25jZQ==",
            configuration: .init(),
            upgraded: upgraded,
            makeHandler: { collector }
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        var request = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { request += String(buffer: buffer) }
        #expect(request.hasPrefix("GET /twilio/media?x=1 HTTP/1.1\r\n"))
        for header in ["Host: bridge.example:8080", "X-Twilio-Signature: c2lnbmVk", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Upgrade: websocket"] {
            #expect(request.contains(header + "\r\n"), "missing \(header)")
        }
        // The server's 101 and its first frame arrive together.
        let response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        try Self.inbound(channel, Array(response.utf8) + Self.frame(0x1, Array(#"{"type":"session.created"}"#.utf8), mask: nil))
        channel.embeddedEventLoop.run()
        try upgraded.futureResult.wait()
        #expect(collector.texts == [#"{"type":"session.created"}"#])
        try Self.expectCallBridgesFrameCodec(channel)
        // The connection is a WebSocket now: pings are answered, masked.
        try Self.inbound(channel, Self.frame(0x9, [1], mask: nil))
        #expect(try Self.written(channel) == [Frame(fin: true, opcode: 0xA, masked: true, payload: [1])])
    }

    @Test func aRefusedUpgradeFailsTheConnection() throws {
        let channel = EmbeddedChannel()
        let upgraded = channel.eventLoop.makePromise(of: Void.self)
        try WebSocketClientChannel.configure(
            pipeline: channel.pipeline.syncOperations,
            target: try #require(WebSocketClientChannel.Target(url: "ws://127.0.0.1/twilio/media")),
            headers: [:],
            configuration: .init(),
            upgraded: upgraded,
            makeHandler: { Collector() }
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        try Self.inbound(channel, Array("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".utf8))
        channel.embeddedEventLoop.run()
        #expect(throws: WebSocketConnectError.upgradeRefused(status: 403)) { try upgraded.futureResult.wait() }
        #expect(!channel.isActive)
    }

    static func serverChannel(_ collector: Collector) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try WebSocketServerChannel.configure(
            pipeline: channel.pipeline.syncOperations,
            shouldUpgrade: { head in head.uri.hasPrefix("/v1/realtime") ? HTTPHeaders() : nil },
            makeHandler: { _ in collector }
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return channel
    }

    static func upgradeRequest(_ path: String) -> [UInt8] {
        Array(("GET \(path) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
    }

    @Test func theServerUpgradesAndKeepsAFrameSentWithTheRequest() throws {
        let collector = Collector()
        let channel = try Self.serverChannel(collector)
        try Self.inbound(channel, Self.upgradeRequest("/v1/realtime?model=gpt-realtime") + Self.frame(0x1, Array("hi".utf8)))
        channel.embeddedEventLoop.run()
        var response = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { response += String(buffer: buffer) }
        #expect(response.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(response.lowercased().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"))
        #expect(collector.texts == ["hi"])
        try Self.expectCallBridgesFrameCodec(channel)
    }

    /// After an upgrade the connection handler does the framing; NIO's encoder and decoder (which the NIO upgraders
    /// would have added) are not there.
    static func expectCallBridgesFrameCodec(_ channel: EmbeddedChannel) throws {
        _ = try channel.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
        #expect(throws: ChannelPipelineError.notFound) { try channel.pipeline.syncOperations.handler(type: WebSocketFrameEncoder.self) }
        #expect(throws: ChannelPipelineError.notFound) {
            try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
        }
    }

    @Test func theServerRefusesOtherPathsAndAnswersHealthChecks() throws {
        let collector = Collector()
        let refused = try Self.serverChannel(collector)
        try Self.inbound(refused, Self.upgradeRequest("/elsewhere"))
        refused.embeddedEventLoop.run()
        var response = ""
        while let buffer = try refused.readOutbound(as: ByteBuffer.self) { response += String(buffer: buffer) }
        #expect(response.hasPrefix("HTTP/1.1 403 Forbidden\r\n"))
        let health = try Self.serverChannel(collector)
        try Self.inbound(health, Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
        var ok = ""
        while let buffer = try health.readOutbound(as: ByteBuffer.self) { ok += String(buffer: buffer) }
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n") && ok.hasSuffix("ok\n"))
        #expect(collector.messages.isEmpty)
    }
}

/// `TLSRecordSplitter` on an `EmbeddedChannel`: what the TLS handler above it would be handed.
@Suite struct TLSRecordSplitterTests {
    final class Reads: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var events: [String] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.events.append("read \(Self.unwrapInboundIn(data).readableBytes)")
        }
        func channelReadComplete(context: ChannelHandlerContext) { self.events.append("complete") }
    }

    static func record(_ payload: Int) -> [UInt8] {
        [0x17, 0x03, 0x03, UInt8(payload >> 8), UInt8(payload & 0xFF)] + [UInt8](repeating: 0xAB, count: payload)
    }

    @Test func eachRecordIsItsOwnReadAndAPartialOneWaitsForTheRest() throws {
        let channel = EmbeddedChannel()
        let reads = Reads()
        try channel.pipeline.syncOperations.addHandler(TLSRecordSplitter())
        try channel.pipeline.syncOperations.addHandler(reads)
        // Two whole records and the first 3 bytes of a third's header, in one socket read (`writeInbound` is a read
        // and its read-complete).
        let third = Self.record(16_384)
        try channel.writeInbound(ByteBuffer(bytes: Self.record(16_000) + Self.record(300) + third.prefix(3)))
        #expect(reads.events == ["read 16005", "complete", "read 305", "complete"])
        // The rest of the third in two reads: it goes up whole, once, and an empty read still completes.
        reads.events = []
        try channel.writeInbound(ByteBuffer(bytes: third[3..<9000]))
        #expect(reads.events == ["complete"])
        reads.events = []
        try channel.writeInbound(ByteBuffer(bytes: third[9000...]))
        #expect(reads.events == ["read 16389", "complete"])
    }
}

/// The per-connection handlers of `load` and `load-agent`, on `EmbeddedChannel`s in virtual time.
@Suite struct LoadHandlerTests {
    final class Counter: Sendable {
        let value = Mutex(0)
    }

    static func texts(_ channel: EmbeddedChannel) throws -> [String] {
        try WebSocketPlumbingTests.written(channel).filter { $0.opcode == 0x1 }.map { String(decoding: $0.payload, as: UTF8.self) }
    }

    @Test func aSimulatedCallStartsStreamsEchoesMarksAndHangsUp() throws {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        let script = LoadScript(callerAudio: [UInt8](repeating: 0x10, count: 480), bargeInAudio: nil, bargeInAt: nil, cycle: .milliseconds(60))
        let ended = Counter()
        let loop = LoadLoop(eventLoop: channel.eventLoop, script: script, callFrames: 3) { ended.value.withLock { $0 += 1 } }
        loop.start()
        try WebSocketConnectionHandler.addHandlers(to: channel.pipeline.syncOperations, role: .client)
        let start = TwilioStart(streamSid: "MZ1", callSid: "CA1", accountSid: "AC1")
        try channel.pipeline.syncOperations.addHandler(LoadCallHandler(loop: loop, start: start))
        var sent = try Self.texts(channel)
        #expect(sent == [TwilioSimulatorCodec.connected(), TwilioSimulatorCodec.start(start, sequence: 1)])
        // The first tick: frame 1.
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(20))
        sent = try Self.texts(channel)
        #expect(sent == [TwilioSimulatorCodec.media(Array(repeating: 0x10, count: 160), sequence: 2, chunk: 1, timestampMs: 0, streamSid: "MZ1")])
        // The bridge's audio and its mark: the mark comes back once that audio has played (the next tick).
        try channel.writeInbound(ByteBuffer(bytes: WebSocketPlumbingTests.frame(0x1, Array(TwilioCodec.encode(.media([UInt8](repeating: 0x55, count: 160)), quotedStreamSid: "\"MZ1\"").utf8), mask: nil)))
        try channel.writeInbound(ByteBuffer(bytes: WebSocketPlumbingTests.frame(0x1, Array(TwilioCodec.encode(.mark(name: "r1:1"), quotedStreamSid: "\"MZ1\"").utf8), mask: nil)))
        #expect(try Self.texts(channel).isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(20))
        sent = try Self.texts(channel)
        #expect(sent.first == TwilioSimulatorCodec.mark("r1:1", sequence: 3, streamSid: "MZ1"))
        #expect(sent.count == 2 && sent[1].contains(#""chunk":"2""#))
        // After 3 frames: stop, then the close handshake.
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(40))
        let frames = try WebSocketPlumbingTests.written(channel)
        #expect(frames.map(\.opcode) == [0x1, 0x1, 0x8])
        #expect(String(decoding: frames[1].payload, as: UTF8.self) == TwilioSimulatorCodec.stop(sequence: 6, accountSid: "AC1", callSid: "CA1", streamSid: "MZ1"))
        try channel.writeInbound(ByteBuffer(bytes: WebSocketPlumbingTests.frame(0x8, [0x03, 0xE8], mask: nil)))
        #expect(!channel.isActive)
        #expect(ended.value.withLock { $0 } == 1)
        #expect(loop.stats.callsCompleted == 1 && loop.stats.callsDisconnected == 0)
        #expect(loop.stats.marksEchoed == 1 && loop.stats.mediaReceived == 1 && loop.stats.framesSent == 3)
    }

    @Test func aCallTheBridgeDropsCountsAsDisconnected() throws {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        let script = LoadScript(callerAudio: [UInt8](repeating: 0xFF, count: 160), bargeInAudio: nil, bargeInAt: nil, cycle: .milliseconds(20))
        let loop = LoadLoop(eventLoop: channel.eventLoop, script: script, callFrames: 100) {}
        loop.start()
        try WebSocketConnectionHandler.addHandlers(to: channel.pipeline.syncOperations, role: .client)
        try channel.pipeline.syncOperations.addHandler(LoadCallHandler(loop: loop, start: TwilioStart(streamSid: "MZ2", callSid: "CA2")))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        try channel.writeInbound(ByteBuffer(bytes: WebSocketPlumbingTests.frame(0x8, [0x03, 0xE8], mask: nil)))
        #expect(loop.stats.callsDisconnected == 1)
        #expect(loop.stats.failures == ["disconnected: bridge closed the stream (1000)": 1])
    }

    @Test func theLoadDoubleAnswersASessionOnItsEventLoop() throws {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        let loop = AgentLoop(eventLoop: channel.eventLoop)
        loop.start()
        try WebSocketConnectionHandler.addHandlers(to: channel.pipeline.syncOperations, role: .server)
        try channel.pipeline.syncOperations.addHandler(
            LoadAgentHandler(agent: EchoAgent(dialect: .ga, configuration: LoadAgentServer.serviceLikeAgent), loop: loop)
        )
        #expect(try Self.texts(channel).map { EchoAgentServer.type(of: $0) } == ["session.created"])
        let update = RealtimeCodec.encode(.sessionUpdate(.init(), eventID: "s1"), dialect: .ga)
        try channel.writeInbound(ByteBuffer(bytes: WebSocketPlumbingTests.frame(0x1, Array(update.utf8))))
        #expect(try Self.texts(channel).map { EchoAgentServer.type(of: $0) } == ["session.updated"])
        // 400 ms of speech then 600 ms of silence, appended in real time: the reply comes, front-loaded.
        var replies: [String] = []
        for frame in 0..<50 {
            let sample: Int16 = frame < 20 ? (frame % 2 == 0 ? 9000 : -9000) : 0
            let audio = (0..<160).map { MuLaw.encode($0 % 20 < 10 ? sample : -sample) }
            let append = RealtimeCodec.encode(.inputAudioAppend(base64: Base64.encode(audio)), dialect: .ga)
            try channel.writeInbound(ByteBuffer(bytes: WebSocketPlumbingTests.frame(0x1, Array(append.utf8))))
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(20))
            replies += try Self.texts(channel).map { EchoAgentServer.type(of: $0) }
        }
        #expect(replies.contains("input_audio_buffer.speech_stopped"))
        #expect(replies.contains("response.output_audio.delta"))
        #expect(replies.last == "response.done")
        // The bridge hangs up: the session is answered with a close frame and leaves its loop.
        try channel.writeInbound(ByteBuffer(bytes: WebSocketPlumbingTests.frame(0x8, [0x03, 0xE8])))
        #expect(!channel.isActive)
        channel.embeddedEventLoop.run()
        #expect(loop.counters.sessionsOpened == 1 && loop.counters.sessionsClosed == 1)
    }
}

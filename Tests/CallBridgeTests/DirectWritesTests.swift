import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Synchronization
import Testing

@testable import CallBridge

/// `DirectWrites` on real loopback sockets: a client connection opened with `directWrites` (as the load generator's
/// calls are) against the raw-NIO WebSocket server. Whether its frames go straight to the socket or fall back to NIO
/// (the socket's buffer full), the server gets every message once, whole and in order.
@Suite struct DirectWritesTests {
    /// The server's side: every text message, as it arrived, and the connection's end (after which nothing more can
    /// arrive: what a test expects not to see has then not come).
    final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = WebSocketInboundMessage
        enum Event: Sendable, Equatable {
            case text(String)
            case closed
        }
        let events = Observations<Event>()

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .text(let buffer) = Self.unwrapInboundIn(data) { self.events.record(.text(String(buffer: buffer))) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.events.record(.closed)
            context.fireChannelInactive()
        }

        var texts: [String] {
            self.events.all.compactMap { if case .text(let text) = $0 { text } else { nil } }
        }

        func wait(forTexts count: Int) async throws {
            try await self.events.wait(upTo: .seconds(20)) { $0.count { $0 != .closed } >= count }
        }

        func waitUntilClosed() async throws {
            try await self.events.wait(upTo: .seconds(10)) { $0.contains(.closed) }
        }
    }

    /// A raw-NIO WebSocket server on loopback recording what it receives (`serverSetup` runs on each accepted
    /// connection), and a client connected to it with `directWrites`.
    static func connected(
        serverSetup: @escaping @Sendable (any Channel) throws -> Void = { _ in },
        client makeHandler: @escaping @Sendable () -> any ChannelHandler = { Quiet() }
    ) async throws -> (server: any Channel, client: any Channel, recorder: Recorder) {
        let group = MultiThreadedEventLoopGroup.singleton
        let recorder = Recorder()
        let server = try await WebSocketServerChannel.bind(
            host: "127.0.0.1", port: 0, group: group, tlsContext: nil, shouldUpgrade: { _ in [:] },
            makeHandler: { channel, _ in
                try serverSetup(channel)
                return recorder
            }
        ).get()
        let port = try #require(server.localAddress?.port)
        let client = try await WebSocketClientChannel.connect(
            url: "ws://127.0.0.1:\(port)/", tlsContext: nil, eventLoop: group.next(), directWrites: true
        ) { _ in makeHandler() }.get()
        return (server, client, recorder)
    }

    /// The client's application handler (the connection handler does the writing).
    final class Quiet: ChannelInboundHandler, Sendable {
        typealias InboundIn = WebSocketInboundMessage
    }

    static func message(_ index: Int, size: Int) -> String {
        let head = "m\(index):"
        return head + String(repeating: Character(UnicodeScalar(UInt8(97 + index % 26))), count: max(0, size - head.utf8.count))
    }

    @Test func everyMessageArrivesOnceInOrderWhetherWrittenDirectlyOrThroughNIO() async throws {
        // The server reads nothing for its first half second: the client's socket fills, and a `writev` falls short.
        let (server, client, recorder) = try await Self.connected(serverSetup: { channel in
            try channel.syncOptions?.setOption(.autoRead, value: false)
            channel.eventLoop.scheduleTask(in: .milliseconds(500)) { channel.setOption(.autoRead, value: true).whenFailure { _ in } }
        })
        // A small send buffer (no autotuning), so that the socket fills before the server reads.
        try await client.setOption(.socketOption(.so_sndbuf), value: 16 * 1024).get()

        // Three rounds, each written on the event loop and flushed once: small messages (one `writev`); then 1.6 MB
        // in 100 messages of 16 KiB, more than one `writev` gathers (64) and more than the socket takes while the
        // server does not read (the rest goes
        // through NIO); then small ones again, sent while NIO still holds bytes.
        let rounds: [(count: Int, size: Int)] = [(10, 300), (100, 16 * 1024), (10, 300)]
        var expected: [String] = []
        var fallbacks: [(fallbacks: Int, short: Int)] = []
        for (count, size) in rounds {
            let first = expected.count
            expected += (first..<(first + count)).map { Self.message($0, size: size) }
            let texts = Array(expected[first...])
            fallbacks.append(
                try await client.eventLoop.submit {
                    let connection = try client.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
                    for text in texts {
                        var buffer = connection.allocator.webSocketPayload(capacity: text.utf8.count)
                        buffer.writeString(text)
                        connection.send(text: buffer)
                    }
                    connection.flush()
                    return (connection.directWriteFallbacks, connection.directShortWrites)
                }.get()
            )
        }
        // The first round went straight to the socket; the big one did not all fit (the socket took part of a
        // `writev`, NIO the rest), and the last one followed what NIO still held.
        #expect(fallbacks[0] == (0, 0))
        #expect(fallbacks[1].short > 0, "\(fallbacks)")
        #expect(fallbacks[2].fallbacks > fallbacks[1].fallbacks, "\(fallbacks)")
        try await recorder.wait(forTexts: expected.count)
        let received = recorder.texts
        #expect(received.count == expected.count)
        #expect(received == expected, "first difference at \(received.indices.first { $0 < expected.count && received[$0] != expected[$0] } ?? -1)")
        try await client.close()
        try await server.close()
    }

    /// `sendNow`: a frame on its own goes out with one `write` of the caller's array; after a gathered frame it goes
    /// with it in one `writev`; when the socket does not take it all, the rest goes to NIO and the next frames follow
    /// it there. The server gets every message once, whole and in order.
    @Test func framesSentAtOnceArriveInOrderWhetherWrittenDirectlyOrThroughNIO() async throws {
        let (server, client, recorder) = try await Self.connected(serverSetup: { channel in
            try channel.syncOptions?.setOption(.autoRead, value: false)
            channel.eventLoop.scheduleTask(in: .milliseconds(500)) { channel.setOption(.autoRead, value: true).whenFailure { _ in } }
        })
        try await client.setOption(.socketOption(.so_sndbuf), value: 16 * 1024).get()

        struct Counts: Sendable, Equatable {
            var writes = 0, writevs = 0, fallbacks = 0, short = 0
        }
        // Small messages alone; a gathered message and then one sent at once; 100 of 16 KiB (the socket fills);
        // small ones again (NIO still holds bytes).
        let rounds: [(count: Int, size: Int, gatherFirst: Bool)] = [(10, 300, false), (2, 300, true), (100, 16 * 1024, false), (10, 300, false)]
        var expected: [String] = []
        var counts: [Counts] = []
        for round in rounds {
            let first = expected.count
            expected += (first..<(first + round.count)).map { Self.message($0, size: round.size) }
            let texts = Array(expected[first...])
            counts.append(
                try await client.eventLoop.submit {
                    let connection = try client.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
                    var scratch: [UInt8] = []
                    for (index, text) in texts.enumerated() {
                        if round.gatherFirst && index == 0 {
                            connection.send(text: connection.allocator.buffer(string: text))
                        } else {
                            connection.sendNow(text: &scratch) { $0.append(contentsOf: text.utf8) }
                        }
                    }
                    return Counts(
                        writes: connection.directWriteCalls, writevs: connection.directWritevCalls,
                        fallbacks: connection.directWriteFallbacks, short: connection.directShortWrites
                    )
                }.get()
            )
        }
        // Ten writes and no writev; the gathered frame took the next one with it (one writev, no write); the socket filled
        // (a short write, the rest to NIO) and later frames followed through NIO.
        #expect(counts[0] == Counts(writes: 10, writevs: 0, fallbacks: 0, short: 0), "\(counts)")
        #expect(counts[1].writes == 10 && counts[1].writevs == 1, "\(counts)")
        #expect(counts[2].short > 0 && counts[2].fallbacks > 0, "\(counts)")
        #expect(counts[3].fallbacks > counts[2].fallbacks, "\(counts)")
        try await recorder.wait(forTexts: expected.count)
        let received = recorder.texts
        #expect(received.count == expected.count)
        #expect(received.elementsEqual(expected), "first difference at \(received.indices.first { $0 < expected.count && received[$0] != expected[$0] } ?? -1)")
        try await client.close()
        try await server.close()
    }

    /// A handler that runs `action` when the channel goes inactive, and, placed first in a pipeline, closes the
    /// channel past every other handler (no WebSocket close handshake). As a client's application handler it runs
    /// `action` after the connection handler has seen the channel inactive; placed first, before.
    final class Hook: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var context: ChannelHandlerContext?
        var action: (() -> Void)?

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }

        func channelInactive(context: ChannelHandlerContext) {
            self.action?()
            context.fireChannelInactive()
        }

        func close() async throws {
            guard let context = self.context else { return }
            try await context.eventLoop.submit { context.close(promise: nil) }.get()
        }
    }

    /// Once NIO has closed the channel its descriptor's number may belong to another connection: a frame gathered
    /// before the close must never be written to it. Here the server drops the connection under a gathered frame (no
    /// close handshake, which would flush it); when the client's application sees the channel inactive, the
    /// connection no longer holds the descriptor, and a flush then writes nothing.
    @Test func nothingIsWrittenToTheDescriptorOnceTheChannelIsClosed() async throws {
        let serverSide = Mutex<UnsafeTransfer<Hook>?>(nil)
        let hook = Hook()
        let (server, client, recorder) = try await Self.connected(
            serverSetup: { channel in
                // Closing from the front of the pipeline drops the connection with no WebSocket close handshake.
                let front = Hook()
                try channel.pipeline.syncOperations.addHandler(front, position: .first)
                serverSide.withLock { $0 = UnsafeTransfer(front) }
            },
            client: { hook }
        )
        let seen = Mutex<(before: CInt?, atInactive: CInt?)>((nil, nil))
        try await client.eventLoop.submit {
            let connection = try client.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
            var buffer = connection.allocator.buffer(capacity: 8)
            buffer.writeString("late")
            connection.send(text: buffer)  // gathered, not flushed
            let before = connection.directSocket
            hook.action = {
                seen.withLock { $0 = (before, connection.directSocket) }
                connection.flush()
            }
        }.get()
        let front = try #require(serverSide.withLock { $0 })
        try await front.value.close()
        try await client.closeFuture.get()
        try await recorder.waitUntilClosed()
        let descriptors = seen.withLock { $0 }
        #expect(descriptors.before != nil && descriptors.atInactive == nil, "\(descriptors)")
        #expect(!recorder.texts.contains("late"))
        try await server.close()
    }

    /// While NIO holds some of the connection's bytes, nothing is gathered for the socket (it would overtake them).
    @Test func nothingIsGatheredWhileNIOHoldsBytes() throws {
        var direct = DirectWrites(socket: -1, channel: EmbeddedChannel())
        let frame = ByteBufferAllocator().buffer(string: "frame")
        let first = direct.gather(frame, nil, promise: nil)
        direct.heldByNIO = 1
        let whileHeld = direct.gather(frame, nil, promise: nil)
        direct.heldByNIO = 0
        let after = direct.gather(frame, frame, promise: nil)
        #expect(first && !whileHeld && after)
    }

    /// A send promise's callback may send again: promises are completed once the write is done (no overlapping access
    /// to the connection's state), and what the callback sends follows in order.
    @Test func aPromiseCallbackMaySendAgain() async throws {
        let (server, client, recorder) = try await Self.connected()
        try await client.eventLoop.submit {
            let connection = try client.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
            let sent = client.eventLoop.makePromise(of: Void.self)
            sent.futureResult.assumeIsolated().whenSuccess {
                var buffer = connection.allocator.buffer(capacity: 8)
                buffer.writeString("second")
                connection.send(text: buffer)
                connection.flush()
            }
            let frame = WebSocketFrame(fin: true, opcode: .text, data: connection.allocator.buffer(string: "first"))
            client.pipeline.syncOperations.writeAndFlush(NIOAny(frame), promise: sent)
            #expect(connection.directWritevCalls >= 2)
        }.get()
        try await recorder.wait(forTexts: 2)
        #expect(recorder.texts == ["first", "second"])
        try await client.close()
        try await server.close()
    }

    /// Flushes that NIO's close leaves in flight: a handler in front of the connection's sees the channel inactive
    /// first, while the connection still has its descriptor and a gathered frame, and flushes it. The descriptor is
    /// closed by then: the frame must go to NIO (which fails it), not to `writev`.
    @Test func aFlushAfterTheCloseDoesNotReachTheDescriptor() async throws {
        let (server, client, recorder) = try await Self.connected()
        let front = Hook()
        let writevs = Mutex<(before: Int, after: Int)>((-1, -1))
        try await client.eventLoop.submit {
            let connection = try client.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
            try client.pipeline.syncOperations.addHandler(front, position: .first)
            var buffer = connection.allocator.buffer(capacity: 8)
            buffer.writeString("late")
            connection.send(text: buffer)  // gathered, not flushed
            front.action = {
                let before = connection.directWritevCalls
                connection.flush()
                writevs.withLock { $0 = (before, connection.directWritevCalls) }
            }
            // Closed from the front: no close handshake (which would flush first).
            front.context?.close(promise: nil)
        }.get()
        try await client.closeFuture.get()
        let counts = writevs.withLock { $0 }
        #expect(counts.before >= 0 && counts.after == counts.before, "\(counts)")
        try await recorder.waitUntilClosed()
        #expect(!recorder.texts.contains("late"))
        try await server.close()
    }
}

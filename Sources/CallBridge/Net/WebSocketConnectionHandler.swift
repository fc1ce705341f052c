import CallBridgeCore
import NIOCore
import NIOWebSocket

#if canImport(Glibc)
import Glibc
#endif

/// A complete WebSocket data message (fragments joined, unmasked).
public enum WebSocketInboundMessage: Sendable, Equatable {
    case text(ByteBuffer)
    case binary(ByteBuffer)
}

/// Fired inbound when the peer's close frame arrives (before the channel closes), with its status code if it sent one.
public struct WebSocketPeerClosed: Sendable, Equatable {
    public var code: UInt16?
    /// The close frame's reason text, if any.
    public var reason: String?

    public init(code: UInt16?, reason: String? = nil) {
        self.code = code
        self.reason = reason
    }
}

/// Triggered outbound (`triggerUserOutboundEvent`) to start the close handshake with a given status code;
/// `channel.close()` starts it with 1000 (normal closure).
public struct WebSocketCloseRequest: Sendable, Equatable {
    public var code: WebSocketErrorCode
    public init(code: WebSocketErrorCode) { self.code = code }
}

/// Takes a connection's data messages straight from its `WebSocketConnectionHandler`, on the channel's event loop,
/// instead of as `WebSocketInboundMessage`s down the pipeline: a text message comes as a `String` made from the frame
/// in one pass (unmasked on the way), with no pipeline hop and no boxed message. Every other event (the peer's close,
/// inactive, errors) still goes down the pipeline.
public protocol WebSocketMessageReceiver: AnyObject {
    func webSocketText(_ text: String)
    func webSocketBinary(_ data: ByteBuffer)
}

/// A receiver that reads a text message's bytes where they lie (valid only during the call) instead of as a
/// `String`: an unmasked frame's bytes are the read buffer's own, a masked frame is unmasked into a scratch array the
/// connection reuses. No allocation per message. The bytes are not checked for UTF-8.
public protocol WebSocketTextBytesReceiver: WebSocketMessageReceiver {
    func webSocketText(bytes: UnsafeRawBufferPointer)
}

extension WebSocketTextBytesReceiver {
    public func webSocketText(_ text: String) {
        var text = text
        text.withUTF8 { self.webSocketText(bytes: UnsafeRawBufferPointer($0)) }
    }
}

/// The WebSocket protocol on a raw NIO channel, right after the transport (or TLS): the framing and everything
/// every connection needs, in one handler, so that application handlers see whole messages and write plain frames.
///
/// - Framing: bytes in are parsed into frames here (`WebSocketFrameParser`); frames out are serialized here
///   (`WebSocketFrameSerializer`'s encoding). One handler instead of NIO's decoder, its `ByteToMessageHandler` and a
///   serializer: a message costs one pipeline hop each way, not three or four, and no `WebSocketFrame` (whose storage
///   is a heap box) on the paths of `send(text:)` and a `receiver`.
/// - Inbound: data frames become `WebSocketInboundMessage`s (or go to the `receiver`); fragmented messages are
///   joined (continuation frames, with control frames allowed in between), up to `maximumMessageSize` (larger: closed
///   with 1009). Masked frames are unmasked. A ping is answered with a pong carrying the same payload; pongs are
///   dropped.
/// - Outbound: the application writes `WebSocketFrame`s, or calls `send(text:)` from the event loop; as a client
///   (RFC 6455 §5.3) each frame gets a fresh masking key. With `Configuration.directWrites` (a plain channel), what is
///   written between two flushes goes to the socket in one `writev`, past NIO's write path (`DirectWrites`).
/// - Close handshake: `close()` sends a close frame (1000) and closes the connection when the peer's close frame
///   comes back, or after `closeTimeout`. A close frame from the peer is answered with one (its code echoed) and the
///   connection is closed; the application sees `WebSocketPeerClosed` first. Protocol errors (a continuation with
///   nothing to continue, a new message inside a fragmented one, an unknown opcode, reserved bits, a fragmented or
///   long control frame) close with 1002; a frame over the size limit with 1009. After a framing error nothing more
///   is read from the connection.
/// - Keep-alive: with a `pingInterval`, a ping goes out every interval; a peer that has not answered the previous
///   ping by the next one is taken for dead and the close handshake starts with 1001 (going away), bounded by the
///   close timeout. A silent TCP peer (a NAT that forgot the flow, a crashed host) is noticed within two intervals.
public final class WebSocketConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = WebSocketInboundMessage
    public typealias OutboundIn = WebSocketFrame
    public typealias OutboundOut = ByteBuffer

    public enum Role: Sendable {
        /// Masks what it sends (a client must).
        case client
        case server
    }

    public struct Configuration: Sendable {
        /// Largest message after joining fragments, and largest single frame.
        public var maximumMessageSize: Int
        /// How long to wait for the peer's close frame after sending ours.
        public var closeTimeout: TimeAmount
        /// How often to ping the peer (nil: never).
        public var pingInterval: TimeAmount?

        /// Write frames straight to the channel's socket whenever NIO holds none of the connection's bytes (see
        /// `DirectWrites`). Only for a plain channel whose bytes this handler is the last to touch: no TLS or other
        /// handler between it and the socket.
        public var directWrites: Bool

        public init(
            maximumMessageSize: Int = 1 << 20,
            closeTimeout: TimeAmount = .seconds(3),
            pingInterval: TimeAmount? = nil,
            directWrites: Bool = false
        ) {
            self.maximumMessageSize = maximumMessageSize
            self.closeTimeout = closeTimeout
            self.pingInterval = pingInterval
            self.directWrites = directWrites
        }
    }

    /// States of the connection.
    enum State {
        /// Messages flow both ways. → `closeSent` (we close), `closed` (peer's close frame answered, or the socket went).
        case open
        /// Our close frame is out; waiting for the peer's (or the timeout). → `closed`.
        case closeSent(timeout: Scheduled<Void>?)
        /// Nothing more is sent or delivered.
        case closed
    }

    let role: Role
    let configuration: Configuration
    private var state = State.open
    /// A fragmented message being joined: its opcode and the data so far.
    private var fragments: (opcode: WebSocketOpcode, data: ByteBuffer)?
    /// The start of a frame that has not all arrived yet.
    private var partial: ByteBuffer?
    /// After a framing error the byte stream cannot be followed: nothing more is parsed.
    private var unreadable = false
    /// Masking keys for client frames: a small generator seeded once from the system's (a key per frame).
    private var maskGenerator: SplitMix64
    /// The keep-alive timer, and the payload of the ping still unanswered (nil when answered or none sent).
    private var pinger: RepeatedTask?
    private var unansweredPing: UInt64?
    private var pingsSent: UInt64 = 0
    /// This handler's place in the pipeline, for `send(text:)` and `flush()` (nil once removed).
    private var context: ChannelHandlerContext?
    /// The channel's allocator, kept: `context.channel.allocator` is a pipeline lookup and an event-loop check on
    /// every call, and the handler and its application allocate for every message.
    public private(set) var allocator = ByteBufferAllocator()
    /// Reused for the headers of large unmasked payloads sent as they are.
    private var headerBuffer: ByteBuffer?
    /// Takes the data messages instead of the next handler (set on the event loop; let go when the handler leaves
    /// the pipeline or the channel closes).
    public var receiver: (any WebSocketMessageReceiver)? {
        didSet { self.bytesReceiver = self.receiver as? any WebSocketTextBytesReceiver }
    }
    private var bytesReceiver: (any WebSocketTextBytesReceiver)?
    /// Where a masked text message is unmasked for a `bytesReceiver`, kept from message to message (up to
    /// `keptScratchBytes`).
    private var unmaskScratch: [UInt8] = []
    static let keptScratchBytes = 4096
    /// Writes straight to the socket, with `Configuration.directWrites` (nil once the channel is inactive).
    private var direct: DirectWrites?

    public init(role: Role, configuration: Configuration = .init()) {
        self.role = role
        self.configuration = configuration
        var system = SystemRandomNumberGenerator()
        self.maskGenerator = SplitMix64(state: system.next())
    }

    /// Adds this handler (framing included) to a pipeline whose transport carries WebSocket bytes: a test channel,
    /// or a connection after its upgrade.
    public static func addHandlers(
        to pipeline: ChannelPipeline.SynchronousOperations,
        role: Role,
        configuration: Configuration = .init()
    ) throws {
        try pipeline.addHandler(WebSocketConnectionHandler(role: role, configuration: configuration))
    }

    /// Adds a connection handler and the application's handler after it; an application handler that is a
    /// `WebSocketMessageReceiver` is given the data messages directly.
    static func addHandlers(
        to pipeline: ChannelPipeline.SynchronousOperations,
        role: Role,
        configuration: Configuration,
        application: any ChannelHandler
    ) throws {
        let connection = WebSocketConnectionHandler(role: role, configuration: configuration)
        try pipeline.addHandler(connection)
        try pipeline.addHandler(application)
        if let receiver = application as? any WebSocketMessageReceiver { connection.receiver = receiver }
    }

    // MARK: Keep-alive

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.allocator = context.channel.allocator
        if context.channel.isActive {
            self.startDirectWrites(context: context)
            self.startPinging(context: context)
        }
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.startDirectWrites(context: context)
        self.startPinging(context: context)
        context.fireChannelActive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.stopPinging()
        self.context = nil
        self.receiver = nil
        self.partial = nil
        self.headerBuffer = nil
        self.unmaskScratch = []
        // Removed from a live channel: what was gathered goes on through NIO, as an unflushed write would.
        let gathered = self.direct?.takeGathered() ?? []
        self.direct = nil
        for (buffer, promise) in gathered {
            if context.channel.isActive {
                context.write(WebSocketConnectionHandler.wrapOutboundOut(buffer), promise: promise)
            } else {
                promise?.fail(ChannelError.ioOnClosedChannel)
            }
        }
    }

    /// The socket's descriptor, from NIO's scoped access to the channel's transport: valid while the channel is
    /// active (NIO closes it when the channel closes, before the channel turns inactive).
    private func startDirectWrites(context: ChannelHandlerContext) {
        guard self.configuration.directWrites, self.direct == nil,
            let socket = try? context.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self, { $0 })
        else { return }
        self.direct = DirectWrites(socket: socket, channel: context.channel)
    }

    /// The descriptor frames are written to directly (nil when they go through NIO).
    var directSocket: CInt? { self.direct?.socket }

    private func startPinging(context: ChannelHandlerContext) {
        guard let interval = self.configuration.pingInterval, self.pinger == nil else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.pinger = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = loopBound.value
            handler.keepAlive(context: context)
        }
    }

    private func stopPinging() {
        self.pinger?.cancel()
        self.pinger = nil
    }

    private func keepAlive(context: ChannelHandlerContext) {
        guard case .open = self.state else { return self.stopPinging() }
        if self.unansweredPing != nil {
            self.stopPinging()
            self.startClosing(context: context, code: .goingAway)
            return
        }
        self.pingsSent &+= 1
        self.unansweredPing = self.pingsSent
        var payload = self.allocator.buffer(capacity: 8)
        payload.writeInteger(self.pingsSent)
        self.send(context: context, firstByte: 0x80 | 0x9, payload: payload, promise: nil)
        self.flush(context: context)
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.unreadable else { return }
        var bytes = WebSocketConnectionHandler.unwrapInboundIn(data)
        if var partial = self.partial {
            self.partial = nil
            partial.writeBuffer(&bytes)
            bytes = partial
        }
        while !self.unreadable {
            switch WebSocketFrameParser.next(&bytes, maximumFrameSize: self.configuration.maximumMessageSize) {
            case .frame(let frame):
                self.received(frame, context: context)
            case .needMore:
                if bytes.readableBytes > 0 {
                    // A copy of just the rest: holding the read buffer itself would keep its whole capacity, and
                    // keep the channel from reusing it for the next read.
                    var rest = self.allocator.buffer(capacity: bytes.readableBytes)
                    rest.writeBuffer(&bytes)
                    self.partial = rest
                }
                return
            case .tooLarge:
                self.unreadable = true
                self.fail(context: context, code: .messageTooLarge)
            case .malformed:
                self.unreadable = true
                self.fail(context: context, code: .protocolError)
            }
        }
    }

    /// With a receiver, messages leave this handler whole, by a direct call: nothing above it acts on the end of a
    /// read, so the event stops here (one walk of the pipeline less per read, on every connection of a call).
    public func channelReadComplete(context: ChannelHandlerContext) {
        if self.receiver == nil { context.fireChannelReadComplete() }
    }

    private func received(_ frame: WebSocketWireFrame, context: ChannelHandlerContext) {
        guard case .open = self.state else {
            if frame.opcode == .connectionClose { self.peerClosed(context: context, frame: frame) }
            return
        }
        switch frame.opcode {
        case .text, .binary:
            guard self.fragments == nil else { return self.fail(context: context, code: .protocolError) }
            if frame.fin {
                self.deliver(frame, context: context)
            } else {
                self.fragments = (frame.opcode, frame.unmaskedPayload(allocator: self.allocator))
            }
        case .continuation:
            guard var fragments = self.fragments else { return self.fail(context: context, code: .protocolError) }
            self.fragments = nil  // keep the buffer uniquely referenced while appending
            guard fragments.data.readableBytes + frame.payload.readableBytes <= self.configuration.maximumMessageSize else {
                return self.fail(context: context, code: .messageTooLarge)
            }
            frame.appendUnmaskedPayload(to: &fragments.data)
            if frame.fin {
                let joined = WebSocketWireFrame(firstByte: 0x80 | (fragments.opcode == .text ? 0x1 : 0x2), maskKey: nil, payload: fragments.data)
                self.deliver(joined, context: context)
            } else {
                self.fragments = fragments
            }
        case .ping:
            self.send(context: context, firstByte: 0x80 | 0xA, payload: frame.unmaskedPayload(allocator: self.allocator), promise: nil)
            self.flush(context: context)
        case .pong:
            var data = frame.unmaskedPayload(allocator: self.allocator)
            if let expected = self.unansweredPing, data.readInteger(as: UInt64.self) == expected { self.unansweredPing = nil }
        case .connectionClose:
            self.peerClosed(context: context, frame: frame)
        default:
            self.fail(context: context, code: .protocolError)
        }
    }

    /// A whole data message: to the receiver, or down the pipeline.
    private func deliver(_ frame: WebSocketWireFrame, context: ChannelHandlerContext) {
        let isText = frame.opcode == .text
        if isText, let receiver = self.bytesReceiver {
            // Taken out while the receiver runs, so that a message delivered from within it cannot overlap this one.
            var scratch = self.unmaskScratch
            self.unmaskScratch = []
            frame.withUnmaskedBytes(scratch: &scratch) { receiver.webSocketText(bytes: $0) }
            // Kept for the next message unless one large message grew it (a call's are under 1 KiB).
            self.unmaskScratch = scratch.count <= Self.keptScratchBytes ? scratch : []
            return
        }
        if let receiver = self.receiver {
            if isText {
                receiver.webSocketText(frame.text())
            } else {
                receiver.webSocketBinary(frame.unmaskedPayload(allocator: self.allocator))
            }
            return
        }
        let data = frame.unmaskedPayload(allocator: self.allocator)
        context.fireChannelRead(WebSocketConnectionHandler.wrapInboundOut(isText ? .text(data) : .binary(data)))
    }

    private func peerClosed(context: ChannelHandlerContext, frame: WebSocketWireFrame) {
        var data = frame.unmaskedPayload(allocator: self.allocator)
        let code = data.readInteger(as: UInt16.self)
        let reason = data.readableBytes > 0 ? data.readString(length: data.readableBytes) : nil
        context.fireUserInboundEventTriggered(WebSocketPeerClosed(code: code, reason: reason))
        switch self.state {
        case .open:
            // Answer with the same code (none if the peer sent none), then close.
            var reply = self.allocator.buffer(capacity: 2)
            if let code { reply.writeInteger(code) }
            self.state = .closed
            self.send(context: context, firstByte: 0x80 | 0x8, payload: reply, promise: nil)
            self.flush(context: context)
            context.close(promise: nil)
        case .closeSent(let timeout):
            timeout?.cancel()
            self.state = .closed
            context.close(promise: nil)
        case .closed:
            break
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            self.fail(context: context, code: error == .invalidFrameLength ? .messageTooLarge : .protocolError)
            return
        }
        context.fireErrorCaught(error)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        // What was gathered and never flushed is lost with the connection, as NIO's unflushed writes are.
        let dropped = self.direct?.takeGathered() ?? []
        self.direct = nil
        for (_, promise) in dropped { promise?.fail(ChannelError.ioOnClosedChannel) }
        self.stopPinging()
        if case .closeSent(let timeout) = self.state { timeout?.cancel() }
        self.state = .closed
        self.fragments = nil
        self.partial = nil
        context.fireChannelInactive()
        self.receiver = nil
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .open = self.state else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let frame = WebSocketConnectionHandler.unwrapOutboundIn(data)
        let key = frame.maskKey?.wireOrder ?? (self.role == .client ? self.nextMaskKey() : nil)
        let (first, second) = WebSocketFrameSerializer.serialize(
            firstByte: WebSocketFrameSerializer.firstByte(of: frame),
            key: key,
            extensionData: frame.extensionData,
            payload: frame.data,
            allocator: self.allocator,
            headerBuffer: &self.headerBuffer
        )
        self.write(context: context, first, second, promise: promise)
    }

    /// Sends a text message (one frame) from the event loop without a trip through the pipeline or a
    /// `WebSocketFrame`: the payload's bytes, best with room for the header before them (`webSocketPayload`). Not
    /// flushed. Dropped once the connection is closing or closed.
    ///
    /// The payload is taken (`consuming`): when nothing else holds it, its header goes in its headroom and a client's
    /// masking is done in place, with no copy.
    public func send(text payload: consuming ByteBuffer) {
        guard let context = self.context, case .open = self.state else { return }
        self.send(context: context, firstByte: 0x80 | 0x1, payload: consume payload, promise: nil)
    }

    /// Sends a text message at once, from the event loop, with no buffer of its own: `writePayload` appends the
    /// message to `frame` (the caller's, kept from message to message) after room for the header, and the frame goes
    /// to the socket with one `write(2)` when the handler writes directly and nothing is gathered or held by NIO.
    /// Otherwise the frame takes `send(text:)`'s way, and so does whatever the socket does not take; either way it is
    /// flushed. Dropped once the connection is closing or closed.
    public func sendNow(text frame: inout [UInt8], _ writePayload: (inout [UInt8]) -> Void) {
        guard let context = self.context, case .open = self.state else { return }
        let room = WebSocketFrameSerializer.maximumHeaderLength
        frame.removeAll(keepingCapacity: true)
        frame.append(contentsOf: repeatElement(0, count: room))
        writePayload(&frame)
        let key = self.role == .client ? self.nextMaskKey() : nil
        let start = frame.withUnsafeMutableBytes {
            WebSocketFrameSerializer.encodeInPlace(firstByte: 0x80 | 0x1, key: key, frame: $0, payloadStart: room)
        }
        let taken = frame.withUnsafeBytes { bytes in
            self.direct?.writeNow(UnsafeRawBufferPointer(rebasing: bytes[start...]))
        }
        if let taken, taken == frame.count - start { return }
        var rest = self.allocator.buffer(capacity: frame.count - start - (taken ?? 0))
        frame.withUnsafeBytes { _ = rest.writeBytes(UnsafeRawBufferPointer(rebasing: $0[(start + (taken ?? 0))...])) }
        if taken != nil {
            self.direct?.shortWrites += 1
            self.handToNIO(context: context, [(rest, nil)])
        } else {
            self.write(context: context, rest, nil, promise: nil)
        }
        self.flush(context: context)
    }

    /// Flushes what `send(text:)` wrote.
    public func flush() {
        guard let context = self.context else { return }
        self.flush(context: context)
    }

    /// Writes what is gathered for the socket (one `writev`), then flushes NIO if it was given anything.
    public func flush(context: ChannelHandlerContext) {
        guard self.direct != nil else { return context.flush() }
        let written = self.writeGathered(context: context)
        if self.direct?.unflushed == true {
            self.direct?.unflushed = false
            context.flush()
        }
        for promise in written { promise.succeed() }
    }

    /// The gathered frames' `writev`; what the socket did not take goes to NIO. Returns the promises of what was
    /// written, for the caller to complete once it is done with the connection's state (their callbacks may send
    /// again, and what they send must come after everything already written).
    private func writeGathered(context: ChannelHandlerContext) -> [EventLoopPromise<Void>] {
        guard let (unsent, written) = self.direct?.flush() else { return [] }
        if !unsent.isEmpty { self.handToNIO(context: context, unsent) }
        return written
    }

    /// Frames that went to NIO because the socket did not take them at once (or came while NIO held some); 0 when
    /// not writing directly.
    public var directWriteFallbacks: Int { self.direct?.fallbacks ?? 0 }
    /// Flushes whose gathered frames the socket did not take whole (the rest went to NIO).
    public var directShortWrites: Int { self.direct?.shortWrites ?? 0 }
    /// `writev` calls made on the socket.
    var directWritevCalls: Int { self.direct?.writevCalls ?? 0 }
    /// Frames `sendNow(text:_:)` wrote on their own with `write` (0 when not writing directly).
    var directWriteCalls: Int { self.direct?.writeCalls ?? 0 }

    /// Buffers (with their promises) to NIO, in order, counted until NIO has written them. The count is kept with a
    /// promise of this loop's own (a caller's promise may belong to another loop), which the caller's follows.
    private func handToNIO(context: ChannelHandlerContext, _ buffers: [(ByteBuffer, EventLoopPromise<Void>?)]) {
        self.direct?.fallbacks += 1
        self.direct?.unflushed = true
        self.direct?.heldByNIO += buffers.count
        for (buffer, promise) in buffers {
            let done = context.eventLoop.makePromise(of: Void.self)
            done.futureResult.assumeIsolated().whenComplete { _ in self.direct?.heldByNIO -= 1 }
            if let promise { done.futureResult.cascade(to: promise) }
            context.write(WebSocketConnectionHandler.wrapOutboundOut(buffer), promise: done)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, case .open = self.state else {
            context.close(mode: mode, promise: promise)
            return
        }
        self.startClosing(context: context, code: .normalClosure)
        if let promise { context.channel.closeFuture.cascade(to: promise) }
    }

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let request = event as? WebSocketCloseRequest else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        if case .open = self.state { self.startClosing(context: context, code: request.code) }
        promise?.succeed()
    }

    private func startClosing(context: ChannelHandlerContext, code: WebSocketErrorCode) {
        self.stopPinging()
        var data = self.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        self.send(context: context, firstByte: 0x80 | 0x8, payload: data, promise: nil)
        self.flush(context: context)
        let timeout = context.eventLoop.assumeIsolated().scheduleTask(in: self.configuration.closeTimeout) {
            context.close(promise: nil)
        }
        self.state = .closeSent(timeout: timeout)
    }

    /// A protocol violation by the peer: close with `code` (handshake bounded by the close timeout).
    private func fail(context: ChannelHandlerContext, code: WebSocketErrorCode) {
        self.fragments = nil
        guard case .open = self.state else { return }
        self.startClosing(context: context, code: code)
    }

    private func send(context: ChannelHandlerContext, firstByte: UInt8, payload: consuming ByteBuffer, promise: EventLoopPromise<Void>?) {
        let (first, second) = WebSocketFrameSerializer.serialize(
            firstByte: firstByte,
            key: self.role == .client ? self.nextMaskKey() : nil,
            payload: consume payload,
            allocator: self.allocator,
            headerBuffer: &self.headerBuffer
        )
        self.write(context: context, first, second, promise: promise)
    }

    private func write(context: ChannelHandlerContext, _ first: ByteBuffer, _ second: ByteBuffer?, promise: EventLoopPromise<Void>?) {
        if self.direct != nil {
            // Gathered for the next flush's `writev`; when the list is full it is written first (so nothing gathered
            // is overtaken), and while NIO holds bytes the frame follows them there.
            if self.direct?.gather(first, second, promise: promise) == false {
                let written = self.direct?.isFull == true ? self.writeGathered(context: context) : []
                if self.direct?.gather(first, second, promise: promise) == false {
                    self.handToNIO(context: context, second.map { [(first, nil), ($0, promise)] } ?? [(first, promise)])
                }
                for promise in written { promise.succeed() }
            }
            return
        }
        if let second {
            context.write(WebSocketConnectionHandler.wrapOutboundOut(first), promise: nil)
            context.write(WebSocketConnectionHandler.wrapOutboundOut(second), promise: promise)
        } else {
            context.write(WebSocketConnectionHandler.wrapOutboundOut(first), promise: promise)
        }
    }

    private func nextMaskKey() -> UInt32 {
        UInt32(truncatingIfNeeded: self.maskGenerator.next())
    }
}

/// Frames written to a connected socket with `writev(2)` on the event loop, past NIO's write path (its pending-write
/// queue, promises and flush), for a connection that writes many small frames (the load generator's callers). What
/// is written between two flushes is gathered and goes out in one `writev`, as NIO would send it.
///
/// Order is kept: frames are gathered only while NIO holds none of the connection's bytes, and a full list is written
/// before the next frame is taken. What the socket does not take at once (its send buffer full, or an error) goes to
/// NIO, which writes it when the socket allows (or meets the error and closes the channel as usual), and later frames
/// follow it through NIO until it has written everything. The channel must be active: NIO closes the descriptor when
/// it closes the channel, before the channel turns inactive, and the number may then be reused.
struct DirectWrites {
    let socket: CInt
    let channel: any Channel
    /// NIO's writes of this connection not yet completed (their buffers).
    var heldByNIO = 0
    /// Something went to NIO since the last flush.
    var unflushed = false
    var fallbacks = 0
    /// Flushes whose `writev` the socket did not take whole.
    var shortWrites = 0
    var writevCalls = 0
    /// Frames written on their own (`writeNow`).
    var writeCalls = 0
    /// Written since the last flush: the socket's next `writev`.
    private var gathered: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var vectors: [iovec] = []
    static let maximumGathered = 64

    init(socket: CInt, channel: any Channel) {
        self.socket = socket
        self.channel = channel
        self.gathered.reserveCapacity(4)
    }

    /// No room for another frame (header and payload).
    var isFull: Bool { self.gathered.count + 2 > Self.maximumGathered }

    /// Keeps a frame (header and payload, or all in `first`) for the next flush; false when it must go to NIO (NIO
    /// holds bytes) or the list is full.
    mutating func gather(_ first: ByteBuffer, _ second: ByteBuffer?, promise: EventLoopPromise<Void>?) -> Bool {
        guard self.heldByNIO == 0, !self.isFull else { return false }
        if let second {
            self.gathered.append((first, nil))
            self.gathered.append((second, promise))
        } else {
            self.gathered.append((first, promise))
        }
        return true
    }

    /// Writes what is gathered and empties the list: what the socket did not take (for NIO, with its promises), and
    /// the promises of what it took (for the caller to complete once this has returned).
    mutating func flush() -> (unsent: [(ByteBuffer, EventLoopPromise<Void>?)], written: [EventLoopPromise<Void>]) {
        guard !self.gathered.isEmpty else { return ([], []) }
        defer { self.gathered.removeAll(keepingCapacity: true) }
        guard self.channel.isActive else { return (self.gathered, []) }
        var written = self.writeGathered()
        var rest: [(ByteBuffer, EventLoopPromise<Void>?)] = []
        var done: [EventLoopPromise<Void>] = []
        for (buffer, promise) in self.gathered {
            let taken = min(written, buffer.readableBytes)
            written -= taken
            if taken == buffer.readableBytes {
                if let promise { done.append(promise) }
            } else {
                var left = buffer
                left.moveReaderIndex(forwardBy: taken)
                rest.append((left, promise))
            }
        }
        if !rest.isEmpty { self.shortWrites += 1 }
        return (rest, done)
    }

    /// One frame's bytes straight to the socket with `write(2)`, when nothing is gathered, NIO holds none of the
    /// connection's bytes and the channel is active; nil (nothing written) otherwise. What the socket took (0 on any
    /// error, `EAGAIN` too): the rest is the caller's to hand to NIO.
    mutating func writeNow(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard self.heldByNIO == 0, self.gathered.isEmpty, self.channel.isActive else { return nil }
        self.writeCalls += 1
        return max(0, write(self.socket, bytes.baseAddress, bytes.count))
    }

    /// Empties the list without writing it (the connection is going), for the caller to settle.
    mutating func takeGathered() -> [(ByteBuffer, EventLoopPromise<Void>?)] {
        defer { self.gathered.removeAll() }
        return self.gathered
    }

    /// One `writev` of the gathered buffers' readable bytes: what the socket took (0 on any error, `EAGAIN` too).
    private mutating func writeGathered() -> Int {
        self.writevCalls += 1
        self.vectors.removeAll(keepingCapacity: true)
        var vectors = self.vectors
        self.vectors = []
        defer { self.vectors = vectors }
        return Self.withVectors(of: self.gathered[...], into: &vectors) { vectors in
            max(0, writev(self.socket, vectors.baseAddress, CInt(vectors.count)))
        }
    }

    /// Runs `body` with an `iovec` per buffer, each taken inside its buffer's `withUnsafeReadableBytes` (nested, so
    /// that every pointer is used only within its scope).
    private static func withVectors<R>(
        of buffers: ArraySlice<(ByteBuffer, EventLoopPromise<Void>?)>,
        into vectors: inout [iovec],
        _ body: (UnsafeBufferPointer<iovec>) -> R
    ) -> R {
        guard let (buffer, _) = buffers.first else { return vectors.withUnsafeBufferPointer(body) }
        return buffer.withUnsafeReadableBytes { bytes in
            vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count))
            return Self.withVectors(of: buffers.dropFirst(), into: &vectors, body)
        }
    }
}

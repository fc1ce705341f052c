import CallBridgeCore
import NIOCore
import NIOWebSocket

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

/// The WebSocket protocol on a raw NIO channel, after `WebSocketFrameDecoder`/`WebSocketFrameSerializer`: one place for
/// what every connection needs, so that application handlers see whole messages and write plain frames.
///
/// - Inbound: data frames become `WebSocketInboundMessage`s; fragmented messages are joined (continuation frames,
///   with control frames allowed in between), up to `maximumMessageSize` (larger: closed with 1009). Masked frames
///   are unmasked. A ping is answered with a pong carrying the same payload; pongs are dropped.
/// - Outbound: the application writes `WebSocketFrame`s; as a client (RFC 6455 §5.3) each gets a fresh masking key.
/// - Close handshake: `close()` sends a close frame (1000) and closes the connection when the peer's close frame
///   comes back, or after `closeTimeout`. A close frame from the peer is answered with one (its code echoed) and the
///   connection is closed; the application sees `WebSocketPeerClosed` first. Protocol errors (a continuation with
///   nothing to continue, a new message inside a fragmented one, an unknown opcode, a frame the decoder refuses)
///   close with 1002 or 1009.
/// - Keep-alive: with a `pingInterval`, a ping goes out every interval; a peer that has not answered the previous
///   ping by the next one is taken for dead and the close handshake starts with 1001 (going away), bounded by the
///   close timeout. A silent TCP peer (a NAT that forgot the flow, a crashed host) is noticed within two intervals.
public final class WebSocketConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = WebSocketFrame
    public typealias InboundOut = WebSocketInboundMessage
    public typealias OutboundIn = WebSocketFrame
    public typealias OutboundOut = WebSocketFrame

    public enum Role: Sendable {
        /// Masks what it sends (a client must).
        case client
        case server
    }

    public struct Configuration: Sendable {
        /// Largest message after joining fragments, and largest single frame (the decoder's limit).
        public var maximumMessageSize: Int
        /// How long to wait for the peer's close frame after sending ours.
        public var closeTimeout: TimeAmount
        /// How often to ping the peer (nil: never).
        public var pingInterval: TimeAmount?

        public init(maximumMessageSize: Int = 1 << 20, closeTimeout: TimeAmount = .seconds(3), pingInterval: TimeAmount? = nil) {
            self.maximumMessageSize = maximumMessageSize
            self.closeTimeout = closeTimeout
            self.pingInterval = pingInterval
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
    /// Masking keys for client frames: a small generator seeded once from the system's (a key per frame).
    private var maskGenerator: SplitMix64
    /// The keep-alive timer, and the payload of the ping still unanswered (nil when answered or none sent).
    private var pinger: RepeatedTask?
    private var unansweredPing: UInt64?
    private var pingsSent: UInt64 = 0

    public init(role: Role, configuration: Configuration = .init()) {
        self.role = role
        self.configuration = configuration
        var system = SystemRandomNumberGenerator()
        self.maskGenerator = SplitMix64(state: system.next())
    }

    /// Adds the frame codec and this handler (on a test channel; after a real handshake the upgraders of
    /// WebSocketUpgraders.swift add the codec).
    public static func addHandlers(
        to pipeline: ChannelPipeline.SynchronousOperations,
        role: Role,
        configuration: Configuration = .init()
    ) throws {
        try Self.addFrameCodec(to: pipeline, maximumFrameSize: configuration.maximumMessageSize)
        try pipeline.addHandler(WebSocketConnectionHandler(role: role, configuration: configuration))
    }

    /// The frame codec of every WebSocket pipeline on raw NIO: `WebSocketFrameSerializer` out, NIO's
    /// `WebSocketFrameDecoder` in.
    static func addFrameCodec(to pipeline: ChannelPipeline.SynchronousOperations, maximumFrameSize: Int) throws {
        try pipeline.addHandler(WebSocketFrameSerializer())
        try pipeline.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maximumFrameSize)))
    }

    // MARK: Keep-alive

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.startPinging(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.startPinging(context: context)
        context.fireChannelActive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.stopPinging()
    }

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
        var payload = context.channel.allocator.buffer(capacity: 8)
        payload.writeInteger(self.pingsSent)
        self.send(context: context, WebSocketFrame(fin: true, opcode: .ping, data: payload), promise: nil)
        context.flush()
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = WebSocketConnectionHandler.unwrapInboundIn(data)
        guard case .open = self.state else {
            if frame.opcode == .connectionClose { self.peerClosed(context: context, frame: frame) }
            return
        }
        switch frame.opcode {
        case .text, .binary:
            guard self.fragments == nil else { return self.fail(context: context, code: .protocolError) }
            if frame.fin {
                let data = frame.unmaskedData(allocator: context.channel.allocator)
                context.fireChannelRead(WebSocketConnectionHandler.wrapInboundOut(frame.opcode == .text ? .text(data) : .binary(data)))
            } else {
                self.fragments = (frame.opcode, frame.unmaskedData(allocator: context.channel.allocator))
            }
        case .continuation:
            guard var fragments = self.fragments else { return self.fail(context: context, code: .protocolError) }
            self.fragments = nil  // keep the buffer uniquely referenced while appending
            guard fragments.data.readableBytes + frame.data.readableBytes <= self.configuration.maximumMessageSize else {
                return self.fail(context: context, code: .messageTooLarge)
            }
            fragments.data.writeUnmaskedData(of: frame)
            if frame.fin {
                let data = fragments.data
                context.fireChannelRead(WebSocketConnectionHandler.wrapInboundOut(fragments.opcode == .text ? .text(data) : .binary(data)))
            } else {
                self.fragments = fragments
            }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData(allocator: context.channel.allocator))
            self.send(context: context, pong, promise: nil)
            context.flush()
        case .pong:
            var data = frame.unmaskedData(allocator: context.channel.allocator)
            if let expected = self.unansweredPing, data.readInteger(as: UInt64.self) == expected { self.unansweredPing = nil }
        case .connectionClose:
            self.peerClosed(context: context, frame: frame)
        default:
            self.fail(context: context, code: .protocolError)
        }
    }

    private func peerClosed(context: ChannelHandlerContext, frame: WebSocketFrame) {
        var data = frame.unmaskedData(allocator: context.channel.allocator)
        let code = data.readInteger(as: UInt16.self)
        let reason = data.readableBytes > 0 ? data.readString(length: data.readableBytes) : nil
        context.fireUserInboundEventTriggered(WebSocketPeerClosed(code: code, reason: reason))
        switch self.state {
        case .open:
            // Answer with the same code (none if the peer sent none), then close.
            var reply = context.channel.allocator.buffer(capacity: 2)
            if let code { reply.writeInteger(code) }
            self.state = .closed
            self.send(context: context, WebSocketFrame(fin: true, opcode: .connectionClose, data: reply), promise: nil)
            context.flush()
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
        self.stopPinging()
        if case .closeSent(let timeout) = self.state { timeout?.cancel() }
        self.state = .closed
        self.fragments = nil
        context.fireChannelInactive()
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .open = self.state else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        self.send(context: context, WebSocketConnectionHandler.unwrapOutboundIn(data), promise: promise)
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
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        self.send(context: context, WebSocketFrame(fin: true, opcode: .connectionClose, data: data), promise: nil)
        context.flush()
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

    private func send(context: ChannelHandlerContext, _ frame: WebSocketFrame, promise: EventLoopPromise<Void>?) {
        var frame = frame
        if self.role == .client && frame.maskKey == nil {
            frame.maskKey = .random(using: &self.maskGenerator)
        }
        context.write(WebSocketConnectionHandler.wrapOutboundOut(frame), promise: promise)
    }
}

import CallBridgeCore
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import NIOWebSocket
import Synchronization

/// `CallIO` on a call's event loop: the Twilio connection and every Realtime leg of the call live on the same loop,
/// the driver runs there synchronously, writes go out without awaiting (flushed once per burst), timers are the
/// loop's, and ticks come from the loop's one shared ticker. No task, stream or actor hop per frame.
///
/// Every entry goes through `perform`, which defers an entry that arrives while the driver is busy (a close that
/// completes at once, say) until the driver is done, so the driver never sees re-entrant calls.
final class LoopCallHost: CallIO, PhasedTickListMember {
    struct Shared: Sendable {
        var endpoint: AsyncValue<RealtimeEndpoint>
        /// One TLS context for every Realtime connection (building one loads the trust store).
        var tlsContexts: TLSContextCache
        var registry: CallRegistry
        var environment: CallDriver.Environment
    }

    let eventLoop: any EventLoop
    private let twilio: any Channel
    /// The Twilio connection's WebSocket handler: frames go out through it directly (set once it is in the pipeline).
    var twilioConnection: WebSocketConnectionHandler?
    private let shared: Shared
    private let loop: LoopCalls
    let logger: Logger
    private let number: Int
    private(set) var driver: CallDriver!
    /// The current Realtime leg: its number, its channel and WebSocket handler once up, and whether the call is done
    /// with it.
    private var realtime: (leg: Int, channel: (any Channel)?, connection: WebSocketConnectionHandler?, over: Bool)?
    private var timers: [Int: Scheduled<Void>] = [:]
    private var nextTimer = 0
    private var twilioDirty = false
    private var realtimeDirty = false
    private var busy = false
    private var deferred: [() -> Void] = []
    private var isReleased = false
    /// The call's place in its loop's ticker list (−1: not ticking), and its phase there (kept for the whole call).
    var slot = -1
    var phase = -1
    /// Completed when the call is released (the server's task for the connection waits on it).
    let released: EventLoopPromise<Void>

    init(twilio: any Channel, shared: Shared, loop: LoopCalls, logger: Logger, callMetadata: CallMetadata) {
        self.eventLoop = twilio.eventLoop
        self.twilio = twilio
        self.shared = shared
        self.loop = loop
        self.logger = logger
        self.released = twilio.eventLoop.makePromise()
        self.number = shared.registry.callStarted()
        shared.environment.metrics.callStarted()
        shared.environment.metrics.setActiveCalls(shared.registry.activeCalls)
        self.driver = CallDriver(io: self, environment: shared.environment, logger: logger, callMetadata: callMetadata)
    }

    func start() {
        self.perform { self.driver.begin() }
    }

    /// Runs `body` against the driver now, or after the entry in progress; then flushes and releases if done.
    func perform(_ body: @escaping () -> Void) {
        guard !self.isReleased else { return }
        if self.busy {
            self.deferred.append(body)
            return
        }
        self.busy = true
        body()
        self.finish()
    }

    /// The per-frame entries, as `perform` without a closure unless one has to wait.
    ///
    /// A tick scheduled for `deadline` (its place in the pacing phase, however late the loop runs it).
    func tick(_ deadline: NIODeadline) {
        guard !self.isReleased else { return }
        if self.busy {
            self.deferred.append { self.driver.tick(scheduled: deadline) }
            return
        }
        self.busy = true
        self.driver.tick(scheduled: deadline)
        self.finish()
    }

    func twilioText(_ text: String) {
        guard !self.isReleased else { return }
        if self.busy {
            self.deferred.append { self.driver.twilioText(text) }
            return
        }
        self.busy = true
        self.driver.twilioText(text)
        self.finish()
    }

    /// As `twilioText(_:)`, from the message's bytes where they lie: copied into a `String` only if it must wait.
    func twilioText(bytes: UnsafeRawBufferPointer) {
        let arrived = self.loop.tickIfDue()
        guard !self.isReleased else { return }
        if self.busy {
            let text = String(decoding: bytes, as: UTF8.self)
            self.deferred.append { self.driver.twilioText(text) }
            return
        }
        self.busy = true
        self.driver.twilioText(bytes: bytes, at: arrived)
        self.finish()
    }

    func realtimeText(_ text: String, leg: Int) {
        let arrived = self.loop.tickIfDue()
        guard !self.isReleased else { return }
        if self.busy {
            self.deferred.append { self.driver.realtimeText(text, leg: leg) }
            return
        }
        self.busy = true
        self.driver.realtimeText(text, leg: leg, at: arrived)
        self.finish()
    }

    /// After an entry: the entries that arrived meanwhile, then one flush per leg, then the release if the call is over.
    private func finish() {
        while !self.deferred.isEmpty, !self.isReleased {
            self.deferred.removeFirst()()
        }
        self.busy = false
        self.flush()
        if self.driver.isReleased { self.release() }
    }

    func flush() {
        if self.twilioDirty {
            self.twilioDirty = false
            if let connection = self.twilioConnection { connection.flush() } else { self.twilio.flush() }
        }
        if self.realtimeDirty {
            self.realtimeDirty = false
            if let connection = self.realtime?.connection { connection.flush() } else { self.realtime?.channel?.flush() }
        }
    }

    // MARK: CallIO

    func sendTwilio(_ text: String) {
        let payload = Self.payload(text, allocator: self.twilioConnection?.allocator ?? self.twilio.allocator)
        if let connection = self.twilioConnection {
            connection.send(text: consume payload)
        } else {
            self.twilio.write(WebSocketFrame(fin: true, opcode: .text, data: payload), promise: nil)
        }
        self.twilioDirty = true
    }

    func closeTwilio() {
        self.twilio.close(mode: .all, promise: nil)
    }

    func openRealtime(leg: Int) {
        self.realtime = (leg, nil, nil, false)
        guard let endpoint = self.shared.endpoint.current else {
            // The embedded agent is not listening yet: a moment's wait, as for a network failure.
            self.eventLoop.assumeIsolated().execute {
                self.perform { self.driver.realtimeClosed(leg: leg, .connectFailed("the Realtime endpoint is not ready", retryable: true)) }
            }
            return
        }
        let tlsContext: NIOSSLContext?
        do {
            tlsContext = try self.shared.tlsContexts.context(for: endpoint)
        } catch {
            self.eventLoop.assumeIsolated().execute {
                self.perform { self.driver.realtimeClosed(leg: leg, .connectFailed("TLS configuration: \(error)", retryable: false)) }
            }
            return
        }
        var headers = HTTPHeaders()
        for field in endpoint.headers { headers.add(name: field.name.rawName, value: field.value) }
        let me = NIOLoopBound(self, eventLoop: self.eventLoop)
        WebSocketClientChannel.connect(
            url: endpoint.url,
            headers: headers,
            tlsContext: tlsContext,
            eventLoop: self.eventLoop,
            configuration: .init(maximumMessageSize: 4 << 20, closeTimeout: .seconds(3), pingInterval: .seconds(20)),
            makeHandler: { _ in RealtimeLegHandler(host: me.value, leg: leg) }
        ).whenFailure { error in
            let host = me.value
            let retryable = RealtimeEndpoint.isRetryable(error)
            host.logger.error(
                "realtime connect failed",
                metadata: ["error": "\(error)", "realtime.url": .string(endpoint.url), "retryable": .stringConvertible(retryable)]
            )
            host.perform {
                host.driver.realtimeClosed(leg: leg, .connectFailed("\(error)", retryable: retryable))
            }
        }
    }

    func sendRealtime(_ text: String) {
        guard let channel = self.realtime?.channel else { return }
        let connection = self.realtime?.connection
        let payload = Self.payload(text, allocator: connection?.allocator ?? channel.allocator)
        if let connection {
            connection.send(text: consume payload)
        } else {
            channel.write(WebSocketFrame(fin: true, opcode: .text, data: payload), promise: nil)
        }
        self.realtimeDirty = true
    }

    func closeRealtime(leg: Int) {
        guard let current = self.realtime, current.leg == leg else { return }
        self.realtime?.over = true
        current.channel?.close(mode: .all, promise: nil)
    }

    func schedule(_ input: CallDriver.Timed, at deadline: NIODeadline) {
        let id = self.nextTimer
        self.nextTimer += 1
        self.timers[id] = self.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timers[id] = nil
            self.perform { self.driver.timed(input) }
        }
    }

    var metrics: BridgeMetrics { self.shared.environment.metrics }

    func setTicking(_ ticking: Bool) {
        if ticking { self.loop.startTicking(self) } else { self.loop.stopTicking(self) }
    }

    // MARK: From the legs

    /// The Realtime leg's handler is in its pipeline: the leg is up.
    func realtimeUp(leg: Int, channel: any Channel, connection: WebSocketConnectionHandler?) {
        self.perform {
            guard let current = self.realtime, current.leg == leg else {
                channel.close(mode: .all, promise: nil)
                return
            }
            self.realtime?.channel = channel
            self.realtime?.connection = connection
            if current.over {
                channel.close(mode: .all, promise: nil)
                return
            }
            self.driver.realtimeConnected(leg: leg, dialect: self.shared.endpoint.current?.dialect ?? .ga)
        }
    }

    func realtimeGone(leg: Int, detail: String) {
        self.perform {
            if self.realtime?.leg == leg {
                self.realtime?.channel = nil
                self.realtime?.connection = nil
            }
            self.driver.realtimeClosed(leg: leg, .closed(detail))
        }
    }

    // MARK: Release

    private func release() {
        guard !self.isReleased else { return }
        self.isReleased = true
        for timer in self.timers.values { timer.cancel() }
        self.timers.removeAll()
        self.loop.stopTicking(self)
        if let channel = self.realtime?.channel { channel.close(promise: nil) }
        self.realtime = nil
        self.twilio.close(promise: nil)
        self.shared.registry.callEnded()
        self.shared.environment.metrics.setActiveCalls(self.shared.registry.activeCalls)
        self.logger.debug("call released", metadata: ["call.number": .stringConvertible(self.number)])
        self.released.succeed()
    }

    // MARK: Helpers

    /// A text message's payload, with room for its frame header before it.
    static func payload(_ text: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.webSocketPayload(capacity: text.utf8.count)
        buffer.writeString(text)
        return buffer
    }
}

/// The Twilio leg's messages, into the call's driver (straight from the connection handler, as its receiver).
final class TwilioMediaHandler: ChannelInboundHandler, RemovableChannelHandler, WebSocketTextBytesReceiver {
    typealias InboundIn = WebSocketInboundMessage

    private let host: LoopCallHost

    init(host: LoopCallHost) { self.host = host }

    func webSocketText(bytes: UnsafeRawBufferPointer) {
        self.host.twilioText(bytes: bytes)
    }

    func webSocketBinary(_ data: ByteBuffer) {
        self.host.perform { self.host.driver.twilioBinary() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch TwilioMediaHandler.unwrapInboundIn(data) {
        case .text(let buffer):
            self.host.twilioText(String(buffer: buffer))
        case .binary:
            self.host.perform { self.host.driver.twilioBinary() }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.host.perform { self.host.driver.twilioClosed() }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// One Realtime leg's messages, into the call's driver (straight from the connection handler, as its receiver).
final class RealtimeLegHandler: ChannelInboundHandler, RemovableChannelHandler, WebSocketMessageReceiver {
    typealias InboundIn = WebSocketInboundMessage

    private let host: LoopCallHost
    private let leg: Int
    /// The peer's close frame, once it came.
    private var peerClose: WebSocketPeerClosed?

    init(host: LoopCallHost, leg: Int) {
        self.host = host
        self.leg = leg
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let connection = try? context.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
        self.host.realtimeUp(leg: self.leg, channel: context.channel, connection: connection)
    }

    func webSocketText(_ text: String) {
        self.host.realtimeText(text, leg: self.leg)
    }

    func webSocketBinary(_ data: ByteBuffer) {
        let leg = self.leg
        self.host.perform { self.host.driver.realtimeBinary(leg: leg) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let leg = self.leg
        switch RealtimeLegHandler.unwrapInboundIn(data) {
        case .text(let buffer):
            self.host.realtimeText(String(buffer: buffer), leg: leg)
        case .binary:
            self.host.perform { self.host.driver.realtimeBinary(leg: leg) }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? WebSocketPeerClosed { self.peerClose = closed }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A close frame from the peer means the close handshake completed (whoever began it); none, that the
        // connection just dropped.
        let detail =
            switch self.peerClose {
            case .some(let closed): "close \(closed.code.map(String.init) ?? "without a code") \(closed.reason ?? "")"
            case .none: "connection closed without a close frame"
            }
        self.host.logger.info(
            "realtime leg closed",
            metadata: ["close.handshake": .stringConvertible(self.peerClose != nil), "close.detail": .string(detail)]
        )
        self.host.realtimeGone(leg: self.leg, detail: detail)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// The calls of one event loop and its one ticker: every 5 ms, a quarter of the calls in turn, so each call gets a
/// tick every 20 ms on its own phase.
final class LoopCalls {
    static let phases = 4
    private let eventLoop: any EventLoop
    private var ticking = PhasedTickList<LoopCallHost>(phases: LoopCalls.phases)
    private var ticker: LoopTicker?
    /// Where the ticks' lateness goes: the metrics of the bridge whose call last joined the ticker (a process runs
    /// one bridge; tests that run several on one loop group share the loop's figure).
    private var metrics: BridgeMetrics?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func startTicking(_ host: LoopCallHost) {
        self.ticking.insert(host)
        self.metrics = host.metrics
        if self.ticker == nil {
            let ticker = LoopTicker(eventLoop: self.eventLoop, period: .microseconds(20_000 / Int64(Self.phases))) {
                [unowned self] deadline in self.tick(deadline)
            }
            self.ticker = ticker
            ticker.start()
        }
    }

    func stopTicking(_ host: LoopCallHost) {
        self.ticking.remove(host)
    }

    /// A due tick now, from a message's read (`LoopTicker.runIfDue`); the instant the message is handled at. One
    /// clock read serves both, unless a tick ran (then the message comes after it, and the clock is read again).
    func tickIfDue() -> NIODeadline {
        let now = NIODeadline.now()
        guard let ticker = self.ticker, ticker.runIfDue(now: now) else { return now }
        return NIODeadline.now()
    }

    private func tick(_ deadline: NIODeadline) {
        // Each call writes its frame without flushing; each flushes once, when its turn is done. Backwards by index:
        // a call that stops ticking on its tick leaves the list (a call only ever removes itself).
        let group = self.ticking.nextGroup()
        var index = self.ticking.count(of: group)
        while index > 0 {
            index -= 1
            guard index < self.ticking.count(of: group) else { continue }
            self.ticking[group, index].tick(deadline)
        }
        self.metrics?.tickLateness.recordNanoseconds(max(0, (self.eventLoop.now - deadline).nanoseconds))
    }

    /// One per event loop of the group, made on first use.
    static func forLoop(_ eventLoop: any EventLoop) -> LoopCalls {
        eventLoop.preconditionInEventLoop()
        return registry.withLock { loops in
            if let existing = loops[ObjectIdentifier(eventLoop)] { return existing.value }
            let made = UnsafeTransfer(LoopCalls(eventLoop: eventLoop))
            loops[ObjectIdentifier(eventLoop)] = made
            return made.value
        }
    }

    private static let registry = Mutex<[ObjectIdentifier: UnsafeTransfer<LoopCalls>]>([:])
}

/// The TLS context of the Realtime endpoint, built once (a context loads the system trust store) and shared by every
/// call's connections.
final class TLSContextCache: Sendable {
    private let cached = Mutex<NIOSSLContext?>(nil)

    /// nil for a plain ws:// endpoint.
    func context(for endpoint: RealtimeEndpoint) throws -> NIOSSLContext? {
        guard endpoint.url.hasPrefix("wss:") else { return nil }
        if let context = self.cached.withLock({ $0 }) { return context }
        let context = try NIOSSLContext(configuration: endpoint.tlsConfiguration ?? .makeClientConfiguration())
        self.cached.withLock { $0 = context }
        return context
    }
}

import CallBridgeCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// `callbridge load-agent`: the Realtime test double for load tests, built to answer a thousand sessions from one
/// process without becoming the bottleneck. Same protocol and behaviour as the echo agent (`EchoAgent`: each caller
/// utterance is played back, both dialects, chosen per connection by the `OpenAI-Beta: realtime=v1` header), but on
/// raw NIO: TLS, the WebSocket upgrade, and one handler per connection that runs the agent synchronously on its event
/// loop. Caller audio is read by the byte scanner (only its base64 is decoded, for the VAD), and one ticker per event
/// loop sends every session's reply bursts.
public struct LoadAgentServer: Sendable {
    /// Replies like the real service: a fast first burst (1 s of audio), then 400 ms of audio every 100 ms, in deltas
    /// of 100–400 ms each.
    public static let serviceLikeAgent = EchoAgent.Configuration(
        burstInterval: .milliseconds(100),
        speedFactor: 4,
        deltaBytes: 800...3200,
        initialBurst: .seconds(1)
    )

    /// The paths a Realtime client may use (OpenAI's and Azure's), as the echo agent serves them.
    public static let paths = ["/v1/realtime", "/openai/realtime", "/openai/v1/realtime"]

    public var host: String
    public var port: Int
    public var tlsConfiguration: TLSConfiguration?
    public var threads: Int
    public var agent: EchoAgent.Configuration
    /// When set, sessions must present this key (Bearer or `api-key`) or the upgrade is refused.
    public var expectedAPIKey: String?
    public var logger: Logger
    /// Run the event loops in `SCHED_RR` at this priority (`RealtimeScheduling`); nil: normal scheduling.
    public var realtimePriority: Int?

    public init(
        host: String = "127.0.0.1",
        port: Int = 0,
        tlsConfiguration: TLSConfiguration? = nil,
        threads: Int = 1,
        agent: EchoAgent.Configuration = Self.serviceLikeAgent,
        expectedAPIKey: String? = nil,
        logger: Logger,
        realtimePriority: Int? = nil
    ) {
        self.realtimePriority = realtimePriority
        self.host = host
        self.port = port
        self.tlsConfiguration = tlsConfiguration
        self.threads = max(1, threads)
        self.agent = agent
        self.expectedAPIKey = expectedAPIKey
        self.logger = logger
    }

    /// Counters over every loop.
    public struct Snapshot: Sendable, Equatable {
        public var sessionsOpened = 0
        public var sessionsClosed = 0
        public var eventsReceived = 0
        public var eventsSent = 0
        public var tickResets = 0
    }

    /// A listening double.
    public final class Running: Sendable {
        public let port: Int
        /// What the kernel said to `realtimePriority` (nil: not asked for).
        public let scheduling: RealtimeScheduling.Outcome?
        let group: MultiThreadedEventLoopGroup
        let channel: any Channel
        let loops: [AgentLoop]

        init(port: Int, scheduling: RealtimeScheduling.Outcome?, group: MultiThreadedEventLoopGroup, channel: any Channel, loops: [AgentLoop]) {
            self.port = port
            self.scheduling = scheduling
            self.group = group
            self.channel = channel
            self.loops = loops
        }

        public func snapshot() async throws -> Snapshot {
            var total = Snapshot()
            for loop in self.loops {
                let s = try await loop.eventLoop.submit { loop.counters }.get()
                total.sessionsOpened += s.sessionsOpened
                total.sessionsClosed += s.sessionsClosed
                total.eventsReceived += s.eventsReceived
                total.eventsSent += s.eventsSent
                total.tickResets += s.tickResets
            }
            return total
        }

        /// Waits until the listening socket is closed (`shutdown()`).
        public func wait() async throws { try await self.channel.closeFuture.get() }

        public func shutdown() async throws {
            try? await self.channel.close()
            try await self.group.shutdownGracefully()
        }
    }

    public func start() async throws -> Running {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        var scheduling: RealtimeScheduling.Outcome?
        if let priority = self.realtimePriority { scheduling = await RealtimeScheduling.apply(priority: priority, to: group) }
        let tlsContext = try self.tlsConfiguration.map { try NIOSSLContext(configuration: $0) }
        let agent = self.agent
        var loops: [AgentLoop] = []
        for eventLoop in group.makeIterator() {
            let loop = AgentLoop(eventLoop: eventLoop)
            try await eventLoop.submit { loop.start() }.get()
            loops.append(loop)
        }
        let byLoop = UnsafeTransfer(Dictionary(uniqueKeysWithValues: loops.map { (ObjectIdentifier($0.eventLoop), $0) }))
        let expectedKey = self.expectedAPIKey
        let channel = try await WebSocketServerChannel.bind(
            host: self.host,
            port: self.port,
            group: group,
            tlsContext: tlsContext,
            configuration: .init(maximumMessageSize: 4 << 20),
            shouldUpgrade: { head in
                let path = String(head.uri.prefix { $0 != "?" })
                guard Self.paths.contains(path) else { return nil }
                if let expectedKey {
                    let bearer = head.headers["Authorization"].first
                    let apiKey = head.headers["api-key"].first
                    guard bearer == "Bearer \(expectedKey)" || apiKey == expectedKey else { return nil }
                }
                return HTTPHeaders()
            },
            makeHandler: { channel, head in
                let dialect: RealtimeDialect = head.headers["OpenAI-Beta"].contains("realtime=v1") ? .beta : .ga
                guard let loop = byLoop.value[ObjectIdentifier(channel.eventLoop)] else {
                    throw WebSocketConnectError.closedBeforeUpgrade
                }
                return LoadAgentHandler(agent: EchoAgent(dialect: dialect, configuration: agent), loop: loop)
            }
        ).get()
        return Running(port: channel.localAddress?.port ?? self.port, scheduling: scheduling, group: group, channel: channel, loops: loops)
    }
}

/// The sessions of one event loop and their shared ticker. Confined to `eventLoop`.
final class AgentLoop: @unchecked Sendable {
    let eventLoop: any EventLoop
    let epoch: NIODeadline
    var counters = LoadAgentServer.Snapshot()
    /// Sessions with a reply streaming (they need ticks); a session's index is in its `slot`.
    private var streaming = TickList<LoadAgentHandler>()
    private var ticker: LoopTicker?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.epoch = eventLoop.now
    }

    func start() {
        let ticker = LoopTicker(eventLoop: self.eventLoop) { [unowned self] deadline in self.tick(deadline) }
        self.ticker = ticker
        ticker.start()
    }

    /// The agent core's time: since the loop's sessions began (the loop's clock, virtual in tests).
    func instant(_ deadline: NIODeadline) -> CallInstant {
        CallInstant(offset: .nanoseconds((deadline - self.epoch).nanoseconds))
    }

    var now: CallInstant { self.instant(self.eventLoop.now) }

    func setStreaming(_ session: LoadAgentHandler, _ on: Bool) {
        if on { self.streaming.insert(session) } else { self.streaming.remove(session) }
    }

    private func tick(_ deadline: NIODeadline) {
        let now = self.now
        // Backwards: a session may leave the list while it is ticked.
        var index = self.streaming.count - 1
        while index >= 0 {
            if index < self.streaming.count { self.streaming[index].tick(now: now) }
            index -= 1
        }
        self.counters.tickResets = self.ticker?.resets ?? 0
    }
}

/// One Realtime session of the load double: the echo agent's core, run on the connection's event loop.
final class LoadAgentHandler: ChannelInboundHandler, TickListMember, WebSocketTextBytesReceiver {
    typealias InboundIn = WebSocketInboundMessage
    typealias OutboundOut = WebSocketFrame

    private var agent: EchoAgent
    private let loop: AgentLoop
    private var context: ChannelHandlerContext?
    /// The connection's WebSocket handler, which frames and writes each event directly (no `WebSocketFrame`).
    private var connection: WebSocketConnectionHandler?
    var slot = -1

    init(agent: EchoAgent, loop: AgentLoop) {
        self.agent = agent
        self.loop = loop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.connection = try? context.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
        self.loop.counters.sessionsOpened += 1
        self.send(self.agent.connected())
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.loop.setStreaming(self, false)
        self.loop.counters.sessionsClosed += 1
        self.context = nil
        self.connection = nil
    }

    /// A client event, read in place (unmasked into the connection's scratch): the connection handler calls this.
    func webSocketText(bytes: UnsafeRawBufferPointer) {
        self.loop.counters.eventsReceived += 1
        self.send(self.agent.received(bytes: bytes.bindMemory(to: UInt8.self), now: self.loop.now))
    }

    func webSocketBinary(_ data: ByteBuffer) {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Messages come through `webSocketText(bytes:)`; only a pipeline without the receiver set sends them here.
        guard case .text(let buffer) = LoadAgentHandler.unwrapInboundIn(data) else { return }
        buffer.withUnsafeReadableBytes { self.webSocketText(bytes: $0) }
    }

    func tick(now: CallInstant) {
        guard let wake = self.agent.nextWakeup, wake <= now else { return }
        self.send(self.agent.tick(now: now))
    }

    private func send(_ events: [String]) {
        defer { self.loop.setStreaming(self, self.agent.nextWakeup != nil) }
        guard let context = self.context, !events.isEmpty else { return }
        for event in events {
            var buffer = (self.connection?.allocator ?? context.channel.allocator).webSocketPayload(capacity: event.utf8.count)
            buffer.writeString(event)
            if let connection = self.connection {
                connection.send(text: consume buffer)
            } else {
                context.write(LoadAgentHandler.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: buffer)), promise: nil)
            }
        }
        self.loop.counters.eventsSent += events.count
        if let connection = self.connection { connection.flush() } else { context.flush() }
    }
}

import CallBridgeCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HummingbirdWSClient
import HummingbirdWebSocket
import Logging
import NIOSSL
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Runs phone calls; each `run` is one call: the Twilio leg it was accepted on, the Realtime leg it opens, and the
/// single consumer loop that feeds every event to the call's state machine and executes its actions in order.
///
/// This is the per-call actor: state is mutated only by the loop, synchronously, and the loop never awaits a socket.
/// Writes go to one ordered queue per leg, drained by that leg's writer task, so a slow peer cannot stall pacing or
/// the other leg, and a transition's actions are all issued before the next event is read.
final class CallSession: Sendable {
    enum Input: Sendable {
        case twilioText(String)
        case twilioBinary
        /// The Twilio connection is gone.
        case twilioClosed
        /// A Realtime leg is connected (numbered: after a reconnect or recycle an old leg's late news is dropped).
        case realtimeUp(LegWriter, leg: Int)
        case realtimeText(String, leg: Int)
        case realtimeBinary(leg: Int)
        case realtimeClosed(RealtimeClosure, leg: Int)
        /// The leg's task is over (also when it never connected).
        case realtimeFinished(leg: Int)
        case tick
        case timed(CallDriver.Timed)
        case shutdown
    }

    /// What authenticates a stream and bounds its life.
    struct Security: Sendable {
        /// Key of the per-call tokens; nil with --insecure-no-signature.
        var callTokenKey: [UInt8]?
        var startTimeout: Duration
        var maxCallDuration: Duration
    }

    /// How long an ended call waits for the peers to answer its close frames.
    static let closeGrace: Duration = .seconds(3)
    /// How long a call waits for the embedded agent to be listening.
    static let endpointWait: Duration = .seconds(5)

    let configuration: CallConfiguration
    /// Set once the Realtime service is known (the embedded agent: once it listens).
    let endpoint: AsyncValue<RealtimeEndpoint>
    let makeConfirmer: @Sendable () -> (any SpeechConfirmer)?
    let ticker: PacingTicker
    let timeline: Timeline
    let callLog: CallLog
    let registry: CallRegistry
    let metrics: BridgeMetrics
    let security: Security
    /// How often a call adds what changed in its counters to the Prometheus metrics (and once more at its end).
    static let metricsInterval: Duration = .seconds(1)

    init(
        configuration: CallConfiguration,
        endpoint: AsyncValue<RealtimeEndpoint>,
        makeConfirmer: @escaping @Sendable () -> (any SpeechConfirmer)?,
        ticker: PacingTicker,
        timeline: Timeline,
        callLog: CallLog,
        registry: CallRegistry,
        metrics: BridgeMetrics,
        security: Security
    ) {
        self.metrics = metrics
        self.security = security
        self.configuration = configuration
        self.endpoint = endpoint
        self.makeConfirmer = makeConfirmer
        self.ticker = ticker
        self.timeline = timeline
        self.callLog = callLog
        self.registry = registry
    }

    func run(twilioInbound: WebSocketInboundStream, twilioOutbound: WebSocketOutboundWriter, logger requestLogger: Logger) async {
        // Every line of this call, from any of its tasks, carries its call_sid and stream_sid once `start` named them.
        let callMetadata = CallMetadata()
        var callLogger = requestLogger
        let inherited = callLogger.handler.metadataProvider
        callLogger.handler.metadataProvider = Logger.MetadataProvider {
            var metadata = inherited?.get() ?? [:]
            metadata.merge(callMetadata.current) { _, new in new }
            return metadata
        }
        let baseLogger = callLogger
        let (inputs, continuation) = AsyncStream.makeStream(of: Input.self)
        let id = self.registry.callStarted()
        self.metrics.callStarted()
        self.metrics.setActiveCalls(self.registry.activeCalls)
        let timers = CallTimers()
        defer {
            timers.cancelAll()
            self.ticker.unregister(id)
            self.registry.callEnded()
            self.metrics.setActiveCalls(self.registry.activeCalls)
        }
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                let twilio = LegWriter()
                group.addTask { await Self.readTwilio(twilioInbound, into: continuation, logger: baseLogger) }
                group.addTask { await twilio.drain(into: twilioOutbound, logger: baseLogger) }
                let host = AsyncCallHost(session: self, id: id, twilio: twilio, continuation: continuation, timers: timers, logger: baseLogger)
                let driver = CallDriver(
                    io: host,
                    environment: .init(
                        configuration: self.configuration,
                        security: self.security,
                        makeConfirmer: self.makeConfirmer,
                        timeline: self.timeline,
                        callLog: self.callLog,
                        metrics: self.metrics
                    ),
                    logger: baseLogger,
                    callMetadata: callMetadata
                )
                driver.begin()
                for await input in inputs {
                    switch input {
                    case .twilioText(let text): driver.twilioText(text)
                    case .twilioBinary: driver.twilioBinary()
                    case .twilioClosed:
                        driver.twilioClosed()
                        twilio.finish()
                    case .realtimeUp(let writer, let leg):
                        // The writer first: the driver's answer to the connection (session.update) goes out on it.
                        if leg == driver.realtimeLeg { host.writer = writer }
                        driver.realtimeConnected(leg: leg, dialect: writer.dialect)
                    case .realtimeText(let text, let leg): driver.realtimeText(text, leg: leg)
                    case .realtimeBinary(let leg): driver.realtimeBinary(leg: leg)
                    case .realtimeClosed(let closure, let leg):
                        if leg == driver.realtimeLeg { host.writer = nil }
                        driver.realtimeClosed(leg: leg, closure)
                    case .realtimeFinished(let leg):
                        if leg == driver.realtimeLeg { host.writer = nil }
                        driver.realtimeLegFinished(leg: leg)
                    case .tick:
                        host.tickPending.clear()
                        driver.tick()
                    case .timed(let timed): driver.timed(timed)
                    case .shutdown: driver.shutdownRequested()
                    }
                    if driver.isReleased { break }
                }
                host.leg?.callOver()
                continuation.finish()
                twilio.finish()
                host.writer?.finish()
                group.cancelAll()
                // Bounded: a leg still connecting closes as soon as it is up; one that never comes up is cancelled.
                if let leg = host.leg {
                    let legDeadline = ContinuousClock.now.advanced(by: Self.closeGrace)
                    while !leg.isFinished && ContinuousClock.now < legDeadline {
                        try? await Task.sleep(for: .milliseconds(10))
                    }
                    if !leg.isFinished { host.legTask?.cancel() }
                }
            }
        } onGracefulShutdown: {
            continuation.yield(.shutdown)
        }
        baseLogger.debug("call released", metadata: ["call.number": .stringConvertible(id)])
    }

    /// Hands the Twilio leg's messages to the call's loop as they are; the driver decodes and polices them.
    static func readTwilio(_ inbound: WebSocketInboundStream, into continuation: AsyncStream<Input>.Continuation, logger: Logger) async {
        do {
            for try await message in inbound.messages(maxSize: 1 << 16) {
                switch message {
                case .text(let text): continuation.yield(.twilioText(text))
                case .binary: continuation.yield(.twilioBinary)
                }
            }
        } catch {
            logger.debug("twilio leg read ended", metadata: ["error": "\(error)"])
        }
        continuation.yield(.twilioClosed)
    }

    static func runRealtimeLeg(
        _ endpoint: RealtimeEndpoint,
        control: RealtimeLegControl,
        into continuation: AsyncStream<Input>.Continuation,
        logger: Logger
    ) async {
        let connected = Atomic<Bool>(false)
        do {
            let closeFrame = try await WebSocketClient.connect(
                url: endpoint.url,
                configuration: endpoint.clientConfiguration,
                tlsConfiguration: endpoint.tlsConfiguration,
                logger: logger
            ) { inbound, outbound, _ in
                connected.store(true, ordering: .relaxed)
                let writer = LegWriter(dialect: endpoint.dialect)
                // The call may already be over: then the writer's only job is the close frame.
                control.attach(writer)
                continuation.yield(.realtimeUp(writer, leg: control.number))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { await writer.drain(into: outbound, logger: logger) }
                    for try await message in inbound.messages(maxSize: 4 << 20) {
                        switch message {
                        case .text(let text):
                            continuation.yield(.realtimeText(text, leg: control.number))
                        case .binary:
                            continuation.yield(.realtimeBinary(leg: control.number))
                        }
                    }
                    writer.finish()
                    group.cancelAll()
                }
            }
            // A close frame back means the close handshake completed; nil means the connection just dropped.
            let detail = closeFrame.map { "close \($0.closeCode) \($0.reason ?? "")" } ?? "connection closed without a close frame"
            logger.info(
                "realtime leg closed",
                metadata: ["close.handshake": .stringConvertible(closeFrame != nil), "close.detail": .string(detail)]
            )
            continuation.yield(.realtimeClosed(.closed(detail), leg: control.number))
        } catch {
            if connected.load(ordering: .relaxed) {
                logger.error("realtime leg failed", metadata: ["error": "\(error)"])
                continuation.yield(.realtimeClosed(.closed("\(error)"), leg: control.number))
            } else {
                let retryable = RealtimeEndpoint.isNetworkFailure(error)
                logger.error(
                    "realtime connect failed",
                    metadata: ["error": "\(error)", "realtime.url": .string(endpoint.url), "retryable": .stringConvertible(retryable)]
                )
                continuation.yield(.realtimeClosed(.connectFailed("\(error)", retryable: retryable), leg: control.number))
            }
        }
        continuation.yield(.realtimeFinished(leg: control.number))
    }
}

/// `CallIO` for the async shell: the Twilio leg's writer task, a task per Realtime leg, NIO timers and the shared
/// ticker, all feeding the call's input stream. Used only from the call's own loop.
final class AsyncCallHost: CallIO {
    private let session: CallSession
    private let id: Int
    private let twilio: LegWriter
    private let continuation: AsyncStream<CallSession.Input>.Continuation
    private let timers: CallTimers
    private let logger: Logger
    let tickPending = TickFlag()
    /// The current Realtime leg, its task, and its writer once it is up.
    private(set) var leg: RealtimeLegControl?
    private(set) var legTask: Task<Void, Never>?
    var writer: LegWriter?

    init(session: CallSession, id: Int, twilio: LegWriter, continuation: AsyncStream<CallSession.Input>.Continuation, timers: CallTimers, logger: Logger) {
        self.session = session
        self.id = id
        self.twilio = twilio
        self.continuation = continuation
        self.timers = timers
        self.logger = logger
    }

    func sendTwilio(_ text: String) { self.twilio.send(text) }

    func closeTwilio() { self.twilio.close(reason: "call ended") }

    func openRealtime(leg number: Int) {
        // Runs outside the call's task group: a call that ends while the leg is still connecting must not cancel it
        // mid-handshake (the WebSocket client then lingers for seconds); the leg closes with a close frame once up.
        let control = RealtimeLegControl(number: number)
        let session = self.session
        let continuation = self.continuation
        let logger = self.logger
        self.writer = nil
        self.leg = control
        self.legTask = Task {
            defer { control.markFinished() }
            // Known at once but in the first moments of an embedded agent (no timer per call for it).
            var endpoint = session.endpoint.current
            if endpoint == nil { endpoint = try? await withTimeout(CallSession.endpointWait) { await session.endpoint.value } }
            guard let endpoint else {
                continuation.yield(.realtimeClosed(.connectFailed("the Realtime endpoint is not ready"), leg: number))
                continuation.yield(.realtimeFinished(leg: number))
                return
            }
            guard !control.isCallOver else {
                continuation.yield(.realtimeFinished(leg: number))
                return
            }
            await CallSession.runRealtimeLeg(endpoint, control: control, into: continuation, logger: logger)
        }
    }

    func sendRealtime(_ text: String) { self.writer?.send(text) }

    func closeRealtime(leg number: Int) {
        guard let leg = self.leg, leg.number == number else { return }
        leg.callOver()
    }

    func schedule(_ input: CallDriver.Timed, at deadline: ContinuousClock.Instant) {
        let continuation = self.continuation
        self.timers.schedule(at: deadline, clock: self.session.timeline.clock) { continuation.yield(.timed(input)) }
    }

    func setTicking(_ ticking: Bool) {
        guard ticking else {
            self.session.ticker.unregister(self.id)
            return
        }
        let continuation = self.continuation
        let pending = self.tickPending
        self.session.ticker.register(self.id) {
            // At most one tick waits in the queue: a stalled loop must not pile them up.
            if pending.set() { continuation.yield(.tick) }
        }
    }
}

/// Hands the memory freed by ended calls back to the system once the bridge has been idle for a moment (glibc's
/// `malloc_trim`). glibc keeps freed pages in its arenas: after a burst of calls the process would stay at its peak
/// size, and resident memory, which dashboards and the leak test read, would say little about what is in use.
final class IdleHeapTrim: Sendable {
    private typealias Trim = @convention(c) (Int) -> Int32
    /// nil where the C library has no `malloc_trim` (musl, Darwin).
    private static let trim: Trim? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim").map { unsafeBitCast($0, to: Trim.self) }
    /// Long enough that the gaps inside a burst of calls do not trim; trimming is a walk over the whole heap.
    static let delay = TimeAmount.milliseconds(200)

    private let registry: CallRegistry
    private let logger: Logger
    private let pending = Atomic<Bool>(false)
    private let eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()

    init(registry: CallRegistry, logger: Logger) {
        self.registry = registry
        self.logger = logger
    }

    /// The last active call just ended.
    func wentIdle() {
        guard Self.trim != nil, !self.pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        self.eventLoop.scheduleTask(in: Self.delay) {
            self.pending.store(false, ordering: .releasing)
            guard self.registry.activeCalls == 0, let trim = Self.trim else { return }
            let released = trim(0) == 1
            self.logger.debug("idle: heap trimmed", metadata: ["heap.released": .stringConvertible(released)])
        }
    }
}

/// A call's timers, on a NIO event loop. A cancelled `Task.sleep` keeps its dispatch timer (and the job it would
/// resume) until the original deadline, four hours away for the call-length limit: with timers as sleeping tasks,
/// every ended call left about 2 KiB behind for hours. A cancelled NIO task leaves the loop's timer heap at once.
final class CallTimers: Sendable {
    private struct State {
        var next = 0
        var pending: [Int: Scheduled<Void>] = [:]
        var cancelled = false
    }
    private let eventLoop: any EventLoop
    private let state = Mutex(State())

    init(eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        self.eventLoop = eventLoop
    }

    /// Runs `body` at `deadline` (at once if it has passed), unless `cancelAll()` comes first.
    func schedule(at deadline: ContinuousClock.Instant, clock: ContinuousClock, _ body: @escaping @Sendable () -> Void) {
        let delay = max(.zero, clock.now.duration(to: deadline))
        let nanoseconds = delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000
        self.state.withLock { state in
            guard !state.cancelled else { return }
            let id = state.next
            state.next += 1
            // Scheduled under the lock: the task cannot fire (and forget itself) before it is remembered.
            state.pending[id] = self.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) {
                _ = self.state.withLock { $0.pending.removeValue(forKey: id) }
                body()
            }
        }
    }

    func cancelAll() {
        let pending = self.state.withLock { state in
            state.cancelled = true
            defer { state.pending.removeAll() }
            return Array(state.pending.values)
        }
        for task in pending { task.cancel() }
    }
}

/// One leg's outbound queue: the consumer loop enqueues without waiting; a writer task sends in order.
struct LegWriter: Sendable {
    enum Output: Sendable {
        case text(String)
        case close(String)
    }

    let dialect: RealtimeDialect
    private let stream: AsyncStream<Output>
    private let continuation: AsyncStream<Output>.Continuation

    init(dialect: RealtimeDialect = .ga) {
        self.dialect = dialect
        (self.stream, self.continuation) = AsyncStream.makeStream(of: Output.self)
    }

    func send(_ text: String) { self.continuation.yield(.text(text)) }
    func close(reason: String) { self.continuation.yield(.close(reason)) }
    func finish() { self.continuation.finish() }

    /// Sends everything queued, in order, until closed; a failed write ends the writer (the reader sees the socket go).
    func drain(into outbound: WebSocketOutboundWriter, logger: Logger) async {
        for await output in self.stream {
            do {
                switch output {
                case .text(let text):
                    try await outbound.write(.text(text))
                case .close(let reason):
                    try await outbound.close(.normalClosure, reason: reason)
                    return
                }
            } catch {
                logger.debug("leg write failed", metadata: ["error": "\(error)"])
                return
            }
        }
    }
}

/// Between a call and its Realtime leg: the call says when it is over (the leg then closes with a close frame,
/// also if it connects only afterwards), the leg says when it has finished.
final class RealtimeLegControl: Sendable {
    let number: Int

    init(number: Int) { self.number = number }

    private struct State {
        var over = false
        var finished = false
        var writer: LegWriter?
    }
    private let state = Mutex(State())

    var isCallOver: Bool { self.state.withLock { $0.over } }
    var isFinished: Bool { self.state.withLock { $0.finished } }

    func attach(_ writer: LegWriter) {
        let over = self.state.withLock { state in
            state.writer = writer
            return state.over
        }
        if over { Self.close(writer) }
    }

    func callOver() {
        let writer = self.state.withLock { state in
            state.over = true
            return state.writer
        }
        if let writer { Self.close(writer) }
    }

    func markFinished() { self.state.withLock { $0.finished = true } }

    private static func close(_ writer: LegWriter) {
        writer.close(reason: "call ended")
        writer.finish()
    }
}

/// The call's identity for its log lines, filled in when Twilio's `start` arrives.
final class CallMetadata: Sendable {
    private let metadata = Mutex<Logger.Metadata>([:])
    var current: Logger.Metadata { self.metadata.withLock { $0 } }
    func set(callSid: String, streamSid: String) {
        self.metadata.withLock {
            $0["call_sid"] = .string(callSid)
            $0["stream_sid"] = .string(streamSid)
        }
    }
}

/// Whether a tick is already waiting in a call's queue.
final class TickFlag: Sendable {
    private let pending = Atomic<Bool>(false)
    /// Marks a tick pending; true when none was.
    func set() -> Bool { !self.pending.exchange(true, ordering: .acquiringAndReleasing) }
    func clear() { self.pending.store(false, ordering: .releasing) }
}

/// Active-call bookkeeping shared by the routes (health, drain).
public final class CallRegistry: Sendable {
    private let active = Atomic<Int>(0)
    private let total = Atomic<Int>(0)
    /// Tasks waiting for the active count to reach 0.
    private let idleWaiters = Mutex<[Int: CheckedContinuation<Void, Never>]>([:])
    private let nextWaiter = Atomic<Int>(0)

    /// Returns true as soon as no call is active, false if that does not happen within `limit`.
    public func waitUntilIdle(upTo limit: Duration) async -> Bool {
        if self.activeCalls == 0 { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                let id = self.nextWaiter.add(1, ordering: .relaxed).newValue
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.idleWaiters.withLock { waiters -> Bool in
                            if self.activeCalls == 0 || Task.isCancelled { return true }
                            waiters[id] = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    self.idleWaiters.withLock { $0.removeValue(forKey: id) }?.resume()
                }
                return self.activeCalls == 0
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    public init() {}

    public var activeCalls: Int { self.active.load(ordering: .relaxed) }
    public var totalCalls: Int { self.total.load(ordering: .relaxed) }

    /// Counts the call and returns its process-unique number.
    func callStarted() -> Int {
        self.active.add(1, ordering: .relaxed)
        return self.total.add(1, ordering: .relaxed).newValue
    }

    /// Called each time the last active call ends (set once, before the server starts).
    let idleHandler = Mutex<(@Sendable () -> Void)?>(nil)

    func callEnded() {
        guard self.active.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        self.idleHandler.withLock { $0 }?()
        let waiters = self.idleWaiters.withLock { waiters in
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }
}

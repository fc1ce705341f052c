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
        case event(CallEvent)
        /// An event from a Realtime leg (numbered: after a reconnect or recycle an old leg's late news is dropped).
        case realtime(CallEvent, leg: Int)
        /// A Realtime leg (numbered: after a reconnect an old leg's late news must not touch the new one).
        case realtimeAttached(LegWriter, leg: Int)
        case realtimeFinished(leg: Int)
        case twilioFinished
        /// The ended call's close handshakes took too long: stop waiting for the peers.
        case closeGraceExpired
        /// The start timeout passed: end the call unless `start` has arrived.
        case startDeadline
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
        let startTime = JSONLogHandler.timestamp()
        let tickPending = TickFlag()
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
                // With authentication on, the model's session is opened only for a stream whose `start` carried a
                // valid call token: nothing of an unauthenticated stream reaches the paid API.
                let admitted = AsyncValue<Bool>()
                if self.security.callTokenKey == nil { admitted.set(true) }
                // The Realtime leg runs outside the call's task group: a call that ends while the leg is still
                // connecting must not cancel it mid-handshake (the WebSocket client then lingers for seconds), but
                // tell it to close with a close frame as soon as it is up.
                @Sendable func openRealtimeLeg(number: Int) -> (RealtimeLegControl, Task<Void, Never>) {
                    let control = RealtimeLegControl(number: number)
                    let task = Task {
                        defer { control.markFinished() }
                        guard await admitted.value else {
                            continuation.yield(.realtimeFinished(leg: number))
                            return
                        }
                        // Known at once but in the first moments of an embedded agent (no timer per call for it).
                        var endpoint = self.endpoint.current
                        if endpoint == nil { endpoint = try? await withTimeout(Self.endpointWait) { await self.endpoint.value } }
                        guard let endpoint else {
                            continuation.yield(.realtime(.realtimeClosed(.connectFailed("the Realtime endpoint is not ready")), leg: number))
                            continuation.yield(.realtimeFinished(leg: number))
                            return
                        }
                        guard !control.isCallOver else {
                            continuation.yield(.realtimeFinished(leg: number))
                            return
                        }
                        await Self.runRealtimeLeg(endpoint, control: control, into: continuation, logger: baseLogger)
                    }
                    return (control, task)
                }
                var (realtimeLeg, realtimeTask) = openRealtimeLeg(number: 1)

                var machine = CallStateMachine(
                    configuration: self.configuration,
                    confirmer: self.makeConfirmer(),
                    now: self.timeline.now
                )
                var logger = baseLogger
                var realtime: LegWriter?
                var dialect = RealtimeDialect.ga
                var quotedStreamSid = JSONText.quoted("")
                var ticking = false
                var twilioOpen = true
                var realtimeOpen = true
                var published = CallCounters()
                var publishedAt = self.timeline.clock.now
                var started = false
                let opened = self.timeline.clock.now
                self.deliver(.startDeadline, at: opened.advanced(by: self.security.startTimeout), timers: timers, to: continuation)
                self.deliver(.event(.terminate(.maxDuration)), at: opened.advanced(by: self.security.maxCallDuration), timers: timers, to: continuation)

                loop: for await input in inputs {
                    var event: CallEvent
                    switch input {
                    case .event(let e):
                        event = e
                    case .realtime(let e, let leg):
                        guard leg == realtimeLeg.number else { continue }
                        event = e
                    case .startDeadline:
                        guard !started else { continue }
                        logger.warning("no start message: closing the stream", metadata: ["start.timeout_ms": .stringConvertible(self.security.startTimeout.components.seconds * 1000)])
                        event = .terminate(.noStart)
                    case .realtimeAttached(let writer, let leg):
                        guard leg == realtimeLeg.number else { continue }
                        realtime = writer
                        realtimeOpen = true
                        dialect = writer.dialect
                        if machine.isEnded { writer.close(reason: "call ended") }
                        continue
                    case .realtimeFinished(let leg):
                        guard leg == realtimeLeg.number else { continue }
                        realtimeOpen = false
                        realtime = nil
                        if machine.isEnded && !twilioOpen { break loop }
                        continue
                    case .twilioFinished:
                        twilioOpen = false
                        twilio.finish()
                        if machine.isEnded && (!realtimeOpen || realtime == nil) { break loop }
                        continue
                    case .closeGraceExpired:
                        logger.warning(
                            "close handshake timed out",
                            metadata: ["twilio.open": .stringConvertible(twilioOpen), "realtime.open": .stringConvertible(realtimeOpen)]
                        )
                        break loop
                    }
                    if case .tick = event { tickPending.clear() }
                    if case .twilioReceived(let message) = event {
                        switch message {
                        case .start(var start) where !started:
                            started = true
                            if let key = self.security.callTokenKey {
                                let verdict = CallToken.verify(
                                    start.customParameters[CallToken.parameterName],
                                    callSid: start.callSid,
                                    now: Int64(Date().timeIntervalSince1970),
                                    key: key
                                )
                                guard verdict == .valid else {
                                    self.metrics.authFailed(route: "start", reason: verdict.rawValue)
                                    logger.warning("call token rejected: closing the stream", metadata: ["call_sid": .string(start.callSid), "token.verdict": .string(verdict.rawValue)])
                                    admitted.set(false)
                                    event = .terminate(.unauthorized)
                                    break
                                }
                            }
                            // The token has done its job; it is not a call parameter to log.
                            start.customParameters[CallToken.parameterName] = nil
                            event = .twilioReceived(.start(start))
                            admitted.set(true)
                        case .connected, .start, .stop, .unhandled:
                            break
                        case .media, .mark, .dtmf:
                            // Before (an authenticated) start nothing of the stream counts, and no audio moves.
                            if !started {
                                event = .badInput(kind: "twilio.\(message.kindName)_before_start", count: 1)
                            }
                        }
                    }
                    if self.timeline.clock.now - publishedAt >= Self.metricsInterval {
                        self.metrics.publish(machine.counters, since: published)
                        published = machine.counters
                        publishedAt = self.timeline.clock.now
                    }
                    // Only the stream's first start names the call (the core counts and ignores any later one).
                    if case .twilioReceived(.start(let start)) = event, machine.start == nil {
                        quotedStreamSid = JSONText.quoted(start.streamSid)
                        callMetadata.set(callSid: start.callSid, streamSid: start.streamSid)
                        logger.info("call started", metadata: ["call.parameters": .string("\(start.customParameters)")])
                    }
                    if case .realtimeReceived(.sessionCreated(let sid?)) = event {
                        logger[metadataKey: "realtime.session.id"] = .string(sid)
                    }
                    for action in machine.handle(event, now: self.timeline.now) {
                        switch action {
                        case .sendTwilio(let message):
                            twilio.send(TwilioCodec.encode(message, quotedStreamSid: quotedStreamSid))
                        case .sendRealtime(let clientEvent):
                            realtime?.send(RealtimeCodec.encode(clientEvent, dialect: dialect))
                        case .scheduleTimer(let timer, let at):
                            self.deliver(.event(.timerFired(timer)), at: self.timeline.instant(at), timers: timers, to: continuation)
                        case .logBadMessage(let kind):
                            logger.warning("bad message", metadata: ["message.kind": .string(kind)])
                        case .closeRealtime:
                            realtimeLeg.callOver()
                        case .connectRealtime(let attempt):
                            logger.notice("reconnecting the realtime leg", metadata: ["reconnect.attempt": .stringConvertible(attempt)])
                            realtimeLeg.callOver()
                            (realtimeLeg, realtimeTask) = openRealtimeLeg(number: realtimeLeg.number + 1)
                            realtimeOpen = true
                            realtime = nil
                        case .logWatchdog(let kind):
                            logger.warning("watchdog tripped", metadata: ["watchdog.kind": .string(kind)])
                        case .logUpstreamError(let info):
                            logger.warning(
                                "realtime error",
                                metadata: [
                                    "error.type": .string(info.type ?? ""), "error.code": .string(info.code ?? ""),
                                    "error.message": .string(info.message), "error.event_id": .string(info.eventID ?? ""),
                                ]
                            )
                        case .endCall(let reason):
                            self.metrics.publish(machine.counters, since: published)
                            published = machine.counters
                            self.metrics.callEnded(reason)
                            if var summary = machine.summary {
                                summary.startTime = startTime
                                self.callLog.write(summary)
                                logger.info(
                                    "call ended",
                                    metadata: [
                                        "end.reason": .string(reason.rawValue),
                                        "tx.frames": .stringConvertible(summary.counters.txFrames),
                                        "tx.resets": .stringConvertible(summary.counters.txScheduleResets),
                                        "barge_in.events": .stringConvertible(summary.counters.bargeInEvents),
                                    ]
                                )
                            }
                            realtime?.close(reason: "call ended")
                            twilio.close(reason: "call ended")
                            self.deliver(
                                .closeGraceExpired,
                                at: self.timeline.clock.now.advanced(by: Self.closeGrace),
                                timers: timers,
                                to: continuation
                            )
                        }
                    }
                    if machine.wantsTicks != ticking {
                        ticking = machine.wantsTicks
                        if ticking {
                            self.ticker.register(id) {
                                // At most one tick waits in the queue: a stalled loop must not pile them up.
                                if tickPending.set() { continuation.yield(.event(.tick)) }
                            }
                        } else {
                            self.ticker.unregister(id)
                        }
                    }
                    // Once ended, wait for both legs to finish their close handshakes; a leg still connecting is cancelled.
                    if machine.isEnded && !twilioOpen && (!realtimeOpen || realtime == nil) { break loop }
                }
                admitted.set(false)
                realtimeLeg.callOver()
                continuation.finish()
                twilio.finish()
                realtime?.finish()
                group.cancelAll()
                // Bounded: a leg still connecting closes as soon as it is up; one that never comes up is cancelled.
                let legDeadline = ContinuousClock.now.advanced(by: Self.closeGrace)
                while !realtimeLeg.isFinished && ContinuousClock.now < legDeadline {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                if !realtimeLeg.isFinished { realtimeTask.cancel() }
            }
        } onGracefulShutdown: {
            continuation.yield(.event(.shutdownRequested))
        }
        baseLogger.debug("call released", metadata: ["call.number": .stringConvertible(id)])
    }

    /// Yields `input` into the call's loop at `deadline`, unless the call's timers are cancelled first.
    func deliver(_ input: Input, at deadline: ContinuousClock.Instant, timers: CallTimers, to continuation: AsyncStream<Input>.Continuation) {
        timers.schedule(at: deadline, clock: self.timeline.clock) { continuation.yield(input) }
    }

    /// Messages per second a stream may send before the excess is dropped (Twilio sends 50 media messages a second,
    /// plus marks and the odd DTMF), and the burst allowed above that rate.
    static let floodRate = 150.0
    static let floodBurst = 300.0

    static func readTwilio(_ inbound: WebSocketInboundStream, into continuation: AsyncStream<Input>.Continuation, logger: Logger) async {
        var streamSid: String?
        // A token bucket: a flood from one stream is cut off at the door instead of queueing in memory.
        var tokens = Self.floodBurst
        var refilledAt = ContinuousClock.now
        var dropped = 0
        var unreported = 0
        do {
            for try await message in inbound.messages(maxSize: 1 << 16) {
                let now = ContinuousClock.now
                let elapsed = now - refilledAt
                tokens = min(Self.floodBurst, tokens + Self.floodRate * (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
                refilledAt = now
                guard tokens >= 1 else {
                    dropped += 1
                    unreported += 1
                    // Counted in batches, so the flood does not flood the call's loop either.
                    if unreported == 50 {
                        continuation.yield(.event(.badInput(kind: "twilio.flood_dropped", count: unreported)))
                        unreported = 0
                    }
                    continue
                }
                tokens -= 1
                if unreported > 0 {
                    continuation.yield(.event(.badInput(kind: "twilio.flood_dropped", count: unreported)))
                    unreported = 0
                }
                switch message {
                case .text(let text):
                    do throws(TwilioDecodingError) {
                        let decoded = try TwilioCodec.decode(text, streamSid: streamSid)
                        if case .start(let start) = decoded, streamSid == nil { streamSid = start.streamSid }
                        continuation.yield(.event(.twilioReceived(decoded)))
                    } catch {
                        continuation.yield(.event(.twilioMalformed(error)))
                    }
                case .binary:
                    continuation.yield(.event(.twilioMalformed(.binaryFrame)))
                }
            }
        } catch {
            logger.debug("twilio leg read ended", metadata: ["error": "\(error)"])
        }
        if unreported > 0 { continuation.yield(.event(.badInput(kind: "twilio.flood_dropped", count: unreported))) }
        if dropped > 0 { logger.warning("flood: messages dropped", metadata: ["dropped": .stringConvertible(dropped)]) }
        continuation.yield(.event(.twilioClosed))
        continuation.yield(.twilioFinished)
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
                continuation.yield(.realtimeAttached(writer, leg: control.number))
                continuation.yield(.realtime(.realtimeConnected, leg: control.number))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { await writer.drain(into: outbound, logger: logger) }
                    for try await message in inbound.messages(maxSize: 4 << 20) {
                        switch message {
                        case .text(let text):
                            do throws(RealtimeDecodingError) {
                                continuation.yield(.realtime(.realtimeReceived(try RealtimeCodec.decode(text)), leg: control.number))
                            } catch {
                                continuation.yield(.realtime(.realtimeMalformed(error), leg: control.number))
                            }
                        case .binary:
                            continuation.yield(.realtime(.realtimeUnexpectedFrame, leg: control.number))
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
            continuation.yield(.realtime(.realtimeClosed(.closed(detail)), leg: control.number))
        } catch {
            if connected.load(ordering: .relaxed) {
                logger.error("realtime leg failed", metadata: ["error": "\(error)"])
                continuation.yield(.realtime(.realtimeClosed(.closed("\(error)")), leg: control.number))
            } else {
                let retryable = RealtimeEndpoint.isNetworkFailure(error)
                logger.error(
                    "realtime connect failed",
                    metadata: ["error": "\(error)", "realtime.url": .string(endpoint.url), "retryable": .stringConvertible(retryable)]
                )
                continuation.yield(.realtime(.realtimeClosed(.connectFailed("\(error)", retryable: retryable)), leg: control.number))
            }
        }
        continuation.yield(.realtimeFinished(leg: control.number))
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

    var pendingCount: Int { self.state.withLock { $0.pending.count } }
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

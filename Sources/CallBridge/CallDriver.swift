import CallBridgeCore
import Foundation
import Logging
import NIOCore

/// What a call's driver asks of the connections and clocks around it. The host (`LoopCallHost`) decides how: on the
/// call's event loop, writing without awaiting.
protocol CallIO: AnyObject {
    func sendTwilio(_ text: String)
    /// Close the Twilio leg with a close frame.
    func closeTwilio()
    /// Open Realtime leg number `leg` (1, then one more per reconnect or recycle).
    func openRealtime(leg: Int)
    /// Send on the Realtime leg that is up (the host knows it from `realtimeUp`).
    func sendRealtime(_ text: String)
    /// Close Realtime leg `leg` with a close frame once it is up (at once if it is).
    func closeRealtime(leg: Int)
    /// Hand `input` back to `CallDriver.timed(_:)` at `deadline`, unless the call is released first.
    func schedule(_ input: CallDriver.Timed, at deadline: NIODeadline)
    /// Whether the call wants a `tick()` every 20 ms from the shared ticker.
    func setTicking(_ ticking: Bool)
}

/// One call's shell logic, synchronous: it turns what arrives on the two legs (raw text, closes) into the core's
/// events, gates the stream on its `start` and call token, runs the state machine's actions through `CallIO`,
/// numbers the Realtime legs so an old leg's late news is dropped, publishes metrics and writes the call log.
///
/// Not thread-safe by design: its host must call it from one task or one event loop at a time.
final class CallDriver {
    /// Inputs that come back from a timer.
    enum Timed: Sendable {
        case event(CallEvent)
        /// The start timeout passed: end the call unless `start` has arrived.
        case startDeadline
        /// The ended call's close handshakes took too long: stop waiting for the peers.
        case closeGraceExpired
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
    /// How often a call adds what changed in its counters to the Prometheus metrics (and once more at its end).
    static let metricsInterval: TimeAmount = .seconds(1)

    struct Environment {
        var configuration: CallConfiguration
        var security: Security
        var makeConfirmer: @Sendable () -> (any SpeechConfirmer)?
        var timeline: Timeline
        var callLog: CallLog
        var metrics: BridgeMetrics
    }

    private unowned let io: any CallIO
    private let environment: Environment
    private var machine: CallStateMachine
    private var logger: Logger
    private let callMetadata: CallMetadata
    private let startTime: String
    private var started = false
    private var dialect = RealtimeDialect.ga
    private var quotedStreamSid = JSONText.quoted("")
    /// The Twilio stream's own sid, once `start` named it (later media must carry it).
    private var streamSid: String?
    private var ticking = false
    private var published = CallCounters()
    private var publishedAt: NIODeadline
    /// The current Realtime leg's number, and whether it is up (connected) and still open.
    private(set) var realtimeLeg = 0
    private var realtimeUp = false
    private var realtimeOpen = false
    private var twilioOpen = true
    /// The call is over and both legs are done (or the close grace expired): the host releases it.
    private(set) var isReleased = false
    private var flood: FloodGate
    private var actions: [CallAction] = []

    init(io: any CallIO, environment: Environment, logger: Logger, callMetadata: CallMetadata) {
        self.io = io
        self.environment = environment
        self.logger = logger
        self.callMetadata = callMetadata
        let timeline = environment.timeline
        let opened = NIODeadline.now()
        self.machine = CallStateMachine(configuration: environment.configuration, confirmer: environment.makeConfirmer(), now: timeline.instant(opened))
        self.startTime = JSONLogHandler.timestamp()
        self.publishedAt = opened
        self.flood = FloodGate(now: opened)
        self.actions.reserveCapacity(8)
    }

    /// Arms the start timeout and the call-length limit and, without call tokens, opens the Realtime leg at once.
    func begin() {
        let opened = NIODeadline.now()
        self.io.schedule(.startDeadline, at: opened + TimeAmount(self.environment.security.startTimeout))
        self.io.schedule(.event(.terminate(.maxDuration)), at: opened + TimeAmount(self.environment.security.maxCallDuration))
        // With authentication on, the model's session is opened only for a stream whose `start` carried a valid call
        // token: nothing of an unauthenticated stream reaches the paid API.
        if self.environment.security.callTokenKey == nil { self.openNextRealtimeLeg() }
    }

    var counters: CallCounters { self.machine.counters }
    var isEnded: Bool { self.machine.isEnded }

    // MARK: Twilio leg

    /// A text message from Twilio.
    func twilioText(_ text: String) {
        self.twilioText { streamSid throws(TwilioDecodingError) in try TwilioCodec.decode(text, streamSid: streamSid) }
    }

    /// A text message from Twilio, read where it lies (valid only during the call), that arrived at `arrived` (the
    /// host's clock read, when it has one).
    func twilioText(bytes: UnsafeRawBufferPointer, at arrived: NIODeadline = .now()) {
        self.twilioText(at: arrived) { streamSid throws(TwilioDecodingError) in
            try TwilioCodec.decode(bytes: bytes.bindMemory(to: UInt8.self), streamSid: streamSid)
        }
    }

    // One clock read per message: the flood gate, the state machine and the metrics all take this one.
    private func twilioText(at arrived: NIODeadline = .now(), decode: (String?) throws(TwilioDecodingError) -> TwilioInbound) {
        guard self.flood.admit(now: arrived, report: { self.handle(.badInput(kind: "twilio.flood_dropped", count: $0), at: arrived) }) else {
            return
        }
        do throws(TwilioDecodingError) {
            let decoded = try decode(self.streamSid)
            if case .start(let start) = decoded, self.streamSid == nil { self.streamSid = start.streamSid }
            self.twilioReceived(decoded, at: arrived)
        } catch {
            self.handle(.twilioMalformed(error), at: arrived)
        }
    }

    func twilioBinary() {
        let arrived = NIODeadline.now()
        guard self.flood.admit(now: arrived, report: { self.handle(.badInput(kind: "twilio.flood_dropped", count: $0), at: arrived) }) else {
            return
        }
        self.handle(.twilioMalformed(.binaryFrame), at: arrived)
    }

    /// The Twilio connection is gone (stop was handled as a message; this is the socket).
    func twilioClosed() {
        if let dropped = self.flood.finish(report: { self.handle(.badInput(kind: "twilio.flood_dropped", count: $0)) }) {
            self.logger.warning("flood: messages dropped", metadata: ["dropped": .stringConvertible(dropped)])
        }
        self.handle(.twilioClosed)
        self.twilioOpen = false
        self.releaseIfDone()
    }

    private func twilioReceived(_ message: TwilioInbound, at arrived: NIODeadline) {
        var event = CallEvent.twilioReceived(message)
        switch message {
        case .start(var start) where !self.started:
            self.started = true
            if let key = self.environment.security.callTokenKey {
                let verdict = CallToken.verify(
                    start.customParameters[CallToken.parameterName],
                    callSid: start.callSid,
                    now: Int64(Date().timeIntervalSince1970),
                    key: key
                )
                guard verdict == .valid else {
                    self.environment.metrics.authFailed(route: "start", reason: verdict.rawValue)
                    self.logger.warning(
                        "call token rejected: closing the stream",
                        metadata: ["call_sid": .string(start.callSid), "token.verdict": .string(verdict.rawValue)]
                    )
                    self.handle(.terminate(.unauthorized), at: arrived)
                    return
                }
            }
            // The token has done its job; it is not a call parameter to log.
            start.customParameters[CallToken.parameterName] = nil
            event = .twilioReceived(.start(start))
            if self.environment.security.callTokenKey != nil { self.openNextRealtimeLeg() }
        case .connected, .start, .stop, .unhandled:
            break
        case .media, .mark, .dtmf:
            // Before (an authenticated) start nothing of the stream counts, and no audio moves.
            if !self.started { event = .badInput(kind: "twilio.\(message.kindName)_before_start", count: 1) }
        }
        // Only the stream's first start names the call (the core counts and ignores any later one).
        if case .twilioReceived(.start(let start)) = event, self.machine.start == nil {
            self.quotedStreamSid = JSONText.quoted(start.streamSid)
            self.callMetadata.set(callSid: start.callSid, streamSid: start.streamSid)
            self.logger.info("call started", metadata: ["call.parameters": .string("\(start.customParameters)")])
        }
        self.handle(event, at: arrived)
    }

    // MARK: Realtime leg

    /// Leg `leg` is connected (ignored unless it is the current one; the host sends on the current one).
    func realtimeConnected(leg: Int, dialect: RealtimeDialect) {
        guard leg == self.realtimeLeg else { return }
        self.dialect = dialect
        self.realtimeUp = true
        if self.machine.isEnded {
            self.io.closeRealtime(leg: leg)
            return
        }
        self.handle(.realtimeConnected)
    }

    func realtimeText(_ text: String, leg: Int, at arrived: NIODeadline = .now()) {
        guard leg == self.realtimeLeg else { return }
        do throws(RealtimeDecodingError) {
            self.handle(.realtimeReceived(try RealtimeCodec.decode(text)), at: arrived)
        } catch {
            self.handle(.realtimeMalformed(error), at: arrived)
        }
    }

    func realtimeBinary(leg: Int) {
        guard leg == self.realtimeLeg else { return }
        self.handle(.realtimeUnexpectedFrame)
    }

    /// Leg `leg` went away (`closure` says how); its connection is finished.
    func realtimeClosed(leg: Int, _ closure: RealtimeClosure) {
        guard leg == self.realtimeLeg else { return }
        self.handle(.realtimeClosed(closure))
        self.realtimeLegFinished(leg: leg)
    }

    /// Leg `leg` will say nothing more (also when it never connected because the call ended first).
    func realtimeLegFinished(leg: Int) {
        guard leg == self.realtimeLeg else { return }
        self.realtimeOpen = false
        self.realtimeUp = false
        self.releaseIfDone()
    }

    // MARK: Time

    /// A pacing tick scheduled for `deadline`, however late the loop runs it (the pacer judges it by its schedule).
    func tick(scheduled deadline: NIODeadline) {
        let now = NIODeadline.now()
        self.handle(.scheduledTick(self.environment.timeline.instant(min(deadline, now))), at: now)
    }

    func timed(_ input: Timed) {
        switch input {
        case .event(let event):
            self.handle(event)
        case .startDeadline:
            guard !self.started else { return }
            self.logger.warning(
                "no start message: closing the stream",
                metadata: ["start.timeout_ms": .stringConvertible(self.environment.security.startTimeout.components.seconds * 1000)]
            )
            self.handle(.terminate(.noStart))
        case .closeGraceExpired:
            guard !self.isReleased else { return }
            self.logger.warning(
                "close handshake timed out",
                metadata: ["twilio.open": .stringConvertible(self.twilioOpen), "realtime.open": .stringConvertible(self.realtimeOpen)]
            )
            self.isReleased = true
        }
    }

    func shutdownRequested() { self.handle(.shutdownRequested) }

    // MARK: The core's actions

    private func handle(_ event: CallEvent, at instant: NIODeadline = .now()) {
        let now = self.environment.timeline.instant(instant)
        if instant - self.publishedAt >= Self.metricsInterval {
            self.environment.metrics.publish(self.machine.counters, since: self.published)
            self.published = self.machine.counters
            self.publishedAt = instant
        }
        // One array for every event of the call, emptied and refilled: no allocation per frame.
        var actions = self.actions
        self.actions = []
        actions.removeAll(keepingCapacity: true)
        self.machine.handle(event, now: now, into: &actions)
        defer { self.actions = actions }
        for action in actions {
            switch action {
            case .sendTwilio(let message):
                self.io.sendTwilio(TwilioCodec.encode(message, quotedStreamSid: self.quotedStreamSid))
            case .sendRealtime(let clientEvent):
                if self.realtimeUp { self.io.sendRealtime(RealtimeCodec.encode(clientEvent, dialect: self.dialect)) }
            case .scheduleTimer(let timer, let at):
                self.io.schedule(.event(.timerFired(timer)), at: self.environment.timeline.deadline(at))
            case .logBadMessage(let kind):
                self.logger.warning("bad message", metadata: ["message.kind": .string(kind)])
            case .closeRealtime:
                self.io.closeRealtime(leg: self.realtimeLeg)
            case .connectRealtime(let attempt):
                self.logger.notice("reconnecting the realtime leg", metadata: ["reconnect.attempt": .stringConvertible(attempt)])
                self.io.closeRealtime(leg: self.realtimeLeg)
                self.openNextRealtimeLeg()
            case .logWatchdog(let kind):
                self.logger.warning("watchdog tripped", metadata: ["watchdog.kind": .string(kind)])
            case .logUpstreamError(let info):
                self.logger.warning(
                    "realtime error",
                    metadata: [
                        "error.type": .string(info.type ?? ""), "error.code": .string(info.code ?? ""),
                        "error.message": .string(info.message), "error.event_id": .string(info.eventID ?? ""),
                    ]
                )
            case .endCall(let reason):
                self.callEnded(reason)
            }
        }
        if self.machine.wantsTicks != self.ticking {
            self.ticking = self.machine.wantsTicks
            self.io.setTicking(self.ticking)
        }
        self.releaseIfDone()
    }

    private func callEnded(_ reason: EndReason) {
        let metrics = self.environment.metrics
        metrics.publish(self.machine.counters, since: self.published)
        self.published = self.machine.counters
        metrics.callEnded(reason)
        if var summary = self.machine.summary {
            summary.startTime = self.startTime
            self.environment.callLog.write(summary)
            self.logger.info(
                "call ended",
                metadata: [
                    "end.reason": .string(reason.rawValue),
                    "tx.frames": .stringConvertible(summary.counters.txFrames),
                    "tx.resets": .stringConvertible(summary.counters.txScheduleResets),
                    "barge_in.events": .stringConvertible(summary.counters.bargeInEvents),
                ]
            )
        }
        if self.realtimeOpen { self.io.closeRealtime(leg: self.realtimeLeg) }
        self.io.closeTwilio()
        self.io.schedule(.closeGraceExpired, at: .now() + TimeAmount(Self.closeGrace))
    }

    private func openNextRealtimeLeg() {
        self.realtimeLeg += 1
        self.realtimeOpen = true
        self.realtimeUp = false
        self.io.openRealtime(leg: self.realtimeLeg)
    }

    /// Once ended, the call waits for both legs to finish their close handshakes.
    private func releaseIfDone() {
        if self.machine.isEnded && !self.twilioOpen && !self.realtimeOpen { self.isReleased = true }
    }
}

/// A token bucket over a stream's messages: a flood from one stream is cut off at the door instead of queueing in
/// memory. Twilio sends 50 media messages a second, plus marks and the odd DTMF.
struct FloodGate {
    static let rate = 150.0
    static let burst = 300.0

    private var tokens = FloodGate.burst
    private var refilledAt: NIODeadline
    private(set) var dropped = 0
    private var unreported = 0

    init(now: NIODeadline) {
        self.refilledAt = now
    }

    /// Whether this message may pass. Drops are reported in batches of 50 (so the flood does not flood the call's
    /// loop either), and the rest with the next admitted message.
    mutating func admit(now: NIODeadline, report: (Int) -> Void) -> Bool {
        let elapsed = now - self.refilledAt
        self.tokens = min(Self.burst, self.tokens + Self.rate * Double(elapsed.nanoseconds) / 1e9)
        self.refilledAt = now
        guard self.tokens >= 1 else {
            self.dropped += 1
            self.unreported += 1
            if self.unreported == 50 {
                report(self.unreported)
                self.unreported = 0
            }
            return false
        }
        self.tokens -= 1
        if self.unreported > 0 {
            report(self.unreported)
            self.unreported = 0
        }
        return true
    }

    /// At the end of the stream: reports what is left; the total dropped, if any.
    mutating func finish(report: (Int) -> Void) -> Int? {
        if self.unreported > 0 {
            report(self.unreported)
            self.unreported = 0
        }
        return self.dropped > 0 ? self.dropped : nil
    }
}

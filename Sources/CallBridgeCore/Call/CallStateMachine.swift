/// The whole decision logic of one call: `handle(event, now:)` returns the ordered actions for the shell.
///
/// It owns the response state, the 160-byte chunker, the TX queue and pacer, the mark ledger, the barge-in engine
/// (VAD, echo guard, gates, pending-cancel lock) and the watchdogs. It never reads a clock, never awaits, never
/// logs, and never traps on peer input.
public struct CallStateMachine: Sendable {
    /// The Realtime leg, as far as caller audio is concerned.
    enum Upstream: Sendable, Equatable {
        /// Socket not open yet; caller audio is held.
        /// → `.configuring` on connect; → `.closed` on connect failure.
        case connecting
        /// `session.update` sent, waiting for `session.updated` so the μ-law format applies to what we append;
        /// caller audio is still held. → `.ready` on `session.updated`; → `.closed`.
        case configuring
        /// Caller audio flows straight through. → `.closed`.
        case ready
        /// The leg dropped after its session was up; a new one is being opened (caller audio is held meanwhile).
        /// → `.configuring` on connect; → `.closed` when the attempts run out.
        case reconnecting
        /// Gone; the call is ending.
        case closed
    }

    /// The assistant response whose audio is relayed.
    enum Response: Sendable, Equatable {
        /// Nothing streaming. → `.streaming` on `response.created` or a first delta of a new response.
        case idle
        /// Audio of this response is accepted. → `.idle` on `response.done` or a watchdog reset;
        /// → `.cancelling` on a barge-in that cancels it; → `.interrupted` on a barge-in after its audio was done.
        case streaming(ActiveResponse)
        /// The pending-cancel lock: `response.cancel` sent, its late deltas are dropped.
        /// → `.idle` on `response.done` for this id, on an error answering this cancel, or on the cancel timeout;
        /// → `.streaming` when another response starts. The safety fuse never touches this state.
        case cancelling(responseID: String, eventID: String, timer: TimerID)
        /// Barged in after its audio was complete (nothing to cancel): late deltas are dropped until its `response.done`.
        /// → `.idle` on `response.done` for this id or a watchdog reset; → `.streaming` when another response starts.
        case interrupted(responseID: String, since: CallInstant)
    }

    struct ActiveResponse: Sendable, Equatable {
        var id: String
        var itemID: String?
        var generation: UInt64
        var audioDone = false
        var createdAt: CallInstant
        var lastAudioAt: CallInstant?
    }

    /// The assistant item whose audio was queued last, its response, and how much audio the service produced for it.
    struct PlaybackItem: Sendable, Equatable {
        var responseID: String
        var itemID: String
        var producedBytes: Int
    }

    static let sessionUpdateEventID = "cb_session_update"
    /// Realtime `error` codes that end the call (with the fallback prompt) instead of being logged and survived.
    public static let fatalErrorCodes: Set<String> = [
        "invalid_api_key", "insufficient_quota", "account_deactivated", "billing_hard_limit_reached",
        "model_not_found", "session_expired",
    ]

    public let configuration: CallConfiguration
    let startedAt: CallInstant
    var upstream: Upstream = .connecting
    var response: Response = .idle
    var generation: UInt64 = 0
    var chunker = FrameChunker()
    var queue = FrameQueue()
    var pacer: TxPacer
    var marks = MarkLedger()
    /// The mark of the last frame sent, when its mark message has not gone out (`markEveryFrames` above 1), and
    /// how many frames have gone without one.
    var unmarkedFrame: (name: String, count: Int)?
    var playback: PlaybackItem?
    var heldInbound: [String] = []
    /// Caller audio for the next `input_audio_buffer.append` (with `inputAppendDuration` above one frame), and since
    /// when it has waited.
    var pendingAppend: [UInt8] = []
    var pendingAppendSince: CallInstant?
    /// What the pending audio is, which sets how much of it one append may gather.
    var pendingAppendKind = PendingAppendKind.audio
    /// Responses that must never play again (interrupted, or finished), newest last.
    var deadResponseIDs: [String] = []
    var loggedBadKinds: Set<String> = []
    var nextEventNumber = 1
    var nextTimerGeneration: UInt64 = 1
    var timersStarted = false

    // Call-quality bookkeeping for the call log.
    var lastInboundChunk: Int?
    var underrunning = false
    /// When the caller last stopped talking, until a reply's first frame is sent.
    var callerSpeechEnd: CallInstant?
    /// The last time either VAD said the caller's speech ended (the local one at the end of its hang-over, the
    /// service with `speech_stopped`), until a reply's first frame goes out: the quiet-append hold counts from it.
    var callerTurnEndedAt: CallInstant?
    var turnAwaitingFirstFrame = false
    var turnAwaitingPlayed: (mark: String, speechEnd: CallInstant)?
    /// What was said so far, to replay after a reconnect.
    var conversation = ConversationLog()

    // Reconnects (see startReconnect).
    var sessionWasReady = false
    var reconnectAttempts = 0
    var outageStartedAt: CallInstant?
    var reconnectReadyTimer: TimerID?
    var replayPending = false
    /// Between the service's speech_started and speech_stopped.
    var serviceHearsSpeech = false
    var recycleTimer: TimerID?

    /// Why a draining call ends once its audio has played (`shutdown`, or the upstream failure behind a fallback).
    var drainReason: EndReason = .shutdown

    // Barge-in engine (see CallStateMachine+BargeIn.swift).
    var vad: EnergyVAD
    var echoGuard: EchoGuard
    var inboundFrames = FrameChunker()
    var bargeIn: BargeInState = .listening
    var lastBargeInAt: CallInstant?
    var recoveryUntil: CallInstant?
    /// Playout truth: until when the caller may still hear the AI (nil after a flush).
    var playoutUntil: CallInstant?
    var preRoll: [PreRollEntry] = []
    var preRollDuration: Duration = .zero
    var silenceCache: (bytes: [UInt8], base64: String)?
    /// The optional second stage, and the recent caller frames it is shown (about a second).
    var confirmer: (any SpeechConfirmer)?
    /// Whether the call has a confirmer: checked on every caller frame, where `confirmer != nil` would copy the
    /// existential (and retain what it holds) each time.
    let hasConfirmer: Bool
    /// Armed by a committed local barge-in; disarmed when the service hears the caller or a response starts.
    var falseTriggerTimer: TimerID?
    /// Caller frames numbered in arrival order, about the last second (the confirmer's pre-onset history).
    var recentFrames = FrameHistory()
    /// Reused from message to message: the caller's decoded audio, and one frame of it (no allocation per frame).
    var callerBytes: [UInt8] = []
    var callerFrame: [UInt8] = []
    var frameSequence = 0
    /// The confirmer's active period is open (frames are fed as they arrive), and the last frame it was fed.
    var confirmerActive = false
    var confirmerFedThrough: Int?

    // Watchdogs (see CallStateMachine+Watchdogs.swift).
    var lastInboundAt: CallInstant
    var stallFlagged = false
    var watchdogTimer = TimerID(.watchdog, generation: 0)
    var draining: TimerID?

    public internal(set) var counters = CallCounters()
    public internal(set) var start: TwilioStart?
    public internal(set) var endReason: EndReason?
    public internal(set) var endedAt: CallInstant?

    public init(configuration: CallConfiguration = .init(), confirmer: (any SpeechConfirmer)? = nil, now: CallInstant) {
        self.configuration = configuration
        self.confirmer = confirmer
        self.hasConfirmer = confirmer != nil
        self.startedAt = now
        self.lastInboundAt = now
        self.pacer = TxPacer(configuration: configuration.pacer)
        self.vad = EnergyVAD(configuration: configuration.bargeIn.vad)
        self.echoGuard = EchoGuard(configuration: configuration.bargeIn.echo)
    }

    /// True while frames wait for the pacer: the shell then delivers `.tick` from the shared ticker (nothing else
    /// releases frames past the first ones of a run).
    public var wantsTicks: Bool { !self.queue.isEmpty && !self.isPaused && self.endReason == nil }

    /// The earliest instant at which a tick sends the next queued frame.
    public var nextReleaseTime: CallInstant? { self.queue.isEmpty ? nil : self.pacer.nextReleaseTime }

    public var isEnded: Bool { self.endReason != nil }

    /// The record for the call log, once the call has ended.
    public var summary: CallSummary? {
        guard let reason = self.endReason, let endedAt = self.endedAt else { return nil }
        var counters = self.counters
        if let estimate = self.echoGuard.estimate {
            counters.echoDelay = estimate.delay
            counters.echoReturnLossDB = estimate.returnLossDB
        }
        return CallSummary(
            callSid: self.start?.callSid ?? "",
            streamSid: self.start?.streamSid ?? "",
            durationMs: (endedAt - self.startedAt).wholeMilliseconds,
            endReason: reason,
            counters: counters,
            customParameters: self.start?.customParameters ?? [:]
        )
    }

    public mutating func handle(_ event: CallEvent, now: CallInstant) -> [CallAction] {
        var actions: [CallAction] = []
        self.handle(event, now: now, into: &actions)
        return actions
    }

    /// `handle` appending to the caller's array: a host that empties and reuses one array (keeping its capacity)
    /// allocates nothing per event.
    public mutating func handle(_ event: CallEvent, now: CallInstant, into actions: inout [CallAction]) {
        guard self.endReason == nil else { return }
        if !self.timersStarted {
            self.timersStarted = true
            let deadline = self.startedAt + self.configuration.sessionReadyTimeout
            actions.append(.scheduleTimer(TimerID(.sessionReady, generation: 0), at: deadline))
            if let watchdog = self.configuration.watchdog {
                actions.append(.scheduleTimer(self.watchdogTimer, at: now + watchdog.checkInterval))
            }
        }
        switch event {
        case .twilioReceived(let message):
            self.twilioReceived(message, now: now, into: &actions)
        case .twilioMalformed(let error):
            self.badMessage(kind: "twilio." + error.kind, into: &actions)
        case .twilioClosed:
            self.end(.twilioClosed, now: now, into: &actions)
        case .realtimeConnected:
            if self.upstream == .reconnecting {
                // A new session: schedule its readiness deadline like the first one's.
                let timer = self.makeTimer(.sessionReady)
                self.reconnectReadyTimer = timer
                actions.append(.scheduleTimer(timer, at: now + self.configuration.sessionReadyTimeout))
            }
            self.upstream = .configuring
            self.sendRealtime(.sessionUpdate(self.configuration.session, eventID: Self.sessionUpdateEventID), into: &actions)
        case .realtimeReceived(let serverEvent):
            self.realtimeReceived(serverEvent, now: now, into: &actions)
        case .realtimeMalformed(let error):
            self.badMessage(kind: "realtime." + Self.kind(of: error), into: &actions)
        case .realtimeUnexpectedFrame:
            self.badMessage(kind: "realtime.unexpected_frame", into: &actions)
        case .realtimeClosed(let closure):
            guard self.endReason == nil else { break }
            if self.shouldReconnect(after: closure) {
                self.startReconnect(now: now, into: &actions)
                break
            }
            self.upstream = .closed
            switch closure {
            case .connectFailed: self.upstreamLost(.realtimeConnectFailed, now: now, into: &actions)
            case .closed: self.upstreamLost(.realtimeClosed, now: now, into: &actions)
            }
        case .tick, .scheduledTick:
            break
        case .timerFired(let id):
            self.timerFired(id, now: now, into: &actions)
        case .shutdownRequested:
            self.shutdownRequested(now: now, into: &actions)
        case .terminate(let reason):
            self.end(reason, now: now, into: &actions)
        case .badInput(let kind, let count):
            self.badMessage(kind: kind, count: count, into: &actions)
        }
        if self.endReason == nil {
            // Only a run's lead (but its last frame) may leave on any event; every other frame leaves on the shared
            // ticker's ticks (see TxPacer). Every event still runs the pump, which starts runs, detects underruns and
            // ends drained runs.
            // Gathered caller audio waits no longer than one append's worth (the caller's media stalled).
            if let since = self.pendingAppendSince, now - since >= self.configuration.appendWait(self.pendingAppendKind) {
                self.flushAppend(into: &actions)
            }
            switch event {
            case .tick: self.pump(now: now, trigger: .tick, into: &actions)
            case .scheduledTick(let scheduled): self.pump(now: now, trigger: .tick, scheduled: scheduled, into: &actions)
            default: self.pump(now: now, trigger: .event, into: &actions)
            }
            self.checkDrain(now: now, into: &actions)
        }
    }

    mutating func timerFired(_ id: TimerID, now: CallInstant, into actions: inout [CallAction]) {
        switch id.kind {
        case .sessionReady:
            if id.generation != 0 && id != self.reconnectReadyTimer { break }
            if self.upstream != .ready {
                self.upstreamLost(.realtimeNotReady, now: now, into: &actions)
            }
        case .cancelTimeout:
            self.cancelTimedOut(id, now: now, into: &actions)
        case .watchdog:
            // Only the latest check counts: a stale firing does nothing.
            if id == self.watchdogTimer { self.watchdogCheck(now: now, into: &actions) }
        case .audioDrain:
            if id == self.draining { self.end(self.drainReason, now: now, into: &actions) }
        case .falseTriggerCheck:
            if id == self.falseTriggerTimer { self.checkFalseTrigger(now: now, into: &actions) }
        case .pauseTimeout:
            self.pauseTimedOut(id, now: now, into: &actions)
        case .reconnect:
            if self.upstream == .reconnecting { actions.append(.connectRealtime(attempt: self.reconnectAttempts)) }
        case .recycle:
            if id == self.recycleTimer { self.recycleSession(now: now, into: &actions) }
        }
    }

    mutating func makeTimer(_ kind: TimerID.Kind) -> TimerID {
        defer { self.nextTimerGeneration += 1 }
        return TimerID(kind, generation: self.nextTimerGeneration)
    }

    // MARK: Twilio leg

    mutating func twilioReceived(_ message: TwilioInbound, now: CallInstant, into actions: inout [CallAction]) {
        switch message {
        case .connected:
            break
        case .start(let start):
            // A stream has one start: a second one is counted and ignored (it must not rename the call).
            guard self.start == nil else {
                self.badMessage(kind: "twilio.duplicate_start", into: &actions)
                return
            }
            self.start = start
        case .media(let payload, let chunk):
            self.counters.rxMessages += 1
            self.counters.audioInBytes += Base64.decodedLength(payload)
            if let chunk {
                if let last = self.lastInboundChunk, chunk > last + 1 {
                    self.counters.inboundGaps += 1
                    self.counters.inboundMissingChunks += chunk - last - 1
                }
                self.lastInboundChunk = max(chunk, self.lastInboundChunk ?? chunk)
            }
            self.lastInboundAt = now
            self.callerAudio(payload, now: now, into: &actions)
        case .mark(let name):
            switch self.marks.echoReceived(name: name) {
            case .played(let entry):
                self.counters.marksPlayed += 1
                if let turn = self.turnAwaitingPlayed, turn.mark == name {
                    self.counters.turnPlayedLatencies.append(now - turn.speechEnd)
                    self.turnAwaitingPlayed = nil
                }
                // The frame finished playing now: it began one frame earlier.
                self.echoGuard.played(levelDBFS: entry.levelDBFS, start: now - AudioFrame.duration)
            case .cleared:
                self.counters.marksCleared += 1
            case .unknown:
                break
            }
            self.refreshPlayout(now: now)
        case .dtmf:
            self.counters.dtmfDigits += 1
        case .stop:
            self.end(.twilioStop, now: now, into: &actions)
        case .unhandled:
            // Twilio may add events: counted (so a new one shows up on dashboards), otherwise ignored.
            self.badMessage(kind: "twilio.unknown_event", into: &actions)
        }
    }

    /// Sends caller audio to the service once the session is configured; before that it is held, bounded.
    /// `decoded` is the payload's audio when the caller already has it. With `inputAppendDuration` above one frame,
    /// the audio is gathered until that much is pending (`flushAppend`); other kinds (`PendingAppendKind`: silence put
    /// in place of echo, speech the local VAD hears, audio outside the caller's turns) may gather up to their own
    /// lengths, as long as nothing of another kind joins them: then the ordinary length applies, and what is pending
    /// goes out once it reaches it (at once, when it is already longer).
    mutating func forward(
        _ payload: String,
        decoded: [UInt8]? = nil,
        kind incoming: PendingAppendKind = .audio,
        now: CallInstant,
        into actions: inout [CallAction]
    ) {
        switch self.upstream {
        case .ready:
            let kind = self.pendingAppend.isEmpty || self.pendingAppendKind == incoming ? incoming : .audio
            let batch = self.configuration.appendBytes(kind)
            guard batch > AudioFrame.byteCount || !self.pendingAppend.isEmpty else {
                actions.append(.sendRealtime(.inputAudioAppend(base64: payload)))
                return
            }
            if self.pendingAppend.isEmpty { self.pendingAppendSince = now }
            self.pendingAppendKind = kind
            if let decoded {
                self.pendingAppend.append(contentsOf: decoded)
            } else if let bytes = Base64.decode(payload) {
                self.pendingAppend.append(contentsOf: bytes)
            } else {
                self.badMessage(kind: "twilio.invalid_base64", into: &actions)
            }
            if self.pendingAppend.count >= batch { self.flushAppend(into: &actions) }
        case .connecting, .configuring, .reconnecting:
            // Audio gathered for an append that never went out goes first.
            if !self.pendingAppend.isEmpty {
                let pending = Base64.encode(self.pendingAppend)
                self.pendingAppend.removeAll(keepingCapacity: true)
                self.pendingAppendSince = nil
                self.pendingAppendKind = .audio
                self.hold(pending)
            }
            self.hold(payload)
        case .closed:
            self.pendingAppend.removeAll()
            self.pendingAppendSince = nil
            self.pendingAppendKind = .audio
        }
    }

    mutating func hold(_ payload: String) {
        if self.heldInbound.count >= self.configuration.maxHeldInboundMessages {
            self.heldInbound.removeFirst()
            self.counters.rxDroppedBeforeReady += 1
        }
        self.heldInbound.append(payload)
    }

    /// Sends the gathered caller audio, if any, as one append.
    mutating func flushAppend(into actions: inout [CallAction]) {
        guard !self.pendingAppend.isEmpty else { return }
        actions.append(.sendRealtime(.inputAudioAppend(base64: Base64.encode(self.pendingAppend))))
        self.pendingAppend.removeAll(keepingCapacity: true)
        self.pendingAppendSince = nil
        self.pendingAppendKind = .audio
    }

    /// Every other event to the service goes through here: gathered caller audio never waits behind one.
    mutating func sendRealtime(_ event: RealtimeClientEvent, into actions: inout [CallAction]) {
        self.flushAppend(into: &actions)
        actions.append(.sendRealtime(event))
    }

    // MARK: Realtime leg

    mutating func realtimeReceived(_ event: RealtimeServerEvent, now: CallInstant, into actions: inout [CallAction]) {
        switch event {
        case .sessionCreated:
            break
        case .inputTranscript(let itemID, let transcript):
            self.conversation.record(itemID: itemID, role: .user, text: transcript)
        case .outputTranscript(let itemID, let transcript):
            self.conversation.record(itemID: itemID, role: .assistant, text: transcript)
        case .sessionUpdated:
            guard self.upstream == .configuring else { break }
            self.upstream = .ready
            if self.counters.realtimeReadyAt == nil { self.counters.realtimeReadyAt = now - self.startedAt }
            self.sessionWasReady = true
            self.reconnectAttempts = 0
            if self.replayPending {
                // A new session knows nothing: give it the conversation so far before the held audio.
                self.replayPending = false
                for turn in self.conversation.turns {
                    let eventID = self.makeEventID("replay")
                    self.sendRealtime(.conversationItemCreate(role: turn.role, text: turn.text, eventID: eventID), into: &actions)
                    self.counters.replayedItems += 1
                }
            }
            if let recycleAfter = self.configuration.sessionRecycleAfter {
                let timer = self.makeTimer(.recycle)
                self.recycleTimer = timer
                actions.append(.scheduleTimer(timer, at: now + recycleAfter))
            }
            if let outage = self.outageStartedAt {
                let gap = now - outage
                self.counters.upstreamOutages += 1
                self.counters.upstreamGapTotal += gap
                self.counters.upstreamGapMax = max(self.counters.upstreamGapMax, gap)
                self.outageStartedAt = nil
            }
            for payload in self.heldInbound {
                actions.append(.sendRealtime(.inputAudioAppend(base64: payload)))
            }
            self.heldInbound.removeAll()
        case .speechStarted(_, let itemID):
            if let itemID { self.conversation.noteItem(itemID: itemID, role: .user) }
            self.serviceHearsSpeech = true
            self.falseTriggerTimer = nil  // the service heard the caller: a real turn
            self.serverSpeechStarted(now: now, into: &actions)
        case .speechStopped(_, let itemID):
            if let itemID { self.conversation.noteItem(itemID: itemID, role: .user) }
            self.serviceHearsSpeech = false
            // The local VAD dates the end of the caller's speech better, when it runs; else this is the best known.
            if self.callerSpeechEnd == nil { self.callerSpeechEnd = now }
            // The service may decide this turn from now on (an older local end, without a reply, does not count).
            self.callerTurnEndedAt = now
        case .responseCreated(let id):
            self.falseTriggerTimer = nil
            self.responseStarted(id: id, itemID: nil, now: now)
        case .outputItemAdded(let responseID, let itemID):
            self.conversation.noteItem(itemID: itemID, role: .assistant)
            if case .streaming(var active) = self.response, active.id == responseID, active.itemID == nil {
                active.itemID = itemID
                self.response = .streaming(active)
            }
        case .audioDelta(let responseID, let itemID, let audio):
            self.audioDelta(responseID: responseID, itemID: itemID, audio: audio, now: now)
        case .audioDone(let responseID, _):
            self.audioFinished(responseID: responseID)
        case .responseDone(let responseID, _):
            self.audioFinished(responseID: responseID)
            switch self.response {
            case .streaming(let active) where active.id == responseID:
                self.response = .idle
            case .cancelling(let id, _, _) where id == responseID:
                self.response = .idle  // the pending-cancel lock is released by the answer
            case .interrupted(let id, _) where id == responseID:
                self.response = .idle
            default:
                break
            }
            self.markDead(responseID)
        case .itemTruncated:
            break
        case .error(let info):
            self.upstreamError(info, now: now, into: &actions)
        case .ignored:
            break
        }
    }

    mutating func upstreamError(_ info: RealtimeErrorInfo, now: CallInstant, into actions: inout [CallAction]) {
        // An error answering our cancel releases the pending-cancel lock (for this id only).
        if case .cancelling(_, let eventID, _) = self.response, info.eventID == eventID || info.isCancelNotActive {
            self.response = .idle
        }
        // With interrupt_response on, the service often cancels before our cancel arrives: harmless.
        guard !info.isCancelNotActive else { return }
        self.counters.upstreamErrors += 1
        self.counters.upstreamErrorsByCode[info.code ?? "unknown", default: 0] += 1
        actions.append(.logUpstreamError(info))
        // Errors no retry can fix (the key, the account, the model): the call cannot go on, and reconnecting would
        // only meet them again.
        if let code = info.code, Self.fatalErrorCodes.contains(code) {
            self.upstreamLost(.realtimeRejected, now: now, into: &actions)
            return
        }
        // A rejected configuration leaves a call that can neither hear nor speak: end it now.
        if info.eventID == Self.sessionUpdateEventID && self.upstream != .ready {
            self.upstreamLost(.realtimeRejected, now: now, into: &actions)
        }
    }

    mutating func responseStarted(id: String, itemID: String?, now: CallInstant) {
        guard !self.deadResponseIDs.contains(id) else { return }
        if case .streaming(let active) = self.response {
            if active.id == id { return }
            // A new response replaces one that never said it was done: finish the old one's audio.
            self.flushChunkerTail()
            self.markDead(active.id)
        }
        self.counters.responses += 1
        self.turnAwaitingFirstFrame = true
        self.response = .streaming(ActiveResponse(id: id, itemID: itemID, generation: self.generation, createdAt: now))
    }

    mutating func audioDelta(responseID: String, itemID: String, audio: [UInt8], now: CallInstant) {
        let isCurrent: Bool
        if case .streaming(let active) = self.response { isCurrent = active.id == responseID } else { isCurrent = false }
        if !isCurrent && self.canAdopt(responseID) {
            // Deltas may overtake response.created: adopt the response rather than lose its audio.
            self.responseStarted(id: responseID, itemID: itemID, now: now)
        }
        guard case .streaming(var active) = self.response, active.id == responseID,
            active.generation == self.generation, !active.audioDone
        else {
            self.counters.staleDeltasDropped += 1
            self.counters.staleFramesDropped += (audio.count + AudioFrame.byteCount - 1) / AudioFrame.byteCount
            return
        }
        if active.itemID == nil { active.itemID = itemID }
        active.lastAudioAt = now
        self.response = .streaming(active)
        if self.playback?.itemID != itemID {
            self.flushChunkerTail()
            self.playback = PlaybackItem(responseID: responseID, itemID: itemID, producedBytes: 0)
        }
        self.playback?.producedBytes += audio.count
        self.chunker.append(audio)
        var frame: [UInt8] = []
        while self.chunker.nextFrame(into: &frame) {
            // A service streaming far ahead of real time cannot grow the queue without bound: past the cap the
            // newest audio is dropped and counted.
            guard self.queue.count < self.configuration.maxQueuedFrames else {
                self.counters.txQueueOverflowFrames += 1
                continue
            }
            self.queue.append(bytes: frame, itemID: itemID)
        }
        self.refreshPlayout(now: now)
    }

    mutating func audioFinished(responseID: String) {
        guard case .streaming(var active) = self.response, active.id == responseID, !active.audioDone else { return }
        active.audioDone = true
        self.response = .streaming(active)
        self.flushChunkerTail()
    }

    /// Pads and queues a partial tail: only when the response's audio is done (or replaced).
    mutating func flushChunkerTail() {
        if let tail = self.chunker.finish(), let item = self.playback?.itemID {
            self.queue.append(.init(bytes: tail, itemID: item))
        }
    }

    /// An unknown response may take over only when no other response is streaming: a stray id must never silence
    /// the live reply.
    func canAdopt(_ responseID: String) -> Bool {
        guard !self.deadResponseIDs.contains(responseID) else { return false }
        switch self.response {
        case .idle: return true
        case .cancelling(let id, _, _), .interrupted(let id, _): return id != responseID
        case .streaming: return false
        }
    }

    mutating func markDead(_ responseID: String) {
        guard !self.deadResponseIDs.contains(responseID) else { return }
        self.deadResponseIDs.append(responseID)
        if self.deadResponseIDs.count > 32 { self.deadResponseIDs.removeFirst() }
    }

    mutating func makeEventID(_ prefix: String) -> String {
        defer { self.nextEventNumber += 1 }
        return "cb_\(prefix)_\(self.nextEventNumber)"
    }

    // MARK: Pacing

    /// Sends every frame the pacer allows at `now` for `trigger`, with a mark after every `markEveryFrames`th, after
    /// the last one queued and after a turn's first: a run's lead but its last frame on any event, the others only on
    /// a tick. Nothing goes out while a tentative barge-in holds the queue.
    mutating func pump(
        now: CallInstant,
        trigger: TxPacer.Trigger,
        scheduled: CallInstant? = nil,
        into actions: inout [CallAction]
    ) {
        guard !self.isPaused else { return }
        var sent = false
        while !self.queue.isEmpty {
            let scheduled = self.pacer.nextDeadline ?? now
            guard let release = self.pacer.release(now: now, on: trigger, scheduled: scheduled),
                let frame = self.queue.popFirst() else { break }
            let deadline: CallInstant = if case .resynced = release { now } else { scheduled }
            switch release {
            case .onTime: break
            case .late: self.counters.txLateFrames += 1
            case .resynced: self.counters.txScheduleResets += 1
            }
            if self.counters.txFrames == 0 {
                self.counters.firstChunkBytes = frame.bytes.count
                self.counters.firstAudioAt = now - self.startedAt
            }
            self.counters.txFrames += 1
            self.counters.audioOutBytes += frame.bytes.count
            actions.append(.sendTwilio(.media(frame.bytes)))
            let name = self.marks.recordSent(frame, levelDBFS: Level.dBFS(muLaw: frame.bytes), at: now, deadline: deadline)
            let unmarked = (self.unmarkedFrame?.count ?? 0) + 1
            var markNow = self.queue.isEmpty || unmarked >= self.configuration.markEveryFrames
            if self.turnAwaitingFirstFrame {
                self.turnAwaitingFirstFrame = false
                // A reply's first frame after the caller stopped talking: one turn (its mark tells when it played).
                if let end = self.callerSpeechEnd, end <= now {
                    self.counters.turnLatencies.append(now - end)
                    self.turnAwaitingPlayed = (name, end)
                    markNow = true
                }
                self.callerSpeechEnd = nil
                self.callerTurnEndedAt = nil
            }
            if markNow {
                self.unmarkedFrame = nil
                self.counters.marksSent += 1
                actions.append(.sendTwilio(.mark(name: name)))
            } else {
                self.unmarkedFrame = (name, unmarked)
            }
            sent = true
        }
        if sent {
            self.underrunning = false
            self.refreshPlayout(now: now)
        } else if self.queue.isEmpty, self.isStreamingAudio, !self.underrunning, let due = self.pacer.nextDeadline, due <= now {
            // A frame was due, the response is still streaming, and nothing is queued: the lead ran dry.
            self.underrunning = true
            self.counters.txUnderruns += 1
        }
        if self.queue.isEmpty && self.chunker.bufferedByteCount == 0 && !self.isStreamingAudio {
            self.pacer.stop()
        }
    }

    /// Sends the mark of the last frame sent if it has not gone out: before a `clear`, so that Twilio settles every
    /// frame sent (played or cleared) with an echo.
    mutating func markLastFrame(into actions: inout [CallAction]) {
        guard let unmarked = self.unmarkedFrame else { return }
        self.unmarkedFrame = nil
        self.counters.marksSent += 1
        actions.append(.sendTwilio(.mark(name: unmarked.name)))
    }

    /// A response is mid-audio: an empty queue is an underrun, and the schedule keeps running.
    var isStreamingAudio: Bool {
        if case .streaming(let active) = self.response { return !active.audioDone }
        return false
    }

    /// The streaming response has already queued audio (not merely been created after an older item played).
    var isStreamingPlayback: Bool {
        guard case .streaming(let active) = self.response, !active.audioDone else { return false }
        return self.playback?.responseID == active.id
    }

    // MARK: Errors and ending

    mutating func badMessage(kind: String, count: Int = 1, into actions: inout [CallAction]) {
        self.counters.badMessages += count
        self.counters.badMessagesByKind[kind, default: 0] += count
        if self.loggedBadKinds.insert(kind).inserted {
            actions.append(.logBadMessage(kind: kind))
        }
    }

    mutating func end(_ reason: EndReason, now: CallInstant, into actions: inout [CallAction]) {
        guard self.endReason == nil else { return }
        self.endReason = reason
        self.endedAt = now
        self.queue.removeAll()
        self.pacer.stop()
        actions.append(.endCall(reason))
    }

    static func kind(of error: RealtimeDecodingError) -> String {
        switch error {
        case .invalidJSON: "invalid_json"
        case .missingField: "missing_field"
        case .invalidBase64: "invalid_base64"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Watchdogs: nothing may stay stuck. Each check runs on one periodic timer; each trip is counted and logged once.
extension CallStateMachine {
    mutating func watchdogCheck(now: CallInstant, into actions: inout [CallAction]) {
        guard let limits = self.configuration.watchdog else { return }
        self.watchdogTimer = self.makeTimer(.watchdog)
        actions.append(.scheduleTimer(self.watchdogTimer, at: now + limits.checkInterval))
        let silent = self.queue.isEmpty && self.marks.playableCount == 0 && !self.isPaused
            && (self.playoutUntil.map { now >= $0 } ?? true)
        switch self.response {
        case .streaming(let active) where silent:
            let quietSince = active.lastAudioAt ?? active.createdAt
            if active.audioDone && now - quietSince >= limits.safetyFuseAfter {
                // SAFETY_FUSE: the audio is over and has played out, but the response never finished.
                self.resetResponse(active.id)
                self.counters.safetyFuseTrips += 1
                actions.append(.logWatchdog(kind: "safety_fuse"))
            } else if !active.audioDone && now - quietSince >= limits.stuckResponseAfter {
                // Created but silent, or stopped sending without finishing.
                self.resetResponse(active.id)
                self.counters.stuckResponses += 1
                actions.append(.logWatchdog(kind: "stuck_response"))
            }
        case .interrupted(let id, let since) where now - since >= limits.stuckResponseAfter:
            self.resetResponse(id)
            self.counters.stuckResponses += 1
            actions.append(.logWatchdog(kind: "stuck_response"))
        case .idle, .streaming, .interrupted, .cancelling:
            // The pending-cancel lock is released only by its answer or its own timeout.
            break
        }
        // Twilio stalls: no caller media, or played audio never confirmed.
        let inboundGap = now - self.lastInboundAt
        let markGap = self.marks.playable.first.map { now - $0.sentAt } ?? .zero
        let stall = max(inboundGap, markGap)
        if stall >= limits.stallLimit {
            actions.append(.logWatchdog(kind: inboundGap >= markGap ? "no_inbound_media" : "marks_not_echoed"))
            self.end(.twilioStalled, now: now, into: &actions)
        } else if stall >= limits.stallWarningAfter {
            if !self.stallFlagged {
                self.stallFlagged = true
                self.counters.stallFlags += 1
                actions.append(.logWatchdog(kind: inboundGap >= markGap ? "no_inbound_media" : "marks_not_echoed"))
            }
        } else {
            self.stallFlagged = false
        }
    }

    /// Clears a response's state without touching any other response's.
    mutating func resetResponse(_ responseID: String) {
        switch self.response {
        case .streaming(let active) where active.id == responseID:
            self.chunker.reset()
        case .interrupted(let id, _) where id == responseID:
            break
        default:
            return
        }
        self.response = .idle
        self.markDead(responseID)
    }

    // MARK: AUDIO_DRAIN

    /// Shutdown: let the AI's last words play out (bounded), then end.
    mutating func shutdownRequested(now: CallInstant, into actions: inout [CallAction]) {
        guard self.draining == nil else { return }
        self.drainReason = .shutdown
        guard let limits = self.configuration.watchdog, self.assistantAudioOutstanding, !self.isPaused else {
            self.end(.shutdown, now: now, into: &actions)
            return
        }
        let timer = self.makeTimer(.audioDrain)
        self.draining = timer
        actions.append(.scheduleTimer(timer, at: now + limits.audioDrainLimit))
    }

    /// Ends a draining call once everything sent was confirmed played.
    mutating func checkDrain(now: CallInstant, into actions: inout [CallAction]) {
        guard self.draining != nil, !self.assistantAudioOutstanding else { return }
        self.end(self.drainReason, now: now, into: &actions)
    }

    /// The model's service is gone for this call (it refused, failed to connect, closed, or never got ready): never
    /// leave the caller in dead air. What the model was saying is cut, the fallback prompt plays, and the call ends
    /// as `reason` once Twilio confirms it played (or at the drain limit). Without a prompt the call ends at once.
    mutating func upstreamLost(_ reason: EndReason, now: CallInstant, into actions: inout [CallAction]) {
        guard self.endReason == nil, self.draining == nil else { return }
        guard let prompt = self.configuration.fallbackPrompt, !prompt.isEmpty else {
            self.end(reason, now: now, into: &actions)
            return
        }
        if case .streaming(let active) = self.response { self.markDead(active.id) }
        self.response = .idle
        self.generation += 1
        self.bargeIn = .listening
        self.queue.removeAll()
        self.chunker.reset()
        self.pacer.stop()
        if self.marks.playableCount > 0 {
            self.markLastFrame(into: &actions)
            actions.append(.sendTwilio(.clear))
            self.marks.clearSent(at: now)
        }
        self.playback = nil
        var chunker = FrameChunker()
        chunker.append(prompt)
        while let frame = chunker.nextFrame() { self.queue.append(.init(bytes: frame, itemID: Self.fallbackItemID)) }
        if let tail = chunker.finish() { self.queue.append(.init(bytes: tail, itemID: Self.fallbackItemID)) }
        self.counters.fallbackPlayed = true
        self.drainReason = reason
        let timer = self.makeTimer(.audioDrain)
        self.draining = timer
        let length = Duration.milliseconds(AudioFrame.milliseconds(ofBytes: prompt.count))
        actions.append(.scheduleTimer(timer, at: now + length + (self.configuration.watchdog?.audioDrainLimit ?? .seconds(5))))
    }

    static let fallbackItemID = "cb_fallback"

    /// The session is old: replace it now if nobody is speaking and nothing is playing, else look again in a second.
    mutating func recycleSession(now: CallInstant, into actions: inout [CallAction]) {
        guard self.upstream == .ready, self.draining == nil else { return }
        // Between turns: nothing playing or streaming, the caller not speaking by either VAD, and no turn of theirs
        // waiting for its reply (unless that wait is long over: a turn the service never answered).
        let turnPending = self.callerSpeechEnd.map { now - $0 < .seconds(10) } ?? false
        let quiet = self.response == .idle && !self.assistantAudioOutstanding && !self.vad.isSpeaking && !self.isPaused
            && !self.serviceHearsSpeech && !turnPending
        guard quiet else {
            let timer = self.makeTimer(.recycle)
            self.recycleTimer = timer
            actions.append(.scheduleTimer(timer, at: now + .seconds(1)))
            return
        }
        self.counters.sessionRecycles += 1
        self.upstream = .reconnecting
        self.serviceHearsSpeech = false
        self.deadResponseIDs.removeAll()
        self.replayPending = true
        // The shell closes the old leg and ignores whatever it still reports.
        actions.append(.closeRealtime)
        actions.append(.connectRealtime(attempt: 0))
    }

    /// Two 150 ms beeps at 480 Hz, −24 dBFS, 250 ms apart: the line is alive while the model reconnects.
    mutating func queueComfortTone() {
        var audio: [UInt8] = []
        for beep in 0..<2 {
            for i in 0..<1200 {
                let envelope = min(1, Double(min(i, 1199 - i)) / 80)  // 10 ms fades: no clicks
                audio.append(MuLaw.encode(Int16(2066 * envelope * sin(2 * Double.pi * 480 * Double(i) / 8000))))
            }
            if beep == 0 { audio += [UInt8](repeating: MuLaw.silence, count: 2000) }
        }
        var chunker = FrameChunker()
        chunker.append(audio)
        while let frame = chunker.nextFrame() { self.queue.append(.init(bytes: frame, itemID: "cb_comfort")) }
        if let tail = chunker.finish() { self.queue.append(.init(bytes: tail, itemID: "cb_comfort")) }
    }

    /// A drop is worth reconnecting after the session had been up (a leg that never came up points at
    /// configuration: a wrong key, URL or quota), while the call is not ending, and while attempts remain.
    /// Whether the leg that went away is worth another attempt. Once a session was up, every drop is (the service
    /// answered a moment ago, so even an HTTP refusal is most likely passing). Before that, only a failure that
    /// looks like the network's: an HTTP refusal of the very first connection is most likely the key, the quota or
    /// the URL, and the caller is better served by the fallback prompt now than after the whole backoff.
    func shouldReconnect(after closure: RealtimeClosure) -> Bool {
        guard let policy = self.configuration.reconnect, self.draining == nil, self.reconnectAttempts < policy.maxAttempts else {
            return false
        }
        if self.sessionWasReady { return true }
        if case .connectFailed(_, retryable: true) = closure { return true }
        return false
    }

    /// The Realtime leg dropped: keep the call, hold the caller's audio, and open a new leg after the backoff. What
    /// was already queued of the reply plays on; the rest of that reply is lost with the old session.
    mutating func startReconnect(now: CallInstant, into actions: inout [CallAction]) {
        guard let policy = self.configuration.reconnect else { return }
        self.upstream = .reconnecting
        self.serviceHearsSpeech = false
        if self.outageStartedAt == nil {
            self.outageStartedAt = now
            if policy.gapSound == .tone && self.queue.isEmpty { self.queueComfortTone() }
        }
        switch self.response {
        case .streaming(let active):
            self.markDead(active.id)
            self.audioFinished(responseID: active.id)
            self.response = .idle
        case .cancelling, .interrupted:
            self.response = .idle
        case .idle:
            break
        }
        // Nothing more arrives from the old session; the new one numbers its responses afresh and knows nothing.
        self.deadResponseIDs.removeAll()
        self.replayPending = true
        self.reconnectAttempts += 1
        self.counters.upstreamReconnects += 1
        let timer = self.makeTimer(.reconnect)
        actions.append(.scheduleTimer(timer, at: now + policy.backoff(attempt: self.reconnectAttempts)))
    }
}

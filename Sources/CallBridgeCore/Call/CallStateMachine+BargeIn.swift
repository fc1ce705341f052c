/// Local barge-in: detection on the caller's audio, the ordered gates, pause-then-commit, and what the service hears.
extension CallStateMachine {
    enum BargeInState: Sendable, Equatable {
        /// → `.tentative` when caller speech starts while the AI is audible and gates 1–3 pass.
        case listening
        /// Stage 1: Twilio cleared and the TX queue held.
        /// → `.listening` through the barge-in transition when the speech lasts `minSpeechDuration` (gate 4) or the
        ///   service's VAD reports speech too;
        /// → `.listening` with playback resumed when the speech ends first (a false alarm, e.g. a cough).
        case tentative(Tentative)
    }

    struct Tentative: Sendable, Equatable {
        var onset: CallInstant
        /// When Twilio was told to stop (the pause).
        var pausedAt: CallInstant
        /// The response that was speaking when the pause began (the idempotency check at commit).
        var targetResponseID: String?
        /// The item the caller was hearing when the pause began: the one to truncate to what was played.
        var targetItem: PlaybackItem?
        /// Frames Twilio dropped because of the pause's `clear`, replayed first on a false alarm.
        var cleared: [FrameQueue.Frame]
        /// The pause's own deadline: it cannot outlive this even if caller media stop arriving.
        var timer: TimerID
    }

    /// Which response a barge-in may cancel.
    enum CancelPolicy: Sendable, Equatable {
        /// The service's VAD heard the caller: whatever response is active.
        case activeResponse
        /// A committed pause: only the response that was speaking when the pause began, if it is still active
        /// (the idempotency check). A response that started during the pause is left alone.
        case ifStillActive(String?)
    }

    /// One recent caller message, kept for the pre-roll.
    struct PreRollEntry: Sendable, Equatable {
        /// The message's audio, kept only while silence went out in its place (nil once the real audio has gone
        /// out): most entries hold no string, and a message's payload is freed as soon as it is handled.
        var unsent: String?
        var duration: Duration
    }

    var isPaused: Bool {
        if case .tentative = self.bargeIn { return true }
        return false
    }

    /// Gate 1, playout truth: the caller may still be hearing the AI.
    func isAISpeaking(now: CallInstant) -> Bool {
        if let until = self.playoutUntil, now < until { return true }
        return self.isStreamingPlayback
    }

    /// `playout_until = now + (queued + sent-but-unconfirmed frames) × 20 ms + grace`, refreshed on enqueue, send and
    /// mark; cleared by a flush.
    mutating func refreshPlayout(now: CallInstant) {
        let pending = self.queue.count + self.marks.playableCount
        self.playoutUntil = now + AudioFrame.duration * pending + self.configuration.bargeIn.playoutGrace
    }

    /// The AI's audio is queued, held, playing, or still streaming in.
    var assistantAudioOutstanding: Bool {
        !self.queue.isEmpty || self.chunker.bufferedByteCount > 0 || self.marks.playableCount > 0
            || self.isStreamingPlayback
    }

    // MARK: Caller audio

    /// One caller `media` message: analyse its 20 ms frames, then forward it (or silence, while only the AI's echo is
    /// on the line).
    mutating func callerAudio(_ payload: String, now: CallInstant, into actions: inout [CallAction]) {
        let settings = self.configuration.bargeIn
        guard settings.localEnabled else {
            self.forward(payload, now: now, into: &actions)
            return
        }
        // Decoded into, and framed through, arrays kept from message to message (taken out of `self` meanwhile, so
        // that they are uniquely referenced and reused in place).
        var bytes = self.callerBytes
        self.callerBytes = []
        defer { self.callerBytes = bytes }
        guard Base64.decode(payload, into: &bytes) else {
            self.badMessage(kind: "twilio.invalid_base64", into: &actions)
            return
        }
        let aiSpeaking = self.isAISpeaking(now: now)
        var speechStarted = false
        let frameBytes = AudioFrame.byteCount
        if self.inboundFrames.bufferedByteCount == 0, bytes.count % frameBytes == 0 {
            // Whole frames and nothing held (every Twilio message): each frame is looked at where it lies.
            let frameCount = bytes.count / frameBytes
            bytes.withUnsafeBufferPointer { message in
                for index in 0..<frameCount {
                    let frameStart = now - AudioFrame.duration * (frameCount - index)
                    let frame = UnsafeBufferPointer(rebasing: message[(index * frameBytes)..<((index + 1) * frameBytes)])
                    self.analyseCallerFrame(frame, start: frameStart, now: now, speechStarted: &speechStarted, into: &actions)
                }
            }
        } else {
            self.inboundFrames.append(bytes)
            let frameCount = self.inboundFrames.bufferedByteCount / frameBytes
            var frame = self.callerFrame
            self.callerFrame = []
            defer { self.callerFrame = frame }
            var index = 0
            while self.inboundFrames.nextFrame(into: &frame) {
                let frameStart = now - AudioFrame.duration * (frameCount - index)
                frame.withUnsafeBufferPointer { frame in
                    self.analyseCallerFrame(frame, start: frameStart, now: now, speechStarted: &speechStarted, into: &actions)
                }
                index += 1
            }
        }
        let substitute = settings.substituteEchoWithSilence && aiSpeaking && !self.vad.isSpeaking && !self.isPaused
        let duration = Duration.milliseconds(AudioFrame.milliseconds(ofBytes: bytes.count))
        if substitute {
            self.remember(PreRollEntry(unsent: payload, duration: duration))
            let silence = self.silence(byteCount: bytes.count)
            self.forward(silence.base64, decoded: silence.bytes, kind: .silence, now: now, into: &actions)
            self.counters.echoSilencedMessages += 1
            return
        }
        if speechStarted {
            // The onset sits in audio already replaced by silence: send it for real now, so no syllable is lost.
            for index in self.preRoll.indices {
                guard let unsent = self.preRoll[index].unsent else { continue }
                self.forward(unsent, now: now, into: &actions)
                self.preRoll[index].unsent = nil
            }
        }
        self.remember(PreRollEntry(unsent: nil, duration: duration))
        // Speech is gathered from the message after the onset: the onset's own audio goes out at once.
        let kind: PendingAppendKind =
            self.vad.isSpeaking ? (speechStarted ? .audio : .speech) : (self.callerTurnOpen(now: now) ? .audio : .quiet)
        self.forward(payload, decoded: bytes, kind: kind, now: now, into: &actions)
        if speechStarted && (self.configuration.gathersSpeech || self.configuration.gathersQuiet) { self.flushAppend(into: &actions) }
    }

    /// One 20 ms frame of the caller's, which started at `frameStart`: its level through the echo guard and the VAD,
    /// and the barge-in gates on what the VAD says.
    private mutating func analyseCallerFrame(
        _ frame: UnsafeBufferPointer<UInt8>,
        start frameStart: CallInstant,
        now: CallInstant,
        speechStarted: inout Bool,
        into actions: inout [CallAction]
    ) {
        let level = Level.dBFS(muLaw: frame)
        if self.hasConfirmer {
            self.frameSequence += 1
            // Half a second to a second is kept (a ring: no allocation).
            self.recentFrames.append(sequence: self.frameSequence, start: frameStart, frame: frame)
            if self.confirmerActive { self.feedConfirmer(through: self.frameSequence) }
        }
        let verdict = self.echoGuard.classify(
            inboundDBFS: level,
            frameStart: frameStart,
            playingNowDBFS: self.marks.firstPlayableLevelDBFS
        )
        let update = self.vad.process(levelDBFS: level, frameStart: frameStart, masked: verdict == .echoOnly)
        switch update.transition {
        case .speechStarted(let onset):
            speechStarted = true
            self.callerSpeechStarted(onset: onset, now: now, into: &actions)
        case .speechEnded(let at):
            // The caller's turn ended with the last voiced frame, one hang-over before the VAD said so.
            self.callerSpeechEnd = at - self.vad.configuration.hangover
            self.callerTurnEndedAt = now
            self.falseAlarm(now: now)
        case nil:
            // Speech already under way when a gate was closed (the recovery delay, the lock, the greeting, or the
            // AI not yet speaking): the gates are checked again on every voiced frame.
            if update.voiced, !self.isPaused, let onset = self.vad.speechOnset {
                self.callerSpeechStarted(onset: onset, now: now, into: &actions)
            }
        }
        // Gate 4: voiced speech long enough, measured from the VAD's onset (hang-over frames do not count).
        if case .tentative(let tentative) = self.bargeIn, update.voiced,
            frameStart + AudioFrame.duration - tentative.onset >= self.configuration.bargeIn.minSpeechDuration
        {
            self.commit(now: now, into: &actions)
        }
    }

    /// Whether the service may be deciding a turn of the caller's: it hears them, or either VAD ended their speech
    /// less than `quietAppendHold` ago and no reply's first frame has gone to Twilio since.
    func callerTurnOpen(now: CallInstant) -> Bool {
        if self.serviceHearsSpeech { return true }
        guard let end = self.callerTurnEndedAt else { return false }
        return now - end < self.configuration.quietAppendHold
    }

    mutating func remember(_ entry: PreRollEntry) {
        self.preRoll.append(entry)
        self.preRollDuration += entry.duration
        while self.preRollDuration > self.configuration.bargeIn.preRoll, let first = self.preRoll.first {
            self.preRollDuration -= first.duration
            self.preRoll.removeFirst()  // about 15 entries: cheaper than a ring's bookkeeping
        }
    }

    /// `byteCount` bytes of μ-law silence, and as base64 (cached: nearly every message is 160 bytes).
    mutating func silence(byteCount: Int) -> (bytes: [UInt8], base64: String) {
        if let cached = self.silenceCache, cached.bytes.count == byteCount { return cached }
        let bytes = [UInt8](repeating: MuLaw.silence, count: byteCount)
        let silence = (bytes: bytes, base64: Base64.encode(bytes))
        self.silenceCache = silence
        return silence
    }

    // MARK: Gates and stages

    /// Caller speech began at `onset`: pause the AI if it is speaking and gates 1–3 and the guards pass.
    mutating func callerSpeechStarted(onset: CallInstant, now: CallInstant, into actions: inout [CallAction]) {
        let settings = self.configuration.bargeIn
        // 1. The AI is speaking now (playout truth).
        guard self.isAISpeaking(now: now) else { return }
        // 2. Echo: echo-only frames were masked before the VAD; the optional age gate is checked here.
        if let gate = settings.echoAgeGate, let last = self.echoGuard.lastAudibleStart,
            onset < last + AudioFrame.duration + gate
        {
            return
        }
        // 3. Interrupt lock, and the recovery delay after a false alarm.
        if let last = self.lastBargeInAt, now - last < settings.interruptLock { return }
        if let until = self.recoveryUntil, now < until { return }
        // Guard: the uninterruptible greeting window.
        if settings.greetingWindow > .zero && now - self.startedAt < settings.greetingWindow { return }
        self.pause(onset: onset, now: now, into: &actions)
    }

    /// Stage 1: stop feeding Twilio at once and hold the queue; drop what Twilio has buffered (kept for a resume).
    mutating func pause(onset: CallInstant, now: CallInstant, into actions: inout [CallAction]) {
        self.pacer.stop()
        var cleared: [FrameQueue.Frame] = []
        if self.marks.playableCount > 0 {
            self.markLastFrame(into: &actions)
            actions.append(.sendTwilio(.clear))
            cleared = self.marks.clearSent(at: now)
        }
        var target: String?
        if case .streaming(let active) = self.response { target = active.id }
        let timer = self.makeTimer(.pauseTimeout)
        actions.append(.scheduleTimer(timer, at: now + self.configuration.bargeIn.maxPause))
        self.bargeIn = .tentative(
            Tentative(onset: onset, pausedAt: now, targetResponseID: target, targetItem: self.playback, cleared: cleared, timer: timer)
        )
        self.counters.bargeInPauses += 1
        self.counters.lastBargeInPause = now - onset
        if self.hasConfirmer { self.beginConfirmerPeriod(onset: onset) }
    }

    /// Opens the confirmer's active period at a pause: it is shown the audio from a little before the onset (it
    /// needs the start of the sound), or, when its last period ended within the kept history (0.5–1 s), everything
    /// since that period, so the model's state carries on over contiguous audio.
    mutating func beginConfirmerPeriod(onset: CallInstant) {
        guard var confirmer = self.confirmer, let newest = self.recentFrames.newest?.sequence else { return }
        self.confirmer = nil  // the local copy is then the only one: its state is changed in place
        let from = onset - AudioFrame.duration * 3
        let firstFromOnset = self.recentFrames.first(startingAtOrAfter: from)?.sequence ?? newest
        let oldest = self.recentFrames.oldest?.sequence ?? newest
        if let fed = self.confirmerFedThrough, fed + 1 >= oldest {
            confirmer.begin(warm: true)
        } else {
            confirmer.begin(warm: false)
            self.confirmerFedThrough = firstFromOnset - 1
        }
        self.confirmer = confirmer
        self.confirmerActive = true
        self.feedConfirmer(through: newest)
    }

    /// Feeds the confirmer every kept frame after the last one it saw, up to `sequence`.
    mutating func feedConfirmer(through sequence: Int) {
        guard var confirmer = self.confirmer else { return }
        self.confirmer = nil  // the local copy is then the only one: its state is changed in place
        let after = self.confirmerFedThrough ?? 0
        if after < sequence {
            self.recentFrames.forEach(in: (after + 1)...sequence) { confirmer.feed($0) }
        }
        self.confirmerFedThrough = sequence
        self.confirmer = confirmer
    }

    /// Stage 2: the pause is confirmed, by the second-stage confirmer too when there is one (the service's own
    /// `speech_started` needs no confirmation).
    mutating func commit(now: CallInstant, byService: Bool = false, into actions: inout [CallAction]) {
        guard case .tentative(let tentative) = self.bargeIn else { return }
        self.confirmerActive = false
        if !byService, let confirmer = self.confirmer {
            guard confirmer.heardSpeech else {
                self.counters.confirmerRejections += 1
                self.falseAlarm(now: now)
                return
            }
        }
        self.bargeIn = .listening
        self.counters.bargeInLatencies.append(tentative.pausedAt - tentative.onset)
        self.interrupt(
            now: now,
            cancel: .ifStillActive(tentative.targetResponseID),
            heardItem: tentative.targetItem,
            pauseCleared: true,
            into: &actions
        )
        if !byService { self.armFalseTriggerCheck(now: now, into: &actions) }
    }

    /// The speech ended before it was confirmed (a cough, a click): resume exactly where Twilio stopped.
    mutating func falseAlarm(now: CallInstant) {
        guard case .tentative(let tentative) = self.bargeIn else { return }
        self.confirmerActive = false
        self.bargeIn = .listening
        self.queue.prepend(contentsOf: tentative.cleared)
        self.counters.bargeInFalseAlarms += 1
        self.recoveryUntil = now + self.configuration.bargeIn.recoveryDelay
        self.refreshPlayout(now: now)
    }

    /// A pause still undecided at its deadline (caller media stopped arriving): commit if the caller is still
    /// talking, resume otherwise.
    mutating func pauseTimedOut(_ id: TimerID, now: CallInstant, into actions: inout [CallAction]) {
        guard case .tentative(let tentative) = self.bargeIn, tentative.timer == id else { return }
        if self.vad.isSpeaking {
            self.commit(now: now, into: &actions)
        } else {
            self.falseAlarm(now: now)
        }
    }

    /// The service's VAD heard the caller: commits a tentative pause, is ignored right after a local barge-in, and
    /// otherwise interrupts (the server-VAD path, when local detection is off or missed it). The greeting window
    /// holds here too.
    mutating func serverSpeechStarted(now: CallInstant, into actions: inout [CallAction]) {
        if self.isPaused {
            self.commit(now: now, byService: true, into: &actions)
            return
        }
        let settings = self.configuration.bargeIn
        if let last = self.lastBargeInAt, now - last < settings.interruptLock { return }
        if settings.greetingWindow > .zero && now - self.startedAt < settings.greetingWindow { return }
        guard self.assistantAudioOutstanding else { return }
        // Latency needs the onset as the local VAD dated it; without local detection it is unknown, not zero.
        if let onset = self.vad.speechOnset { self.counters.bargeInLatencies.append(now - onset) }
        self.interrupt(now: now, cancel: .activeResponse, heardItem: self.playback, pauseCleared: false, into: &actions)
    }

    /// The barge-in transition, in order: stop pacing, flush, clear Twilio, bump the generation, cancel the response
    /// the policy allows (taking the pending-cancel lock), and truncate the item the caller was hearing to what
    /// Twilio confirmed as played. After a pause that already cleared Twilio, `clear` is sent again only if something
    /// was sent since. A response that started during a pause keeps its queued audio and plays on.
    mutating func interrupt(
        now: CallInstant,
        cancel policy: CancelPolicy,
        heardItem: PlaybackItem?,
        pauseCleared: Bool,
        into actions: inout [CallAction]
    ) {
        var newer: ActiveResponse?
        if case .ifStillActive(let target) = policy, case .streaming(let active) = self.response, active.id != target {
            newer = active
        }
        self.pacer.stop()
        if newer != nil {
            // Keep the newer response's audio; drop what is left of the interrupted item.
            if let heard = heardItem?.itemID { self.queue.removeAll { $0.itemID == heard } }
        } else {
            self.queue.removeAll()
            self.chunker.reset()
        }
        if !pauseCleared || self.marks.playableCount > 0 {
            self.markLastFrame(into: &actions)
            actions.append(.sendTwilio(.clear))
            self.marks.clearSent(at: now)
        }
        if newer == nil, case .streaming(let active) = self.response {
            self.generation += 1
            let mayCancel: Bool
            switch policy {
            case .activeResponse: mayCancel = true
            case .ifStillActive(let target): mayCancel = target == active.id
            }
            if mayCancel && !active.audioDone {
                let eventID = self.makeEventID("cancel")
                let timer = self.makeTimer(.cancelTimeout)
                self.sendRealtime(.responseCancel(responseID: active.id, eventID: eventID), into: &actions)
                actions.append(.scheduleTimer(timer, at: now + self.configuration.bargeIn.cancelTimeout))
                self.response = .cancelling(responseID: active.id, eventID: eventID, timer: timer)
                self.counters.cancelsSent += 1
            } else {
                // Its audio was complete: nothing to cancel, but nothing of it may play now either.
                self.response = .interrupted(responseID: active.id, since: now)
            }
            self.markDead(active.id)
        }
        if let item = heardItem {
            let played = min(self.marks.playedBytes(of: item.itemID), item.producedBytes)
            let eventID = self.makeEventID("truncate")
            self.sendRealtime(
                .itemTruncate(itemID: item.itemID, audioEndMs: AudioFrame.milliseconds(ofBytes: played), eventID: eventID),
                into: &actions
            )
            self.counters.truncatesSent += 1
            self.counters.truncationAudioEndMs.append(AudioFrame.milliseconds(ofBytes: played))
            self.conversation.heard(itemID: item.itemID, played: played, produced: item.producedBytes)
        }
        if newer == nil {
            self.playback = nil
            self.playoutUntil = nil  // flushed: the AI is silent now
        } else if self.playback?.itemID == heardItem?.itemID {
            self.playback = nil
        }
        self.lastBargeInAt = now
        self.counters.bargeInEvents += 1
    }

    // MARK: False triggers

    mutating func armFalseTriggerCheck(now: CallInstant, into actions: inout [CallAction]) {
        let window = self.configuration.bargeIn.falseTriggerWindow
        guard window > .zero else { return }
        let timer = self.makeTimer(.falseTriggerCheck)
        self.falseTriggerTimer = timer
        actions.append(.scheduleTimer(timer, at: now + window))
    }

    /// A committed local barge-in, yet the service never heard a caller turn: if the caller is quiet now (low energy),
    /// it was a false trigger (a bang, a voice in the room), and the AI is asked to go on. While the caller still
    /// talks, or the cancel is still pending, look again later.
    mutating func checkFalseTrigger(now: CallInstant, into actions: inout [CallAction]) {
        if self.vad.isSpeaking || self.isCancelPending {
            self.armFalseTriggerCheck(now: now, into: &actions)
            return
        }
        self.falseTriggerTimer = nil
        guard self.upstream == .ready, self.response == .idle || self.isInterruptedOnly else { return }
        let eventID = self.makeEventID("resume")
        self.sendRealtime(.responseCreate(eventID: eventID), into: &actions)
        self.counters.bargeInFalseTriggers += 1
    }

    var isCancelPending: Bool {
        if case .cancelling = self.response { return true }
        return false
    }

    var isInterruptedOnly: Bool {
        if case .interrupted = self.response { return true }
        return false
    }

    /// The pending-cancel lock's failsafe: the service never answered the cancel.
    mutating func cancelTimedOut(_ id: TimerID, now: CallInstant, into actions: inout [CallAction]) {
        guard case .cancelling(_, _, let timer) = self.response, timer == id else { return }
        self.response = .idle
        self.counters.cancelTimeouts += 1
        actions.append(.logWatchdog(kind: "cancel_timeout"))
    }
}

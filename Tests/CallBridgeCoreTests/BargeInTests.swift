import Testing

@testable import CallBridgeCore

/// Local barge-in, as call transcripts in virtual time. The AI speaks a tone around -30 dBFS; the caller talks at -10 dBFS
/// (far above any echo of it) unless a test says otherwise. Caller media arrive every 20 ms; a message received at
/// `t` carries the frame that began at `t − 20`.
@Suite struct BargeInTests {
    /// One second of reply audio around -30 dBFS; every frame differs from its neighbours, so order is checkable.
    static let ai = (0..<50).flatMap { tone(-27 - Double($0 % 7), frames: 1) }

    static func configuration(_ change: (inout BargeInConfiguration) -> Void = { _ in }) -> CallConfiguration {
        var bargeIn = BargeInConfiguration()
        change(&bargeIn)
        return CallConfiguration(bargeIn: bargeIn, watchdog: nil)
    }

    /// Configured at 10 ms, with reply r1/i1 (one second) arriving at 100 ms: two frames go out at once (the lead's
    /// last waits for the first tick).
    func speakingCall(_ configuration: CallConfiguration = Self.configuration()) -> CallStateMachine {
        var sm = CallStateMachine(configuration: configuration, now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        _ = sm.handle(.realtimeReceived(.outputItemAdded(responseID: "r1", itemID: "i1")), now: t(100))
        let sent = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: Self.ai)), now: t(100))
        #expect(sent.mediaFrames.count == 2)
        return sm
    }

    /// Caller frames at `levels` (nil: silence), one message per 20 ms from `from`; returns each message's actions.
    func caller(_ sm: inout CallStateMachine, _ levels: [Double?], from: Int) -> [[CallAction]] {
        levels.enumerated().map { index, level in
            sm.handle(.twilioReceived(.media(payload: callerPayload(level))), now: t(from + 20 * index))
        }
    }

    /// As `caller`, with the shared ticker beside it: a tick `tickAfter` ms after each message, delivered only while
    /// the call wants ticks (as the shell does). Returns each message's actions and every frame sent, by any event.
    func callerWithTicker(
        _ sm: inout CallStateMachine,
        _ levels: [Double?],
        from: Int,
        tickAfter: Int = 7
    ) -> (steps: [[CallAction]], frames: [[UInt8]]) {
        var steps: [[CallAction]] = []
        var frames: [[UInt8]] = []
        for (index, level) in levels.enumerated() {
            let step = sm.handle(.twilioReceived(.media(payload: callerPayload(level))), now: t(from + 20 * index))
            steps.append(step)
            frames += step.mediaFrames
            if sm.wantsTicks { frames += sm.handle(.tick, now: t(from + 20 * index + tickAfter)).mediaFrames }
        }
        return (steps, frames)
    }

    func appends(_ actions: [CallAction]) -> [String] {
        actions.compactMap { if case .sendRealtime(.inputAudioAppend(let audio)) = $0 { audio } else { nil } }
    }

    static let silencePayload = callerPayload(nil)

    /// Twilio sends whole 20 ms frames, but a message of any length is framed across messages: with 30 ms messages
    /// the VAD sees the same frames, so the talk-over pauses the AI at the message that completes its second voiced
    /// frame, as with 20 ms messages, and every byte of the caller's audio reaches the service once, in order.
    @Test func callerAudioInMessagesOfPartFramesIsFramedAcrossThem() {
        let speech = tone(-10, frames: 6)
        var sm = self.speakingCall()
        #expect(sm.handle(.tick, now: t(120)).mediaFrames.count == 1)
        var steps: [[CallAction]] = []
        for (index, start) in stride(from: 0, to: speech.count, by: 240).enumerated() {
            let payload = Base64.encode(Array(speech[start..<(start + 240)]))
            steps.append(sm.handle(.twilioReceived(.media(payload: payload)), now: t(150 + 30 * index)))
        }
        // 150 ms: one whole frame (voiced, not yet speech) and half a frame held; 180 ms: two more, speech.
        #expect(!steps[0].contains(.sendTwilio(.clear)))
        #expect(steps[1].contains(.sendTwilio(.clear)))
        // The first message went out as silence in place of echo; the pause sent it for real (pre-roll), then the
        // rest as it came.
        let sent = self.appends(steps.flatMap { $0 }).compactMap { Base64.decode($0) }
        let real = sent.filter { $0 != Array(repeating: MuLaw.silence, count: $0.count) }.flatMap { $0 }
        #expect(real == speech)
    }

    // MARK: Pause, then commit

    @Test func talkingOverTheAIPausesAtOnceThenCommitsAfter150ms() {
        var sm = self.speakingCall()
        // The ticker sends the lead's last frame at 120 ms, before the caller's first message.
        #expect(sm.handle(.tick, now: t(120)).mediaFrames.count == 1)
        let steps = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)
        // 120: one voiced frame (onset 100), not yet speech: the service hears silence in its place.
        #expect(self.appends(steps[0]) == [Self.silencePayload])
        // 140: the second voiced frame starts speech. Stage 1: clear Twilio, hold the queue, and send the caller's
        // real audio from the pre-roll on.
        #expect(
            steps[1] == [
                .sendTwilio(.clear),
                .scheduleTimer(TimerID(.pauseTimeout, generation: 1), at: t(1140)),
                .sendRealtime(.inputAudioAppend(base64: callerPayload(-10))),
                .sendRealtime(.inputAudioAppend(base64: callerPayload(-10))),
            ]
        )
        #expect(steps.allSatisfy { $0.mediaFrames.isEmpty }, "caller messages never release the AI's frames")
        #expect(sm.counters.bargeInPauses == 1)
        #expect(sm.counters.lastBargeInPause == .milliseconds(40))
        #expect(!sm.wantsTicks, "a tentative pause holds the queue")
        #expect(sm.handle(.tick, now: t(160)).mediaFrames.isEmpty)
        // Gate 4: the frame ending at 250 ms makes 150 ms of speech from the onset at 100.
        for step in steps[2..<7] { #expect(!step.contains { if case .sendRealtime(.responseCancel) = $0 { true } else { false } }) }
        #expect(
            steps[7] == [
                .sendRealtime(.responseCancel(responseID: "r1", eventID: "cb_cancel_1")),
                .scheduleTimer(TimerID(.cancelTimeout, generation: 2), at: t(3260)),
                // No mark has come back yet: nothing of i1 is confirmed as played.
                .sendRealtime(.itemTruncate(itemID: "i1", audioEndMs: 0, eventID: "cb_truncate_2")),
                // The false-trigger check: did the caller really take the turn?
                .scheduleTimer(TimerID(.falseTriggerCheck, generation: 3), at: t(1760)),
                .sendRealtime(.inputAudioAppend(base64: callerPayload(-10))),
            ]
        )
        #expect(sm.counters.bargeInEvents == 1)
        // Late deltas of r1 are dropped under the pending-cancel lock.
        #expect(sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: Self.ai)), now: t(270)) == [])
        #expect(sm.counters.staleDeltasDropped == 1)
    }

    @Test func aCoughIsAFalseAlarmAndPlaybackResumesWhereTwilioStopped() {
        var sm = self.speakingCall()
        // Ticks come 7 ms after each caller message: the one at 127 ms sends frame 2.
        let (steps, frames) = self.callerWithTicker(&sm, [-10, -10] + Array(repeating: nil, count: 18), from: 120)
        #expect(steps[1].first == .sendTwilio(.clear))
        // Speech ends after the 300 ms hang-over, before 150 ms of speech: resume. Of the three frames at Twilio when
        // it was cleared at 140 ms, frames 0 and 1 (due at 100 and 120) were already playing; frame 2 (due at 140) was
        // dropped and goes out again first, then the rest of the reply in order.
        let frame = { (k: Int) in Array(Self.ai[(k * 160)..<((k + 1) * 160)]) }
        let resumeAt = steps.indices.dropFirst().first { !steps[$0].mediaFrames.isEmpty }
        #expect(resumeAt == 16, "the last voiced frame ended at 140 ms: speech ends 300 ms later, with the message at 440")
        if let resumeAt {
            // The resumed run's lead leaves with the message that ended the pause (its last frame on the next tick), the
            // rest on the ticks after it.
            #expect(steps[resumeAt].mediaFrames == [frame(2), frame(3)])
            let sent = frames.dropFirst(1).prefix(6).map { f in (0..<50).first { frame($0) == f } ?? -1 }
            #expect(sent == [2, 3, 4, 5, 6, 0], "frame 7 repeats frame 0's level")
        }
        #expect(frames.count == 1 + 2 + 4, "frame 2 at 127 ms; after the resume at 440 two frames, then ticks 447 to 507")
        #expect(sm.counters.bargeInFalseAlarms == 1)
        #expect(sm.counters.bargeInEvents == 0)
        #expect(sm.counters.cancelsSent == 0)
    }

    @Test func noFalseAlarmWhileTheCallerIsStillTalking() {
        var sm = self.speakingCall()
        // Speech with short dips (under the 300 ms hang-over) is one utterance: it commits, it never resumes.
        let levels: [Double?] = [-10, -10, nil, nil, -10, nil, -10, -10, -10]
        let steps = self.caller(&sm, levels, from: 120)
        #expect(sm.counters.bargeInFalseAlarms == 0)
        #expect(sm.counters.bargeInEvents == 1)
        #expect(steps.dropFirst().flatMap(\.mediaFrames).isEmpty)
    }

    @Test func theRecoveryDelayBlocksANewPauseRightAfterAFalseAlarm() {
        var sm = self.speakingCall()
        _ = self.caller(&sm, [-10, -10] + Array(repeating: nil, count: 16), from: 120)
        #expect(sm.counters.bargeInFalseAlarms == 1)
        // The false alarm came at 460 ms: a new burst at 480 is inside the 500 ms recovery delay.
        _ = self.caller(&sm, [-10, -10, nil], from: 480)
        #expect(sm.counters.bargeInPauses == 1)
        // After it, a pause is possible again.
        _ = self.caller(&sm, Array(repeating: nil, count: 20), from: 540)
        _ = self.caller(&sm, [-10, -10], from: 980)
        #expect(sm.counters.bargeInPauses == 2)
    }

    @Test func speechThatStartedDuringTheRecoveryDelayPausesOnceTheDelayIsOver() {
        var sm = self.speakingCall()
        _ = self.caller(&sm, [-10, -10] + Array(repeating: nil, count: 16), from: 120)  // false alarm at 440
        #expect(sm.counters.bargeInFalseAlarms == 1)
        // Real speech from 480, inside the 500 ms recovery delay (until 940): it keeps going, and pauses at 940.
        let steps = self.caller(&sm, Array(repeating: -10, count: 30), from: 480)
        #expect(sm.counters.bargeInPauses == 2)
        let pausedAt = steps.firstIndex { $0.contains(.sendTwilio(.clear)) }.map { 480 + 20 * $0 }
        #expect(pausedAt == 940)
        #expect(sm.counters.bargeInEvents == 1)
    }

    @Test func aPauseIsDecidedByItsDeadlineWhenCallerMediaStop() {
        var sm = self.speakingCall()
        let steps = self.caller(&sm, [-10, -10], from: 120)  // paused at 140; then no more caller media
        guard case .scheduleTimer(let timer, let at)? = steps[1].first(where: { if case .scheduleTimer = $0 { true } else { false } }) else {
            Issue.record("no pause deadline in \(steps[1])")
            return
        }
        #expect(at == t(1140))
        // Still "speaking" for the VAD (no frames to end it): commit rather than leave the AI paused forever.
        let decided = sm.handle(.timerFired(timer), now: at)
        #expect(decided.contains(.sendRealtime(.responseCancel(responseID: "r1", eventID: "cb_cancel_1"))))
        #expect(!sm.isPaused)
    }

    // MARK: Gates and guards

    @Test func noBargeInWhenTheAIIsNotSpeaking() {
        var sm = CallStateMachine(configuration: Self.configuration(), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        let steps = self.caller(&sm, Array(repeating: -10, count: 10), from: 20)
        #expect(sm.counters.bargeInPauses == 0)
        // Nothing was substituted: the caller's turn goes to the service as it is.
        #expect(steps.flatMap(self.appends).allSatisfy { $0 == callerPayload(-10) })
    }

    @Test func playoutTruthCountsQueueMarksAndGrace() {
        var sm = self.speakingCall()
        // 50 frames: 3 sent, 47 queued at 100 ms → playout until 100 + 50 × 20 + 250.
        #expect(sm.playoutUntil == t(1350))
        #expect(sm.isAISpeaking(now: t(1349)))
        // A barge-in flushes it to nothing.
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)
        #expect(sm.playoutUntil == nil)
        #expect(!sm.isAISpeaking(now: t(300)))

        // A short reply: its last mark echo leaves only the grace.
        var short = CallStateMachine(configuration: Self.configuration(), now: t(0))
        _ = short.handle(.realtimeConnected, now: t(5))
        _ = short.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = short.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-30))), now: t(100))
        _ = short.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(100))
        _ = short.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: t(100))
        _ = short.handle(.twilioReceived(.mark(name: "cb1")), now: t(120))
        #expect(short.isAISpeaking(now: t(369)))
        #expect(!short.isAISpeaking(now: t(370)))
    }

    @Test func theInterruptLockBlocksASecondBargeInWithin700ms() {
        var sm = self.speakingCall()
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)  // committed at 260
        #expect(sm.counters.bargeInEvents == 1)
        // A new reply right away, and the caller talks over it again at 400 ms: locked until 960.
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(300))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r2", itemID: "i2", audio: Self.ai)), now: t(300))
        _ = self.caller(&sm, Array(repeating: nil, count: 20), from: 280)
        _ = self.caller(&sm, [-10, -10, -10], from: 700)
        #expect(sm.counters.bargeInPauses == 1)
        _ = self.caller(&sm, Array(repeating: nil, count: 20), from: 760)
        _ = self.caller(&sm, [-10, -10], from: 1200)
        #expect(sm.counters.bargeInPauses == 2)
    }

    @Test func theGreetingWindowIsUninterruptible() {
        var sm = self.speakingCall(Self.configuration { $0.greetingWindow = .seconds(3) })
        _ = self.caller(&sm, Array(repeating: -10, count: 10), from: 120)
        #expect(sm.counters.bargeInPauses == 0)
        #expect(sm.counters.cancelsSent == 0)
    }

    /// Gate order: a failing fast gate ends the check before the duration gate is ever reached.
    @Test func aFailingFastGateStopsBeforeTheDurationGate() {
        // The echo-age gate (gate 2) rejects the onset: no pause, so 300 ms of speech never commits either.
        var sm = self.speakingCall(Self.configuration { $0.echoAgeGate = .milliseconds(10_000) })
        _ = sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(110))
        _ = self.caller(&sm, Array(repeating: -10, count: 15), from: 120)
        #expect(sm.counters.bargeInPauses == 0)
        #expect(sm.counters.bargeInEvents == 0)
    }

    @Test func quietCallerUnderTheAIsOwnLevelIsTakenForEchoAndSilenced() {
        var sm = self.speakingCall()
        _ = sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(110))
        // -40 dBFS on the line while the AI plays at -30: Geigel says echo (6 dB of assumed loss).
        let steps = self.caller(&sm, Array(repeating: -40, count: 10), from: 120)
        #expect(sm.counters.bargeInPauses == 0)
        #expect(steps.flatMap(self.appends).allSatisfy { $0 == Self.silencePayload })
        #expect(sm.counters.echoSilencedMessages == 10)
    }

    @Test func theServicesVADRespectsTheGreetingWindow() {
        var sm = self.speakingCall(Self.configuration { $0.greetingWindow = .seconds(5) })
        let actions = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 0, itemID: "u1")), now: t(800))
        #expect(!actions.contains(.sendTwilio(.clear)))
        #expect(!actions.contains { if case .sendRealtime(.responseCancel) = $0 { true } else { false } })
        #expect(sm.counters.bargeInEvents == 0)
    }

    @Test func aPauseWithoutATargetNeverCancelsALaterResponse() {
        var sm = CallStateMachine(configuration: Self.configuration(), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        // r1's audio is queued, r1 is already done: the pause has no response to cancel.
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: Self.ai)), now: t(100))
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(100))
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: t(100))
        _ = self.caller(&sm, [-10, -10], from: 120)
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(150))
        let steps = self.caller(&sm, Array(repeating: -10, count: 6), from: 160)
        #expect(sm.counters.bargeInEvents == 1)
        #expect(!steps.flatMap { $0 }.contains { if case .sendRealtime(.responseCancel) = $0 { true } else { false } })
    }

    // MARK: The pending-cancel lock

    /// A committed barge-in on r1; returns the machine and the cancel's timer.
    func cancelled() -> (CallStateMachine, TimerID) {
        var sm = self.speakingCall()
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)
        guard case .cancelling(_, _, let timer) = sm.response else {
            Issue.record("expected the pending-cancel lock, got \(sm.response)")
            return (sm, TimerID(.cancelTimeout, generation: 0))
        }
        return (sm, timer)
    }

    @Test func theLockReleasesOnDone() {
        var (sm, _) = self.cancelled()
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "cancelled")), now: t(300))
        #expect(sm.response == .idle)
    }

    @Test func theLockReleasesOnAnErrorAnsweringTheCancel() {
        var (sm, _) = self.cancelled()
        let error = RealtimeErrorInfo(type: "invalid_request_error", code: "response_cancel_not_active", message: "", eventID: "cb_cancel_1")
        #expect(sm.handle(.realtimeReceived(.error(error)), now: t(300)) == [])
        #expect(sm.response == .idle)
    }

    @Test func theLockReleasesOnItsTimeoutAndAStaleTimerDoesNothing() {
        var (sm, timer) = self.cancelled()
        #expect(sm.handle(.timerFired(TimerID(.cancelTimeout, generation: 99)), now: t(3000)) == [])
        #expect(sm.response != .idle)
        #expect(sm.handle(.timerFired(timer), now: t(3260)) == [.logWatchdog(kind: "cancel_timeout")])
        #expect(sm.response == .idle)
        #expect(sm.counters.cancelTimeouts == 1)
    }

    @Test func cleanupNeverTouchesAnotherResponsesState() {
        var (sm, _) = self.cancelled()
        // r2 starts while r1's cancel is pending; r1's done must not end r2.
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(400))
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "cancelled")), now: t(410))
        guard case .streaming(let active) = sm.response else {
            Issue.record("r2 should still stream, got \(sm.response)")
            return
        }
        #expect(active.id == "r2")
    }

    @Test func theCancelIsSkippedWhenTheActiveResponseChangedDuringThePause() {
        var sm = self.speakingCall()
        _ = self.caller(&sm, [-10, -10], from: 120)  // paused on r1
        // r1 finishes and r2 starts before the commit.
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: t(150))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(160))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r2", itemID: "i2", audio: Self.ai)), now: t(160))
        _ = self.caller(&sm, Array(repeating: -10, count: 6), from: 160)
        #expect(sm.counters.bargeInEvents == 1)
        #expect(sm.counters.cancelsSent == 0)
        // r2 was not the response that was interrupted: it is neither cancelled nor muted, and plays from its start.
        guard case .streaming(let active) = sm.response else {
            Issue.record("r2 should still stream, got \(sm.response)")
            return
        }
        #expect(active.id == "r2")
        #expect(!sm.handle(.tick, now: t(400)).mediaFrames.isEmpty)
    }

    // MARK: False triggers

    func creates(_ actions: [[CallAction]]) -> Int {
        actions.flatMap { $0 }.filter { if case .sendRealtime(.responseCreate) = $0 { true } else { false } }.count
    }

    @Test func aBargeInTheServiceNeverHeardIsAFalseTriggerAndTheAIGoesOn() {
        var sm = self.speakingCall()
        let steps = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)  // committed at 260
        let timer = TimerID(.falseTriggerCheck, generation: 3)
        #expect(steps[7].contains(.scheduleTimer(timer, at: t(1760))))
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "cancelled")), now: t(300))
        _ = self.caller(&sm, Array(repeating: nil, count: 40), from: 280)  // quiet afterwards, no caller turn
        #expect(sm.handle(.timerFired(timer), now: t(1760)) == [.sendRealtime(.responseCreate(eventID: "cb_resume_3"))])
        #expect(sm.counters.bargeInFalseTriggers == 1)
    }

    @Test func theFalseTriggerCheckWaitsForThePendingCancel() {
        var sm = self.speakingCall()
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)
        _ = self.caller(&sm, Array(repeating: nil, count: 40), from: 280)
        // The cancel is still unanswered at 1760: asking for a response now would only earn an error.
        #expect(sm.handle(.timerFired(TimerID(.falseTriggerCheck, generation: 3)), now: t(1760)) == [.scheduleTimer(TimerID(.falseTriggerCheck, generation: 4), at: t(3260))])
    }

    @Test func noFalseTriggerWhileTheCallerIsStillTalking() {
        var sm = self.speakingCall()
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)
        _ = self.caller(&sm, Array(repeating: -10, count: 75), from: 280)  // still talking at 1760
        let again = sm.handle(.timerFired(TimerID(.falseTriggerCheck, generation: 3)), now: t(1760))
        #expect(again == [.scheduleTimer(TimerID(.falseTriggerCheck, generation: 4), at: t(3260))])
        #expect(sm.counters.bargeInFalseTriggers == 0)
    }

    @Test func noFalseTriggerOnceTheServiceHeardTheCaller() {
        var sm = self.speakingCall()
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)
        _ = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 100, itemID: "u1")), now: t(500))
        _ = self.caller(&sm, Array(repeating: nil, count: 40), from: 520)
        #expect(sm.handle(.timerFired(TimerID(.falseTriggerCheck, generation: 3)), now: t(1760)) == [])
        #expect(sm.counters.bargeInFalseTriggers == 0)
    }

    // MARK: The second-stage confirmer

    /// A scripted confirmer: answers one verdict per active period from a list and records how many frames each
    /// period was shown and whether it started warm.
    struct ScriptedConfirmer: SpeechConfirmer {
        var answers: [Bool]
        var shown: [Int] = []
        var warmStarts: [Bool] = []
        var verdict = true
        mutating func begin(warm: Bool) {
            self.warmStarts.append(warm)
            self.shown.append(0)
            self.verdict = self.answers.isEmpty ? true : self.answers.removeFirst()
        }
        mutating func feed(_ frame: ArraySlice<UInt8>) { self.shown[self.shown.count - 1] += 1 }
        var heardSpeech: Bool { self.verdict }
    }

    func speakingCall(confirmer: ScriptedConfirmer) -> CallStateMachine {
        var sm = CallStateMachine(configuration: Self.configuration(), confirmer: confirmer, now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: Self.ai)), now: t(100))
        return sm
    }

    @Test func theConfirmerRunsOnlyWhenTheEnergyStageFiresAndCanOverruleIt() {
        var sm = self.speakingCall(confirmer: ScriptedConfirmer(answers: [false]))
        // Quiet caller: the energy stage never fires, the confirmer is never asked.
        _ = self.caller(&sm, Array(repeating: nil, count: 10), from: 120)
        #expect((sm.confirmer as? ScriptedConfirmer)?.shown == [])
        // A door slam: the energy stage pauses; at 150 ms the confirmer says no: resume, no cancel.
        let steps = self.caller(&sm, Array(repeating: -10, count: 8), from: 320)
        #expect(sm.counters.bargeInPauses == 1)
        #expect(sm.counters.confirmerRejections == 1)
        #expect(sm.counters.bargeInFalseAlarms == 1)
        #expect(sm.counters.bargeInEvents == 0)
        #expect(!steps.flatMap { $0 }.contains { if case .sendRealtime(.responseCancel) = $0 { true } else { false } })
        // It saw the frames from just before the onset to the commit point (3 + 8).
        #expect((sm.confirmer as? ScriptedConfirmer)?.shown == [11])
    }

    @Test func theServicesSpeechCommitsAPauseWithoutAskingTheConfirmer() {
        var sm = self.speakingCall(confirmer: ScriptedConfirmer(answers: [false]))
        _ = self.caller(&sm, [-10, -10], from: 120)
        let commit = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 100, itemID: "u1")), now: t(150))
        #expect(commit.contains(.sendRealtime(.responseCancel(responseID: "r1", eventID: "cb_cancel_1"))))
        #expect(sm.counters.bargeInEvents == 1)
        #expect(sm.counters.confirmerRejections == 0, "the confirmer's \"no\" is not consulted")
        // The service heard the caller: no false-trigger check is armed.
        #expect(!commit.contains { if case .scheduleTimer(let id, _) = $0 { id.kind == .falseTriggerCheck } else { false } })
    }

    @Test func theConfirmerStaysWarmOverContiguousAudioAndStartsFreshAfterALongGap() {
        var sm = self.speakingCall(confirmer: ScriptedConfirmer(answers: [false, false, false]))
        // Five more seconds of reply, so the AI is still speaking for every burst below.
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: Array(repeating: Self.ai, count: 5).joined().map { $0 })), now: t(100))
        _ = self.caller(&sm, Array(repeating: nil, count: 10), from: 120)
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 320)  // a door: rejected
        _ = self.caller(&sm, Array(repeating: nil, count: 30), from: 480)
        // Another bang 0.6 s later: the period resumes the model's state and is shown every frame since the last one.
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 1080)
        var confirmer = sm.confirmer as? ScriptedConfirmer
        #expect(confirmer?.warmStarts == [false, true])
        #expect(confirmer?.shown == [11, 30 + 8])
        // Three seconds of quiet: more than the kept history, so the next period starts fresh from the onset.
        _ = self.caller(&sm, Array(repeating: nil, count: 150), from: 1240)
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 4240)
        confirmer = sm.confirmer as? ScriptedConfirmer
        #expect(confirmer?.warmStarts == [false, true, false])
        #expect(confirmer?.shown == [11, 38, 11])
        #expect(sm.counters.confirmerRejections == 3)
        #expect(sm.counters.bargeInEvents == 0)
    }

    @Test func aConfirmedPauseCommits() {
        var sm = self.speakingCall(confirmer: ScriptedConfirmer(answers: [true]))
        _ = self.caller(&sm, Array(repeating: -10, count: 8), from: 120)
        #expect(sm.counters.bargeInEvents == 1)
        #expect(sm.counters.confirmerRejections == 0)
    }

    // MARK: The server's VAD

    @Test func theServersSpeechStartedCommitsAPauseAndIsDeduplicatedAfterward() {
        var sm = self.speakingCall()
        _ = self.caller(&sm, [-10, -10], from: 120)  // paused
        let commit = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 100, itemID: "u1")), now: t(150))
        #expect(commit.contains(.sendRealtime(.responseCancel(responseID: "r1", eventID: "cb_cancel_1"))))
        #expect(!commit.contains(.sendTwilio(.clear)), "the pause already cleared Twilio")
        // The service's VAD reporting the same speech again changes nothing.
        #expect(sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 100, itemID: "u1")), now: t(200)) == [])
        #expect(sm.counters.bargeInEvents == 1)
    }
}

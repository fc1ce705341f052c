import Testing

@testable import CallBridgeCore

/// The call log's quality figures, from scripted calls in virtual time: the values, not just the names.
extension BargeInTests {
    func marks(_ actions: [CallAction]) -> [String] {
        actions.compactMap { if case .sendTwilio(.mark(let name)) = $0 { name } else { nil } }
    }

    /// Barge-in 1: the caller talks over r1 from 120 ms; quiet from 300 ms, until 700.
    func callerTalksOverTheReplyThenStops(_ sm: inout CallStateMachine) {
        _ = self.caller(&sm, Array(repeating: -10, count: 9), from: 120)
        #expect(sm.counters.bargeInEvents == 1)
        _ = self.caller(&sm, Array(repeating: nil, count: 20), from: 300)
        // The VAD's end (after its 300 ms hang-over) dates the end of the turn at the last voiced frame's end: the
        // message received at 280 carried the frame 260–280.
        #expect(sm.callerSpeechEnd == t(280))
    }

    @Test func aCallWithTwoBargeInsLogsBothWithTheirLatenciesTurnsAndTruncations() throws {
        var sm = self.speakingCall()
        self.callerTalksOverTheReplyThenStops(&sm)
        // The reply r2 arrives at 900: its first frame goes out at once, 620 ms after the caller stopped.
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(900))
        let reply = sm.handle(.realtimeReceived(.audioDelta(responseID: "r2", itemID: "i2", audio: Self.ai)), now: t(900))
        #expect(sm.counters.turnLatencies == [.milliseconds(620)])
        // Its first mark echoes as played at 930: the caller heard the reply 650 ms after they stopped.
        let firstMark = try #require(self.marks(reply).first)
        _ = sm.handle(.twilioReceived(.mark(name: firstMark)), now: t(930))
        #expect(sm.counters.turnPlayedLatencies == [.milliseconds(650)])
        // Barge-in 2, over r2, after the interrupt lock.
        _ = self.caller(&sm, Array(repeating: -10, count: 9), from: 1000)
        #expect(sm.counters.bargeInEvents == 2)
        // Onset (first voiced frame's start) → Twilio cleared (the pause, on the second voiced frame).
        #expect(sm.counters.bargeInLatencies.count == 2)
        #expect(sm.counters.bargeInLatencies.allSatisfy { $0 > .zero && $0 <= .milliseconds(60) })
        #expect(sm.counters.truncationAudioEndMs.count == 2)
        _ = sm.handle(.twilioReceived(.stop), now: t(1300))
        let line = try #require(sm.summary).jsonLine
        #expect(line.contains(#""barge_in_events":2,"#))
        #expect(line.contains(#""truncations":2,"#))
        #expect(line.contains(#""turns":1,"turn_latency_p50_ms":620,"turn_latency_max_ms":620,"#))
        #expect(line.contains(#""turn_played_latency_p50_ms":650,"#))
        #expect(line.contains(#""ended_by":"twilio""#))
        let latency = sm.counters.bargeInLatencies.map { String($0.wholeMilliseconds) }
        #expect(line.contains(#""barge_in_latency_min_ms":\#(latency.min()!),"#))
    }

    @Test func anUnderrunIsCountedOncePerDrySpellWhileAResponseStreams() {
        var sm = CallStateMachine(configuration: Self.configuration(), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 2))), now: t(100))
        for ms in stride(from: 120, through: 200, by: 20) { _ = sm.handle(.tick, now: t(ms)) }
        #expect(sm.counters.txUnderruns == 1)
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 1))), now: t(210))
        for ms in stride(from: 220, through: 300, by: 20) { _ = sm.handle(.tick, now: t(ms)) }
        #expect(sm.counters.txUnderruns == 2)
        // Once the response's audio is done an empty queue is the end of the reply, not an underrun.
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(310))
        for ms in stride(from: 320, through: 400, by: 20) { _ = sm.handle(.tick, now: t(ms)) }
        #expect(sm.counters.txUnderruns == 2)
    }

    @Test func inboundGapsBadMessagesAndUpstreamErrorsAreCountedByKind() throws {
        var sm = self.speakingCall()
        for chunk in [1, 2, 5, 6, 9] {
            _ = sm.handle(.twilioReceived(.media(payload: Self.silencePayload, chunk: chunk)), now: t(100 + 20 * chunk))
        }
        #expect(sm.counters.inboundGaps == 2)
        #expect(sm.counters.inboundMissingChunks == 4)
        #expect(sm.counters.audioInBytes == 5 * 160)
        _ = sm.handle(.twilioMalformed(.invalidJSON), now: t(400))
        _ = sm.handle(.twilioMalformed(.invalidJSON), now: t(401))
        _ = sm.handle(.realtimeMalformed(.missingField("delta")), now: t(402))
        _ = sm.handle(.realtimeReceived(.error(RealtimeErrorInfo(type: "server_error", code: "rate_limit_exceeded", message: "slow down"))), now: t(403))
        _ = sm.handle(.realtimeReceived(.error(RealtimeErrorInfo(type: "server_error", code: nil, message: "oops"))), now: t(404))
        _ = sm.handle(.twilioReceived(.stop), now: t(500))
        let line = try #require(sm.summary).jsonLine
        #expect(line.contains(#""inbound_gaps":2,"inbound_missing_chunks":4,"#))
        #expect(line.contains(#""upstream_errors_by_code":{"rate_limit_exceeded":1,"unknown":1}"#))
        #expect(sm.counters.badMessagesByKind.values.reduce(0, +) == 3)
        #expect(line.contains(#""audio_in_seconds":0.10,"#))
    }
}

extension BargeInTests {
    @Test func theTXQueueIsBoundedAndItsOverflowCounted() {
        var sm = CallStateMachine(configuration: CallConfiguration(maxQueuedFrames: 10, watchdog: nil), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        // 50 frames at once: ten fit the queue and the other 40 are dropped; then the lead goes out (two frames at
        // once, the third on the first tick).
        let sent = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 50))), now: t(100))
        #expect(sent.mediaFrames.count == 2)
        #expect(sm.queue.count == 8)
        #expect(sm.counters.txQueueOverflowFrames == 40)
    }
}

extension BargeInTests {
    /// The service drops mid-reply: the reply is cut, the fallback prompt plays, and the call ends once it has.
    @Test func aLostServicePlaysTheFallbackPromptThenEnds() throws {
        let prompt = tone(-12, frames: 5)
        // (No reconnects here: the outage is final at once.)
        var sm = CallStateMachine(configuration: CallConfiguration(watchdog: .init(), fallbackPrompt: prompt, reconnect: nil), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        let replyMarks = self.marks(sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: Self.ai)), now: t(100)))
        let lost = sm.handle(.realtimeClosed(.closed("connection reset")), now: t(150))
        #expect(lost.contains(.sendTwilio(.clear)), "what the model was saying is cut")
        // Twilio answers a clear by echoing the marks it dropped.
        for mark in replyMarks { _ = sm.handle(.twilioReceived(.mark(name: mark)), now: t(151)) }
        #expect(!sm.isEnded)
        #expect(sm.counters.fallbackPlayed)
        // Late audio of the dead response never plays.
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: Self.ai)), now: t(160))
        var sent: [[UInt8]] = lost.mediaFrames
        var marks = self.marks(lost)
        var now = 150
        while !sm.isEnded && now < 2000 {
            now += 20
            let actions = sm.handle(.tick, now: t(now))
            sent += actions.mediaFrames
            marks += self.marks(actions)
            // Twilio plays each frame and echoes its mark 20 ms later.
            if let mark = marks.first, (now - 150) % 40 == 0 {
                marks.removeFirst()
                _ = sm.handle(.twilioReceived(.mark(name: mark)), now: t(now))
            }
        }
        #expect(Array(sent.joined()) == prompt, "exactly the prompt, after the cut")
        #expect(sm.endReason == .realtimeClosed)
        #expect(try #require(sm.summary).jsonLine.contains(#""fallback_played":true"#))
    }
}

extension BargeInTests {
    /// A drop after the session was up: reconnect with backoff, caller audio held meanwhile and forwarded once the new
    /// session is configured; after `maxAttempts` failures in a row the outage is final.
    @Test func aDropIsReconnectedWithBackoffAndTheCallersAudioIsHeld() {
        let policy = ReconnectPolicy(maxAttempts: 2, initialBackoff: .milliseconds(100), maxBackoff: .seconds(1))
        #expect(policy.backoff(attempt: 1) == .milliseconds(100))
        #expect(policy.backoff(attempt: 2) == .milliseconds(200))
        #expect(ReconnectPolicy().backoff(attempt: 10) == .seconds(3))
        var sm = CallStateMachine(configuration: CallConfiguration(watchdog: nil, reconnect: policy), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        let dropped = sm.handle(.realtimeClosed(.closed("reset")), now: t(100))
        #expect(dropped.contains(.scheduleTimer(TimerID(.reconnect, generation: 1), at: t(200))))
        #expect(!sm.isEnded)
        // Caller audio during the outage is held, not lost.
        _ = sm.handle(.twilioReceived(.media(payload: Self.silencePayload)), now: t(120))
        #expect(sm.handle(.timerFired(TimerID(.reconnect, generation: 1)), now: t(200)) == [.connectRealtime(attempt: 1)])
        // The first attempt fails; the second one works.
        let failed = sm.handle(.realtimeClosed(.connectFailed("refused")), now: t(250))
        #expect(failed.contains(.scheduleTimer(TimerID(.reconnect, generation: 2), at: t(450))))
        _ = sm.handle(.timerFired(TimerID(.reconnect, generation: 2)), now: t(450))
        let connected = sm.handle(.realtimeConnected, now: t(500))
        #expect(connected.contains { if case .sendRealtime(.sessionUpdate) = $0 { true } else { false } })
        let ready = sm.handle(.realtimeReceived(.sessionUpdated), now: t(520))
        #expect(ready == [.sendRealtime(.inputAudioAppend(base64: Self.silencePayload))], "the held audio goes to the new session")
        #expect(sm.counters.upstreamReconnects == 2)
        #expect(sm.counters.upstreamOutages == 1)
        #expect(sm.counters.upstreamGapMax == .milliseconds(420))
        // A later drop starts over with a fresh budget; two failures in a row end the call.
        _ = sm.handle(.realtimeClosed(.closed("reset")), now: t(1000))
        _ = sm.handle(.realtimeClosed(.connectFailed("refused")), now: t(1150))
        let final = sm.handle(.realtimeClosed(.connectFailed("refused")), now: t(1400))
        #expect(final.contains(.endCall(.realtimeConnectFailed)))
    }
}

extension BargeInTests {
    /// Before any session was up: a network failure is retried (with the same backoff, inside the session-ready
    /// deadline); the service refusing the upgrade goes straight to the fallback.
    @Test(arguments: [true, false])
    func aFirstConnectionIsRetriedOnlyWhenTheNetworkFailedIt(retryable: Bool) {
        let policy = ReconnectPolicy(maxAttempts: 2, initialBackoff: .milliseconds(100), maxBackoff: .seconds(1))
        var sm = CallStateMachine(configuration: CallConfiguration(watchdog: nil, reconnect: policy), now: t(0))
        _ = sm.handle(.twilioReceived(.media(payload: Self.silencePayload)), now: t(20))
        let failed = sm.handle(.realtimeClosed(.connectFailed("connection refused", retryable: retryable)), now: t(50))
        guard retryable else {
            #expect(failed == [.endCall(.realtimeConnectFailed)])
            return
        }
        #expect(failed.contains(.scheduleTimer(TimerID(.reconnect, generation: 1), at: t(150))))
        #expect(sm.handle(.timerFired(TimerID(.reconnect, generation: 1)), now: t(150)) == [.connectRealtime(attempt: 1)])
        _ = sm.handle(.realtimeConnected, now: t(200))
        let ready = sm.handle(.realtimeReceived(.sessionUpdated), now: t(220))
        #expect(ready == [.sendRealtime(.inputAudioAppend(base64: Self.silencePayload))], "the caller's first words are not lost")
        #expect(sm.upstream == .ready)
        // Attempts are bounded: a first connection that keeps failing ends like any other.
        var again = CallStateMachine(configuration: CallConfiguration(watchdog: nil, reconnect: policy), now: t(0))
        _ = again.handle(.realtimeClosed(.connectFailed("refused", retryable: true)), now: t(10))
        _ = again.handle(.realtimeClosed(.connectFailed("refused", retryable: true)), now: t(200))
        #expect(again.handle(.realtimeClosed(.connectFailed("refused", retryable: true)), now: t(500)) == [.endCall(.realtimeConnectFailed)])
    }
}

@Suite struct ConversationLogTests {
    @Test func anInterruptedTurnIsCutToWhatWasHeardAndTheLogIsBounded() {
        var log = ConversationLog()
        log.record(itemID: "u1", role: .user, text: "  What are your opening hours? ")
        log.record(itemID: "a1", role: .assistant, text: "We open at nine and close at six on weekdays and at noon on Saturdays.")
        log.heard(itemID: "a1", played: 4000, produced: 10000)
        log.record(itemID: "a2", role: .assistant, text: "Sure.")
        log.heard(itemID: "a2", played: 0, produced: 1600)
        #expect(log.turns == [
            ConversationTurn(role: .user, text: "What are your opening hours?"),
            ConversationTurn(role: .assistant, text: "We open at nine and close…"),
        ], "40 % of 14 words is 5; a turn not heard at all is not replayed")
        log.maxTurns = 2
        log.record(itemID: "u2", role: .user, text: "Thanks.")
        #expect(log.turns.map(\.text) == ["Thanks."], "the oldest turns make room (a2, heard of nothing, stays out)")
        #expect(RealtimeCodec.encode(.conversationItemCreate(role: .assistant, text: "Hi \"there\"", eventID: "e1"), dialect: .beta)
            == #"{"type":"conversation.item.create","event_id":"e1","item":{"type":"message","role":"assistant","content":[{"type":"text","text":"Hi \"there\""}]}}"#)
        #expect(RealtimeCodec.encode(.conversationItemCreate(role: .user, text: "Hi", eventID: "e2"), dialect: .ga)
            == #"{"type":"conversation.item.create","event_id":"e2","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"Hi"}]}}"#)
    }
}

extension ConversationLogTests {
    /// The caller's transcript arrives after the AI's answer began (as it does from the real service); the replay
    /// still puts the question before the answer, because the items took their places when they were first seen.
    @Test func turnsKeepConversationOrderWhateverOrderTheirTranscriptsArriveIn() {
        var sm = CallStateMachine(configuration: CallConfiguration(watchdog: .init()), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 100, itemID: "item_u1")), now: t(100))
        _ = sm.handle(.realtimeReceived(.speechStopped(audioEndMs: 900, itemID: "item_u1")), now: t(900))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "resp_1")), now: t(950))
        _ = sm.handle(.realtimeReceived(.outputItemAdded(responseID: "resp_1", itemID: "item_a1")), now: t(960))
        _ = sm.handle(.realtimeReceived(.outputTranscript(itemID: "item_a1", transcript: "We open at nine.")), now: t(1000))
        _ = sm.handle(.realtimeReceived(.inputTranscript(itemID: "item_u1", transcript: "When do you open?")), now: t(1400))
        // A transcript for an item never seen otherwise goes last; an item whose transcript never came is skipped.
        _ = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 3000, itemID: "item_u2")), now: t(3000))
        _ = sm.handle(.realtimeReceived(.inputTranscript(itemID: "item_u3", transcript: "Thanks.")), now: t(5000))
        #expect(sm.conversation.turns == [
            ConversationTurn(role: .user, text: "When do you open?"),
            ConversationTurn(role: .assistant, text: "We open at nine."),
            ConversationTurn(role: .user, text: "Thanks."),
        ])
    }

    @Test func itemsWaitingForATranscriptAreBoundedToo() {
        var log = ConversationLog()
        log.maxTurns = 3
        for index in 0..<20 { log.noteItem(itemID: "u\(index)", role: .user) }
        #expect(log.entries.count == 6)
        log.record(itemID: "u19", role: .user, text: "last")
        #expect(log.turns.map(\.text) == ["last"])
    }
}

extension BargeInTests {
    @Test func aFatalErrorEndsTheCallWithTheFallbackAndNoReconnect() {
        let prompt = tone(-12, frames: 2)
        var sm = CallStateMachine(configuration: CallConfiguration(watchdog: .init(), fallbackPrompt: prompt), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        let fatal = sm.handle(.realtimeReceived(.error(RealtimeErrorInfo(type: "invalid_request_error", code: "insufficient_quota", message: "quota"))), now: t(50))
        #expect(fatal.mediaFrames.count == 2, "the fallback plays at once")
        // The service then hangs up: no reconnect for an error no retry can fix.
        let closed = sm.handle(.realtimeClosed(.closed("bye")), now: t(60))
        #expect(!closed.contains { if case .scheduleTimer(let id, _) = $0 { id.kind == .reconnect } else { false } })
        #expect(sm.counters.upstreamReconnects == 0)
        #expect(sm.counters.fallbackPlayed)
    }

    @Test func theGapCanBeFilledWithASoftToneOncePerOutage() {
        let policy = ReconnectPolicy(gapSound: .tone)
        var sm = CallStateMachine(configuration: CallConfiguration(watchdog: nil, reconnect: policy), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        let dropped = sm.handle(.realtimeClosed(.closed("reset")), now: t(100))
        #expect(dropped.mediaFrames.count == 2, "the beeps start at once (the pacer's lead)")
        #expect(dropped.mediaFrames.allSatisfy { Level.dBFS(muLaw: $0) < -20 }, "soft")
        let queued = sm.queue.count
        _ = sm.handle(.realtimeClosed(.connectFailed("refused")), now: t(400))
        #expect(sm.queue.count <= queued, "not queued again within the same outage")
    }
}

extension BargeInTests {
    /// The session is replaced at its age limit, at a quiet moment, with the conversation replayed.
    @Test func anOldSessionIsRecycledAtTheNextQuietMoment() throws {
        var sm = CallStateMachine(configuration: CallConfiguration(watchdog: nil, sessionRecycleAfter: .seconds(60)), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        let ready = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        let timer = try #require(ready.compactMap { if case .scheduleTimer(let id, let at) = $0, id.kind == .recycle { (id, at) } else { nil } }.first)
        #expect(timer.1 == t(60_010))
        _ = sm.handle(.realtimeReceived(.inputTranscript(itemID: "u1", transcript: "hello")), now: t(500))
        // The AI is speaking when the limit comes: look again a second later.
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(59_900))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 10))), now: t(59_900))
        let busy = sm.handle(.timerFired(timer.0), now: t(60_010))
        let later = try #require(busy.compactMap { if case .scheduleTimer(let id, let at) = $0, id.kind == .recycle { (id, at) } else { nil } }.first)
        #expect(later.1 == t(61_010))
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(60_000))
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: t(60_000))
        for ms in stride(from: 60_020, through: 60_300, by: 20) { _ = sm.handle(.tick, now: t(ms)) }
        for mark in 1...10 { _ = sm.handle(.twilioReceived(.mark(name: "cb\(mark)")), now: t(60_400)) }
        let recycle = sm.handle(.timerFired(later.0), now: t(61_010))
        #expect(recycle == [.closeRealtime, .connectRealtime(attempt: 0)])
        _ = sm.handle(.realtimeConnected, now: t(61_100))
        let renewed = sm.handle(.realtimeReceived(.sessionUpdated), now: t(61_120))
        #expect(renewed.contains(.sendRealtime(.conversationItemCreate(role: .user, text: "hello", eventID: "cb_replay_1"))))
        #expect(sm.counters.sessionRecycles == 1)
        #expect(sm.counters.upstreamOutages == 0, "a planned recycle is not an outage")
    }
}

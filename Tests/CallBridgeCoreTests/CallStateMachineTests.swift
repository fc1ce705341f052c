import Testing

@testable import CallBridgeCore

/// Call transcripts of the server-VAD bridge (local barge-in and watchdogs off; they have their own suites): each
/// test feeds events at explicit instants and checks the exact actions.
@Suite struct CallStateMachineTests {
    static let serverVAD = CallConfiguration(bargeIn: .serverOnly, watchdog: nil, sessionRecycleAfter: nil)

    static let start = TwilioStart(streamSid: "MZ1", callSid: "CA1", customParameters: ["From": "+15550001111"])
    static let readyTimer = CallAction.scheduleTimer(TimerID(.sessionReady, generation: 0), at: t(10_000))

    static func sessionUpdate(_ settings: RealtimeSessionSettings = .init()) -> CallAction {
        .sendRealtime(.sessionUpdate(settings, eventID: "cb_session_update"))
    }

    /// A call whose Realtime session is configured at t=10 ms.
    func readyCall(_ configuration: CallConfiguration = Self.serverVAD) -> CallStateMachine {
        var sm = CallStateMachine(configuration: configuration, now: t(0))
        // The first event arms the session-ready deadline.
        #expect(sm.handle(.twilioReceived(.connected), now: t(0)) == [Self.readyTimer])
        #expect(sm.handle(.twilioReceived(.start(Self.start)), now: t(1)) == [])
        #expect(sm.handle(.realtimeConnected, now: t(5)) == [Self.sessionUpdate(configuration.session)])
        #expect(sm.handle(.realtimeReceived(.sessionUpdated), now: t(10)) == [])
        return sm
    }

    /// A reply of `bytes` bytes of response r1 / item i1 arrived at `at` in one delta.
    func replying(_ sm: inout CallStateMachine, bytes: Int, at: Int) -> [CallAction] {
        #expect(sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(at)) == [])
        #expect(sm.handle(.realtimeReceived(.outputItemAdded(responseID: "r1", itemID: "i1")), now: t(at)) == [])
        return sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(bytes))), now: t(at))
    }

    // MARK: Caller audio

    @Test func callerAudioIsHeldUntilTheSessionIsConfiguredThenForwardedInOrder() {
        var sm = CallStateMachine(configuration: Self.serverVAD, now: t(0))
        #expect(sm.handle(.twilioReceived(.media(payload: "AAAA")), now: t(0)) == [Self.readyTimer])
        #expect(sm.handle(.realtimeConnected, now: t(20)) == [Self.sessionUpdate()])
        // Connected but not configured: still held, so the μ-law format applies to every byte.
        #expect(sm.handle(.twilioReceived(.media(payload: "BBBB")), now: t(20)) == [])
        #expect(
            sm.handle(.realtimeReceived(.sessionUpdated), now: t(40)) == [
                .sendRealtime(.inputAudioAppend(base64: "AAAA")), .sendRealtime(.inputAudioAppend(base64: "BBBB")),
            ]
        )
        #expect(sm.handle(.twilioReceived(.media(payload: "CCCC")), now: t(60)) == [.sendRealtime(.inputAudioAppend(base64: "CCCC"))])
        #expect(sm.counters.rxMessages == 3)
        #expect(sm.counters.realtimeReadyAt == .milliseconds(40))
    }

    @Test func heldAudioIsBoundedAndDropsTheOldest() {
        var sm = CallStateMachine(configuration: .init(maxHeldInboundMessages: 2, bargeIn: .serverOnly, watchdog: nil), now: t(0))
        for payload in ["AAAA", "BBBB", "CCCC"] {
            #expect(sm.handle(.twilioReceived(.media(payload: payload)), now: t(0)).allSatisfy { $0 == Self.readyTimer })
        }
        _ = sm.handle(.realtimeConnected, now: t(1))
        #expect(
            sm.handle(.realtimeReceived(.sessionUpdated), now: t(2)) == [
                .sendRealtime(.inputAudioAppend(base64: "BBBB")), .sendRealtime(.inputAudioAppend(base64: "CCCC")),
            ]
        )
        #expect(sm.counters.rxDroppedBeforeReady == 1)
    }

    // MARK: Reply audio

    @Test func replyBecomes160ByteFramesPacedWithTheLeadAndAPaddedTail() {
        var sm = self.readyCall()
        // 500 bytes: three whole frames (20 bytes wait). The lead goes out at once (frame 0, due now, and frame 1),
        // but its last frame, which waits for the ticker's first tick.
        let first = self.replying(&sm, bytes: 500, at: 100)
        #expect(first.mediaFrames == [ramp(160), ramp(160, from: 160)])
        #expect(first.markNames == ["cb1", "cb2"])
        #expect(first.count == 4)
        #expect(sm.counters.firstChunkBytes == 160)
        #expect(sm.counters.firstAudioAt == .milliseconds(100))
        #expect(sm.wantsTicks)
        #expect(sm.handle(.tick, now: t(120)).mediaFrames == [ramp(160, from: 320)])
        // The partial tail is not padded while the response may still send audio.
        #expect(sm.handle(.tick, now: t(140)) == [])
        #expect(!sm.wantsTicks)
        // Audio done: the tail is padded with μ-law silence. It is past the run's lead, so it waits for a tick.
        #expect(sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(141)) == [])
        #expect(sm.wantsTicks)
        // The next tick sends it, on its deadline (160 ms).
        let done = sm.handle(.tick, now: t(160))
        #expect(done.mediaFrames == [Array(ramp(500)[480...]) + Array(repeating: 0xFF, count: 140)])
        #expect(done.markNames == ["cb4"])
        #expect(!sm.wantsTicks)
        #expect(sm.counters.txFrames == 4)
        #expect(sm.counters.txLateFrames == 0)
    }

    @Test func theLeadsLastFrameGoesOnTheFirstTickThenOneFramePerTick() {
        var sm = self.readyCall()
        let first = self.replying(&sm, bytes: 160 * 6, at: 100)
        #expect(first.mediaFrames.count == 2)
        #expect(sm.wantsTicks)
        // Frame 2 (due at 140 ms) may leave from 100 ms, on whichever tick comes first.
        #expect(sm.nextReleaseTime == t(80))
        // An event never sends it.
        #expect(sm.handle(.twilioReceived(.media(payload: "AAAA")), now: t(105)).mediaFrames.isEmpty)
        // The ticker's phase is 9 ms: its tick at 109 sends frame 2, and each later tick one frame.
        #expect(sm.handle(.tick, now: t(109)).mediaFrames == [ramp(160, from: 320)])
        #expect(sm.nextReleaseTime == t(119))
        #expect(sm.handle(.twilioReceived(.media(payload: "AAAA")), now: t(125)).mediaFrames.isEmpty)
        #expect(sm.handle(.tick, now: t(129)).mediaFrames == [ramp(160, from: 480)])
        #expect(sm.handle(.tick, now: t(149)).mediaFrames == [ramp(160, from: 640)])
        #expect(sm.handle(.tick, now: t(169)).mediaFrames == [ramp(160, from: 800)])
        #expect(!sm.wantsTicks)
        #expect(sm.counters.txLateFrames == 0)
    }

    @Test func anUnderrunOf199MsCountsLateFramesAnd201MsResyncs() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160 * 3, at: 100)  // deadlines 100, 120, then 140 for the lead's last
        #expect(sm.handle(.tick, now: t(120)).mediaFrames.count == 1)  // → next deadline 160
        // Audio comes back after an underrun; it waits for the next tick, which sends it 199 ms after its deadline.
        let refill = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(160))), now: t(350))
        #expect(refill.mediaFrames.isEmpty)
        #expect(sm.handle(.tick, now: t(160 + 199)).mediaFrames.count == 1)
        #expect(sm.counters.txLateFrames == 1)
        #expect(sm.counters.txScheduleResets == 0)
        // Next deadline 180 ms; a tick at 382 ms is 202 ms late → resync.
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(160))), now: t(370))
        #expect(sm.handle(.tick, now: t(382)).mediaFrames.count == 1)
        #expect(sm.counters.txScheduleResets == 1)
        #expect(sm.counters.txLateFrames == 1)
    }

    @Test func deltasThatOvertakeResponseCreatedAreNotLost() {
        var sm = self.readyCall()
        let actions = sm.handle(.realtimeReceived(.audioDelta(responseID: "r9", itemID: "i9", audio: ramp(160))), now: t(50))
        #expect(actions.mediaFrames == [ramp(160)])
        #expect(sm.handle(.realtimeReceived(.responseCreated(responseID: "r9")), now: t(51)) == [])
        #expect(sm.counters.responses == 1)
    }

    @Test func aNewResponseStartsANewRunAfterTheLastOneDrained() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160, at: 100)
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: t(110))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(5000))
        let actions = sm.handle(.realtimeReceived(.audioDelta(responseID: "r2", itemID: "i2", audio: ramp(480))), now: t(5000))
        #expect(actions.mediaFrames.count == 2)
        #expect(sm.counters.txScheduleResets == 0)
        #expect(sm.counters.txLateFrames == 0)
    }

    // MARK: Barge-in

    @Test func serverVADBargeInIsOneTransitionInOrder() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160 * 10, at: 100)  // 2 frames sent, 8 queued
        // Twilio played the first two frames (40 ms of item i1); the ticker sent one frame after each echo.
        #expect(sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(120)) == [])
        #expect(sm.handle(.tick, now: t(120)).markNames == ["cb3"])
        #expect(sm.handle(.twilioReceived(.mark(name: "cb2")), now: t(140)) == [])
        #expect(sm.handle(.tick, now: t(140)).markNames == ["cb4"])
        let actions = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 900, itemID: "u2")), now: t(150))
        #expect(
            actions == [
                .sendTwilio(.clear),
                .sendRealtime(.responseCancel(responseID: "r1", eventID: "cb_cancel_1")),
                // The pending-cancel lock's failsafe.
                .scheduleTimer(TimerID(.cancelTimeout, generation: 1), at: t(3150)),
                .sendRealtime(.itemTruncate(itemID: "i1", audioEndMs: 40, eventID: "cb_truncate_2")),
            ]
        )
        #expect(sm.counters.bargeInEvents == 1)
        #expect(sm.counters.cancelsSent == 1)
        #expect(!sm.wantsTicks)
        // The flushed queue never plays: ticks send nothing.
        #expect(sm.handle(.tick, now: t(160)) == [])
        // Twilio echoes the cleared marks; the last one is counted as cleared, not played.
        _ = sm.handle(.twilioReceived(.mark(name: "cb4")), now: t(170))
        #expect(sm.counters.marksPlayed == 2)
        #expect(sm.counters.marksCleared == 1)
    }

    @Test func aStaleGenerationDeltaIsDropped() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160 * 4, at: 100)
        _ = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(130))
        // The service had more audio of r1 in flight.
        #expect(sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(800))), now: t(135)) == [])
        #expect(sm.handle(.tick, now: t(200)) == [])
        #expect(sm.counters.staleDeltasDropped == 1)
        // Its done arrives; the next response plays normally.
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "cancelled")), now: t(140))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(900))
        let next = sm.handle(.realtimeReceived(.audioDelta(responseID: "r2", itemID: "i2", audio: ramp(160))), now: t(900))
        #expect(next.mediaFrames.count == 1)
    }

    @Test func bargeInAfterTheResponseFinishedClearsAndTruncatesWithoutCancel() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160 * 3, at: 100)
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(101))
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: t(102))
        _ = sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(120))
        let actions = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(130))
        #expect(
            actions == [.sendTwilio(.clear), .sendRealtime(.itemTruncate(itemID: "i1", audioEndMs: 20, eventID: "cb_truncate_1"))]
        )
        #expect(sm.counters.cancelsSent == 0)
    }

    @Test func bargeInWhileTheReplyStreamsEvenWithNothingQueuedAtThatInstant() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160, at: 100)
        // Twilio already played the only frame; the service is still streaming (audio not done).
        _ = sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(120))
        let actions = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(125))
        #expect(
            actions == [
                .sendTwilio(.clear),
                .sendRealtime(.responseCancel(responseID: "r1", eventID: "cb_cancel_1")),
                .scheduleTimer(TimerID(.cancelTimeout, generation: 1), at: t(3125)),
                .sendRealtime(.itemTruncate(itemID: "i1", audioEndMs: 20, eventID: "cb_truncate_2")),
            ]
        )
    }

    @Test func noBargeInWhenNothingIsPlaying() {
        var sm = self.readyCall()
        #expect(sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 0, itemID: "u1")), now: t(50)) == [])
        // Reply fully played (every mark echoed): speech is a new turn, not an interruption.
        _ = self.replying(&sm, bytes: 160, at: 100)
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(101))
        _ = sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(120))
        #expect(sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 0, itemID: "u2")), now: t(500)) == [])
        #expect(sm.counters.bargeInEvents == 0)
    }

    @Test func truncateNeverExceedsTheAudioTheServiceProduced() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 100, at: 100)
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(101))  // padded to 160
        _ = sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(120))
        // Still outstanding? No: but a second response's audio is queued.
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: t(121))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(130))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r2", itemID: "i2", audio: ramp(50))), now: t(130))
        let actions = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(140))
        #expect(actions.contains(.sendRealtime(.itemTruncate(itemID: "i2", audioEndMs: 0, eventID: "cb_truncate_2"))))
    }

    @Test func truncateCountsOnlyWhatTwilioConfirmedAsPlayed() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 100, at: 100)
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(101))
        // The padded frame was sent but not echoed yet: nothing of i1 was heard.
        let actions = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(105))
        #expect(actions == [.sendTwilio(.clear), .sendRealtime(.itemTruncate(itemID: "i1", audioEndMs: 0, eventID: "cb_truncate_1"))])
        // A late delta of the done response is dropped.
        #expect(sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(10))), now: t(106)) == [])
        #expect(sm.counters.staleDeltasDropped == 1)
    }

    @Test func aSecondSpeechStartAfterTheClearIsNotASecondBargeIn() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160 * 4, at: 100)
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(101))
        #expect(sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(110)).first == .sendTwilio(.clear))
        // Twilio has not echoed the cleared marks yet; nothing of the AI can play any more.
        #expect(sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(115)) == [])
        #expect(sm.counters.bargeInEvents == 1)
    }

    @Test func aCreatedButSilentResponseIsNotPlaying() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160, at: 100)
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(101))
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: t(102))
        _ = sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(120))
        // r2 exists but has not sent a byte: the caller talking is a turn, not an interruption.
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(300))
        #expect(sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(310)) == [])
        #expect(sm.counters.bargeInEvents == 0)
    }

    @Test func aStrayResponseIDNeverSilencesTheLiveReply() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160 * 3, at: 100)
        #expect(sm.handle(.realtimeReceived(.audioDelta(responseID: "rX", itemID: "iX", audio: ramp(160))), now: t(101)) == [])
        #expect(sm.counters.staleDeltasDropped == 1)
        // r1 goes on playing.
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(160))), now: t(115))
        #expect(sm.handle(.tick, now: t(120)).mediaFrames.count == 1)
    }

    // MARK: Session readiness

    @Test func aRejectedSessionUpdateEndsTheCall() {
        var sm = CallStateMachine(configuration: Self.serverVAD, now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        let rejection = RealtimeErrorInfo(type: "invalid_request_error", code: "invalid_value", message: "voice", eventID: "cb_session_update")
        #expect(sm.handle(.realtimeReceived(.error(rejection)), now: t(30)) == [.logUpstreamError(rejection), .endCall(.realtimeRejected)])
    }

    @Test func theSessionMustBeReadyInTime() {
        var sm = CallStateMachine(configuration: .init(sessionReadyTimeout: .seconds(2), bargeIn: .serverOnly, watchdog: nil), now: t(0))
        let timer = TimerID(.sessionReady, generation: 0)
        #expect(sm.handle(.realtimeConnected, now: t(5)).first == .scheduleTimer(timer, at: t(2000)))
        #expect(sm.handle(.timerFired(timer), now: t(2000)) == [.endCall(.realtimeNotReady)])

        var ready = self.readyCall()
        #expect(ready.handle(.timerFired(TimerID(.sessionReady, generation: 0)), now: t(10_000)) == [])
        #expect(!ready.isEnded)
    }

    // MARK: Errors

    @Test func cancelNotActiveIsHarmlessOtherErrorsAreCountedAndLogged() {
        var sm = self.readyCall()
        let benign = RealtimeErrorInfo(type: "invalid_request_error", code: "response_cancel_not_active", message: "x")
        #expect(sm.handle(.realtimeReceived(.error(benign)), now: t(20)) == [])
        let real = RealtimeErrorInfo(type: "invalid_request_error", code: "invalid_value", message: "bad")
        #expect(sm.handle(.realtimeReceived(.error(real)), now: t(21)) == [.logUpstreamError(real)])
        #expect(sm.counters.upstreamErrors == 1)
        #expect(!sm.isEnded)
    }

    @Test func malformedMessagesAreCountedAndLoggedOncePerKind() {
        var sm = self.readyCall()
        #expect(sm.handle(.twilioMalformed(.invalidJSON), now: t(20)) == [.logBadMessage(kind: "twilio.invalid_json")])
        #expect(sm.handle(.twilioMalformed(.invalidJSON), now: t(21)) == [])
        #expect(sm.handle(.twilioMalformed(.invalidBase64), now: t(22)) == [.logBadMessage(kind: "twilio.invalid_base64")])
        #expect(sm.handle(.realtimeMalformed(.invalidJSON), now: t(23)) == [.logBadMessage(kind: "realtime.invalid_json")])
        #expect(sm.handle(.realtimeUnexpectedFrame, now: t(24)) == [.logBadMessage(kind: "realtime.unexpected_frame")])
        #expect(sm.counters.badMessages == 5)
        // The call goes on.
        #expect(sm.handle(.twilioReceived(.media(payload: "AAAA")), now: t(25)) == [.sendRealtime(.inputAudioAppend(base64: "AAAA"))])
    }

    // MARK: Ending

    @Test func twilioStopEndsTheCallWithASummary() {
        var sm = self.readyCall()
        _ = self.replying(&sm, bytes: 160, at: 100)
        #expect(sm.handle(.twilioReceived(.stop), now: t(2100)) == [.endCall(.twilioStop)])
        #expect(sm.handle(.twilioReceived(.media(payload: "AAAA")), now: t(2101)) == [])
        #expect(sm.handle(.twilioClosed, now: t(2102)) == [])
        let summary = try! #require(sm.summary)
        #expect(summary.callSid == "CA1")
        #expect(summary.streamSid == "MZ1")
        #expect(summary.durationMs == 2100)
        #expect(summary.endReason == .twilioStop)
        #expect(summary.counters.txFrames == 1)
        #expect(
            summary.jsonLine.hasPrefix(
                "{\"call_sid\":\"CA1\",\"stream_sid\":\"MZ1\",\"duration_ms\":2100,\"first_chunk_bytes\":160,\"tx_frames\":1,"
                    + "\"tx_schedule_resets\":0,\"tx_late_frames\":0,\"barge_in_events\":0,\"safety_fuse_trips\":0,"
                    + "\"upstream_errors\":0,\"bad_messages\":0,\"end_reason\":\"twilio_stop\""
            )
        )
        #expect(summary.jsonLine.hasSuffix(",\"custom_parameters\":{\"From\":\"+15550001111\"}}"))
    }

    @Test(arguments: [
        (RealtimeClosure.connectFailed("refused"), EndReason.realtimeConnectFailed),
        (RealtimeClosure.closed("close 1011"), EndReason.realtimeClosed),
    ])
    func realtimeGoingAwayEndsTheCall(closure: RealtimeClosure, reason: EndReason) {
        var sm = CallStateMachine(configuration: Self.serverVAD, now: t(0))
        _ = sm.handle(.twilioReceived(.start(Self.start)), now: t(0))
        #expect(sm.handle(.realtimeClosed(closure), now: t(300)) == [.endCall(reason)])
        #expect(sm.summary?.endReason == reason)
    }

    @Test func shutdownEndsTheCall() {
        var sm = self.readyCall()
        #expect(sm.handle(.shutdownRequested, now: t(50)) == [.endCall(.shutdown)])
    }
}

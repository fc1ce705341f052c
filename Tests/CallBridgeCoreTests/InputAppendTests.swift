import Testing

@testable import CallBridgeCore

/// Caller audio gathered into `input_audio_buffer.append`s of `inputAppendDuration` (40 ms here: two Twilio frames).
@Suite struct InputAppendTests {
    static let start = TwilioStart(streamSid: "MZ1", callSid: "CA1", customParameters: [:])

    /// A configured call at t = 10 ms, with local barge-in (the default) or the service's.
    func readyCall(
        local: Bool, appendMs: Int = 40, silenceAppendMs: Int? = nil, speechAppendMs: Int? = nil, quietAppendMs: Int? = nil
    ) -> CallStateMachine {
        let configuration = CallConfiguration(
            inputAppendDuration: .milliseconds(appendMs),
            silenceAppendDuration: silenceAppendMs.map { .milliseconds($0) },
            speechAppendDuration: speechAppendMs.map { .milliseconds($0) },
            quietAppendDuration: quietAppendMs.map { .milliseconds($0) },
            bargeIn: local ? .init() : .serverOnly,
            watchdog: nil,
            sessionRecycleAfter: nil
        )
        var sm = CallStateMachine(configuration: configuration, now: t(0))
        _ = sm.handle(.twilioReceived(.connected), now: t(0))
        _ = sm.handle(.twilioReceived(.start(Self.start)), now: t(1))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        return sm
    }

    static func appends(_ actions: [CallAction]) -> [[UInt8]] {
        actions.compactMap { action in
            if case .sendRealtime(.inputAudioAppend(let base64)) = action { return Base64.decode(base64) }
            return nil
        }
    }

    @Test(arguments: [true, false])
    func twoFramesMakeOneAppendWithTheirBytesInOrder(local: Bool) {
        var sm = self.readyCall(local: local)
        let frames = (0..<6).map { ramp(160, from: $0 * 7) }
        var sent: [[UInt8]] = []
        for (index, frame) in frames.enumerated() {
            let actions = sm.handle(.twilioReceived(.media(payload: Base64.encode(frame))), now: t(20 + 20 * index))
            let appends = Self.appends(actions)
            // Nothing goes out on the first frame of each pair; both go out together on the second.
            #expect(appends.count == index % 2, "frame \(index): \(actions)")
            sent += appends
        }
        #expect(sent == [frames[0] + frames[1], frames[2] + frames[3], frames[4] + frames[5]])
    }

    @Test func twentyMillisecondsForwardsEachMessageAsItCame() {
        var sm = self.readyCall(local: false, appendMs: 20)
        #expect(sm.handle(.twilioReceived(.media(payload: "AAAA")), now: t(20)) == [.sendRealtime(.inputAudioAppend(base64: "AAAA"))])
    }

    /// A gathered frame never waits behind another event to the service: a cancel finds it sent first.
    @Test func gatheredAudioGoesBeforeAnyOtherEventToTheService() {
        var sm = self.readyCall(local: false)
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(12))
        _ = sm.handle(.realtimeReceived(.outputItemAdded(responseID: "r1", itemID: "i1")), now: t(12))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(1600))), now: t(12))
        let frame = ramp(160, from: 3)
        #expect(Self.appends(sm.handle(.twilioReceived(.media(payload: Base64.encode(frame))), now: t(20))).isEmpty)
        // The service hears the caller: the bridge truncates what played (server barge-in), after the held frame.
        let actions = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 0, itemID: "u1")), now: t(25))
        let realtime = actions.compactMap { action -> RealtimeClientEvent? in
            if case .sendRealtime(let event) = action { return event }
            return nil
        }
        #expect(realtime.count >= 2, "\(actions)")
        #expect(realtime.first.map { if case .inputAudioAppend = $0 { true } else { false } } == true)
        #expect(Self.appends(actions) == [frame])
    }

    /// Caller media stopped after one frame: the next event an append's length later sends it alone.
    @Test func aLoneFrameGoesOutAfterOneAppendsLength() {
        var sm = self.readyCall(local: false)
        let frame = ramp(160)
        #expect(Self.appends(sm.handle(.twilioReceived(.media(payload: Base64.encode(frame))), now: t(20))).isEmpty)
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(59))).isEmpty)
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(60))) == [frame])
    }

    /// The leg drops with a frame gathered: it is held with the audio that follows, and replayed first.
    @Test func aGatheredFrameIsHeldWhenTheLegDrops() {
        var sm = self.readyCall(local: false)
        let first = ramp(160, from: 1)
        let second = ramp(160, from: 2)
        _ = sm.handle(.twilioReceived(.media(payload: Base64.encode(first))), now: t(20))
        _ = sm.handle(.realtimeClosed(.closed("gone")), now: t(30))
        _ = sm.handle(.twilioReceived(.media(payload: Base64.encode(second))), now: t(40))
        #expect(sm.heldInbound.map { Base64.decode($0) } == [first, second])
        #expect(sm.pendingAppend.isEmpty)
    }

    /// Silence sent in place of echo is gathered like the caller's audio.
    @Test func echoSilenceIsGatheredToo() {
        var sm = self.readyCall(local: true)
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(12))
        _ = sm.handle(.realtimeReceived(.outputItemAdded(responseID: "r1", itemID: "i1")), now: t(12))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 50))), now: t(12))
        var sent: [[UInt8]] = []
        for index in 0..<4 {
            // The AI is speaking; quiet caller frames are replaced by silence.
            sent += Self.appends(sm.handle(.twilioReceived(.media(payload: callerPayload(-70))), now: t(20 + 20 * index)))
        }
        #expect(sent == Array(repeating: Array(repeating: MuLaw.silence, count: 320), count: 2))
        #expect(sm.counters.echoSilencedMessages == 4)
    }

    /// A call whose AI is speaking (50 frames queued at -20 dBFS), with silence appends of `silenceAppendMs`.
    func speakingCall(silenceAppendMs: Int) -> CallStateMachine {
        var sm = self.readyCall(local: true, silenceAppendMs: silenceAppendMs)
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(12))
        _ = sm.handle(.realtimeReceived(.outputItemAdded(responseID: "r1", itemID: "i1")), now: t(12))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 50))), now: t(12))
        return sm
    }

    static let silence = Array(repeating: MuLaw.silence, count: 160)

    /// Silence put in place of echo carries nothing: it goes out 200 ms at a time, not 40.
    @Test func substitutedSilenceGathersUpToItsOwnLength() {
        var sm = self.speakingCall(silenceAppendMs: 200)
        var sent: [(index: Int, bytes: [UInt8])] = []
        for index in 0..<20 {
            for append in Self.appends(sm.handle(.twilioReceived(.media(payload: callerPayload(-70))), now: t(20 + 20 * index))) {
                sent.append((index, append))
            }
        }
        #expect(sent.map(\.index) == [9, 19])
        #expect(sent.allSatisfy { $0.bytes == Array(repeating: MuLaw.silence, count: 1600) })
        #expect(sm.counters.echoSilencedMessages == 20)
    }

    /// The caller starts talking over the AI: the moment the bridge hears them, the gathered silence and the real
    /// audio of the onset (the pre-roll) go out together, and ordinary appends resume.
    @Test func theCallersSpeechEndsTheSilenceGatheringAtOnce() {
        var sm = self.speakingCall(silenceAppendMs: 200)
        for index in 0..<3 {
            #expect(Self.appends(sm.handle(.twilioReceived(.media(payload: callerPayload(-70))), now: t(20 + 20 * index))).isEmpty)
        }
        let loud = tone(-6)
        var first: (index: Int, appends: [[UInt8]])?
        for index in 3..<12 where first == nil {
            let appends = Self.appends(sm.handle(.twilioReceived(.media(payload: Base64.encode(loud))), now: t(20 + 20 * index)))
            if !appends.isEmpty { first = (index, appends) }
        }
        guard let first else {
            Issue.record("no append while the caller spoke")
            return
        }
        // Nothing went out before the bridge heard speech; then, at once, the silence sent for every frame so far
        // and the real audio of all of them (the pre-roll: the quiet frames and the onset), in ordinary appends.
        #expect(sm.vad.isSpeaking)
        let sent = first.appends.flatMap { $0 } + sm.pendingAppend
        let silent = first.index * 160
        let real = Array((0..<3).map { _ in tone(-70) }.joined()) + Array((3...first.index).map { _ in loud }.joined())
        #expect(sent == Array(repeating: MuLaw.silence, count: silent) + real)
        #expect(first.appends.dropFirst().allSatisfy { $0.count == 320 })
        #expect(sm.pendingAppend.count <= 160 && sm.pendingAppendKind != .silence)
        // From here the caller's audio goes in 40 ms appends again.
        var counts: [Int] = []
        for index in (first.index + 1)..<(first.index + 5) {
            counts.append(Self.appends(sm.handle(.twilioReceived(.media(payload: Base64.encode(loud))), now: t(20 + 20 * index))).count)
        }
        #expect(counts == [0, 1, 0, 1])
    }

    /// Gathered silence waits no longer than its own length when the caller's media stops.
    @Test func gatheredSilenceWaitsAtMostItsLength() {
        var sm = self.speakingCall(silenceAppendMs: 200)
        _ = sm.handle(.twilioReceived(.media(payload: callerPayload(-70))), now: t(20))
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(100))).isEmpty)
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(219))).isEmpty)
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(220))) == [Self.silence])
    }

    /// Without a silence length of its own, substituted silence goes in ordinary appends.
    @Test func withoutASilenceLengthSilenceGoesInOrdinaryAppends() {
        var sm = self.speakingCall(silenceAppendMs: 20)
        var counts: [Int] = []
        for index in 0..<4 {
            counts.append(Self.appends(sm.handle(.twilioReceived(.media(payload: callerPayload(-70))), now: t(20 + 20 * index))).count)
        }
        #expect(counts == [0, 1, 0, 1])
    }

    /// One caller frame per 20 ms at `levels` (a frame's level, or nil for μ-law silence), the AI silent: what each
    /// message sent (append sizes), and whether the VAD heard speech after it.
    static func stream(_ sm: inout CallStateMachine, _ frames: [[UInt8]], from start: Int = 0) -> [(appends: [Int], speaking: Bool, pending: Int)] {
        frames.enumerated().map { offset, frame in
            let actions = sm.handle(.twilioReceived(.media(payload: Base64.encode(frame))), now: t(20 + 20 * (start + offset)))
            return (Self.appends(actions).map(\.count), sm.vad.isSpeaking, sm.pendingAppend.count)
        }
    }

    /// While the VAD hears the caller, their audio goes out 100 ms at a time; the onset goes at once, the end of the
    /// speech (the hang-over over) sends what was gathered at once, and 40 ms appends resume. Nothing is lost or
    /// reordered.
    /// With an even and an odd number of quiet frames before it, so that the onset falls on either half of a 40 ms
    /// append.
    @Test(arguments: [9, 10, 11])
    func speechGathersUpToItsOwnLengthFromOnsetToEnd(quietFrames: Int) {
        var sm = self.readyCall(local: true, speechAppendMs: 100)
        // Distinct frames (the level steps), so that order shows: quiet, 30 loud (600 ms), then quiet again.
        let frames = (0..<quietFrames).map { _ in tone(-70) } + (0..<30).map { tone(-6 - Double($0 % 5)) } + (0..<30).map { _ in tone(-70) }
        let log = Self.stream(&sm, frames)
        guard let onset = log.firstIndex(where: \.speaking),
            let end = log[onset...].firstIndex(where: { !$0.speaking })
        else {
            Issue.record("the VAD never heard the caller, or never stopped: \(log)")
            return
        }
        // Before the speech: 40 ms appends.
        #expect(log[..<onset].allSatisfy { $0.appends.allSatisfy { $0 == 320 } })
        // The onset's message goes out at once with whatever was gathered before it (one frame or none), and
        // nothing waits: the service hears the onset at once.
        #expect(log[onset].appends.count == 1 && [160, 320].contains(log[onset].appends[0]) && log[onset].pending == 0, "\(log[onset])")
        // Then 100 ms appends, one every five messages, until the end.
        let during = log[(onset + 1)..<end].flatMap(\.appends)
        #expect(!during.isEmpty && during.allSatisfy { $0 == 800 }, "\(during)")
        let gaps = log[(onset + 1)..<end].indices.filter { !log[$0].appends.isEmpty }
        #expect(gaps.first == onset + 5 && zip(gaps, gaps.dropFirst()).allSatisfy { $1 - $0 == 5 }, "\(gaps)")
        // The end of the speech: what was gathered goes out with that message, whatever its length.
        #expect(log[end].appends.count == 1 || log[end - 1].appends == [800], "\(log[(end - 1)...end])")
        // After it: 40 ms appends again.
        #expect(log[(end + 1)...].flatMap(\.appends).allSatisfy { $0 == 320 })
        #expect(end - onset >= 30 - 3 && end - onset <= 30 + 20, "hang-over: \(onset) … \(end)")
        // Every byte, in order.
        let sent = Self.replayAppends(frames: frames, speechAppendMs: 100)
        #expect(sent == Array(frames.joined()))
    }

    /// The same stream again, collecting the appends' bytes and what is still pending at the end.
    static func replayAppends(frames: [[UInt8]], speechAppendMs: Int) -> [UInt8] {
        var sm = InputAppendTests().readyCall(local: true, speechAppendMs: speechAppendMs)
        var sent: [UInt8] = []
        for (index, frame) in frames.enumerated() {
            sent += Self.appends(sm.handle(.twilioReceived(.media(payload: Base64.encode(frame))), now: t(20 + 20 * index))).joined()
        }
        return sent + sm.pendingAppend
    }

    /// Gathered speech waits no longer than its own length when the caller's media stops.
    @Test func gatheredSpeechWaitsAtMostItsLength() {
        var sm = self.readyCall(local: true, speechAppendMs: 100)
        var index = 0
        // Quiet, then loud until the VAD hears speech and nothing is pending.
        _ = Self.stream(&sm, (0..<10).map { _ in tone(-70) })
        index = 10
        while !(sm.vad.isSpeaking && sm.pendingAppend.isEmpty), index < 60 {
            _ = Self.stream(&sm, [tone(-6)], from: index)
            index += 1
        }
        #expect(sm.vad.isSpeaking && sm.pendingAppend.isEmpty)
        let at = 20 + 20 * index
        #expect(Self.stream(&sm, [tone(-6)], from: index)[0].appends.isEmpty)
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(at + 99))).isEmpty)
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(at + 100))).map(\.count) == [160])
    }

    /// Without the VAD (the service's barge-in only) there is no speech to gather: 40 ms appends throughout.
    @Test func withoutLocalBargeInSpeechGoesInOrdinaryAppends() {
        var sm = self.readyCall(local: false, speechAppendMs: 100)
        let log = Self.stream(&sm, (0..<10).map { _ in tone(-70) } + (0..<20).map { _ in tone(-6) })
        #expect(log.flatMap(\.appends).allSatisfy { $0 == 320 } && log.flatMap(\.appends).count == 15)
    }

    // MARK: Outside the caller's turns

    /// The appends' sizes from message `from` on, in order.
    static func sizes(_ log: [(appends: [Int], speaking: Bool, pending: Int)], from: Int = 0, to: Int? = nil) -> [Int] {
        log[from..<(to ?? log.count)].flatMap(\.appends)
    }

    /// Before the caller's first turn: 200 ms appends. The onset the VAD hears sends what was gathered with it at
    /// once; after the speech, 40 ms appends while the service may be deciding the turn (no reply yet: 3 s), then
    /// 200 ms again. Every byte goes out once, in order. With the onset on several phases of a 200 ms append.
    @Test(arguments: [10, 13, 19])
    func quietAudioGathersOutsideTheCallersTurns(quietFrames: Int) {
        var sm = self.readyCall(local: true, speechAppendMs: 100, quietAppendMs: 200)
        // Distinct loud frames (the level steps), so that order shows; the quiet after the speech outlasts the hold.
        let frames = (0..<quietFrames).map { _ in tone(-70) } + (0..<30).map { tone(-6 - Double($0 % 5)) }
            + (0..<220).map { _ in tone(-70) }
        let log = Self.stream(&sm, frames)
        guard let onset = log.firstIndex(where: \.speaking), let end = log[onset...].firstIndex(where: { !$0.speaking }) else {
            Issue.record("the VAD never heard the caller, or never stopped")
            return
        }
        // Before the turn: one append per ten messages, of 200 ms.
        #expect(Self.sizes(log, to: onset) == Array(repeating: 1600, count: onset / 10), "\(log[..<onset])")
        // The onset goes out at once, with everything gathered before it.
        #expect(log[onset].appends.count == 1 && log[onset].pending == 0, "\(log[onset])")
        #expect(log[onset].appends.first == (onset % 10 + 1) * 160)
        // The speech: 100 ms appends, as before.
        #expect(Self.sizes(log, from: onset + 1, to: end).allSatisfy { $0 == 800 })
        // For 3 s from when the VAD said the caller's speech ended, with no reply, the turn is open: 40 ms appends,
        // which carry the service's end-of-turn silence as soon as before.
        guard let speechEnd = sm.callerTurnEndedAt else {
            Issue.record("no end of the caller's turn")
            return
        }
        let holdEnds = (0..<log.count).first { t(20 + 20 * $0) - speechEnd >= .seconds(3) } ?? log.count
        #expect(holdEnds > end + 100 && holdEnds < log.count - 20, "\(end) … \(holdEnds)")
        let open = Self.sizes(log, from: end + 1, to: holdEnds)
        #expect(open.count >= 50 && open.allSatisfy { $0 == 320 }, "\(open)")
        // Then quiet again: 200 ms appends. The first may be an ordinary one (a frame left from the open turn and the
        // first quiet frame, a mix) or hold a frame less.
        let after = Self.sizes(log, from: holdEnds)
        #expect(after.count >= 2 && after.dropFirst().allSatisfy { $0 == 1600 } && [320, 1440, 1600].contains(after[0]), "\(after)")
        // Every byte, once and in order.
        var replay = self.readyCall(local: true, speechAppendMs: 100, quietAppendMs: 200)
        var sent: [UInt8] = []
        for (index, frame) in frames.enumerated() {
            sent += Self.appends(replay.handle(.twilioReceived(.media(payload: Base64.encode(frame))), now: t(20 + 20 * index))).joined()
        }
        #expect(sent + replay.pendingAppend == Array(frames.joined()))
    }

    /// The reply closes the caller's turn: once its first frame has gone to Twilio and it has played, the caller's
    /// quiet goes out 200 ms at a time again, long before the 3 s hold.
    @Test func theReplyClosesTheCallersTurn() {
        var sm = self.readyCall(local: true, silenceAppendMs: 200, speechAppendMs: 100, quietAppendMs: 200)
        _ = Self.stream(&sm, (0..<10).map { _ in tone(-70) } + (0..<30).map { _ in tone(-6) })
        var index = 40
        while sm.vad.isSpeaking, index < 100 {
            _ = Self.stream(&sm, [tone(-70)], from: index)
            index += 1
        }
        #expect(!sm.vad.isSpeaking && sm.callerSpeechEnd != nil)
        // The reply: 5 frames, sent on the ticks between the caller's messages.
        let replyAt = t(20 + 20 * index)
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: replyAt)
        _ = sm.handle(.realtimeReceived(.outputItemAdded(responseID: "r1", itemID: "i1")), now: replyAt)
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 5))), now: replyAt)
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: replyAt)
        _ = sm.handle(.realtimeReceived(.responseDone(responseID: "r1", status: "completed")), now: replyAt)
        var sizes: [(index: Int, size: Int)] = []
        for step in index..<(index + 60) {
            _ = sm.handle(.tick, now: t(30 + 20 * step))
            for append in Self.stream(&sm, [tone(-70)], from: step)[0].appends { sizes.append((step, append)) }
        }
        #expect(sm.callerSpeechEnd == nil && sm.counters.txFrames == 5)
        // The last appends (the AI done, its playout over, within about a second of the reply) are 200 ms long.
        let tail = sizes.filter { $0.index >= index + 30 }.map(\.size)
        #expect(tail.count >= 2 && tail.allSatisfy { $0 == 1600 }, "\(sizes)")
    }

    /// The service hears the caller where the local VAD does not: their turn is open from its `speech_started`, and
    /// for the hold after its `speech_stopped`, so its end-of-turn silence goes in 40 ms appends.
    @Test func theServiceHearingTheCallerOpensTheirTurn() {
        var sm = self.readyCall(local: true, quietAppendMs: 200)
        let quiet = (0..<20).map { _ in tone(-70) }
        #expect(Self.sizes(Self.stream(&sm, quiet)) == [1600, 1600])
        _ = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 300, itemID: "u1")), now: t(420))
        #expect(Self.sizes(Self.stream(&sm, quiet, from: 20)) == Array(repeating: 320, count: 10))
        _ = sm.handle(.realtimeReceived(.speechStopped(audioEndMs: 800, itemID: "u1")), now: t(820))
        #expect(Self.sizes(Self.stream(&sm, quiet, from: 40)) == Array(repeating: 320, count: 10))
        // The hold over (3 s from the service's speech_stopped), no reply: quiet again.
        let late = Self.stream(&sm, (0..<20).map { _ in tone(-70) }, from: 200)
        #expect(Self.sizes(late).allSatisfy { $0 == 1600 } && Self.sizes(late).count >= 1, "\(late)")
    }

    /// Gathered quiet waits no longer than its own length when the caller's media stops.
    @Test func gatheredQuietWaitsAtMostItsLength() {
        var sm = self.readyCall(local: true, quietAppendMs: 200)
        _ = Self.stream(&sm, [tone(-70)])
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(219))).isEmpty)
        #expect(Self.appends(sm.handle(.timerFired(TimerID(.watchdog, generation: 99)), now: t(220))).map(\.count) == [160])
    }

    /// Without the local VAD the bridge cannot tell a turn from the quiet: 40 ms appends throughout.
    @Test func withoutLocalBargeInQuietGoesInOrdinaryAppends() {
        var sm = self.readyCall(local: false, quietAppendMs: 200)
        let log = Self.stream(&sm, (0..<20).map { _ in tone(-70) })
        #expect(Self.sizes(log) == Array(repeating: 320, count: 10))
    }

    /// A turn of the caller's that only the service hears (the local VAD hears nothing of it) stays open for the hold
    /// after its `speech_stopped`, even when an older local turn that had no reply ended long before: its
    /// end-of-turn silence goes in 40 ms appends.
    @Test func anOldUnansweredLocalTurnDoesNotCloseALaterServiceTurn() {
        var sm = self.readyCall(local: true, speechAppendMs: 100, quietAppendMs: 200)
        // A local turn (the VAD hears it), then 5 s of quiet with no reply: quiet again by the end.
        var log = Self.stream(&sm, (0..<10).map { _ in tone(-70) } + (0..<30).map { _ in tone(-6) } + (0..<250).map { _ in tone(-70) })
        #expect(Self.sizes(log, from: 270) == [1600, 1600])
        // A turn only the service hears.
        _ = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 5900, itemID: "u2")), now: t(20 + 20 * 290))
        log = Self.stream(&sm, (0..<20).map { _ in tone(-70) }, from: 290)
        // What was gathered goes out with the first message of the turn; then 40 ms appends.
        let during = Self.sizes(log)
        #expect(during.count >= 9 && during.dropFirst().allSatisfy { $0 == 320 } && during[0] % 160 == 0, "\(during)")
        _ = sm.handle(.realtimeReceived(.speechStopped(audioEndMs: 6300, itemID: "u2")), now: t(20 + 20 * 310))
        // The service is deciding the turn: 40 ms appends for the hold (3 s), not 200 ms.
        log = Self.stream(&sm, (0..<100).map { _ in tone(-70) }, from: 310)
        #expect(Self.sizes(log) == Array(repeating: 320, count: 50), "\(Self.sizes(log))")
    }

    /// Without speech gathering (`speechAppendDuration` as the ordinary length, here a long 200 ms), an onset still
    /// sends the quiet audio gathered before it at once, with itself, though together they are shorter than an
    /// ordinary append.
    @Test func anOnsetSendsTheGatheredQuietAtOnceWithoutSpeechGathering() {
        var sm = self.readyCall(local: true, appendMs: 200, quietAppendMs: 400)
        let frames = (0..<2).map { _ in tone(-70) } + (0..<20).map { _ in tone(-6) }
        let log = Self.stream(&sm, frames)
        guard let onset = log.firstIndex(where: \.speaking) else {
            Issue.record("the VAD never heard the caller")
            return
        }
        #expect(Self.sizes(log, to: onset).isEmpty)
        #expect(log[onset].appends == [(onset + 1) * 160] && log[onset].pending == 0, "\(log[onset])")
    }
}

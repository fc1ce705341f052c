import Testing

@testable import CallBridgeCore

/// Watchdogs in virtual time: one periodic check (1 s), limits from `WatchdogConfiguration`.
@Suite struct WatchdogTests {
    static let configuration = CallConfiguration(bargeIn: .serverOnly, watchdog: .init())

    func ready() -> CallStateMachine {
        var sm = CallStateMachine(configuration: Self.configuration, now: t(0))
        let first = sm.handle(.realtimeConnected, now: t(0))
        #expect(first.contains(.scheduleTimer(TimerID(.watchdog, generation: 0), at: t(1000))))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        return sm
    }

    /// Runs the watchdog at each second in `seconds`, with caller media flowing just before each check.
    func check(_ sm: inout CallStateMachine, at seconds: ClosedRange<Int>, media: Bool = true) -> [CallAction] {
        var all: [CallAction] = []
        for second in seconds {
            if media { all += sm.handle(.twilioReceived(.media(payload: callerPayload(nil))), now: t(second * 1000 - 10)) }
            all += sm.handle(.timerFired(sm.watchdogTimer), now: t(second * 1000))
        }
        return all
    }

    @Test func aStaleWatchdogFiringDoesNothing() {
        var sm = self.ready()
        let first = sm.watchdogTimer
        _ = self.check(&sm, at: 1...1)
        #expect(sm.watchdogTimer != first)
        #expect(sm.handle(.timerFired(first), now: t(1500)) == [])
    }

    @Test func theSafetyFuseResetsAResponseThatNeverFinished() {
        var sm = self.ready()
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20))), now: t(100))
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(100))
        _ = sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(120))
        // No response.done. Played out at 120 (+250 ms grace): the fuse trips 2 s after the last audio.
        #expect(!self.check(&sm, at: 1...2).contains(.logWatchdog(kind: "safety_fuse")))
        #expect(self.check(&sm, at: 3...3).contains(.logWatchdog(kind: "safety_fuse")))
        #expect(sm.response == .idle)
        #expect(sm.counters.safetyFuseTrips == 1)
        // Logged once per trip: the next checks are quiet.
        #expect(!self.check(&sm, at: 4...6).contains(.logWatchdog(kind: "safety_fuse")))
    }

    @Test func theFuseNeverTouchesAPendingCancel() {
        var sm = CallStateMachine(configuration: CallConfiguration(watchdog: .init()), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(0))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-30, frames: 5))), now: t(100))
        _ = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)), now: t(150))
        guard case .cancelling = sm.response else {
            Issue.record("expected the pending-cancel lock, got \(sm.response)")
            return
        }
        // Nothing plays, no answer: the fuse and the stuck-response check leave the lock alone…
        let actions = self.check(&sm, at: 1...2)
        #expect(!actions.contains(.logWatchdog(kind: "safety_fuse")))
        guard case .cancelling = sm.response else {
            Issue.record("the watchdog touched the pending cancel: \(sm.response)")
            return
        }
        // …only its own timeout releases it.
        #expect(sm.handle(.timerFired(TimerID(.cancelTimeout, generation: 1)), now: t(3150)) == [.logWatchdog(kind: "cancel_timeout")])
        #expect(sm.response == .idle)
    }

    @Test func aSilentResponseIsClearedAsStuck() {
        var sm = self.ready()
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        #expect(!self.check(&sm, at: 1...15).contains(.logWatchdog(kind: "stuck_response")))
        #expect(self.check(&sm, at: 16...16).contains(.logWatchdog(kind: "stuck_response")))
        #expect(sm.counters.stuckResponses == 1)
        #expect(sm.response == .idle)
        // Its late audio never plays.
        #expect(sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20))), now: t(16_100)).mediaFrames.isEmpty)
    }

    @Test func noCallerMediaIsFlaggedThenEndsTheCall() {
        var sm = self.ready()
        var actions = self.check(&sm, at: 1...4, media: false)
        #expect(actions.isEmpty || !actions.contains { if case .logWatchdog = $0 { true } else { false } })
        actions = self.check(&sm, at: 5...5, media: false)
        #expect(actions.contains(.logWatchdog(kind: "no_inbound_media")))
        #expect(sm.counters.stallFlags == 1)
        actions = self.check(&sm, at: 6...29, media: false)
        #expect(!actions.contains { if case .endCall = $0 { true } else { false } })
        actions = self.check(&sm, at: 30...30, media: false)
        #expect(actions.contains(.endCall(.twilioStalled)))
    }

    @Test func marksNeverEchoedAreFlagged() {
        var sm = self.ready()
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20))), now: t(100))
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(100))
        let actions = self.check(&sm, at: 1...6)
        #expect(actions.contains(.logWatchdog(kind: "marks_not_echoed")))
        #expect(sm.counters.stallFlags == 1)
    }

    @Test func audioDrainLetsTheLastWordsPlayBeforeHangingUp() {
        var sm = self.ready()
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 2))), now: t(100))
        _ = sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(100))
        let shutdown = sm.handle(.shutdownRequested, now: t(110))
        #expect(shutdown.contains { if case .scheduleTimer(let id, let at) = $0 { id.kind == .audioDrain && at == t(5110) } else { false } })
        #expect(!sm.isEnded)
        #expect(sm.handle(.twilioReceived(.mark(name: "cb1")), now: t(120)) == [])
        #expect(sm.handle(.twilioReceived(.mark(name: "cb2")), now: t(140)) == [.endCall(.shutdown)])
    }

    @Test func audioDrainIsBounded() {
        var sm = self.ready()
        _ = sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 2))), now: t(100))
        let shutdown = sm.handle(.shutdownRequested, now: t(110))
        guard case .scheduleTimer(let timer, _)? = shutdown.first(where: { if case .scheduleTimer = $0 { true } else { false } }) else {
            Issue.record("no drain timer in \(shutdown)")
            return
        }
        #expect(sm.handle(.timerFired(timer), now: t(5110)) == [.endCall(.shutdown)])
    }

    @Test func nothingToDrainEndsAtOnce() {
        var sm = self.ready()
        #expect(sm.handle(.shutdownRequested, now: t(110)) == [.endCall(.shutdown)])
    }
}

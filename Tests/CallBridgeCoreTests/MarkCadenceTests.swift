import Testing

@testable import CallBridgeCore

/// One mark per `markEveryFrames` frames (2 here): every frame is still in the ledger, one echo settles the frames
/// before it, and the frames that matter (a reply's last, a turn's first, the last before a `clear`) always get theirs.
extension BargeInTests {
    static func everyOther(_ bargeIn: BargeInConfiguration = .init()) -> CallConfiguration {
        CallConfiguration(markEveryFrames: 2, bargeIn: bargeIn, watchdog: nil)
    }

    /// The Twilio messages of `actions` in order: "m" for media, the mark's name for a mark, "clear".
    func twilioMessages(_ actions: [CallAction]) -> [String] {
        actions.compactMap { action in
            switch action {
            case .sendTwilio(.media): "m"
            case .sendTwilio(.mark(let name)): name
            case .sendTwilio(.clear): "clear"
            default: nil
            }
        }
    }

    @Test func aMarkFollowsEveryOtherFrameAndTheLastOne() {
        var sm = CallStateMachine(configuration: Self.everyOther(), now: t(0))
        _ = sm.handle(.realtimeConnected, now: t(5))
        _ = sm.handle(.realtimeReceived(.sessionUpdated), now: t(10))
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(100))
        var messages = self.twilioMessages(
            sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: tone(-20, frames: 5))), now: t(100))
        )
        for ms in stride(from: 120, through: 200, by: 20) { messages += self.twilioMessages(sm.handle(.tick, now: t(ms))) }
        #expect(messages == ["m", "m", "cb2", "m", "m", "cb4", "m", "cb5"])
        #expect(sm.counters.txFrames == 5)
        #expect(sm.counters.marksSent == 3)
        // One echo settles both frames before it.
        #expect(sm.marks.playableCount == 5)
        _ = sm.handle(.twilioReceived(.mark(name: "cb2")), now: t(150))
        #expect(sm.marks.playableCount == 3)
        #expect(sm.marks.playedBytes(of: "i1") == 320)
        #expect(sm.counters.marksPlayed == 1)
        _ = sm.handle(.twilioReceived(.mark(name: "cb5")), now: t(230))
        #expect(sm.marks.playableCount == 0)
        #expect(sm.marks.playedBytes(of: "i1") == 800)
    }

    /// The service's VAD interrupts right after a frame that had no mark of its own: its mark goes before the clear,
    /// so Twilio settles it with the rest.
    @Test func theLastFramesMarkGoesBeforeAClear() {
        var sm = self.speakingCall(Self.everyOther(.serverOnly))
        #expect(self.twilioMessages(sm.handle(.tick, now: t(120))) == ["m"])
        let actions = sm.handle(.realtimeReceived(.speechStarted(audioStartMs: 0, itemID: "u1")), now: t(130))
        let messages = self.twilioMessages(actions)
        #expect(messages.firstIndex(of: "cb3").map { $0 < (messages.firstIndex(of: "clear") ?? -1) } == true, "\(messages)")
        // The echoes of the clear settle all three frames: nothing is left to play.
        _ = sm.handle(.twilioReceived(.mark(name: "cb2")), now: t(131))
        _ = sm.handle(.twilioReceived(.mark(name: "cb3")), now: t(131))
        #expect(sm.marks.outstandingCount == 0)
    }

    /// A reply's first frame after the caller's turn keeps its own mark, so the turn's played latency is measured as
    /// with a mark per frame.
    @Test func aTurnsFirstFrameCarriesItsMark() throws {
        var sm = self.speakingCall(Self.everyOther())
        self.callerTalksOverTheReplyThenStops(&sm)
        _ = sm.handle(.realtimeReceived(.responseCreated(responseID: "r2")), now: t(900))
        let reply = sm.handle(.realtimeReceived(.audioDelta(responseID: "r2", itemID: "i2", audio: Self.ai)), now: t(900))
        let messages = self.twilioMessages(reply)
        // The lead's first frame, its mark, then the second frame (no mark of its own yet).
        #expect(messages.count == 3 && messages[0] == "m" && messages[2] == "m", "\(messages)")
        _ = sm.handle(.twilioReceived(.mark(name: messages[1])), now: t(930))
        #expect(sm.counters.turnPlayedLatencies == [.milliseconds(650)])
    }
}

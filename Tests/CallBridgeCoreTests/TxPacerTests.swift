import Testing

@testable import CallBridgeCore

@Suite struct TxPacerTests {
    /// Releases frames at `now` until the pacer says wait.
    func drain(_ pacer: inout TxPacer, at now: CallInstant, max: Int = 100) -> [TxPacer.Release] {
        var out: [TxPacer.Release] = []
        while out.count < max, let release = pacer.release(now: now) { out.append(release) }
        return out
    }

    @Test func startSendsTheLeadAtOnceThenOneFramePerPeriod() {
        var pacer = TxPacer()  // 20 ms, lead 2
        // Frame 0 is due now; frames 1 and 2 may go up to 40 ms early.
        #expect(self.drain(&pacer, at: t(1000)) == [.onTime, .onTime, .onTime])
        #expect(pacer.nextDeadline == t(1060))
        #expect(pacer.nextReleaseTime == t(1020))
        #expect(pacer.release(now: t(1019)) == nil)
        #expect(pacer.release(now: t(1020)) == .onTime)
        #expect(pacer.release(now: t(1020)) == nil)
        #expect(pacer.nextDeadline == t(1080))
    }

    @Test func deadlinesAreAbsoluteAndDoNotDrift() {
        var pacer = TxPacer(configuration: .init(leadFrames: 0))
        #expect(pacer.release(now: t(0)) == .onTime)
        // Ticks arrive a little early or late; the schedule stays on 20 ms multiples.
        #expect(pacer.release(now: t(19)) == nil)
        #expect(pacer.release(now: t(23)) == .late(.milliseconds(3)))
        #expect(pacer.nextDeadline == t(40))
        #expect(pacer.release(now: t(40)) == .onTime)
        #expect(pacer.nextDeadline == t(60))
    }

    @Test func lateBy199IsCountedLateAndKeepsTheSchedule() {
        var pacer = TxPacer(configuration: .init(leadFrames: 0))
        #expect(pacer.release(now: t(0)) == .onTime)
        #expect(pacer.release(now: t(20 + 199)) == .late(.milliseconds(199)))
        // Catching up: the next deadline is 40 ms, not now + 20 ms.
        #expect(pacer.nextDeadline == t(40))
    }

    @Test func lateBy200IsStillOnlyLate() {
        var pacer = TxPacer(configuration: .init(leadFrames: 0))
        #expect(pacer.release(now: t(0)) == .onTime)
        #expect(pacer.release(now: t(220)) == .late(.milliseconds(200)))
    }

    @Test func lateBy201ResyncsToNow() {
        var pacer = TxPacer(configuration: .init(leadFrames: 0))
        #expect(pacer.release(now: t(0)) == .onTime)
        #expect(pacer.release(now: t(20 + 201)) == .resynced(.milliseconds(201)))
        #expect(pacer.nextDeadline == t(241))
        #expect(pacer.release(now: t(241)) == .onTime)
    }

    @Test func resyncWithLeadRefillsTheLead() {
        var pacer = TxPacer()
        _ = self.drain(&pacer, at: t(0))  // deadlines 0, 20, 40 → next 60
        #expect(self.drain(&pacer, at: t(500)) == [.resynced(.milliseconds(440)), .onTime, .onTime])
        #expect(pacer.nextDeadline == t(560))
    }

    @Test func stopStartsANewRunOnTheNextFrame() {
        var pacer = TxPacer()
        _ = self.drain(&pacer, at: t(0))
        pacer.stop()
        #expect(!pacer.isRunning)
        // Seconds later: a new run, not a resync.
        #expect(self.drain(&pacer, at: t(5000)) == [.onTime, .onTime, .onTime])
    }
}

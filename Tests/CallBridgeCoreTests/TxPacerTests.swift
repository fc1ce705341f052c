import Testing

@testable import CallBridgeCore

@Suite struct TxPacerTests {
    /// Releases frames at `now` until the pacer says wait.
    func drain(
        _ pacer: inout TxPacer,
        at now: CallInstant,
        on trigger: TxPacer.Trigger,
        scheduled: CallInstant? = nil,
        max: Int = 100
    ) -> [TxPacer.Release] {
        var out: [TxPacer.Release] = []
        while out.count < max, let release = pacer.release(now: now, on: trigger, scheduled: scheduled) { out.append(release) }
        return out
    }

    /// The run's first tick ran 15 ms behind its schedule (the loop was busy); the ticks after it run on time. Judged
    /// by when they ran, the first tick would fix a phase 15 ms late, and each on-time tick would then find its frame
    /// not yet due: held a period, and sent with the next tick's (a 40 ms gap, then two at once). Judged by their
    /// scheduled instants, every tick sends exactly one frame.
    @Test func aTickRunningLateDoesNotShiftThePhase() {
        var pacer = TxPacer()
        #expect(self.drain(&pacer, at: t(1000), on: .event).count == 2)  // the ticker's grid is at 1007 + 20 k
        #expect(self.drain(&pacer, at: t(1022), on: .tick, scheduled: t(1007)) == [.onTime])
        #expect(pacer.tickOffset == .milliseconds(7))
        var perTick: [Int] = []
        for tick in 1..<50 {
            let scheduled = t(1007 + 20 * tick)
            // Most ticks run on time; every fifth one 2 to 16 ms behind.
            let now = tick % 5 == 0 ? scheduled + .milliseconds(2 + tick % 15) : scheduled
            perTick.append(self.drain(&pacer, at: now, on: .tick, scheduled: scheduled).count)
        }
        #expect(perTick.allSatisfy { $0 == 1 }, "\(perTick)")

        // The same ticks judged by when they ran (no scheduled instant): the late first tick moved the phase.
        var naive = TxPacer()
        _ = self.drain(&naive, at: t(1000), on: .event)
        _ = self.drain(&naive, at: t(1022), on: .tick)
        let onTime = (1..<10).map { self.drain(&naive, at: t(1007 + 20 * $0), on: .tick).count }
        #expect(onTime.contains(0))
    }

    /// A run that a late tick starts, or re-anchors, takes the ticker's phase from the tick's scheduled instant.
    @Test func aLateTickThatStartsOrResyncsARunKeepsTheGrid() {
        var pacer = TxPacer()
        #expect(self.drain(&pacer, at: t(19), on: .tick, scheduled: t(7)) == [.onTime, .onTime, .onTime])
        #expect(self.drain(&pacer, at: t(27), on: .tick, scheduled: t(27)) == [.onTime])
        #expect(self.drain(&pacer, at: t(47), on: .tick, scheduled: t(47)) == [.onTime])
        // Stalled: the tick scheduled at 347 runs at 359, 240 ms after the next frame's deadline (119 ms).
        let resync = self.drain(&pacer, at: t(359), on: .tick, scheduled: t(347))
        #expect(resync.first.map { if case .resynced = $0 { true } else { false } } == true)
        #expect(self.drain(&pacer, at: t(367), on: .tick, scheduled: t(367)) == [.onTime])
        #expect(self.drain(&pacer, at: t(387), on: .tick, scheduled: t(387)) == [.onTime])
    }

    @Test func anEventSendsTheLeadButItsLastFrameWhichGoesOnTheFirstTick() {
        var pacer = TxPacer()  // 20 ms, lead 2
        // Audio arrives at 1000 ms: frame 0 is due now and frame 1 may go 20 ms early; they leave at once.
        #expect(self.drain(&pacer, at: t(1000), on: .event) == [.onTime, .onTime])
        #expect(pacer.nextDeadline == t(1040))
        // Frame 2, the lead's last, may go from 1000 ms too, but only on a tick: no event sends it.
        #expect(pacer.release(now: t(1005), on: .event) == nil)
        #expect(pacer.release(now: t(1035), on: .event) == nil)
        #expect(pacer.nextReleaseTime == t(980))
        // The run's first tick (the ticker's phase is 7 ms) sends it, and fixes the slots of the frames after it.
        #expect(self.drain(&pacer, at: t(1007), on: .tick) == [.onTime])
        #expect(pacer.tickOffset == .milliseconds(7))
        #expect(pacer.nextReleaseTime == t(1017))
        #expect(pacer.release(now: t(1040), on: .event) == nil)
        #expect(self.drain(&pacer, at: t(1027), on: .tick) == [.onTime])
        #expect(self.drain(&pacer, at: t(1047), on: .tick) == [.onTime])
        #expect(pacer.nextDeadline == t(1100))
    }

    @Test func theLeadMayArriveInPieces() {
        var pacer = TxPacer()
        // The first delta held one frame; the next, 5 ms later, more: frame 1 is still sent at once, frame 2 waits.
        #expect(self.drain(&pacer, at: t(0), on: .event, max: 1) == [.onTime])
        #expect(self.drain(&pacer, at: t(5), on: .event) == [.onTime])
        #expect(pacer.releasedInRun == 2)
        #expect(self.drain(&pacer, at: t(19), on: .tick) == [.onTime])
    }

    @Test func aRunStartedByATickSendsItsWholeLeadOnThatTick() {
        var pacer = TxPacer()
        #expect(self.drain(&pacer, at: t(13), on: .tick) == [.onTime, .onTime, .onTime])
        #expect(pacer.tickOffset == .zero)
        #expect(self.drain(&pacer, at: t(33), on: .tick) == [.onTime])
    }

    /// Ticks wander by up to ±4 ms around their grid. Whatever the grid's phase against the run's start (every
    /// millisecond of the period), every tick from the run's first sends exactly one frame: none is pulled forward to
    /// the tick before its own, nor left for the tick after.
    @Test(arguments: 0..<20)
    func wanderingTicksSendOneFramePerTickAtAnyPhase(phase: Int) {
        var pacer = TxPacer()
        var random = SplitMix64(state: UInt64(phase) + 1)
        let start = 1000
        #expect(self.drain(&pacer, at: t(start), on: .event).count == 2)
        var perTick: [Int] = []
        for tick in 0..<200 {
            // The grid's ticks fall at 5…24 ms after the start (every phase once), the first one after it.
            let now = t(start + 5 + phase + 20 * tick + random.below(9) - 4)
            perTick.append(self.drain(&pacer, at: now, on: .tick).count)
        }
        #expect(perTick.allSatisfy { $0 == 1 }, "phase \(phase): \(perTick)")
    }

    /// The lead's last frame came late (or the tick did): the first tick takes the phase and sends every frame whose
    /// tick has passed, late ones counted.
    @Test func aLateFirstTickCatchesUpOnTheAbsoluteSchedule() {
        var pacer = TxPacer()
        _ = self.drain(&pacer, at: t(0), on: .event)  // deadlines 0, 20 → next 40
        #expect(self.drain(&pacer, at: t(65), on: .tick) == [.late(.milliseconds(25)), .late(.milliseconds(5)), .onTime])
        #expect(pacer.nextDeadline == t(100))
        #expect(self.drain(&pacer, at: t(85), on: .tick) == [.onTime])
    }

    @Test func deadlinesAreAbsoluteAndDoNotDrift() {
        var pacer = TxPacer(configuration: .init(leadFrames: 0))
        #expect(pacer.release(now: t(0), on: .event) == .onTime)
        // Ticks arrive a little early or late; the schedule stays on 20 ms multiples.
        #expect(pacer.release(now: t(19), on: .tick) == .onTime)
        #expect(pacer.release(now: t(41), on: .tick) == .late(.milliseconds(1)))
        #expect(pacer.release(now: t(41), on: .tick) == nil)
        #expect(pacer.nextDeadline == t(60))
        #expect(pacer.release(now: t(58), on: .tick) == .onTime)
        #expect(pacer.nextDeadline == t(80))
    }

    @Test func lateBy199IsCountedLateAndKeepsTheSchedule() {
        var pacer = TxPacer(configuration: .init(leadFrames: 0))
        #expect(pacer.release(now: t(0), on: .event) == .onTime)
        #expect(pacer.release(now: t(20 + 199), on: .tick) == .late(.milliseconds(199)))
        // Catching up: the next deadline is 40 ms, not now + 20 ms.
        #expect(pacer.nextDeadline == t(40))
    }

    @Test func lateBy200IsStillOnlyLate() {
        var pacer = TxPacer(configuration: .init(leadFrames: 0))
        #expect(pacer.release(now: t(0), on: .event) == .onTime)
        #expect(pacer.release(now: t(220), on: .tick) == .late(.milliseconds(200)))
    }

    @Test func lateBy201ResyncsToNow() {
        var pacer = TxPacer(configuration: .init(leadFrames: 0))
        #expect(pacer.release(now: t(0), on: .event) == .onTime)
        #expect(pacer.release(now: t(20 + 201), on: .tick) == .resynced(.milliseconds(201)))
        #expect(pacer.nextDeadline == t(241))
        #expect(pacer.release(now: t(241), on: .tick) == .onTime)
    }

    @Test func resyncWithLeadRefillsTheLead() {
        var pacer = TxPacer()
        _ = self.drain(&pacer, at: t(0), on: .event)  // deadlines 0, 20 → next 40
        #expect(self.drain(&pacer, at: t(500), on: .tick) == [.resynced(.milliseconds(460)), .onTime, .onTime])
        #expect(pacer.nextDeadline == t(560))
        #expect(self.drain(&pacer, at: t(520), on: .tick) == [.onTime])
    }

    @Test func stopStartsANewRunOnTheNextFrame() {
        var pacer = TxPacer()
        _ = self.drain(&pacer, at: t(0), on: .event)
        _ = self.drain(&pacer, at: t(7), on: .tick)
        pacer.stop()
        #expect(!pacer.isRunning)
        #expect(pacer.tickOffset == nil)
        // Seconds later: a new run with its lead, not a resync.
        #expect(self.drain(&pacer, at: t(5000), on: .event) == [.onTime, .onTime])
    }
}

import Testing

@testable import CallBridgeCore

/// When the AI's frames leave, with everything a call's loop receives interleaved in time: the shared ticker's ticks
/// (delivered only while the call wants them, as the shell does), the caller's media every 20 ms, Twilio's mark
/// echoes as it plays (Twilio's messages each delayed 0–4 ms by the network), and the service's deltas at arbitrary
/// instants. Times are in microseconds, so nothing lines up by accident.
@Suite struct PacingTests {
    /// A frame the machine sent, and whether a tick sent it.
    struct Release: Equatable {
        var at: Int
        var onTick: Bool
    }

    /// The call's inputs, merged in time order as its loop would see them.
    struct Simulation {
        var machine: CallStateMachine
        /// The ticker: a tick at `tickPhase + 20 ms × k`.
        var tickPhase: Int
        /// The caller's media: one message sent at `mediaPhase + 20 ms × k`, arriving up to 4 ms later.
        var mediaPhase: Int
        /// Network delays of Twilio's messages.
        var network: SplitMix64
        var releases: [Release] = []
        /// Mark echoes due from Twilio's playout, in order.
        var echoes: [(at: Int, name: String)] = []
        /// When Twilio finishes playing what it has been sent.
        var playedUntil = 0
        var nextTick: Int
        var nextMedia: Int
        /// The instant of the last input.
        var now = 0

        init(tickPhase: Int, mediaPhase: Int, seed: UInt64 = 1) {
            var machine = CallStateMachine(configuration: .init(watchdog: nil), now: .zero)
            _ = machine.handle(.realtimeConnected, now: us(1_000))
            _ = machine.handle(.realtimeReceived(.sessionUpdated), now: us(2_000))
            self.machine = machine
            self.tickPhase = tickPhase
            self.mediaPhase = mediaPhase
            self.network = SplitMix64(state: seed)
            self.nextTick = tickPhase
            self.nextMedia = mediaPhase + self.network.below(4_000)
        }

        /// Runs every tick, caller message and mark echo before `until`, then `event` at `until` (if any).
        mutating func run(until: Int, then event: CallEvent? = nil) {
            while true {
                let echo = self.echoes.first?.at ?? Int.max
                let next = min(self.nextTick, self.nextMedia, echo)
                guard next < until else { break }
                if next == echo {
                    let name = self.echoes.removeFirst().name
                    self.handle(.twilioReceived(.mark(name: name)), at: next)
                } else if next == self.nextMedia {
                    self.nextMedia = self.mediaPhase + 20_000 * ((next - self.mediaPhase) / 20_000 + 1) + self.network.below(4_000)
                    self.handle(.twilioReceived(.media(payload: callerPayload(nil))), at: next)
                } else {
                    self.nextTick += 20_000
                    if self.machine.wantsTicks { self.handle(.tick, at: next) }
                }
            }
            if let event { self.handle(event, at: until) }
        }

        /// Runs until Twilio has played and echoed everything the machine had to send.
        mutating func playOut() {
            // Bounded (a minute of call time): a frame that never leaves fails the test instead of hanging it.
            var until = self.now
            for _ in 0..<3_000 {
                guard self.machine.wantsTicks || !self.echoes.isEmpty else { break }
                until += 20_000
                self.run(until: until)
            }
            #expect(!self.machine.wantsTicks && self.echoes.isEmpty, "frames still queued at \(self.now) µs")
        }

        mutating func handle(_ event: CallEvent, at now: Int) {
            self.now = now
            for action in self.machine.handle(event, now: us(now)) {
                switch action {
                case .sendTwilio(.media):
                    self.releases.append(Release(at: now, onTick: event == .tick))
                    // Twilio plays frames back to back, from when each arrives.
                    self.playedUntil = max(self.playedUntil, now) + 20_000
                case .sendTwilio(.mark(let name)):
                    // Echoed when the frame before it has played; messages on one connection stay in order.
                    let at = max(self.echoes.last?.at ?? 0, self.playedUntil + self.network.below(4_000))
                    self.echoes.append((at, name))
                default:
                    break
                }
            }
        }

        /// One reply streamed faster than real time: a front-loaded first delta (200–400 ms), then deltas of 97–796 bytes every
        /// 1–35 ms, then `audio.done` and `response.done`. Returns the instant of the first delta and the frame count.
        mutating func reply(_ id: String, bytes total: Int, from start: Int, random: inout SplitMix64) -> (start: Int, frames: Int) {
            self.run(until: start, then: .realtimeReceived(.responseCreated(responseID: id)))
            var now = start + random.below(3_000)
            let first = now
            var sent = 0
            while sent < total {
                let size = min(total - sent, sent == 0 ? 1_600 + random.below(1_600) : 97 + random.below(700))
                self.run(until: now, then: .realtimeReceived(.audioDelta(responseID: id, itemID: id + "-item", audio: ramp(size, from: sent))))
                sent += size
                now += 1_000 + random.below(34_000)
            }
            self.run(until: now, then: .realtimeReceived(.audioDone(responseID: id, itemID: id + "-item")))
            self.run(until: now + 150, then: .realtimeReceived(.responseDone(responseID: id, status: "completed")))
            return (first, (total + AudioFrame.byteCount - 1) / AudioFrame.byteCount)
        }
    }

    /// Two replies, each at an arbitrary instant between ticks. Each reply's lead (its first frame and two more)
    /// leaves at once with its first delta, but for its last frame, which goes on the first tick; every later frame
    /// leaves on a tick, exactly 20 ms after the one before, whatever arrives between ticks. So the caller's side
    /// measures no jitter at all: the one step from the delta's instant to the ticker's phase is inside the lead,
    /// which the measurement leaves out (`PacingJitter`).
    @Test(arguments: [(1, 7_300, 13_100), (2, 19_900, 100), (3, 10_000, 10_000), (4, 450, 19_550), (5, 15_000, 2_500)])
    func fromTheLeadsLastFrameOnEveryFrameLeavesOnATickExactlyOnePeriodApart(seed: UInt64, tickPhase: Int, mediaPhase: Int) throws {
        var random = SplitMix64(state: seed)
        var call = Simulation(tickPhase: tickPhase, mediaPhase: mediaPhase, seed: seed)
        let first = call.reply("r1", bytes: 16_000 + random.below(8_000), from: 400_000 + random.below(20_000), random: &random)
        call.playOut()
        // The second reply comes well after the first has played out.
        let second = call.reply("r2", bytes: 8_000 + random.below(8_000), from: call.now + 700_000 + random.below(20_000), random: &random)
        call.playOut()

        try #require(call.releases.count == first.frames + second.frames)
        var jitter = PacingJitter()
        var deviations: [Duration] = []
        for (index, run) in [(0, first), (first.frames, second)].enumerated() {
            let releases = Array(call.releases[run.0..<(run.0 + run.1.frames)])
            // The lead but its last frame: with the first delta, not on a tick.
            #expect(releases.prefix(2).allSatisfy { $0 == Release(at: run.1.start, onTick: false) }, "reply \(index + 1)")
            let paced = releases.dropFirst(2)
            #expect(paced.first.map { $0.at - run.1.start } ?? 0 <= 20_000, "reply \(index + 1): the first tick sends the lead's last frame")
            #expect(paced.allSatisfy { $0.onTick }, "reply \(index + 1): a frame after the lead left between ticks")
            let intervals = zip(paced, paced.dropFirst()).map { $1.at - $0.at }
            #expect(intervals.allSatisfy { $0 == 20_000 }, "reply \(index + 1): \(intervals.filter { $0 != 20_000 })")
            for release in releases {
                if let deviation = jitter.arrival(at: .microseconds(release.at)).deviation { deviations.append(deviation) }
            }
        }
        #expect(deviations.count > 100)
        #expect(deviations.allSatisfy { $0 == .zero }, "\(deviations.filter { $0 != .zero })")
        #expect(call.machine.counters.txLateFrames == 0)
        #expect(call.machine.counters.txScheduleResets == 0)
        #expect(call.machine.counters.txUnderruns == 0)
        #expect(call.machine.counters.marksPlayed == first.frames + second.frames)
    }

    /// The service stalls mid-reply. With nothing queued the call gets no ticks, so other events (here Twilio's mark
    /// echo) find the underrun; the audio that comes back waits for the next tick and catches up on the absolute schedule (late,
    /// not resynced, under 200 ms).
    @Test func anUnderrunIsFoundWithoutTicksAndTheRefillWaitsForATick() {
        var call = Simulation(tickPhase: 3_000, mediaPhase: 11_000)
        // Six frames at 100.5 ms: two leave at once, four more on the ticks at 103, 123, 143 and 163 ms.
        call.run(until: 100_500, then: .realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(960))))
        call.run(until: 200_000)
        #expect(call.releases.map(\.at) == [100_500, 100_500, 103_000, 123_000, 143_000, 163_000])
        #expect(!call.machine.wantsTicks)
        // Frame 6 was due at 220.5 ms, as Twilio finished playing frame 5: that mark's echo finds the queue dry.
        call.run(until: 220_500)
        #expect(call.machine.counters.txUnderruns == 0)
        call.run(until: 225_000)
        #expect(call.machine.counters.txUnderruns == 1)
        // Counted once per dry spell: the caller's messages at 231, 251 and 271 ms do not count it again.
        call.run(until: 290_000)
        #expect(call.machine.counters.txUnderruns == 1)
        // Audio again at 290.2 ms: it waits for the tick at 303 ms, which sends what is due (and the lead), late.
        call.run(until: 290_200, then: .realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(1_600))))
        #expect(call.releases.count == 6)
        call.run(until: 303_001)
        #expect(call.releases.dropFirst(6).allSatisfy { $0 == Release(at: 303_000, onTick: true) })
        #expect(call.machine.counters.txLateFrames > 0)
        #expect(call.machine.counters.txScheduleResets == 0)
        #expect(call.machine.counters.txUnderruns == 1)
    }

    /// The reply's audio ends after its last frame has left: the event that says so ends the run (no tick will come,
    /// since nothing is queued), so the next reply starts a new run with its lead at once, neither late nor resynced.
    @Test func aRunEndsOnTheEventThatEndsItsAudioAndTheNextReplyStartsAtOnce() {
        var call = Simulation(tickPhase: 5_000, mediaPhase: 15_000)
        call.run(until: 100_000, then: .realtimeReceived(.responseCreated(responseID: "r1")))
        call.run(until: 100_000, then: .realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: ramp(800))))
        call.run(until: 200_000)
        #expect(call.releases.count == 5)
        call.run(until: 201_300, then: .realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")))
        call.run(until: 201_400, then: .realtimeReceived(.responseDone(responseID: "r1", status: "completed")))
        #expect(!call.machine.pacer.isRunning)
        // Two seconds later, reply r2: its lead leaves with its first delta (its last frame on the next tick).
        call.run(until: 2_201_700, then: .realtimeReceived(.responseCreated(responseID: "r2")))
        call.run(until: 2_201_700, then: .realtimeReceived(.audioDelta(responseID: "r2", itemID: "i2", audio: ramp(640))))
        #expect(call.releases.dropFirst(5).map(\.at) == [2_201_700, 2_201_700])
        call.run(until: 2_205_001)
        #expect(call.releases.dropFirst(7).map(\.at) == [2_205_000])
        #expect(call.machine.counters.txLateFrames == 0)
        #expect(call.machine.counters.txScheduleResets == 0)
    }
}

/// An instant in microseconds.
func us(_ microseconds: Int) -> CallInstant { CallInstant(offset: .microseconds(microseconds)) }

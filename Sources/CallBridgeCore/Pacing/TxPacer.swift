/// The TX schedule toward Twilio: one 160-byte frame per 20 ms on absolute deadlines.
///
/// Frame *k* of a run is due at `start + k × 20 ms`, and its nominal release time is `lead` frames earlier, so
/// Twilio's buffer holds a little audio and never starves on network jitter.
///
/// *When* frames leave is decided by what asks (`Trigger`). A run starts on whatever event brings its first audio, and
/// its lead (the first frame and up to `lead` more) may leave on any event, so the first audio is never held back.
/// After the lead, frames leave only on the shared ticker's ticks: each frame is assigned the tick nearest its nominal
/// release time, and that tick (or a later one) releases it. The ticker's phase is taken from the run's first tick, so
/// a tick that comes a little early or late (less than half a period) never moves a frame to a neighbouring tick, and
/// with regular ticks the frames after the lead leave exactly one period apart.
///
/// A frame released after its deadline is *late*; more than `lateThreshold` late, the schedule is re-anchored on
/// `now` instead of bursting to catch up (a *schedule reset*).
public struct TxPacer: Sendable, Equatable {
    public struct Configuration: Sendable, Equatable {
        public var framePeriod: Duration
        /// How many frames may be sent ahead of their deadline.
        public var leadFrames: Int
        /// Later than this, the schedule resyncs to now instead of catching up.
        public var lateThreshold: Duration

        public init(
            framePeriod: Duration = AudioFrame.duration,
            leadFrames: Int = 2,
            lateThreshold: Duration = .milliseconds(200)
        ) {
            self.framePeriod = framePeriod
            self.leadFrames = max(0, leadFrames)
            self.lateThreshold = lateThreshold
        }
    }

    /// What asks the pacer for a frame.
    public enum Trigger: Sendable, Equatable {
        /// The shared pacing ticker: the only trigger that releases frames after a run's lead.
        case tick
        /// Any other event (audio arriving, a Twilio message, a timer): it may start a run and send the run's lead.
        case event
    }

    /// How a released frame relates to its deadline.
    public enum Release: Sendable, Equatable {
        case onTime
        /// Sent after its deadline by less than the threshold.
        case late(Duration)
        /// More than the threshold late: the schedule was re-anchored on now.
        case resynced(Duration)
    }

    public let configuration: Configuration
    /// Deadline of the next frame; nil while no run is in progress.
    public private(set) var nextDeadline: CallInstant?
    /// Frames released in this run; the first `1 + leadFrames` are its lead.
    public private(set) var releasedInRun = 0
    /// A tick of this run (its first): the ticker's phase. Nil until the run sees a tick.
    public private(set) var tickPhase: CallInstant?
    /// From a frame's nominal release time to its tick (less than half a period either way), once the phase is known.
    /// The same for every frame of the run until a resync moves the schedule off its 20 ms grid.
    private(set) var tickOffset: Duration?
    /// `leadFrames` periods, and half a period (kept: the per-tick path does no multiplication or division).
    private let leadTime: Duration
    private let halfPeriod: Duration

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
        self.leadTime = configuration.framePeriod * configuration.leadFrames
        self.halfPeriod = configuration.framePeriod / 2
    }

    public var isRunning: Bool { self.nextDeadline != nil }

    /// The earliest instant at which a tick releases the next frame (nil while no run is in progress). The next
    /// frame goes on the tick nearest its nominal release time: a tick at or after this instant.
    public var nextReleaseTime: CallInstant? {
        guard let deadline = self.nextDeadline else { return nil }
        return deadline - self.leadTime + (self.tickOffset ?? .zero) - self.halfPeriod
    }

    /// Asks to release one frame at `now`. Returns nil when the next frame may not leave now. A pacer that is not
    /// running starts a run anchored on `now`, whatever the trigger.
    public mutating func release(now: CallInstant, on trigger: Trigger) -> Release? {
        let period = self.configuration.framePeriod
        guard let deadline = self.nextDeadline else {
            self.nextDeadline = now + period
            self.releasedInRun = 1
            if trigger == .tick { self.lock(phase: now) }
            return .onTime
        }
        let nominal = deadline - self.leadTime
        switch trigger {
        case .event:
            // Between ticks only the run's lead may leave.
            guard self.releasedInRun <= self.configuration.leadFrames, now >= nominal else { return nil }
        case .tick:
            if self.tickPhase == nil { self.lock(phase: now) }
            guard now >= nominal + (self.tickOffset ?? .zero) - self.halfPeriod else { return nil }
        }
        self.releasedInRun += 1
        let lateness = now - deadline
        if lateness > self.configuration.lateThreshold {
            self.nextDeadline = now + period
            if let phase = self.tickPhase { self.lock(phase: phase) }  // the schedule left its grid
            return .resynced(lateness)
        }
        self.nextDeadline = deadline + period
        return lateness > .zero ? .late(lateness) : .onTime
    }

    /// Ends the run (response finished and drained, or flushed by a barge-in). The next frame starts a new run.
    public mutating func stop() {
        self.nextDeadline = nil
        self.releasedInRun = 0
        self.tickPhase = nil
        self.tickOffset = nil
    }

    /// Takes the ticker's phase from a tick at `phase` and assigns the next frame (and so every later one) its tick.
    private mutating func lock(phase: CallInstant) {
        self.tickPhase = phase
        guard let deadline = self.nextDeadline else { return }
        let nominal = deadline - self.leadTime
        self.tickOffset = self.tickNearest(nominal, phase: phase) - nominal
    }

    /// The tick nearest `instant` on the grid of ticks one period apart through `phase` (of two equally near, the
    /// earlier).
    func tickNearest(_ instant: CallInstant, phase: CallInstant) -> CallInstant {
        let period = Self.nanoseconds(self.configuration.framePeriod)
        guard period > 0 else { return instant }
        // The first grid tick at or after `instant − period / 2`.
        let offset = Self.nanoseconds(instant - phase) - period / 2
        let periods = offset >= 0 ? (offset + period - 1) / period : -(-offset / period)
        return phase + .nanoseconds(periods * period)
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

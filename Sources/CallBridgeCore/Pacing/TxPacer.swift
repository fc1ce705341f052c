/// The TX schedule toward Twilio: one 160-byte frame per 20 ms on absolute deadlines.
///
/// Frame *k* of a run is due at `start + k × 20 ms`, and its nominal release time is `lead` frames earlier, so
/// Twilio's buffer holds a little audio and never starves on network jitter. A frame never leaves before its nominal
/// release time by more than the phase step described next.
///
/// *When* frames leave is decided by what asks (`Trigger`). A run starts on whatever event brings its first audio,
/// and its lead (the first frame and `lead` more) goes out at once, so the first audio is never held back: any event
/// may send the lead's frames but the last, which goes on the run's first tick of the shared ticker. From then on
/// only ticks send frames, one per tick: the run's first tick fixes the ticker's phase, and each later frame belongs
/// to the tick one period after the previous frame's. So the one step from the event's instant to the ticker's phase
/// falls inside the lead, and with regular ticks every frame from the lead's last on leaves exactly one period after
/// the one before; a tick a little early or late (less than half a period) never moves a frame to a neighbouring
/// tick. A tick sends more than one frame only to catch up with frames whose ticks were missed. (With `lead` 0 the
/// first frame goes at once and the second on the first tick, up to a period before its deadline.)
///
/// A tick is known by its *scheduled* instant, its deadline on the shared ticker: a loop busy with other work runs it a
/// little later, and the frames it sends are then a little late, but which frames belong to which tick is decided by
/// the scheduled instant alone. A run whose first tick ran late therefore keeps the ticker's true phase, and a later
/// tick that runs on time does not find its frame "not yet due" (which would hold it back a whole period and send it
/// with the next one).
///
/// A frame released after its deadline is *late*; more than `lateThreshold` late, the schedule is re-anchored on
/// `now` instead of bursting to catch up (a *schedule reset*); on a tick, that tick also sends the lead again.
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
    /// From a frame's nominal release time to its tick, once the run has seen a tick (nil before): the same for every
    /// frame of the run, since nominal release times and ticks both advance one period at a time.
    public private(set) var tickOffset: Duration?
    /// `leadFrames` periods, a period and a half, and half a period (kept: the per-tick path does no multiplication
    /// or division).
    private let leadTime: Duration
    private let longestOffset: Duration
    private let halfPeriod: Duration

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
        self.leadTime = configuration.framePeriod * configuration.leadFrames
        self.longestOffset = configuration.framePeriod * 3 / 2
        self.halfPeriod = configuration.framePeriod / 2
    }

    public var isRunning: Bool { self.nextDeadline != nil }

    /// How many frames of a run any event may send: the lead but its last frame (at least the first frame).
    var framesSentOnEvents: Int { max(1, self.configuration.leadFrames) }

    /// The earliest instant at which a tick releases the next frame (nil while no run is in progress). Before the
    /// run's first tick any tick releases it, and this is no later than the run's start.
    public var nextReleaseTime: CallInstant? {
        guard let deadline = self.nextDeadline else { return nil }
        let nominal = deadline - self.leadTime
        guard let offset = self.tickOffset else { return nominal - self.configuration.framePeriod }
        return nominal + offset - self.halfPeriod
    }

    /// Asks to release one frame at `now`. Returns nil when the next frame may not leave now. A pacer that is not
    /// running starts a run anchored on `now`, whatever the trigger.
    ///
    /// `scheduled` is a tick's scheduled instant (no later than `now`; nil: `now`). Events ignore it.
    public mutating func release(now: CallInstant, on trigger: Trigger, scheduled: CallInstant? = nil) -> Release? {
        let period = self.configuration.framePeriod
        // The tick's place in the ticker's phase, and how far behind it this tick runs.
        let tickAt = min(scheduled ?? now, now)
        let behind = now - tickAt
        guard let deadline = self.nextDeadline else {
            self.nextDeadline = now + period
            self.releasedInRun = 1
            // A run started by a tick sends its whole lead on that tick, and the next frame on the next tick.
            self.tickOffset = trigger == .tick ? .zero - behind : nil
            return .onTime
        }
        let nominal = deadline - self.leadTime
        switch trigger {
        case .event:
            // Between ticks only the lead may leave, but its last frame.
            guard self.releasedInRun < self.framesSentOnEvents, now >= nominal else { return nil }
        case .tick:
            let offset = self.tickOffset ?? self.firstTickOffset(now: tickAt, nominal: nominal)
            self.tickOffset = offset
            guard tickAt >= nominal + offset - self.halfPeriod else { return nil }
        }
        self.releasedInRun += 1
        let lateness = now - deadline
        if lateness > self.configuration.lateThreshold {
            self.nextDeadline = now + period
            // Re-anchored on now: a tick sends the lead again with this frame, and the next frame on the next tick
            // (before the run's first tick, the first tick will take the phase).
            if trigger == .tick { self.tickOffset = .zero - behind }
            return .resynced(lateness)
        }
        self.nextDeadline = deadline + period
        return lateness > .zero ? .late(lateness) : .onTime
    }

    /// Ends the run (response finished and drained, or flushed by a barge-in). The next frame starts a new run.
    public mutating func stop() {
        self.nextDeadline = nil
        self.releasedInRun = 0
        self.tickOffset = nil
    }

    /// The run's first tick, at `now`, sends the next frame (the lead's last): its offset puts that frame's tick at
    /// `now`. A first tick later than a period and a half after that frame's nominal time (the lead's last frame
    /// arrived late, or the tick did) keeps only the phase: the frames whose ticks it missed go now, late.
    func firstTickOffset(now: CallInstant, nominal: CallInstant) -> Duration {
        let offset = now - nominal
        guard offset > self.longestOffset else { return offset }
        let period = Self.nanoseconds(self.configuration.framePeriod)
        let excess = Self.nanoseconds(offset - self.longestOffset)
        return offset - .nanoseconds((excess + period - 1) / period * period)
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// The TX schedule toward Twilio: one 160-byte frame per 20 ms on absolute deadlines.
///
/// Frame *k* of a run is due at `start + k × 20 ms`. A frame may leave up to `lead` frames before its
/// deadline, so Twilio's buffer holds a little audio and never starves on network jitter. A frame released
/// after its deadline is *late*; more than `lateThreshold` late, the schedule is re-anchored on `now`
/// instead of bursting to catch up (a *schedule reset*).
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

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    public var isRunning: Bool { self.nextDeadline != nil }

    /// The earliest instant at which the next frame may be released.
    public var nextReleaseTime: CallInstant? {
        self.nextDeadline.map { $0 - self.configuration.framePeriod * self.configuration.leadFrames }
    }

    /// Asks to release one frame at `now`. Returns nil when the next frame is not due yet. A pacer that is not
    /// running starts a run anchored on `now`.
    public mutating func release(now: CallInstant) -> Release? {
        let deadline = self.nextDeadline ?? now
        let period = self.configuration.framePeriod
        if now < deadline - period * self.configuration.leadFrames {
            return nil
        }
        let lateness = now - deadline
        if lateness > self.configuration.lateThreshold {
            self.nextDeadline = now + period
            return .resynced(lateness)
        }
        self.nextDeadline = deadline + period
        return lateness > .zero ? .late(lateness) : .onTime
    }

    /// Ends the run (response finished and drained, or flushed by a barge-in). The next frame starts a new run.
    public mutating func stop() {
        self.nextDeadline = nil
    }
}

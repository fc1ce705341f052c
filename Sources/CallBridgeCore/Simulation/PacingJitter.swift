/// Pacing jitter as `callbridge dial` and `callbridge load` measure it, from the caller's side.
///
/// Definition: for every `media` frame received, the interval since the previous one, minus 20 ms, in absolute value.
/// Frames form runs (a reply as it streams): a frame more than `runGap` after the previous one starts a new run, and
/// the first `leadArrivalsSkipped` frames of a run are not measured, because the bridge sends its pacer's lead (a
/// couple of frames ahead of their deadlines) at the start of every reply: all at once but the last, which goes on the
/// bridge's first pacing tick. Everything after that should arrive every 20 ms.
public struct PacingJitter: Sendable, Equatable {
    /// Arrivals closer than this belong to the same run of frames.
    public static let runGap: Duration = .milliseconds(100)
    /// Frames sent ahead at the start of a run (the pacer's lead) arrive together and are not jitter.
    public static let leadArrivalsSkipped = 3
    public static let framePeriod: Duration = AudioFrame.duration

    /// What one arrival was.
    public struct Arrival: Sendable, Equatable {
        /// The first frame of a run (the first frame of a reply, or after a gap).
        public var startsRun: Bool
        /// |interval − 20 ms|, when this arrival is measured.
        public var deviation: Duration?
    }

    private var last: Duration?
    private var runIndex = 0

    public init() {}

    /// Records a media frame that arrived at `at` (any fixed origin; arrivals in order).
    public mutating func arrival(at: Duration) -> Arrival {
        defer { self.last = at }
        guard let last = self.last, at - last <= Self.runGap else {
            self.runIndex = 0
            return Arrival(startsRun: true, deviation: nil)
        }
        self.runIndex += 1
        guard self.runIndex >= Self.leadArrivalsSkipped else { return Arrival(startsRun: false, deviation: nil) }
        let deviation = (at - last) - Self.framePeriod
        return Arrival(startsRun: false, deviation: deviation < .zero ? .zero - deviation : deviation)
    }
}

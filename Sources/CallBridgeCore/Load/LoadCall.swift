/// One simulated Twilio call of a load run, as plain state: Twilio's playout of what the bridge sends (marks echoed
/// when reached, `clear` empties the queue) and the caller's measurements. The shell owns the socket and the clock;
/// times are durations on the call's own timeline, whose caller frame k leaves at 20 ms × (k + 1).
///
/// Measurements go straight into the `LoadStats` of the event loop the call runs on (no allocation per frame).
public struct LoadCall: Sendable {
    /// Caller frames sent so far (the next one's index on the call's timeline).
    public private(set) var framesSent = 0
    /// The last `sequenceNumber` used (every message Twilio sends after `connected` takes the next one).
    public private(set) var sequence = 0
    var playout = TwilioPlayoutQueue()
    var jitter = PacingJitter()
    /// Arrival of the first frame of the latest run of AI audio.
    var lastRunStart: Duration?
    /// The onset of a barge-in that no `clear` has answered yet.
    var awaitingClearSince: Duration?

    public init() {}

    public mutating func nextSequence() -> Int {
        self.sequence += 1
        return self.sequence
    }

    /// The tick at which the next caller frame leaves: Twilio first plays 20 ms of what it has queued (`echo` gets the
    /// marks reached), then the frame goes out. Returns the frame's index in the script's cycle.
    public mutating func tick(script: LoadScript, stats: inout LoadStats, echo: (String) -> Void) -> Int {
        _ = self.playout.play(AudioFrame.byteCount, echo: echo)
        let frame = self.framesSent % script.cycleFrames
        if frame == script.bargeInOnsetFrame {
            // The previous cycle's barge-in was never answered with a `clear`.
            if self.awaitingClearSince != nil { stats.bargeInsWithoutClear += 1 }
            self.awaitingClearSince = .milliseconds(20 * self.framesSent)
        }
        self.framesSent += 1
        stats.framesSent += 1
        return frame
    }

    /// A message from the bridge that arrived at `at`. `echo` gets the marks Twilio echoes in answer.
    public mutating func received(
        _ message: TwilioOutboundSummary,
        at: Duration,
        script: LoadScript,
        stats: inout LoadStats,
        echo: (String) -> Void
    ) {
        switch message {
        case .media(let byteCount):
            stats.mediaReceived += 1
            self.playout.media(byteCount: byteCount)
            let arrival = self.jitter.arrival(at: at)
            if let deviation = arrival.deviation {
                stats.jitter.record(deviation)
                stats.jitterWindow.record(deviation)
            }
            if arrival.startsRun {
                // First audio of a reply: measured from the end of the caller's speech, if they spoke since the
                // previous reply began (a reply resuming after a gap is not a new answer).
                if let end = script.lastVoicedEnd(before: at), end <= at, self.lastRunStart.map({ end > $0 }) ?? true {
                    stats.firstAudio.record(at - end)
                }
                self.lastRunStart = at
            }
        case .mark(let name):
            stats.marksReceived += 1
            if let name = self.playout.mark(name) { echo(name) }
        case .clear:
            stats.clearsReceived += 1
            _ = self.playout.clear(echo: echo)
            if let onset = self.awaitingClearSince, at >= onset {
                stats.bargeIn.record(at - onset)
                self.awaitingClearSince = nil
            }
        }
    }

    /// The call is over at `at`: a barge-in still waiting counts as unanswered if the bridge had a second to answer.
    public mutating func finish(at: Duration, stats: inout LoadStats) {
        if let onset = self.awaitingClearSince, at - onset >= .seconds(1) { stats.bargeInsWithoutClear += 1 }
        self.awaitingClearSince = nil
    }
}

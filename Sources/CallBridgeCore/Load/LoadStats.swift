import Histogram

/// A latency distribution in microseconds (HdrHistogram, 3 significant digits, 1 µs to 10 min).
public struct LatencyHistogram: Sendable, Equatable {
    public static let highestMicroseconds: UInt64 = 600_000_000
    public private(set) var histogram = Histogram<UInt64>(
        lowestDiscernibleValue: 1,
        highestTrackableValue: LatencyHistogram.highestMicroseconds,
        numberOfSignificantValueDigits: .three
    )

    public init() {}

    public var count: UInt64 { self.histogram.totalCount }

    /// Negative durations count as 0; longer than 10 minutes as 10 minutes.
    public mutating func record(_ value: Duration) {
        let (seconds, attoseconds) = value.components
        let micros = max(0, seconds) * 1_000_000 + max(0, attoseconds / 1_000_000_000_000)
        self.histogram.record(min(UInt64(micros), Self.highestMicroseconds))
    }

    public mutating func merge(_ other: LatencyHistogram) {
        self.histogram.add(other.histogram)
    }

    public mutating func reset() { self.histogram.reset() }

    /// The value at `percentile` (0–100) in milliseconds; nil when nothing was recorded.
    public func milliseconds(atPercentile percentile: Double) -> Double? {
        guard self.count > 0 else { return nil }
        return Double(self.histogram.valueAtPercentile(percentile)) / 1000
    }

    public var maxMilliseconds: Double? {
        guard self.count > 0 else { return nil }
        return Double(self.histogram.maxRecorded) / 1000
    }
}

/// What the calls of one event loop measured; merged across loops at the end of a run.
public struct LoadStats: Sendable, Equatable {
    /// |inter-arrival − 20 ms| of the bridge's media frames within a reply (see `PacingJitter`).
    public var jitter = LatencyHistogram()
    /// End of the caller's utterance → first AI media frame of the reply.
    public var firstAudio = LatencyHistogram()
    /// Onset of the caller's barge-in → `clear` received.
    public var bargeIn = LatencyHistogram()
    /// The same jitter since the shell last reset it (the progress display's "current" p99).
    public var jitterWindow = LatencyHistogram()
    /// How late the generator's own ticks ran (wake-up − nominal instant), one sample per tick of each loop. Arrivals
    /// are stamped when the generator reads them: when its ticks run late, the jitter above includes its own delays.
    public var tickLateness = LatencyHistogram()

    public var framesSent = 0
    public var mediaReceived = 0
    public var marksReceived = 0
    public var marksEchoed = 0
    public var clearsReceived = 0
    /// Barge-ins the bridge never answered with a `clear` (e.g. the AI was not speaking at that moment).
    public var bargeInsWithoutClear = 0
    /// Messages from the bridge that were not Twilio `media`, `mark` or `clear` (undecodable, binary).
    public var badMessages = 0
    public var messagesSent = 0
    public var messagesReceived = 0

    public var callsConnected = 0
    public var callsCompleted = 0
    public var callsFailedToConnect = 0
    /// Calls the bridge closed (close frame or connection drop) before the caller hung up.
    public var callsDisconnected = 0
    /// Failures by kind (`connect: …`, `disconnected: …`), for the report.
    public var failures: [String: Int] = [:]

    public init() {}

    public mutating func merge(_ other: LoadStats) {
        self.jitter.merge(other.jitter)
        self.firstAudio.merge(other.firstAudio)
        self.bargeIn.merge(other.bargeIn)
        self.jitterWindow.merge(other.jitterWindow)
        self.tickLateness.merge(other.tickLateness)
        self.framesSent += other.framesSent
        self.mediaReceived += other.mediaReceived
        self.marksReceived += other.marksReceived
        self.marksEchoed += other.marksEchoed
        self.clearsReceived += other.clearsReceived
        self.bargeInsWithoutClear += other.bargeInsWithoutClear
        self.badMessages += other.badMessages
        self.messagesSent += other.messagesSent
        self.messagesReceived += other.messagesReceived
        self.callsConnected += other.callsConnected
        self.callsCompleted += other.callsCompleted
        self.callsFailedToConnect += other.callsFailedToConnect
        self.callsDisconnected += other.callsDisconnected
        self.failures.merge(other.failures, uniquingKeysWith: +)
    }

    public mutating func recordFailure(_ kind: String) {
        self.failures[kind, default: 0] += 1
    }
}

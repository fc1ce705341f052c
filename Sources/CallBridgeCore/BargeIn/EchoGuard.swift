/// Tells the caller's own voice from the AI's voice coming back down the line (a double-talk detector).
///
/// The bridge knows what it played and when: each frame's level, and its play time from Twilio's mark echoes. An
/// inbound frame at time `t` can contain echo of anything played in `[t − maxEchoDelay, t]`, attenuated by the
/// echo return loss (ERL).
///
/// Until it has learned the echo path, the guard uses the Geigel rule: the caller is talking only when the inbound
/// level is above the loudest recent outbound level minus `minEchoReturnLossDB`. It also tracks the smallest loss
/// seen on echo-only frames: on a line that returns little or no echo, that loss is large, and the rule relaxes
/// to it (less the margin), so a soft caller is not mistaken for echo. Meanwhile it correlates the inbound
/// level with the outbound level at every lag on frames that were only echo. Once one lag clearly explains the
/// inbound level, it switches to the learned delay and loss. The expected echo is then the outbound level at that
/// lag minus the learned ERL, and caller speech must exceed it by `doubleTalkMarginDB`. This is far more sensitive
/// than Geigel on a line with good echo loss.
public struct EchoGuard: Sendable, Equatable {
    public struct Configuration: Sendable, Equatable {
        /// Longest echo path the guard looks back over.
        public var maxEchoDelay: Duration
        /// Echo return loss assumed until one is learned (Geigel's 6 dB).
        public var minEchoReturnLossDB: Double
        /// With a learned echo path: how far above the expected echo the caller must be.
        public var doubleTalkMarginDB: Double
        /// Echo-only frames needed before a learned estimate is trusted.
        public var estimationFrames: Int
        /// Lowest correlation between the inbound and delayed outbound levels that counts as an echo path.
        public var minCorrelation: Double
        /// Outbound quieter than this cannot produce audible echo.
        public var farEndSilenceDBFS: Double
        /// The most loss the relaxed rule may assume on a line that has shown little echo: echo that appears later
        /// (a speakerphone, a phone's canceller dropping out) above this loss is still taken for echo.
        public var maxAssumedLossDB: Double

        public init(
            maxEchoDelay: Duration = .milliseconds(400),
            minEchoReturnLossDB: Double = 6,
            doubleTalkMarginDB: Double = 6,
            estimationFrames: Int = 50,
            minCorrelation: Double = 0.6,
            farEndSilenceDBFS: Double = -50,
            maxAssumedLossDB: Double = 30
        ) {
            self.maxAssumedLossDB = maxAssumedLossDB
            self.maxEchoDelay = maxEchoDelay
            self.minEchoReturnLossDB = minEchoReturnLossDB
            self.doubleTalkMarginDB = doubleTalkMarginDB
            self.estimationFrames = max(2, estimationFrames)
            self.minCorrelation = minCorrelation
            self.farEndSilenceDBFS = farEndSilenceDBFS
        }
    }

    public enum Verdict: Sendable, Equatable {
        /// Nothing was played recently: whatever is heard is the caller (or line noise).
        case farEndSilent
        /// The inbound level is explained by the AI's own audio coming back.
        case echoOnly
        /// Louder than any echo of what was played: the caller is talking.
        case doubleTalk
    }

    /// The learned echo path.
    public struct Estimate: Sendable, Equatable {
        public var delay: Duration
        public var returnLossDB: Double
        public var correlation: Double
    }

    struct Played: Sendable, Equatable {
        var start: CallInstant
        var levelDBFS: Double
    }

    /// Running sums for one lag bin, for the correlation of inbound and delayed outbound levels.
    struct LagStatistics: Sendable, Equatable {
        var n = 0.0
        var sumIn = 0.0
        var sumOut = 0.0
        var sumInOut = 0.0
        var sumIn2 = 0.0
        var sumOut2 = 0.0
        /// Loss (outbound − inbound) over the frames where this lag's outbound was audible.
        var lossSum = 0.0
        var lossCount = 0.0

        mutating func add(inbound x: Double, outbound y: Double, audible: Bool) {
            if audible {
                self.lossSum += y - x
                self.lossCount += 1
            }
            self.n += 1
            self.sumIn += x
            self.sumOut += y
            self.sumInOut += x * y
            self.sumIn2 += x * x
            self.sumOut2 += y * y
        }

        var correlation: Double {
            guard self.n >= 2 else { return 0 }
            let covariance = self.sumInOut - self.sumIn * self.sumOut / self.n
            let varianceIn = self.sumIn2 - self.sumIn * self.sumIn / self.n
            let varianceOut = self.sumOut2 - self.sumOut * self.sumOut / self.n
            guard varianceIn > 1e-9, varianceOut > 1e-9 else { return 0 }
            return covariance / (varianceIn * varianceOut).squareRoot()
        }

        /// Mean of outbound − inbound where the outbound was audible: the echo return loss at this lag.
        var meanLoss: Double { self.lossCount > 0 ? self.lossSum / self.lossCount : 0 }
    }

    public let configuration: Configuration
    var history: [Played] = []
    var lags: [LagStatistics]
    public private(set) var estimate: Estimate?
    /// Scratch for `classify`: the outbound level at each lag (kept, so a caller frame allocates nothing).
    var delayed: [Double]
    /// The smallest `loudest outbound − inbound` seen on echo-only frames, and how many frames it covers.
    public private(set) var observedLossFloorDB = Double.infinity
    var observedLossFrames = 0

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
        let bins = max(1, configuration.maxEchoDelay.wholeMilliseconds / 20) + 1
        self.lags = Array(repeating: LagStatistics(), count: bins)
        self.delayed = Array(repeating: -120, count: bins)
    }

    /// A frame of `levelDBFS` began playing at `start` (from the mark echoes: the echo time minus 20 ms).
    public mutating func played(levelDBFS: Double, start: CallInstant) {
        self.history.append(Played(start: start, levelDBFS: levelDBFS))
        // Keep what a frame within the longest echo path could still hear.
        let horizon = start - (self.configuration.maxEchoDelay + Duration.milliseconds(100))
        if let firstKept = self.history.firstIndex(where: { $0.start >= horizon }), firstKept > 0 {
            self.history.removeFirst(firstKept)
        }
    }

    /// The outbound level that was playing at `instant` (silence when nothing was). `classify` finds it for every lag
    /// in one walk of the history; this is the definition that walk is tested against.
    func outboundLevel(at instant: CallInstant) -> Double {
        for played in self.history.reversed() where played.start <= instant {
            return instant - played.start < AudioFrame.duration ? played.levelDBFS : -120
        }
        return -120
    }

    /// Classifies an inbound frame that began at `frameStart`. `playingNowDBFS` is the level of a frame that may be
    /// playing right now but is not yet confirmed by its mark.
    public mutating func classify(inboundDBFS inbound: Double, frameStart: CallInstant, playingNowDBFS: Double? = nil)
        -> Verdict
    {
        let bins = self.lags.count
        // `outboundLevel` at each lag, in one backward walk of the history: the lags' instants only go back in time.
        var index = self.history.count - 1
        var instant = frameStart
        for bin in 0..<bins {
            while index >= 0 && self.history[index].start > instant { index -= 1 }
            self.delayed[bin] =
                index >= 0 && instant - self.history[index].start < AudioFrame.duration ? self.history[index].levelDBFS : -120
            instant = instant - AudioFrame.duration
        }
        let delayed = self.delayed
        // A frame playing right now (not yet confirmed) counts for the decision, not for learning the path.
        let loudest = max(delayed.max() ?? -120, playingNowDBFS ?? -120)
        guard loudest >= self.configuration.farEndSilenceDBFS else { return .farEndSilent }

        let verdict: Verdict
        if let estimate = self.estimate {
            let bin = min(bins - 1, estimate.delay.wholeMilliseconds / 20)
            // Allow one frame of jitter either side of the learned delay.
            let window = delayed[max(0, bin - 1)...min(bins - 1, bin + 1)]
            let expectedEcho = (window.max() ?? -120) - estimate.returnLossDB
            verdict = inbound > expectedEcho + self.configuration.doubleTalkMarginDB ? .doubleTalk : .echoOnly
        } else {
            var assumedLoss = self.configuration.minEchoReturnLossDB
            if self.observedLossFrames >= self.configuration.estimationFrames {
                let relaxed = min(self.observedLossFloorDB - self.configuration.doubleTalkMarginDB, self.configuration.maxAssumedLossDB)
                assumedLoss = max(assumedLoss, relaxed)
            }
            verdict = inbound > loudest - assumedLoss ? .doubleTalk : .echoOnly
        }
        if verdict == .echoOnly {
            // Only frames where the AI was clearly audible say how much echo the line returns (in the AI's quiet
            // moments any inbound noise looks like "little loss"). Digital silence counts as -70 dBFS: evidence of
            // little echo, but not of unlimited loss.
            if loudest >= self.configuration.farEndSilenceDBFS + 15 {
                self.observedLossFloorDB = min(self.observedLossFloorDB, loudest - max(inbound, -70))
                self.observedLossFrames += 1
            }
            // Every lag learns from the same frames (quiet outbound clamped to the silence level), so no lag is
            // favoured just by having been eligible first.
            let floor = self.configuration.farEndSilenceDBFS
            for bin in 0..<bins {
                self.lags[bin].add(
                    inbound: max(inbound, floor - 20),
                    outbound: max(delayed[bin], floor),
                    audible: delayed[bin] >= floor
                )
            }
            self.updateEstimate()
        }
        return verdict
    }

    mutating func updateEstimate() {
        guard let n = self.lags.first?.n, n >= Double(self.configuration.estimationFrames) else { return }
        var best: (bin: Int, correlation: Double)?
        for (bin, stats) in self.lags.enumerated() {
            let r = stats.correlation
            if r >= self.configuration.minCorrelation && r > (best?.correlation ?? -1) { best = (bin, r) }
        }
        guard let best else { return }
        // The loss is measured on frames where that lag's outbound was audible.
        let loss = max(self.configuration.minEchoReturnLossDB, self.lags[best.bin].meanLoss)
        self.estimate = Estimate(delay: .milliseconds(best.bin * 20), returnLossDB: loss, correlation: best.correlation)
    }

    /// The time of the most recent audible outbound frame, if any (for the optional last-AI-audio-age gate).
    public var lastAudibleStart: CallInstant? {
        self.history.last(where: { $0.levelDBFS >= self.configuration.farEndSilenceDBFS })?.start
    }
}

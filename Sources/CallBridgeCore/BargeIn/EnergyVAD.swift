/// Frame-energy voice activity detector for the caller's 20 ms frames.
///
/// Level is `20·log10(rms)` in dBFS. The noise floor is an exponential moving average over `noiseFloorWindow`,
/// updated only on frames outside speech. A frame is voiced above `max(floor + (1 − sensitivity) × 20 dB,
/// absoluteThreshold)`. Speech starts after `startFrames` voiced frames in a row (the onset is the first of them) and
/// ends after `hangover` without a voiced frame.
public struct EnergyVAD: Sendable, Equatable {
    public struct Configuration: Sendable, Equatable {
        public var noiseFloorWindow: Duration
        /// 0…1: higher means a lower threshold above the noise floor.
        public var sensitivity: Double
        /// No frame quieter than this is ever voiced.
        public var absoluteThresholdDBFS: Double
        /// Consecutive voiced frames before speech starts (debounce).
        public var startFrames: Int
        /// Unvoiced time before speech ends.
        public var hangover: Duration
        /// The noise floor starts at the first frame's level, clamped to `initialNoiseFloorDBFS…maxInitialNoiseFloorDBFS`:
        /// a noisy line is not mistaken for speech from its first frames, and a caller already talking at pickup
        /// cannot push the floor up to speech level.
        public var initialNoiseFloorDBFS: Double
        public var maxInitialNoiseFloorDBFS: Double
        /// Continuous "speech" longer than this is taken for a change of line noise: the floor is re-anchored on the
        /// quietest of the last two seconds and speech ends, so the detector cannot stay stuck in speech.
        public var maxSpeechDuration: Duration

        public init(
            noiseFloorWindow: Duration = .seconds(2),
            sensitivity: Double = 0.6,
            absoluteThresholdDBFS: Double = -40,
            startFrames: Int = 2,
            hangover: Duration = .milliseconds(300),
            initialNoiseFloorDBFS: Double = -60,
            maxInitialNoiseFloorDBFS: Double = -35,
            maxSpeechDuration: Duration = .seconds(15)
        ) {
            self.maxSpeechDuration = maxSpeechDuration
            self.maxInitialNoiseFloorDBFS = max(initialNoiseFloorDBFS, maxInitialNoiseFloorDBFS)
            self.noiseFloorWindow = noiseFloorWindow
            self.sensitivity = min(1, max(0, sensitivity))
            self.absoluteThresholdDBFS = absoluteThresholdDBFS
            self.startFrames = max(1, startFrames)
            self.hangover = hangover
            self.initialNoiseFloorDBFS = initialNoiseFloorDBFS
        }
    }

    /// A change of state, when a frame causes one.
    public enum Transition: Sendable, Equatable {
        /// `onset`: the start of the first voiced frame of the run.
        case speechStarted(onset: CallInstant)
        case speechEnded(at: CallInstant)
    }

    /// The energy update every frame produces, with its transition if any.
    public struct Update: Sendable, Equatable {
        public var levelDBFS: Double
        public var noiseFloorDBFS: Double
        public var thresholdDBFS: Double
        public var voiced: Bool
        public var transition: Transition?
    }

    public let configuration: Configuration
    public private(set) var noiseFloorDBFS: Double
    /// Onset of the current speech, while in speech.
    public private(set) var speechOnset: CallInstant?
    var voicedRun = 0
    var runStart: CallInstant?
    var lastVoicedEnd: CallInstant?
    var sawFirstFrame = false
    /// The last two seconds of levels (a ring), for re-anchoring the floor.
    var recentLevels: [Double] = []
    var recentIndex = 0

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
        self.noiseFloorDBFS = configuration.initialNoiseFloorDBFS
    }

    public var isSpeaking: Bool { self.speechOnset != nil }

    public var thresholdDBFS: Double {
        max(self.noiseFloorDBFS + (1 - self.configuration.sensitivity) * 20, self.configuration.absoluteThresholdDBFS)
    }

    /// Feeds one frame's level; `frameStart` is when the frame began (its end is `frameStart + duration`).
    /// A `masked` frame (the echo guard says it is only the AI's own voice) counts as unvoiced and leaves the noise
    /// floor alone.
    public mutating func process(
        levelDBFS level: Double,
        frameStart: CallInstant,
        duration: Duration = AudioFrame.duration,
        masked: Bool = false
    ) -> Update {
        if !self.sawFirstFrame {
            self.sawFirstFrame = true
            self.noiseFloorDBFS = min(max(level, self.configuration.initialNoiseFloorDBFS), self.configuration.maxInitialNoiseFloorDBFS)
        }
        if self.recentLevels.count < 100 {
            self.recentLevels.append(level)
        } else {
            self.recentLevels[self.recentIndex] = level
            self.recentIndex = (self.recentIndex + 1) % 100
        }
        if let onset = self.speechOnset, frameStart + duration - onset >= self.configuration.maxSpeechDuration {
            self.noiseFloorDBFS = self.recentLevels.min() ?? self.noiseFloorDBFS
            self.resetSpeech()
            return Update(
                levelDBFS: level,
                noiseFloorDBFS: self.noiseFloorDBFS,
                thresholdDBFS: self.thresholdDBFS,
                voiced: false,
                transition: .speechEnded(at: frameStart + duration)
            )
        }
        let threshold = self.thresholdDBFS
        let voiced = !masked && level > threshold
        var transition: Transition?
        if voiced {
            if self.voicedRun == 0 { self.runStart = frameStart }
            self.voicedRun += 1
            self.lastVoicedEnd = frameStart + duration
            if self.speechOnset == nil, self.voicedRun >= self.configuration.startFrames, let onset = self.runStart {
                self.speechOnset = onset
                transition = .speechStarted(onset: onset)
            }
        } else {
            self.voicedRun = 0
            if self.speechOnset != nil, let lastVoiced = self.lastVoicedEnd,
                frameStart + duration - lastVoiced >= self.configuration.hangover
            {
                self.speechOnset = nil
                transition = .speechEnded(at: frameStart + duration)
            }
        }
        // The floor follows the line only outside speech (and outside a run that may become speech).
        if self.speechOnset == nil && self.voicedRun == 0 && !masked {
            let alpha = min(1, duration.millisecondsValue / max(1, self.configuration.noiseFloorWindow.millisecondsValue))
            self.noiseFloorDBFS += alpha * (level - self.noiseFloorDBFS)
        }
        return Update(
            levelDBFS: level,
            noiseFloorDBFS: self.noiseFloorDBFS,
            thresholdDBFS: threshold,
            voiced: voiced,
            transition: transition
        )
    }

    /// Forgets the current run and speech (the floor is kept).
    public mutating func resetSpeech() {
        self.speechOnset = nil
        self.voicedRun = 0
        self.runStart = nil
        self.lastVoicedEnd = nil
    }
}

/// The barge-in confirmer backed by Silero VAD: fed the caller's audio only during an active period (the AI speaking
/// and the energy stage fired), it says "speech" when any window of the period reaches the threshold. The LSTM state
/// and the partial window stay warm from one period to the next while the audio between them is contiguous.
public struct SileroConfirmer: SpeechConfirmer {
    var vad: SileroVAD
    /// Speech probability at or above which a window is speech.
    public var threshold: Float
    /// Windows run so far (for the cost figures).
    public private(set) var windows = 0
    /// The highest probability of the current period.
    public private(set) var best: Float = 0

    public init(model: SileroModel, threshold: Float = 0.5) {
        self.vad = SileroVAD(model: model)
        self.threshold = threshold
    }

    public mutating func begin(warm: Bool) {
        if !warm { self.vad.reset() }
        self.best = 0
    }

    public mutating func feed(_ frame: ArraySlice<UInt8>) {
        var windows = 0
        var best = self.best
        self.vad.process(muLaw: frame) { probability in
            windows += 1
            best = max(best, probability)
        }
        self.windows += windows
        self.best = best
    }

    public var heardSpeech: Bool { self.best >= self.threshold }
}

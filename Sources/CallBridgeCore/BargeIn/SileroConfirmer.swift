/// The barge-in confirmer backed by Silero VAD: consulted only when the energy stage has paused the AI, it runs the
/// network over the audio from just before the onset and says "speech" when any window reaches the threshold.
public struct SileroConfirmer: SpeechConfirmer {
    var vad: SileroVAD
    /// Speech probability at or above which a window is speech.
    public var threshold: Float
    /// Windows run so far (for the call log and the cost figures).
    public private(set) var windows = 0

    public init(model: SileroModel, threshold: Float = 0.5) {
        self.vad = SileroVAD(model: model)
        self.threshold = threshold
    }

    public mutating func isSpeech(_ frames: [[UInt8]]) -> Bool {
        // Each pause is judged on its own audio: the state starts fresh at the frames just before the onset.
        self.vad.reset()
        var best: Float = 0
        for frame in frames {
            for probability in self.vad.process(muLaw: frame) {
                self.windows += 1
                best = max(best, probability)
            }
        }
        return best >= self.threshold
    }
}

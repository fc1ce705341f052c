/// The second stage of barge-in detection: a slower, better classifier (the neural VAD) that runs only when the
/// cheap energy stage has paused the AI, to tell speech from a cough, a door or a click before committing.
///
/// A value type with its own state (an LSTM's, say), owned by the call's state machine like everything else.
public protocol SpeechConfirmer: Sendable {
    /// Whether `frames` (20 ms μ-law frames, oldest first, from just before the onset up to now) hold speech.
    mutating func isSpeech(_ frames: [[UInt8]]) -> Bool
}

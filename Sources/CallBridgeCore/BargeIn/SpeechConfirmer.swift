/// The second stage of barge-in detection: a slower, better classifier (the neural VAD) that runs only while the AI
/// is speaking and the cheap energy stage has fired, to tell speech from a cough, a door or a click before committing.
///
/// It streams: an active period begins when the energy stage pauses the AI (with the frames from just before the
/// onset), every caller frame of the period is fed as it arrives, and the verdict is read when the pause is decided.
/// A value type with its own state (an LSTM's, say), owned by the call's state machine like everything else.
public protocol SpeechConfirmer: Sendable {
    /// A new active period. `warm`: the frames about to be fed continue the audio straight on from the last frame
    /// fed before, so the model's state is kept; otherwise it starts fresh. The verdict starts over either way.
    mutating func begin(warm: Bool)
    /// The next 20 ms μ-law frame of the period (a slice of the call's kept history: no copy).
    mutating func feed(_ frame: ArraySlice<UInt8>)
    /// Whether the period so far holds speech.
    var heardSpeech: Bool { get }
}

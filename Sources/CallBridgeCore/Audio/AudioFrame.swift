/// Fixed sizes of the telephone audio the bridge moves.
public enum AudioFrame {
    /// 20 ms of 8 kHz μ-law: the unit of the chunker, the pacer and the marks.
    public static let byteCount = 160
    public static let duration: Duration = .milliseconds(20)
    /// μ-law at 8 kHz: 8 bytes per millisecond.
    public static let bytesPerMillisecond = 8
    public static let sampleRate = 8000

    /// Milliseconds of audio in `bytes` of 8 kHz μ-law.
    public static func milliseconds(ofBytes bytes: Int) -> Int {
        bytes / bytesPerMillisecond
    }
}

/// What every simulated caller of a load run says, as one cycle repeated for the whole call: the caller's utterance
/// from the start of the cycle, the AI's answer, and (optionally) the caller talking over the AI at `bargeInAt`, with
/// room for the answer to that. A long call therefore keeps having turns and barge-ins.
public struct LoadScript: Sendable {
    /// The cycle's 20 ms frames, ready to send.
    public let media: TwilioMediaTemplate
    public var cycleFrames: Int { self.media.frameCount }
    /// Per frame of the cycle: voiced (above −40 dBFS, the dial report's threshold).
    public let voiced: [Bool]
    /// First voiced frame of the barge-in audio, as a frame of the cycle.
    public let bargeInOnsetFrame: Int?
    /// Per frame of the cycle: the last voiced frame at or before it in the cycle, −1 when none.
    let lastVoiced: [Int32]
    /// The cycle's last voiced frame, −1 when it is all silence.
    let cycleLastVoiced: Int

    public init(callerAudio: [UInt8], bargeInAudio: [UInt8]?, bargeInAt: Duration?, cycle: Duration) {
        let frames = max(1, cycle.wholeMilliseconds / 20)
        let barge = bargeInAudio ?? callerAudio
        let startFrame = bargeInAt.map { $0.wholeMilliseconds / 20 }
        let audio = DialReport.mix(callerAudio, barge, at: startFrame, totalFrames: frames)
        self.media = TwilioMediaTemplate(audio: audio)
        self.voiced = DialReport.voicedFrames(in: audio)
        self.bargeInOnsetFrame = startFrame.flatMap { start in
            DialReport.firstVoicedFrame(in: barge).map { start + $0 }
        }.flatMap { $0 < frames ? $0 : nil }
        var last: Int32 = -1
        self.lastVoiced = self.voiced.enumerated().map { index, voiced in
            if voiced { last = Int32(index) }
            return last
        }
        self.cycleLastVoiced = Int(last)
    }

    /// A cycle long enough for the caller's utterance, the barge-in, and the AI's answer to the last of them (the echo
    /// double answers with as much audio as it heard), plus 2 s.
    public static func defaultCycle(callerAudio: [UInt8], bargeInAudio: [UInt8]?, bargeInAt: Duration?) -> Duration {
        let callerLength = Duration.milliseconds(callerAudio.count / AudioFrame.bytesPerMillisecond)
        let bargeLength = Duration.milliseconds((bargeInAudio ?? callerAudio).count / AudioFrame.bytesPerMillisecond)
        let lastUtteranceEnd = bargeInAt.map { max(callerLength, $0 + bargeLength) } ?? callerLength
        let answer = bargeInAt == nil ? callerLength : bargeLength
        let total = lastUtteranceEnd + answer + .seconds(2)
        return .milliseconds((total.wholeMilliseconds + 19) / 20 * 20)
    }

    /// End of the caller's last voiced frame among the frames sent before `at` (a frame k, holding the audio of
    /// [20k, 20k + 20) ms of the call, counts once `at` ≥ 20(k + 1) ms), as `DialReport` measures time to first audio.
    public func lastVoicedEnd(before at: Duration) -> Duration? {
        let framesBefore = at.wholeMilliseconds / 20
        guard framesBefore > 0 else { return nil }
        let latest = framesBefore - 1
        let cycle = latest / self.cycleFrames
        let inCycle = Int(self.lastVoiced[latest % self.cycleFrames])
        let frame: Int
        if inCycle >= 0 {
            frame = cycle * self.cycleFrames + inCycle
        } else if cycle > 0 && self.cycleLastVoiced >= 0 {
            frame = (cycle - 1) * self.cycleFrames + self.cycleLastVoiced
        } else {
            return nil
        }
        return .milliseconds((frame + 1) * 20)
    }
}

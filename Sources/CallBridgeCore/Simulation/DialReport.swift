/// What the call simulator observed, times relative to the first caller frame.
public struct DialTrace: Sendable, Equatable {
    public struct Arrival: Sendable, Equatable {
        public var at: Duration
        public var bytes: Int
        public init(at: Duration, bytes: Int) {
            self.at = at
            self.bytes = bytes
        }
    }

    public var mediaArrivals: [Arrival] = []
    public var clears: [Duration] = []
    public var marksReceived = 0
    public var marksEchoed = 0
    /// Ends of the caller's utterances in the audio sent (see `utteranceEnds`).
    public var callerUtteranceEnds: [Duration] = []
    /// Per 20 ms frame of the audio sent: whether it was voiced.
    public var callerVoicedFrames: [Bool] = []
    /// First voiced frame of the barge-in audio, when a barge-in was played.
    public var bargeInOnset: Duration?
    /// Assistant audio played to the caller between the barge-in onset and the first `clear` after it.
    public var playedAfterBargeInBytes = 0
    public var connectedAfter: Duration?

    public init() {}
}

/// The summary `callbridge dial` prints.
public struct DialReport: Sendable, Equatable {
    public var mediaMessages: Int
    public var frameSizes: [Int: Int]
    /// The silence the caller sits through: from the end of their last voiced frame to the first assistant audio.
    public var firstAudioAfterSpeechMs: Double?
    /// Absolute deviation of steady-state inter-arrival times from 20 ms.
    public var jitterP50Ms: Double?
    public var jitterP95Ms: Double?
    public var jitterMaxMs: Double?
    public var intervalsMeasured: Int
    public var clears: Int
    public var bargeInToClearMs: Double?
    /// Assistant audio heard after the barge-in onset: played before the clear took effect, plus audio received
    /// between the clear and the end of the barge-in utterance (which can only be the interrupted reply).
    public var heardAfterBargeInMs: Double?
    public var marksReceived: Int
    public var marksEchoed: Int

    public init(trace: DialTrace) {
        self.mediaMessages = trace.mediaArrivals.count
        self.frameSizes = Dictionary(trace.mediaArrivals.map { ($0.bytes, 1) }, uniquingKeysWith: +)
        self.clears = trace.clears.count
        self.marksReceived = trace.marksReceived
        self.marksEchoed = trace.marksEchoed
        if let first = trace.mediaArrivals.first {
            let framesBefore = min(trace.callerVoicedFrames.count, first.at.wholeMilliseconds / 20)
            if let last = trace.callerVoicedFrames[..<framesBefore].lastIndex(of: true) {
                self.firstAudioAfterSpeechMs = (first.at - .milliseconds((last + 1) * 20)).millisecondsValue
            }
        }
        // The definition is PacingJitter's, shared with `callbridge load`.
        var jitter = PacingJitter()
        var deviations: [Double] = []
        for arrival in trace.mediaArrivals {
            if let deviation = jitter.arrival(at: arrival.at).deviation { deviations.append(deviation.millisecondsValue) }
        }
        deviations.sort()
        self.intervalsMeasured = deviations.count
        if !deviations.isEmpty {
            self.jitterP50Ms = deviations[deviations.count / 2]
            self.jitterP95Ms = deviations[min(deviations.count - 1, Int(Double(deviations.count) * 0.95))]
            self.jitterMaxMs = deviations.last
        }
        if let onset = trace.bargeInOnset {
            let clear = trace.clears.first(where: { $0 >= onset })
            self.bargeInToClearMs = clear.map { ($0 - onset).millisecondsValue }
            let utteranceEnd = trace.callerUtteranceEnds.first(where: { $0 > onset })
            var stale = 0
            if let clear {
                for arrival in trace.mediaArrivals where arrival.at > clear && (utteranceEnd.map { arrival.at < $0 } ?? true) {
                    stale += arrival.bytes
                }
            }
            self.heardAfterBargeInMs = Double(trace.playedAfterBargeInBytes + stale) / 8
        }
    }

    /// Utterance ends in μ-law audio: the end of a voiced stretch (20 ms frames above `thresholdDBFS`) followed by
    /// at least `minimumSilence`.
    public static func utteranceEnds(
        in audio: [UInt8],
        thresholdDBFS: Double = -40,
        minimumSilence: Duration = .milliseconds(300)
    ) -> [Duration] {
        let frame = AudioFrame.byteCount
        let silenceFrames = max(1, minimumSilence.wholeMilliseconds / 20)
        var ends: [Duration] = []
        var lastVoicedEnd: Int?
        var silent = 0
        var index = 0
        while index * frame < audio.count {
            let slice = audio[(index * frame)..<min(audio.count, (index + 1) * frame)]
            if Level.dBFS(muLaw: slice) > thresholdDBFS {
                lastVoicedEnd = index + 1
                silent = 0
            } else if let end = lastVoicedEnd {
                silent += 1
                if silent >= silenceFrames {
                    ends.append(.milliseconds(end * 20))
                    lastVoicedEnd = nil
                }
            }
            index += 1
        }
        if let end = lastVoicedEnd { ends.append(.milliseconds(end * 20)) }
        return ends
    }

    /// Whether each 20 ms frame of μ-law audio is voiced.
    public static func voicedFrames(in audio: [UInt8], thresholdDBFS: Double = -40) -> [Bool] {
        stride(from: 0, to: audio.count, by: AudioFrame.byteCount).map { start in
            Level.dBFS(muLaw: audio[start..<min(audio.count, start + AudioFrame.byteCount)]) > thresholdDBFS
        }
    }

    /// The caller's audio for a whole call: `main`, then silence, with `barge` mixed in from frame `startFrame`;
    /// `totalFrames` 20 ms frames of μ-law.
    public static func mix(_ main: [UInt8], _ barge: [UInt8], at startFrame: Int?, totalFrames: Int) -> [UInt8] {
        var pcm = [Int32](repeating: 0, count: totalFrames * AudioFrame.byteCount)
        for (i, byte) in main.prefix(pcm.count).enumerated() { pcm[i] = Int32(MuLaw.decode(byte)) }
        if let startFrame {
            let offset = max(0, startFrame) * AudioFrame.byteCount
            for (i, byte) in barge.enumerated() where offset + i < pcm.count {
                pcm[offset + i] += Int32(MuLaw.decode(byte))
            }
        }
        return pcm.map { MuLaw.encode(Int16(clamping: $0)) }
    }

    /// First voiced 20 ms frame at or after `from` (a frame index).
    public static func firstVoicedFrame(in audio: [UInt8], from: Int = 0, thresholdDBFS: Double = -40) -> Int? {
        let frame = AudioFrame.byteCount
        var index = from
        while index * frame < audio.count {
            let slice = audio[(index * frame)..<min(audio.count, (index + 1) * frame)]
            if Level.dBFS(muLaw: slice) > thresholdDBFS { return index }
            index += 1
        }
        return nil
    }

    public var text: String {
        func ms(_ v: Double?) -> String { v.map { String(format1: $0) + " ms" } ?? "n/a" }
        let sizes = self.frameSizes.sorted { $0.key < $1.key }.map { "\($0.key) B × \($0.value)" }.joined(separator: ", ")
        var lines = [
            "media messages received: \(self.mediaMessages)",
            "frame sizes: \(sizes.isEmpty ? "none" : sizes)",
            "time to first audio (caller stops talking → AI audio arrives): \(ms(self.firstAudioAfterSpeechMs))",
            "pacing jitter (|interval − 20 ms| over \(self.intervalsMeasured) intervals): p50 \(ms(self.jitterP50Ms)), "
                + "p95 \(ms(self.jitterP95Ms)), max \(ms(self.jitterMaxMs))",
            "marks: \(self.marksReceived) received, \(self.marksEchoed) echoed; clears: \(self.clears)",
        ]
        if self.heardAfterBargeInMs != nil || self.bargeInToClearMs != nil {
            lines.append("barge-in → clear: \(ms(self.bargeInToClearMs))")
            lines.append("audio heard after the barge-in: \(ms(self.heardAfterBargeInMs))")
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    /// One decimal place, without Foundation.
    init(format1 value: Double) {
        let tenths = (value * 10).rounded()
        let sign = tenths < 0 ? "-" : ""
        let magnitude = Int(abs(tenths))
        self = "\(sign)\(magnitude / 10).\(magnitude % 10)"
    }

    /// Two decimal places, without Foundation.
    init(format2 value: Double) {
        let hundredths = (value * 100).rounded()
        let sign = hundredths < 0 ? "-" : ""
        let magnitude = Int(abs(hundredths))
        let fraction = magnitude % 100
        self = "\(sign)\(magnitude / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

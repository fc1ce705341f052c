import Testing

@testable import CallBridgeCore

@Suite struct EchoGuardTests {
    /// A speech-like outbound level envelope: syllables between -35 and -12 dBFS, with short gaps.
    static func envelope(_ frames: Int, seed: UInt64) -> [Double] {
        var rng = SplitMix64(state: seed)
        return (0..<frames).map { i in
            i % 13 == 12 ? -70 : -35 + Double(rng.below(24))
        }
    }

    /// `classify` finds the outbound level at every lag in one backward walk of the history; it must agree with
    /// `outboundLevel` asked lag by lag, for histories with gaps and irregular starts, and frames anywhere in them.
    @Test func eachLagsLevelIsTheOutboundLevelAtThatLag() {
        var rng = SplitMix64(state: 7)
        for trial in 0..<200 {
            var guardian = EchoGuard()
            var start = 0
            for _ in 0..<rng.below(60) {
                start += 20 + (rng.below(4) == 0 ? rng.below(200) : 0) + rng.below(3) - 1
                guardian.played(levelDBFS: -40 + Double(rng.below(30)), start: t(start))
            }
            let frameStart = t(Int(rng.below(start + 400)))
            _ = guardian.classify(inboundDBFS: -50, frameStart: frameStart)
            let expected = (0..<guardian.lags.count).map { guardian.outboundLevel(at: frameStart - .milliseconds(20 * $0)) }
            #expect(guardian.delayed == expected, "trial \(trial)")
        }
    }

    /// Plays `out` from t=0 and feeds the echo at `delayMs`/`lossDB` (+ the caller, where given) as inbound.
    /// Returns the verdicts per frame.
    func run(
        _ guardian: inout EchoGuard,
        out: [Double],
        delayMs: Int,
        lossDB: Double,
        caller: (Int) -> Double? = { _ in nil },
        noiseDBFS: Double = -65
    ) -> [EchoGuard.Verdict] {
        var verdicts: [EchoGuard.Verdict] = []
        let delayFrames = delayMs / 20
        for i in 0..<out.count {
            guardian.played(levelDBFS: out[i], start: t(20 * i))
            let echo = i >= delayFrames ? out[i - delayFrames] - lossDB : -120
            var inbound = max(echo, noiseDBFS)
            if let talk = caller(i) { inbound = max(inbound, talk) }
            verdicts.append(guardian.classify(inboundDBFS: inbound, frameStart: t(20 * i)))
        }
        return verdicts
    }

    @Test func nothingPlayedMeansFarEndSilent() {
        var guardian = EchoGuard()
        #expect(guardian.classify(inboundDBFS: -20, frameStart: t(0)) == .farEndSilent)
        guardian.played(levelDBFS: -20, start: t(0))
        // 400 ms + a frame later, that audio can no longer be echoing.
        #expect(guardian.classify(inboundDBFS: -20, frameStart: t(440)) == .farEndSilent)
    }

    @Test(arguments: [(40, 12.0), (140, 20.0), (300, 6.0), (380, 30.0)])
    func echoAloneIsNeverCallerSpeechAndThePathIsLearned(delayMs: Int, lossDB: Double) throws {
        var guardian = EchoGuard()
        let verdicts = self.run(&guardian, out: Self.envelope(300, seed: UInt64(delayMs)), delayMs: delayMs, lossDB: lossDB)
        #expect(!verdicts.contains(.doubleTalk), "echo at \(delayMs) ms / \(lossDB) dB was taken for the caller")
        let estimate = try #require(guardian.estimate)
        #expect(estimate.delay == .milliseconds(delayMs))
        #expect(abs(estimate.returnLossDB - lossDB) < 1.5)
    }

    @Test func aSoftCallerOverGoodEchoLossIsFoundOnceThePathIsLearned() {
        var guardian = EchoGuard()
        let out = Self.envelope(400, seed: 9)
        // 25 dB of echo loss; from frame 300 the caller talks at -30 dBFS, which Geigel's 6 dB rule would miss.
        let verdicts = self.run(&guardian, out: out, delayMs: 100, lossDB: 25, caller: { $0 >= 300 ? -30 : nil })
        #expect(guardian.estimate != nil)
        let talking = verdicts[300...].filter { $0 == .doubleTalk }.count
        #expect(talking >= 95, "caller frames found: \(talking) of 100")
        #expect(!verdicts[..<300].contains(.doubleTalk))
    }

    @Test func onALineWithoutEchoASoftCallerIsFoundAfterASecond() {
        var guardian = EchoGuard()
        let out = Self.envelope(100, seed: 5)
        // No echo at all: the inbound is line noise at -65 dBFS while the AI talks. Then the caller, softly.
        let verdicts = self.run(&guardian, out: out, delayMs: 0, lossDB: 200, caller: { $0 >= 60 ? -30 : nil })
        #expect(!verdicts[..<60].contains(.doubleTalk))
        #expect(verdicts[60...].allSatisfy { $0 == .doubleTalk }, "a -30 dBFS caller over a -12…-35 dBFS AI: Geigel alone would need -18")
        #expect(guardian.observedLossFloorDB > 20)
    }

    @Test func beforeLearningTheGeigelRuleStillCatchesALoudCaller() {
        var guardian = EchoGuard()
        guardian.played(levelDBFS: -20, start: t(0))
        #expect(guardian.estimate == nil)
        #expect(guardian.classify(inboundDBFS: -30, frameStart: t(10)) == .echoOnly)
        #expect(guardian.classify(inboundDBFS: -18, frameStart: t(10)) == .doubleTalk)
    }

    @Test func aFrameStillPlayingCountsAsFarEndAudio() {
        var guardian = EchoGuard()
        #expect(guardian.classify(inboundDBFS: -30, frameStart: t(0), playingNowDBFS: -20) == .echoOnly)
    }
}

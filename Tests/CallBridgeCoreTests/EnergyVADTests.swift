import Testing

@testable import CallBridgeCore

@Suite struct EnergyVADTests {
    /// Feeds levels as consecutive 20 ms frames starting at `from` ms; returns the updates.
    func feed(_ vad: inout EnergyVAD, _ levels: [Double], from: Int = 0) -> [EnergyVAD.Update] {
        levels.enumerated().map { vad.process(levelDBFS: $1, frameStart: t(from + 20 * $0)) }
    }

    @Test func thresholdIsFloorPlusSensitivityMarginNeverBelowTheAbsoluteFloor() {
        let vad = EnergyVAD(configuration: .init(sensitivity: 0.6, absoluteThresholdDBFS: -40, initialNoiseFloorDBFS: -30))
        #expect(vad.thresholdDBFS == -30 + 8)
        // A caller already talking at pickup does not lift the floor above -35 dBFS.
        var talking = EnergyVAD(configuration: .init(startFrames: 2))
        _ = talking.process(levelDBFS: -15, frameStart: t(0))
        #expect(talking.noiseFloorDBFS == -35)
        #expect(talking.process(levelDBFS: -15, frameStart: t(20)).transition == .speechStarted(onset: t(0)))
        let quietLine = EnergyVAD(configuration: .init(sensitivity: 0.6, absoluteThresholdDBFS: -40, initialNoiseFloorDBFS: -70))
        #expect(quietLine.thresholdDBFS == -40)
    }

    @Test func debounceNeedsTheConfiguredNumberOfConsecutiveFrames() {
        var vad = EnergyVAD(configuration: .init(startFrames: 3))
        let updates = self.feed(&vad, [-20, -20, -20])
        #expect(updates.map(\.transition) == [nil, nil, .speechStarted(onset: t(0))])
    }

    @Test func aLowFrameResetsTheDebounce() {
        var vad = EnergyVAD(configuration: .init(startFrames: 3))
        let updates = self.feed(&vad, [-20, -20, -70, -20, -20, -20])
        #expect(updates.compactMap(\.transition) == [.speechStarted(onset: t(60))])
    }

    @Test func speechEndsAfterTheHangover() {
        var vad = EnergyVAD(configuration: .init(startFrames: 2, hangover: .milliseconds(100)))
        var updates = self.feed(&vad, [-20, -20, -20])  // speech from 0, last voiced frame ends at 60
        #expect(vad.isSpeaking)
        updates = self.feed(&vad, [-70, -70, -70, -70, -70], from: 60)
        // Frames ending at 80, 100, 120, 140 are within 100 ms of the last voiced end; the one ending at 160 is not.
        #expect(updates.map(\.transition) == [nil, nil, nil, nil, .speechEnded(at: t(160))])
        #expect(!vad.isSpeaking)
    }

    @Test func theNoiseFloorAdaptsOnlyOutsideSpeech() {
        var vad = EnergyVAD(configuration: .init(noiseFloorWindow: .seconds(2), initialNoiseFloorDBFS: -60))
        // A quiet first frame, then two seconds of a -45 dBFS hum: the floor moves most of the way (1 − e^-1 ≈ 63 %).
        _ = self.feed(&vad, [-60] + Array(repeating: -45, count: 100))
        #expect(vad.noiseFloorDBFS > -51 && vad.noiseFloorDBFS < -49)
        let before = vad.noiseFloorDBFS
        // Loud speech does not drag the floor up.
        _ = self.feed(&vad, Array(repeating: -15, count: 50), from: 2020)
        #expect(vad.isSpeaking)
        #expect(vad.noiseFloorDBFS == before)
    }

    @Test func aNoiseStepCannotHoldTheDetectorInSpeechForever() {
        var vad = EnergyVAD(configuration: .init(maxSpeechDuration: .seconds(15)))
        _ = self.feed(&vad, Array(repeating: -55, count: 50))
        // The line noise jumps to -30 dBFS and stays there: it looks like speech…
        let updates = self.feed(&vad, Array(repeating: -30, count: 1000), from: 1000)
        // …until 15 s of "speech", when the floor is re-anchored on the noise and speech ends for good.
        #expect(updates.compactMap(\.transition) == [.speechStarted(onset: t(1000)), .speechEnded(at: t(16_000))])
        #expect(!vad.isSpeaking)
        #expect(vad.noiseFloorDBFS == -30)
        // A caller over the new noise is found again.
        let speech = self.feed(&vad, Array(repeating: -15, count: 3), from: 21_000)
        #expect(speech.compactMap(\.transition) == [.speechStarted(onset: t(21_000))])
    }

    @Test func aNoisyLineFromTheStartIsNotSpeech() {
        var vad = EnergyVAD(configuration: .init(sensitivity: 0.6))
        // Steady -30 dBFS noise, above the absolute floor: the first frame sets the floor, so none of it is voiced.
        let updates = self.feed(&vad, (0..<200).map { -30 + Double($0 % 3) })
        #expect(!updates.contains { $0.voiced })
        #expect(!vad.isSpeaking)
        // Speech 10 dB over the noise is still found.
        let speech = self.feed(&vad, Array(repeating: -18, count: 5), from: 4000)
        #expect(speech.compactMap(\.transition) == [.speechStarted(onset: t(4000))])
    }
}

import Testing

@testable import CallBridgeCore

@Suite struct TwilioPlayoutTests {
    @Test func marksEchoWhenPlayoutReachesThem() {
        var playout = TwilioPlayout()
        #expect(playout.mark("early") == ["early"])  // nothing buffered: echoed at once
        playout.media(ramp(160))
        #expect(playout.mark("m1") == [])
        playout.media(ramp(160, from: 160))
        #expect(playout.mark("m2") == [])
        let first = playout.play(100)
        #expect(first.audio == ramp(100))
        #expect(first.echoes == [])
        let second = playout.play(160)
        #expect(second.echoes == ["m1"])
        #expect(second.audioBytes == 160)
        let third = playout.play(160)
        #expect(third.echoes == ["m2"])
        #expect(third.audioBytes == 60)
        #expect(third.audio.suffix(100) == ArraySlice(repeating: 0xFF, count: 100))
    }

    @Test func clearDropsAudioAndEchoesPendingMarks() {
        var playout = TwilioPlayout()
        playout.media(ramp(480))
        _ = playout.mark("a")
        _ = playout.mark("b")
        _ = playout.play(160)
        let cleared = playout.clear()
        #expect(cleared.echoes == ["a", "b"])
        #expect(cleared.droppedBytes == 320)
        #expect(playout.play(160).audioBytes == 0)
        #expect(playout.playedBytes == 160)
    }
}

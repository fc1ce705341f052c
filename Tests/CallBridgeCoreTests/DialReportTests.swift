import Testing

@testable import CallBridgeCore

@Suite struct DialReportTests {
    func tone(_ frames: Int) -> [UInt8] {
        // A loud square-ish wave: well above -40 dBFS.
        (0..<(frames * 160)).map { MuLaw.encode($0 % 16 < 8 ? 8000 : -8000) }
    }

    func silence(_ frames: Int) -> [UInt8] { Array(repeating: 0xFF, count: frames * 160) }

    @Test func utteranceEndsNeedTheMinimumSilence() {
        let audio = self.silence(5) + self.tone(10) + self.silence(5) + self.tone(3) + self.silence(20)
        // 100 ms of silence does not end the utterance; 400 ms does.
        #expect(DialReport.utteranceEnds(in: audio) == [.milliseconds(23 * 20)])
        #expect(DialReport.firstVoicedFrame(in: audio) == 5)
        #expect(DialReport.firstVoicedFrame(in: audio, from: 16) == 20)
    }

    @Test func reportMeasuresLatencyJitterAndBargeIn() {
        var trace = DialTrace()
        trace.callerUtteranceEnds = [.milliseconds(1000), .milliseconds(3000)]
        // Voiced until 1000 ms (frames 0…49), with a pause at 400–500 ms that must not count.
        trace.callerVoicedFrames = (0..<150).map { $0 < 50 && !(20..<25).contains($0) }
        // A reply at 1500 ms: a burst of three (the lead), then 20 ms steps with one 2 ms-late arrival.
        let times = [1500, 1500, 1501, 1520, 1540, 1562, 1580, 1600]
        trace.mediaArrivals = times.map { .init(at: .milliseconds($0), bytes: 160) }
        trace.bargeInOnset = .milliseconds(1590)
        trace.clears = [.milliseconds(1650)]
        trace.playedAfterBargeInBytes = 320
        // One stale frame after the clear, before the barge-in utterance ends.
        trace.mediaArrivals.append(.init(at: .milliseconds(1710), bytes: 160))
        let report = DialReport(trace: trace)
        #expect(report.mediaMessages == 9)
        #expect(report.frameSizes == [160: 9])
        #expect(report.firstAudioAfterSpeechMs == 500)
        // Intervals after the lead burst: 1501→1520 (1), 1520→1540 (0), 1540→1562 (2), 1562→1580 (2), 1580→1600 (0);
        // 1600→1710 starts a new run.
        #expect(report.intervalsMeasured == 5)
        #expect(report.jitterMaxMs == 2)
        #expect(report.bargeInToClearMs == 60)
        #expect(report.heardAfterBargeInMs == 60)  // 320 played + 160 stale bytes = 480 bytes = 60 ms
        #expect(report.text.contains("barge-in → clear: 60.0 ms"))
    }
}

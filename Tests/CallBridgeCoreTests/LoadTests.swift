import Foundation
import Histogram
import Testing

@testable import CallBridgeCore

/// The pure pieces of `callbridge load` and `callbridge load-agent`, in virtual time.
@Suite struct LoadTests {
    static func ms(_ value: Int) -> Duration { .milliseconds(value) }

    // MARK: Pacing jitter

    @Test func jitterSkipsEachRunsLeadBurstAndMeasuresTheRest() {
        var jitter = PacingJitter()
        // A reply: the pacer's lead (3 frames at once), then 20 ms steps, one 5 ms late and the next 5 ms early.
        let arrivals = [1000, 1000, 1001, 1021, 1041, 1066, 1081, 1101]
        let results = arrivals.map { jitter.arrival(at: Self.ms($0)) }
        #expect(results.map(\.startsRun) == [true, false, false, false, false, false, false, false])
        #expect(results.map(\.deviation) == [nil, nil, nil, Self.ms(0), Self.ms(0), Self.ms(5), Self.ms(5), Self.ms(0)])
        // More than 100 ms later: a new run, whose lead is skipped again.
        #expect(jitter.arrival(at: Self.ms(1300)) == .init(startsRun: true, deviation: nil))
        #expect(jitter.arrival(at: Self.ms(1300)).deviation == nil)
        #expect(jitter.arrival(at: Self.ms(1301)).deviation == nil)
        #expect(jitter.arrival(at: Self.ms(1330)).deviation == Self.ms(9))
    }

    @Test func dialReportUsesTheSameDefinition() {
        var trace = DialTrace()
        let times = [0, 0, 1, 21, 45, 61, 400, 400, 401, 418]
        trace.mediaArrivals = times.map { .init(at: Self.ms($0), bytes: 160) }
        let report = DialReport(trace: trace)
        var jitter = PacingJitter()
        let expected = times.compactMap { jitter.arrival(at: Self.ms($0)).deviation?.millisecondsValue }.sorted()
        #expect(expected == [0, 3, 4, 4])
        #expect(report.intervalsMeasured == 4)
        #expect(report.jitterMaxMs == 4)
        #expect(report.jitterP50Ms == expected[2])
    }

    // MARK: Frames built once, fields spliced per call

    @Test(arguments: [(0, 1, 0), (9, 10, 180), (123_456, 99_999, 1_999_980)])
    func mediaTemplateWritesExactlyWhatTheSimulatorCodecWrites(sequence: Int, chunk: Int, timestamp: Int) {
        let audio = ramp(160 * 3 + 40)  // a last partial frame, padded with silence
        let template = TwilioMediaTemplate(audio: audio)
        #expect(template.frameCount == 4)
        let sid = "MZ\"odd\\sid"
        for frame in 0..<4 {
            var bytes: [UInt8] = []
            template.writeMedia(
                frame: frame, sequence: sequence, chunk: chunk, timestampMs: timestamp,
                quotedStreamSid: Array(JSONText.quoted(sid).utf8), into: &bytes
            )
            var payload = Array(audio[(frame * 160)..<min(audio.count, (frame + 1) * 160)])
            payload += repeatElement(MuLaw.silence, count: 160 - payload.count)
            let expected = TwilioSimulatorCodec.media(payload, sequence: sequence, chunk: chunk, timestampMs: timestamp, streamSid: sid)
            #expect(String(decoding: bytes, as: UTF8.self) == expected)
            #expect(bytes.count <= template.maximumMediaByteCount(quotedStreamSidCount: JSONText.quoted(sid).utf8.count))
        }
        var mark: [UInt8] = []
        TwilioMediaTemplate.writeMark(
            quotedName: Array(JSONText.quoted("r1:\"2\"").utf8), sequence: sequence,
            quotedStreamSid: Array(JSONText.quoted(sid).utf8), into: &mark
        )
        #expect(String(decoding: mark, as: UTF8.self) == TwilioSimulatorCodec.mark("r1:\"2\"", sequence: sequence, streamSid: sid))
    }

    // MARK: Reading what the bridge sends

    func summary(_ text: String) -> TwilioOutboundSummary? {
        var text = text
        return text.withUTF8 { TwilioSimulatorCodec.summarizeOutbound($0) }
    }

    @Test func outboundSummariesAgreeWithTheCodableDecoder() {
        for count in [0, 1, 2, 3, 160, 161, 800] {
            let media = TwilioCodec.encode(.media(ramp(count)), quotedStreamSid: "\"MZ1\"")
            #expect(self.summary(media) == .media(byteCount: count))
            // With whitespace the scanner declines and Codable answers the same.
            #expect(self.summary(media.replacingOccurrences(of: ",", with: ", ")) == .media(byteCount: count))
        }
        #expect(self.summary(TwilioCodec.encode(.mark(name: "r3:7"), quotedStreamSid: "\"MZ1\"")) == .mark(name: "r3:7"))
        #expect(self.summary(TwilioCodec.encode(.mark(name: "a\"b"), quotedStreamSid: "\"MZ1\"")) == .mark(name: "a\"b"))
        #expect(self.summary(TwilioCodec.encode(.clear, quotedStreamSid: "\"MZ1\"")) == .clear)
        #expect(self.summary(#"{"event":"media","media":{"payload":"not base64!"}}"#) == nil)
        #expect(self.summary(#"{"event":"dance"}"#) == nil)
        #expect(self.summary("{not json") == nil)
    }

    // MARK: Playout by byte counts

    @Test func playoutQueueEchoesMarksInOrderAndKeepsFewEntries() {
        var queue = TwilioPlayoutQueue()
        var echoed: [String] = []
        #expect(queue.mark("early") == "early")
        // 300 frames with a mark each, played one frame per tick.
        for i in 0..<300 {
            queue.media(byteCount: 160)
            #expect(queue.mark("m\(i)") == nil)
        }
        for _ in 0..<200 { _ = queue.play(160) { echoed.append($0) } }
        #expect(echoed == (0..<200).map { "m\($0)" })
        #expect(queue.pendingMarkCount == 100)
        var cleared: [String] = []
        #expect(queue.clear { cleared.append($0) } == 100 * 160)
        #expect(cleared == (200..<300).map { "m\($0)" })
        #expect(queue.bufferedBytes == 0 && queue.pendingMarkCount == 0)
        #expect(queue.play(160) { _ in Issue.record("nothing to echo") } == 0)
    }

    // MARK: The caller's script

    static func loud(_ frames: Int) -> [UInt8] { (0..<(frames * 160)).map { MuLaw.encode($0 % 20 < 10 ? 9000 : -9000) } }
    static func quiet(_ frames: Int) -> [UInt8] { Array(repeating: MuLaw.silence, count: frames * 160) }

    /// 100 ms quiet, 400 ms speech; barge-in (200 ms quiet, 300 ms speech) at 1.5 s; a 3 s cycle.
    static let script = LoadScript(
        callerAudio: quiet(5) + loud(20),
        bargeInAudio: quiet(10) + loud(15),
        bargeInAt: .milliseconds(1500),
        cycle: .seconds(3)
    )

    @Test func scriptRepeatsItsCycleAndKnowsWhenTheCallerLastSpoke() {
        let script = Self.script
        #expect(script.cycleFrames == 150)
        #expect(script.bargeInOnsetFrame == 75 + 10)
        #expect(script.voiced.enumerated().filter(\.element).map(\.offset) == Array(5..<25) + Array(85..<100))
        #expect(script.lastVoicedEnd(before: Self.ms(100)) == nil)
        #expect(script.lastVoicedEnd(before: Self.ms(119)) == nil)  // frame 5 counts once it has left, at 120 ms
        #expect(script.lastVoicedEnd(before: Self.ms(120)) == Self.ms(120))
        #expect(script.lastVoicedEnd(before: Self.ms(1000)) == Self.ms(500))
        #expect(script.lastVoicedEnd(before: Self.ms(2500)) == Self.ms(2000))
        // The next cycle: before its caller speaks, the last voice is the previous cycle's barge-in.
        #expect(script.lastVoicedEnd(before: Self.ms(3050)) == Self.ms(2000))
        #expect(script.lastVoicedEnd(before: Self.ms(3700)) == Self.ms(3500))
        let cycle = LoadScript.defaultCycle(callerAudio: Self.quiet(5) + Self.loud(20), bargeInAudio: Self.loud(15), bargeInAt: .milliseconds(1500))
        #expect(cycle == .milliseconds(1500 + 300 + 300 + 2000))
        #expect(LoadScript.defaultCycle(callerAudio: Self.loud(50), bargeInAudio: nil, bargeInAt: nil) == .milliseconds(1000 + 1000 + 2000))
    }

    // MARK: One call, in virtual time

    /// A call whose bridge answers 500 ms after the caller stops (pacing 20 ms, with a 3-frame lead and a mark after
    /// each frame), and clears 40 ms after the barge-in onset.
    @Test func aCallMeasuresJitterFirstAudioAndBargeInAndEchoesMarks() {
        let script = Self.script
        var call = LoadCall()
        var stats = LoadStats()
        var echoes: [String] = []
        var sentFrames: [Int] = []
        var mark = 0
        func bridgeSends(_ message: TwilioOutboundSummary, at ms: Int) {
            call.received(message, at: Self.ms(ms), script: script, stats: &stats) { echoes.append($0) }
        }
        // Frame k leaves at 20(k + 1) ms; the bridge's frames arrive between ticks.
        for k in 0..<150 {
            let now = 20 * (k + 1)
            sentFrames.append(call.tick(script: script, stats: &stats) { echoes.append($0) })
            // The reply: 1000 ms (500 ms after the caller's last voiced frame ended) until the barge-in's clear.
            if now >= 1000 && now < 1760 {
                let burst = now == 1000 ? 3 : 1
                for _ in 0..<burst {
                    bridgeSends(.media(byteCount: 160), at: now + 5 + (k == 60 ? 3 : 0))
                    mark += 1
                    bridgeSends(.mark(name: "m\(mark)"), at: now + 5)
                }
            }
            if now == 1760 { bridgeSends(.clear, at: 1700 + 40 + 5) }  // onset at frame 85 = 1700 ms
        }
        #expect(sentFrames == Array(0..<150))
        #expect(stats.framesSent == 150)
        #expect(stats.firstAudio.count == 1)
        #expect(stats.firstAudio.milliseconds(atPercentile: 50) == 505)
        #expect(stats.bargeIn.count == 1)
        #expect(stats.bargeIn.milliseconds(atPercentile: 50) == 45)
        // 40 frames, 37 after the 3-frame lead; one 3 ms late, the next 3 ms early.
        #expect(stats.mediaReceived == 40)
        #expect(stats.jitter.count == 37)
        #expect(stats.jitter.maxMilliseconds == 3)
        #expect(stats.jitter.milliseconds(atPercentile: 50) == 0)
        // Every mark came back: played ones as playout reached them, the rest on the clear.
        #expect(stats.marksReceived == mark)
        #expect(echoes == (1...mark).map { "m\($0)" })
        #expect(stats.clearsReceived == 1)
        // The next cycle's barge-in gets no clear: counted when the cycle after it comes, or at the end.
        for _ in 150..<(150 + 90) { _ = call.tick(script: script, stats: &stats) { _ in } }
        call.finish(at: Self.ms(240 * 20), stats: &stats)
        #expect(stats.bargeInsWithoutClear == 0)  // 100 ms after the onset: too soon to say
        // A call that never hears a clear: the first barge-in counts when the next one comes, the last at the end.
        var waiting = LoadCall()
        var waitingStats = LoadStats()
        for _ in 0..<(150 + 86) { _ = waiting.tick(script: script, stats: &waitingStats) { _ in } }
        #expect(waitingStats.bargeInsWithoutClear == 1)
        waiting.finish(at: Self.ms(4700 + 1000), stats: &waitingStats)
        #expect(waitingStats.bargeInsWithoutClear == 2)
    }

    // MARK: Histograms and the report

    @Test func loopStatsMergeAndTheReportReadsThem() {
        var a = LoadStats()
        var b = LoadStats()
        for ms in 1...99 { a.jitter.record(.microseconds(ms * 10)) }
        b.jitter.record(.milliseconds(250))
        a.firstAudio.record(.milliseconds(500))
        b.firstAudio.record(.milliseconds(700))
        a.callsConnected = 2
        a.callsCompleted = 2
        b.callsConnected = 1
        b.callsDisconnected = 1
        b.recordFailure("disconnected: connection dropped")
        a.recordFailure("disconnected: connection dropped")
        a.tickLateness.record(.microseconds(300))
        b.tickLateness.record(.milliseconds(12))
        var merged = a
        merged.merge(b)
        #expect(merged.jitter.count == 100)
        #expect(merged.jitter.maxMilliseconds == 250)
        #expect(merged.jitter.milliseconds(atPercentile: 50) == 0.5)
        #expect(merged.jitter.milliseconds(atPercentile: 99) == 0.99)
        #expect(merged.failures == ["disconnected: connection dropped": 2])
        let report = LoadReport(callsRequested: 4, rampSeconds: 1, durationSeconds: 10, elapsedSeconds: 11.5, stats: merged)
        #expect(report.failedCalls == 1)
        #expect(report.bargeIn == .init(LatencyHistogram()))
        let text = report.text
        #expect(text.contains("calls: 4 requested, 3 connected, 2 completed, 0 failed to connect, 1 disconnected by the bridge"))
        #expect(text.contains("pacing jitter |interval − 20 ms| (100): p50 0.50 ms, p90 0.90 ms, p99 0.99 ms"))
        #expect(text.contains("max 250.00 ms"))
        #expect(text.contains("barge-in (caller onset → clear): none measured"))
        let json = try! JSONSerialization.jsonObject(with: Data(report.json.utf8)) as! [String: Any]
        #expect((json["calls"] as! [String: Int])["disconnected"] == 1)
        #expect((json["jitter_ms"] as! [String: Any])["p99"] as? Double == 0.99)
        #expect((json["barge_in_ms"] as! [String: Any])["p50"] is NSNull)
        #expect((json["first_audio_ms"] as! [String: Any])["max"] as? Double == 700)
        #expect(json["errors"] as? Int == 1)
        #expect(json["elapsed_s"] as? Double == 11.5)
        #expect((json["generator_tick_lateness_ms"] as! [String: Any])["max"] as? Double == 12)
        #expect(text.contains("generator tick lateness (its own delays, part of the jitter above) (2): p50 0.30 ms"))
        #expect(text.contains("generator scheduling: normal\n"))
        #expect(json["generator_realtime_priority"] is NSNull)
        // How the generator's loops ran, in both forms.
        var realtime = report
        realtime.scheduling = .realtime(priority: 10)
        #expect(realtime.text.contains("generator scheduling: real-time, SCHED_RR priority 10\n"))
        let realtimeJSON = try! JSONSerialization.jsonObject(with: Data(realtime.json.utf8)) as! [String: Any]
        #expect(realtimeJSON["generator_realtime_priority"] as? Int == 10)
        var refused = report
        refused.scheduling = .refused(priority: 10, reason: "Operation not permitted")
        #expect(refused.text.contains("generator scheduling: normal (SCHED_RR priority 10 refused: Operation not permitted)"))
        let refusedJSON = try! JSONSerialization.jsonObject(with: Data(refused.json.utf8)) as! [String: Any]
        #expect(refusedJSON["generator_realtime_priority"] is NSNull)
    }

    @Test func latenciesAreKeptToThreeSignificantDigits() {
        var histogram = LatencyHistogram()
        histogram.record(.microseconds(1234))
        histogram.record(.seconds(3600))  // beyond the range: kept at the top
        histogram.record(.zero - .milliseconds(1))  // never negative
        #expect(histogram.count == 3)
        #expect(histogram.milliseconds(atPercentile: 0) == 0)
        #expect(histogram.milliseconds(atPercentile: 50) == 1.234)
        #expect(histogram.maxMilliseconds == 600_000)
    }

    // MARK: TwiML as Twilio reads it

    @Test func theTwiMLStreamAndItsParametersReadBack() {
        let xml = TwiML.connectStream(
            url: "wss://bridge.example.com/twilio/media",
            parameters: [("callbridge_token", "abc.def"), ("From", "+1415 & <co>"), ("quote", "say \"hi\"")]
        )
        let parsed = TwiML.parseStream(xml)
        #expect(parsed?.url == "wss://bridge.example.com/twilio/media")
        #expect(parsed?.parameters == ["callbridge_token": "abc.def", "From": "+1415 & <co>", "quote": "say \"hi\""])
        #expect(TwiML.parseStream(TwiML.reject()) == nil)
    }
}

/// The load double's core: the echo agent with the byte-scanner path for caller audio and service-like bursts.
@Suite struct LoadAgentCoreTests {
    let tests = EchoAgentTests()

    @Test func theByteScannerPathAnswersExactlyAsTheCodablePath() {
        var scanned = self.tests.agent()
        var decoded = self.tests.agent()
        let audio = self.tests.quiet(10) + self.tests.loud(20) + self.tests.quiet(30)
        var fromBytes: [String] = []
        var fromText: [String] = []
        for frame in 0..<60 {
            var event = self.tests.append(Array(audio[(frame * 160)..<((frame + 1) * 160)]))
            fromBytes += event.withUTF8 { scanned.received(bytes: $0, now: t(frame * 20)) }
            fromText += decoded.received(event, now: t(frame * 20))
        }
        #expect(!fromBytes.isEmpty)
        #expect(fromBytes == fromText)
        #expect(scanned.lastReceivedType == "input_audio_buffer.append")
        // Anything else falls back to Codable: a cancel of the reply that is streaming.
        var cancel = #"{"type":"response.cancel","event_id":"c1"}"#
        let viaBytes = cancel.withUTF8 { scanned.received(bytes: $0, now: t(1300)) }
        #expect(viaBytes == decoded.received(cancel, now: t(1300)))
        #expect(self.tests.types(viaBytes).last == "response.done")
        #expect(scanned.lastReceivedType == "response.cancel")
    }

    @Test(arguments: [RealtimeDialect.beta, .ga])
    func anAudioDeltaIsWrittenExactlyAsTheGeneralEventWriterWritesIt(dialect: RealtimeDialect) {
        var direct = EchoAgent(dialect: dialect)
        var general = EchoAgent(dialect: dialect)
        let reply = EchoAgent.Reply(responseID: "resp_echo7", itemID: "item_echo8", audio: self.tests.loud(3), nextBurst: t(0))
        for range in [0..<97, 97..<98, 98..<100, 100..<480] {
            let chunk = reply.audio[range]
            let expected = general.event(
                dialect == .ga ? "response.output_audio.delta" : "response.audio.delta",
                [
                    "response_id": JSONText.quoted(reply.responseID), "item_id": JSONText.quoted(reply.itemID),
                    "output_index": "0", "content_index": "0", "delta": "\"" + Base64.encode(chunk) + "\"",
                ]
            )
            #expect(direct.audioDelta(chunk, of: reply) == expected)
        }
    }

    @Test func invalidBase64OnTheByteScannerPathAppendsNothingAndAnswersAsTheCodablePath() {
        var scanned = self.tests.agent()
        var decoded = self.tests.agent()
        var bad = #"{"type":"input_audio_buffer.append","audio":"not*base64"}"#
        let viaBytes = bad.withUTF8 { scanned.received(bytes: $0, now: t(20)) }
        #expect(viaBytes == decoded.received(bad, now: t(20)))
        #expect(self.tests.types(viaBytes) == ["error"])
        #expect(scanned.audio.isEmpty)
    }

    @Test func serviceLikeRepliesFrontLoadASecondThenBurstWithLargeDeltas() {
        var agent = EchoAgent(
            dialect: .ga,
            configuration: .init(burstInterval: .milliseconds(100), speedFactor: 4, deltaBytes: 800...3200, initialBurst: .seconds(1))
        )
        _ = agent.connected()
        _ = agent.received(RealtimeCodec.encode(.sessionUpdate(.init(), eventID: "s1"), dialect: .ga), now: t(0))
        // 3 s of speech then silence: a reply of about 3.4 s.
        let audio = self.tests.loud(150) + self.tests.quiet(30)
        var first: [String] = []
        for frame in 0..<180 {
            first += agent.received(self.tests.append(Array(audio[(frame * 160)..<((frame + 1) * 160)])), now: t(frame * 20))
        }
        func deltaBytes(_ events: [String]) -> [Int] {
            self.tests.parsed(events).filter { $0["type"] as? String == "response.output_audio.delta" }
                .map { Base64.decode($0["delta"] as! String)!.count }
        }
        let start = deltaBytes(first)
        // The first burst: 1 s up front plus one regular burst of 400 ms.
        #expect(start.reduce(0, +) == 8000 + 3200)
        #expect(start.dropLast().allSatisfy { (800...3200).contains($0) })
        guard let wake = agent.nextWakeup else {
            Issue.record("the reply should still be streaming")
            return
        }
        let next = deltaBytes(agent.tick(now: wake))
        #expect(next.reduce(0, +) == 3200)
    }
}

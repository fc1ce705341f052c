import Foundation
import Testing

@testable import CallBridgeCore

@Suite struct EchoAgentTests {
    func parsed(_ events: [String]) -> [[String: Any]] {
        events.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    func types(_ events: [String]) -> [String] { self.parsed(events).compactMap { $0["type"] as? String } }

    func append(_ bytes: [UInt8]) -> String {
        RealtimeCodec.encode(.inputAudioAppend(base64: Base64.encode(bytes)), dialect: .ga)
    }

    func loud(_ frames: Int) -> [UInt8] { (0..<(frames * 160)).map { MuLaw.encode($0 % 20 < 10 ? 9000 : -9000) } }
    func quiet(_ frames: Int) -> [UInt8] { Array(repeating: 0xFF, count: frames * 160) }

    /// A configured GA agent.
    func agent(_ dialect: RealtimeDialect = .ga) -> EchoAgent {
        var agent = EchoAgent(dialect: dialect)
        #expect(self.types(agent.connected()) == ["session.created"])
        let update = RealtimeCodec.encode(.sessionUpdate(.init(), eventID: "s1"), dialect: dialect)
        #expect(self.types(agent.received(update, now: t(0))) == ["session.updated"])
        return agent
    }

    @Test func detectsAnUtteranceAndEchoesItInBurstsFasterThanRealTime() {
        var agent = self.agent()
        var out: [String] = []
        // 20 ms appends: 200 ms quiet, 400 ms speech, 600 ms quiet.
        let audio = self.quiet(10) + self.loud(20) + self.quiet(30)
        for frame in 0..<60 {
            out += agent.received(self.append(Array(audio[(frame * 160)..<((frame + 1) * 160)])), now: t(frame * 20))
        }
        let types = self.types(out)
        #expect(
            Array(types.prefix(10)) == [
                "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                "conversation.item.created", "conversation.item.input_audio_transcription.completed", "response.created",
                "response.output_item.added", "conversation.item.created", "response.content_part.added",
                "response.output_audio.delta",
            ]
        )
        let started = self.parsed(out).first { $0["type"] as? String == "input_audio_buffer.speech_started" }
        #expect(started?["audio_start_ms"] as? Int == 200)
        // Stream the rest in virtual time: 40 ms bursts of 160 ms of audio.
        var now = 60 * 20
        var guardrail = 0
        while let wake = agent.nextWakeup, guardrail < 100 {
            now = max(now, wake.offset.wholeMilliseconds)
            out += agent.tick(now: t(now))
            guardrail += 1
        }
        let events = self.parsed(out)
        let audioOut = events.filter { $0["type"] as? String == "response.output_audio.delta" }
            .flatMap { Base64.decode($0["delta"] as! String)! }
        // The reply is the utterance with 300 ms of prefix padding (only 200 ms exist) and 100 ms of trailing audio.
        #expect(audioOut == Array(audio[0..<(30 * 160 + 800)]))
        #expect(events.last?["type"] as? String == "response.done")
        #expect((events.last?["response"] as? [String: Any])?["status"] as? String == "completed")
        // Delta sizes are irregular, not frame-aligned.
        let sizes = events.filter { $0["type"] as? String == "response.output_audio.delta" }
            .map { Base64.decode($0["delta"] as! String)!.count }
        #expect(sizes.contains { $0 % 160 != 0 })
        #expect(guardrail < 100)
    }

    func speakingAgent(_ dialect: RealtimeDialect = .ga) -> (EchoAgent, String, String) {
        var agent = self.agent(dialect)
        var out = agent.received(self.append(self.loud(50)), now: t(0))
        out += agent.received(self.append(self.quiet(30)), now: t(0))
        let created = self.parsed(out).first { $0["type"] as? String == "response.created" }
        let responseID = (created?["response"] as? [String: Any])?["id"] as? String ?? "?"
        let added = self.parsed(out).first { $0["type"] as? String == "response.output_item.added" }
        let itemID = (added?["item"] as? [String: Any])?["id"] as? String ?? "?"
        return (agent, responseID, itemID)
    }

    @Test func cancelStopsTheReplyAndASecondCancelIsNotActive() {
        var (agent, responseID, _) = self.speakingAgent()
        #expect(agent.nextWakeup != nil)
        let cancel = RealtimeCodec.encode(.responseCancel(responseID: responseID, eventID: "c1"), dialect: .ga)
        let done = self.parsed(agent.received(cancel, now: t(10)))
        #expect(done.map { $0["type"] as? String } == ["response.done"])
        #expect((done.first?["response"] as? [String: Any])?["status"] as? String == "cancelled")
        #expect(agent.nextWakeup == nil)
        let again = self.parsed(agent.received(cancel, now: t(11)))
        let error = again.first?["error"] as? [String: Any]
        #expect(error?["code"] as? String == "response_cancel_not_active")
        #expect(error?["event_id"] as? String == "c1")
    }

    @Test func callerSpeechInterruptsTheReplyWhenInterruptResponseIsOn() {
        var (agent, _, _) = self.speakingAgent()
        let out = agent.received(self.append(self.loud(5)), now: t(100))
        #expect(self.types(out) == ["input_audio_buffer.speech_started", "response.done"])
        let done = self.parsed(out).last?["response"] as? [String: Any]
        #expect((done?["status_details"] as? [String: Any])?["reason"] as? String == "turn_detected")
    }

    @Test func truncateIsCheckedAgainstTheAudioSent() {
        var (agent, _, itemID) = self.speakingAgent()
        // The first burst (at response start) sent 160 ms of audio.
        let ok = self.parsed(agent.received(RealtimeCodec.encode(.itemTruncate(itemID: itemID, audioEndMs: 100, eventID: "t1"), dialect: .ga), now: t(5)))
        #expect(ok.first?["type"] as? String == "conversation.item.truncated")
        #expect(ok.first?["audio_end_ms"] as? Int == 100)
        let tooLong = self.parsed(agent.received(RealtimeCodec.encode(.itemTruncate(itemID: itemID, audioEndMs: 5000, eventID: "t2"), dialect: .ga), now: t(6)))
        #expect((tooLong.first?["error"] as? [String: Any])?["code"] as? String == "invalid_value")
        let unknown = self.parsed(agent.received(RealtimeCodec.encode(.itemTruncate(itemID: "nope", audioEndMs: 0, eventID: "t3"), dialect: .ga), now: t(7)))
        #expect((unknown.first?["error"] as? [String: Any])?["code"] as? String == "item_not_found")
    }

    @Test func betaConnectionsGetBetaEventNames() {
        var (agent, _, _) = self.speakingAgent(.beta)
        var out: [String] = []
        while let wake = agent.nextWakeup { out += agent.tick(now: wake) }
        let types = self.types(out)
        #expect(types.contains("response.audio.delta"))
        #expect(types.contains("response.audio.done"))
        #expect(!types.contains("response.output_audio.delta"))
    }

    @Test(arguments: [(RealtimeDialect.ga, RealtimeDialect.beta), (.beta, .ga)])
    func aSessionUpdateInTheOtherDialectIsRejected(connection: RealtimeDialect, sent: RealtimeDialect) {
        var agent = EchoAgent(dialect: connection)
        let out = self.parsed(agent.received(RealtimeCodec.encode(.sessionUpdate(.init(), eventID: "s1"), dialect: sent), now: t(0)))
        #expect(out.first?["type"] as? String == "error")
        // The error names the rejected event, so the bridge can tell a refused configuration apart.
        #expect((out.first?["error"] as? [String: Any])?["event_id"] as? String == "s1")
    }

    @Test func aSlowServerVADReportsSpeechLate() {
        var agent = EchoAgent(dialect: .ga, configuration: .init(vadDelay: .milliseconds(300)))
        _ = agent.received(RealtimeCodec.encode(.sessionUpdate(.init(), eventID: "s1"), dialect: .ga), now: t(0))
        // Speech from 200 ms; detected after three frames (260 ms); reported 300 ms of audio later (560 ms).
        let audio = self.quiet(10) + self.loud(40)
        var reportedAt: Int?
        for frame in 0..<50 where reportedAt == nil {
            let out = agent.received(self.append(Array(audio[(frame * 160)..<((frame + 1) * 160)])), now: t(frame * 20))
            if self.types(out).contains("input_audio_buffer.speech_started") { reportedAt = (frame + 1) * 20 }
        }
        #expect(reportedAt == 560)
    }

    @Test func aLongSilenceDoesNotGrowTheAgentsMemory() {
        var agent = self.agent()
        for second in 0..<60 {
            _ = agent.received(self.append(self.quiet(50)), now: t(second * 1000))
        }
        #expect(agent.audio.count <= 300 * 8)
        // Timestamps stay absolute after trimming.
        let out = self.parsed(agent.received(self.append(self.loud(5)), now: t(60_000)))
        #expect(out.first?["audio_start_ms"] as? Int == 60_000)
    }

    @Test func garbageIsAnErrorEventNotACrash() {
        var agent = self.agent()
        #expect(self.types(agent.received("not json", now: t(0))) == ["error"])
        #expect(self.types(agent.received("{\"type\":\"input_audio_buffer.append\",\"audio\":\"***\"}", now: t(0))) == ["error"])
    }
}

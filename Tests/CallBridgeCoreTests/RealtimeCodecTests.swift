import Foundation
import Testing

@testable import CallBridgeCore

@Suite struct RealtimeCodecTests {
    func object(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    // MARK: Server events, both spellings

    @Test(arguments: ["response.output_audio.delta", "response.audio.delta"])
    func audioDeltaInEitherSpelling(type: String) throws {
        let text = "{\"type\":\"\(type)\",\"event_id\":\"e1\",\"response_id\":\"resp_1\",\"item_id\":\"item_1\","
            + "\"output_index\":0,\"content_index\":0,\"delta\":\"/85OgAA=\"}"
        #expect(try RealtimeCodec.decode(text) == .audioDelta(responseID: "resp_1", itemID: "item_1", audio: [0xFF, 0xCE, 0x4E, 0x80, 0x00]))
        // The same event with spaces takes the Codable path and agrees.
        let spaced = text.replacingOccurrences(of: "\":", with: "\": ")
        #expect(RealtimeCodec.scanAudioDelta(spaced) == nil)
        #expect(try RealtimeCodec.decode(spaced) == .audioDelta(responseID: "resp_1", itemID: "item_1", audio: [0xFF, 0xCE, 0x4E, 0x80, 0x00]))
    }

    @Test(arguments: ["response.output_audio.done", "response.audio.done"])
    func audioDoneInEitherSpelling(type: String) throws {
        let text = "{\"type\":\"\(type)\",\"event_id\":\"e\",\"response_id\":\"r\",\"item_id\":\"i\",\"output_index\":0,\"content_index\":0}"
        #expect(try RealtimeCodec.decode(text) == .audioDone(responseID: "r", itemID: "i"))
    }

    @Test func lifecycleEvents() throws {
        #expect(try RealtimeCodec.decode("{\"type\":\"session.created\",\"event_id\":\"e\",\"session\":{\"id\":\"sess_1\",\"type\":\"realtime\"}}") == .sessionCreated(sessionID: "sess_1"))
        #expect(try RealtimeCodec.decode("{\"type\":\"session.updated\",\"event_id\":\"e\",\"session\":{}}") == .sessionUpdated)
        #expect(try RealtimeCodec.decode("{\"type\":\"input_audio_buffer.speech_started\",\"event_id\":\"e\",\"audio_start_ms\":1000,\"item_id\":\"u1\"}") == .speechStarted(audioStartMs: 1000, itemID: "u1"))
        #expect(try RealtimeCodec.decode("{\"type\":\"input_audio_buffer.speech_stopped\",\"event_id\":\"e\",\"audio_end_ms\":2000,\"item_id\":\"u1\"}") == .speechStopped(audioEndMs: 2000, itemID: "u1"))
        #expect(try RealtimeCodec.decode("{\"type\":\"response.created\",\"event_id\":\"e\",\"response\":{\"id\":\"r1\",\"object\":\"realtime.response\",\"status\":\"in_progress\",\"output\":[]}}") == .responseCreated(responseID: "r1"))
        #expect(try RealtimeCodec.decode("{\"type\":\"response.output_item.added\",\"event_id\":\"e\",\"response_id\":\"r1\",\"output_index\":0,\"item\":{\"id\":\"i1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}}") == .outputItemAdded(responseID: "r1", itemID: "i1"))
        #expect(try RealtimeCodec.decode("{\"type\":\"response.done\",\"event_id\":\"e\",\"response\":{\"id\":\"r1\",\"status\":\"cancelled\",\"status_details\":{\"type\":\"cancelled\",\"reason\":\"turn_detected\"}}}") == .responseDone(responseID: "r1", status: "cancelled"))
        #expect(try RealtimeCodec.decode("{\"type\":\"conversation.item.truncated\",\"event_id\":\"e\",\"item_id\":\"i1\",\"content_index\":0,\"audio_end_ms\":1500}") == .itemTruncated(itemID: "i1", audioEndMs: 1500))
    }

    @Test func errorEvent() throws {
        let text = "{\"type\":\"error\",\"event_id\":\"e\",\"error\":{\"type\":\"invalid_request_error\",\"code\":\"response_cancel_not_active\","
            + "\"message\":\"Cancellation failed: no active response found\",\"param\":null,\"event_id\":\"cb_cancel_1\"}}"
        let decoded = try RealtimeCodec.decode(text)
        guard case .error(let info) = decoded else {
            Issue.record("expected an error event, got \(decoded)")
            return
        }
        #expect(info.code == "response_cancel_not_active")
        #expect(info.eventID == "cb_cancel_1")
        #expect(info.isCancelNotActive)
        #expect(!RealtimeErrorInfo(code: "invalid_value", message: "audio_end_ms too long").isCancelNotActive)
        #expect(RealtimeErrorInfo(code: nil, message: "No active response to cancel").isCancelNotActive)
    }

    @Test func unknownEventsAreIgnoredNotErrors() throws {
        #expect(try RealtimeCodec.decode("{\"type\":\"rate_limits.updated\",\"event_id\":\"e\",\"rate_limits\":[]}") == .ignored(type: "rate_limits.updated"))
        #expect(try RealtimeCodec.decode("{\"type\":\"some.future.event\",\"whatever\":{\"x\":[1,2]}}") == .ignored(type: "some.future.event"))
        #expect(try RealtimeCodec.decode("{\"type\":\"response.output_audio_transcript.delta\",\"response_id\":\"r\",\"item_id\":\"i\",\"delta\":\"Hello\"}") == .ignored(type: "response.output_audio_transcript.delta"))
    }

    /// Events the bridge ignores are known by their top-level type without a JSONDecoder, nested `type` keys or not;
    /// every type the bridge acts on still goes through the full decoder.
    @Test func ignoredEventsTakeTheScannerAndHandledOnesTheDecoder() throws {
        let part = "{\"type\":\"response.content_part.added\",\"event_id\":\"e\",\"part\":{\"type\":\"audio\",\"transcript\":\"\"}}"
        #expect(RealtimeCodec.scanIgnored(part) == .ignored(type: "response.content_part.added"))
        #expect(try RealtimeCodec.decode(part) == .ignored(type: "response.content_part.added"))
        let transcript = "{\"type\":\"response.output_audio_transcript.delta\",\"response_id\":\"r\",\"item_id\":\"i\",\"delta\":\"Hello\"}"
        #expect(RealtimeCodec.scanIgnored(transcript) == .ignored(type: "response.output_audio_transcript.delta"))
        // A handled event with a nested `type`: the scanner leaves it to the decoder.
        let added = "{\"type\":\"response.output_item.added\",\"response_id\":\"r\",\"item\":{\"id\":\"i\",\"type\":\"message\"}}"
        #expect(RealtimeCodec.scanIgnored(added) == nil)
        #expect(try RealtimeCodec.decode(added) == .outputItemAdded(responseID: "r", itemID: "i"))
        // No top-level type (only a nested one), a duplicated one, or an escape: the decoder decides.
        #expect(RealtimeCodec.scanIgnored("{\"item\":{\"type\":\"message\"}}") == nil)
        #expect(RealtimeCodec.scanIgnored("{\"type\":\"a.b\",\"type\":\"c.d\"}") == nil)
        #expect(RealtimeCodec.scanIgnored("{\"type\":\"a.b\",\"text\":\"say \\\"hi\\\"\"}") == nil)
        // The scanner's list of handled types is the decoder's: none of them comes back ignored.
        for type in RealtimeCodec.decodedTypes {
            let result = try? RealtimeCodec.decodeWithCodable("{\"type\":\"\(type)\"}")
            #expect(result.map { if case .ignored = $0 { false } else { true } } ?? true, "\(type)")
            #expect(RealtimeCodec.scanIgnored("{\"type\":\"\(type)\"}") == nil, "\(type)")
        }
    }

    @Test func malformedEventsThrowTypedErrors() {
        #expect(throws: RealtimeDecodingError.invalidJSON) { try RealtimeCodec.decode("{\"type\":") }
        #expect(throws: RealtimeDecodingError.invalidJSON) { try RealtimeCodec.decode("{\"no_type\":1}") }
        #expect(throws: RealtimeDecodingError.missingField("response.id")) { try RealtimeCodec.decode("{\"type\":\"response.created\"}") }
        #expect(throws: RealtimeDecodingError.invalidBase64) {
            try RealtimeCodec.decode("{\"type\":\"response.audio.delta\",\"response_id\":\"r\",\"item_id\":\"i\",\"delta\":\"!!\"}")
        }
    }

    // MARK: Client events

    @Test func gaSessionUpdateShape() throws {
        let text = RealtimeCodec.encode(.sessionUpdate(.init(instructions: "Be \"brief\".", voice: "cedar"), eventID: "cb_session_update"), dialect: .ga)
        let root = try self.object(text)
        #expect(root["type"] as? String == "session.update")
        #expect(root["event_id"] as? String == "cb_session_update")
        let session = try #require(root["session"] as? [String: Any])
        #expect(session["type"] as? String == "realtime")
        #expect(session["output_modalities"] as? [String] == ["audio"])
        #expect(session["instructions"] as? String == "Be \"brief\".")
        let audio = try #require(session["audio"] as? [String: Any])
        let input = try #require(audio["input"] as? [String: Any])
        let output = try #require(audio["output"] as? [String: Any])
        #expect((input["format"] as? [String: Any])?["type"] as? String == "audio/pcmu")
        #expect((output["format"] as? [String: Any])?["type"] as? String == "audio/pcmu")
        #expect(output["voice"] as? String == "cedar")
        let td = try #require(input["turn_detection"] as? [String: Any])
        #expect(td["type"] as? String == "server_vad")
        #expect(td["threshold"] as? Double == 0.5)
        #expect(td["prefix_padding_ms"] as? Int == 300)
        #expect(td["silence_duration_ms"] as? Int == 500)
        #expect(td["create_response"] as? Bool == true)
        #expect(td["interrupt_response"] as? Bool == true)
        #expect(session["input_audio_format"] == nil)
    }

    @Test func betaSessionUpdateShape() throws {
        let text = RealtimeCodec.encode(.sessionUpdate(.init(voice: "alloy", turnDetection: .init(threshold: 0.7, silenceDurationMs: 650)), eventID: "e9"), dialect: .beta)
        let session = try #require(try self.object(text)["session"] as? [String: Any])
        #expect(session["modalities"] as? [String] == ["audio", "text"])
        #expect(session["input_audio_format"] as? String == "g711_ulaw")
        #expect(session["output_audio_format"] as? String == "g711_ulaw")
        #expect(session["voice"] as? String == "alloy")
        let td = try #require(session["turn_detection"] as? [String: Any])
        #expect(td["threshold"] as? Double == 0.7)
        #expect(td["silence_duration_ms"] as? Int == 650)
        #expect(session["type"] == nil)
        #expect(session["audio"] == nil)
    }

    @Test(arguments: RealtimeDialect.allCases)
    func controlEventsAreTheSameInBothDialects(dialect: RealtimeDialect) throws {
        let append = try self.object(RealtimeCodec.encode(.inputAudioAppend(base64: "/////w=="), dialect: dialect))
        #expect(append["type"] as? String == "input_audio_buffer.append")
        #expect(append["audio"] as? String == "/////w==")
        let cancel = try self.object(RealtimeCodec.encode(.responseCancel(responseID: "r\"1", eventID: "cb_cancel_1"), dialect: dialect))
        #expect(cancel["type"] as? String == "response.cancel")
        #expect(cancel["response_id"] as? String == "r\"1")
        #expect(cancel["event_id"] as? String == "cb_cancel_1")
        let truncate = try self.object(RealtimeCodec.encode(.itemTruncate(itemID: "i1", audioEndMs: 1240, eventID: "cb_truncate_2"), dialect: dialect))
        #expect(truncate["type"] as? String == "conversation.item.truncate")
        #expect(truncate["item_id"] as? String == "i1")
        #expect(truncate["content_index"] as? Int == 0)
        #expect(truncate["audio_end_ms"] as? Int == 1240)
    }
}

import FoundationEssentials

/// The embedded echo agent's logic, one value per Realtime connection: it speaks the Realtime event protocol,
/// detects the caller's utterances with an energy detector on the appended μ-law, and answers each by playing
/// it back, streamed in bursts faster than real time like the real service.
///
/// Pure: client events and ticks in (with `now`), server events out (JSON text, in the connection's dialect).
public struct EchoAgent: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Interval between audio bursts while a reply streams.
        public var burstInterval: Duration
        /// How much faster than real time the reply streams (the real service sends audio well ahead).
        public var speedFactor: Int
        /// Voiced frames in a row needed to start an utterance.
        public var startFrames: Int
        /// Audio kept after the last voiced frame of an utterance.
        public var trailingAudioMs: Int
        /// Seed for the irregular delta sizes (deterministic, to exercise the bridge's chunker).
        public var seed: UInt64
        /// How late `speech_started` is reported after the detector fires (in audio time), to play a slow
        /// server VAD: on real lines the service reports speech 200–500 ms after its onset.
        public var vadDelay: Duration
        /// Sizes of the audio deltas, in bytes (drawn at random in this range, never aligned to frames).
        public var deltaBytes: ClosedRange<Int>
        /// Audio sent at once when a reply starts, before the regular bursts (the real service front-loads a reply).
        public var initialBurst: Duration

        public init(
            burstInterval: Duration = .milliseconds(40),
            speedFactor: Int = 4,
            startFrames: Int = 3,
            trailingAudioMs: Int = 100,
            seed: UInt64 = 0x5EED,
            vadDelay: Duration = .zero,
            deltaBytes: ClosedRange<Int> = 97...796,
            initialBurst: Duration = .zero
        ) {
            self.vadDelay = vadDelay
            self.deltaBytes = max(1, deltaBytes.lowerBound)...max(1, deltaBytes.upperBound)
            self.initialBurst = initialBurst
            self.burstInterval = burstInterval
            self.speedFactor = max(1, speedFactor)
            self.startFrames = max(1, startFrames)
            self.trailingAudioMs = trailingAudioMs
            self.seed = seed
        }
    }

    /// A reply being streamed.
    struct Reply: Sendable, Equatable {
        var responseID: String
        var itemID: String
        var audio: [UInt8]
        var sent = 0
        var nextBurst: CallInstant
        /// Extra bytes for the first burst (`initialBurst`).
        var leadBytes = 0
    }

    public let configuration: Configuration
    public let dialect: RealtimeDialect
    var turnDetection = TurnDetectionSettings()
    var nextID = 1
    var rng: UInt64

    // Turn detection over appended audio (time = bytes appended / 8).
    var audio: [UInt8] = []
    var analysedBytes = 0
    /// Bytes dropped from the front of `audio` (kept small between utterances); `audio` starts at this offset.
    var droppedBytes = 0
    var voicedRun = 0
    var silentRun = 0
    var utteranceStart: Int?
    var lastVoicedEnd = 0
    var userItemID: String?
    /// A detected speech start not yet reported (the VAD delay): report when the absolute audio offset passes this.
    var pendingSpeechStart: (reportAt: Int, onset: Int)?

    var reply: Reply?
    /// Utterances heard on this connection (for the transcripts).
    var utterancesHeard = 0
    /// The last utterance heard, replayed when the client asks for a response itself.
    var lastUtterance: [UInt8] = []
    /// Audio bytes sent per assistant item, to check truncation requests.
    var producedBytes: [String: Int] = [:]
    /// The `type` of the last client event received.
    public private(set) var lastReceivedType: String?

    public init(dialect: RealtimeDialect, configuration: Configuration = .init()) {
        self.dialect = dialect
        self.configuration = configuration
        self.rng = configuration.seed
    }

    /// When the agent next has something to send on its own (a reply burst), if ever.
    public var nextWakeup: CallInstant? { self.reply?.nextBurst }

    /// The greeting every Realtime session starts with.
    public mutating func connected() -> [String] {
        [self.event("session.created", ["session": "{\"id\":\(JSONText.quoted(self.makeID("sess")))}"])]
    }

    /// A client event as it came off the socket. Caller audio (`input_audio_buffer.append`, 50 a second per call) is
    /// read by the byte scanner and only its base64 is decoded, for the VAD; anything else goes through Codable.
    public mutating func received(bytes: UnsafeBufferPointer<UInt8>, now: CallInstant) -> [String] {
        // The audio is decoded straight onto the end of what the detector holds (nothing appended if it is not base64).
        let appended = JSONScanner.withScanner(bytes: bytes) { scanner -> Bool? in
            guard scanner.count(of: UInt8(ascii: "{")) == 1, let type = scanner.stringValueRange(forKey: "type"),
                scanner.equals(type, "input_audio_buffer.append"), let audio = scanner.stringValueRange(forKey: "audio"),
                Base64.decode(bytes: UnsafeBufferPointer(rebasing: scanner.bytes[audio]), appendingTo: &self.audio)
            else { return nil }
            return true
        }
        if appended == true {
            self.lastReceivedType = "input_audio_buffer.append"
            return self.analyseAppended(now: now)
        }
        return self.received(String(decoding: bytes, as: UTF8.self), now: now)
    }

    public mutating func received(_ text: String, now: CallInstant) -> [String] {
        guard let message = try? JSONDecoder().decode(ClientMessage.self, from: Data(text.utf8)) else {
            return [self.error(type: "invalid_request_error", code: "invalid_json", message: "Could not parse event")]
        }
        self.lastReceivedType = message.type
        switch message.type {
        case "session.update":
            return self.sessionUpdate(message.session, eventID: message.event_id)
        case "input_audio_buffer.append":
            guard let base64 = message.audio, let bytes = Base64.decode(base64) else {
                return [self.error(type: "invalid_request_error", code: "invalid_value", message: "audio is not base64")]
            }
            return self.append(bytes, now: now)
        case "input_audio_buffer.clear":
            self.resetTurn()
            return [self.event("input_audio_buffer.cleared", [:])]
        case "response.cancel":
            guard let reply = self.reply, message.response_id == nil || message.response_id == reply.responseID else {
                return [
                    self.error(
                        type: "invalid_request_error",
                        code: "response_cancel_not_active",
                        message: "Cancellation failed: no active response found",
                        eventID: message.event_id
                    )
                ]
            }
            return self.finishReply(status: "cancelled", reason: "client_cancelled")
        case "response.create":
            guard self.reply == nil else {
                return [
                    self.error(
                        type: "invalid_request_error",
                        code: "conversation_already_has_active_response",
                        message: "Conversation already has an active response",
                        eventID: message.event_id
                    )
                ]
            }
            return self.startReply(self.lastUtterance, now: now)
        case "conversation.item.truncate":
            return self.truncate(itemID: message.item_id, audioEndMs: message.audio_end_ms, eventID: message.event_id)
        case "conversation.item.create":
            // Accepted into the conversation (a replay after a reconnect); the echo agent has no use for text.
            return [self.event("conversation.item.created", ["item": "{\"id\":\(JSONText.quoted(self.makeID("item"))),\"type\":\"message\"}"])]
        default:
            return []
        }
    }

    public mutating func tick(now: CallInstant) -> [String] {
        guard var reply = self.reply, now >= reply.nextBurst else { return [] }
        var out: [String] = []
        let burstBytes =
            AudioFrame.bytesPerMillisecond * self.configuration.burstInterval.wholeMilliseconds
            * self.configuration.speedFactor
        var budget = burstBytes + reply.leadBytes
        reply.leadBytes = 0
        let sizes = self.configuration.deltaBytes
        while budget > 0 && reply.sent < reply.audio.count {
            // Irregular sizes, never aligned to 160, as real deltas are.
            let size = min(budget, reply.audio.count - reply.sent, sizes.lowerBound + Int(self.nextRandom() % UInt64(sizes.count)))
            let chunk = reply.audio[reply.sent..<(reply.sent + size)]
            reply.sent += size
            budget -= size
            out.append(self.audioDelta(chunk, of: reply))
        }
        self.producedBytes[reply.itemID] = reply.sent
        reply.nextBurst = reply.nextBurst + self.configuration.burstInterval
        self.reply = reply
        if reply.sent >= reply.audio.count {
            out += self.finishReply(status: "completed", reason: nil)
        }
        return out
    }

    // MARK: Session

    mutating func sessionUpdate(_ session: ClientMessage.Session?, eventID: String?) -> [String] {
        guard let session else {
            return [self.error(type: "invalid_request_error", code: "missing_required_parameter", message: "session", eventID: eventID)]
        }
        let detection: ClientMessage.TurnDetection?
        switch self.dialect {
        case .ga:
            guard session.type == "realtime", session.input_audio_format == nil else {
                return [self.error(type: "invalid_request_error", code: "unknown_parameter", message: "beta session shape", eventID: eventID)]
            }
            guard session.audio?.input?.format?.type == "audio/pcmu", session.audio?.output?.format?.type == "audio/pcmu"
            else {
                return [self.error(type: "invalid_request_error", code: "invalid_value", message: "echo agent needs audio/pcmu", eventID: eventID)]
            }
            detection = session.audio?.input?.turn_detection
        case .beta:
            guard session.type == nil, session.audio == nil else {
                return [self.error(type: "invalid_request_error", code: "unknown_parameter", message: "GA session shape", eventID: eventID)]
            }
            guard session.input_audio_format == "g711_ulaw", session.output_audio_format == "g711_ulaw" else {
                return [self.error(type: "invalid_request_error", code: "invalid_value", message: "echo agent needs g711_ulaw", eventID: eventID)]
            }
            detection = session.turn_detection
        }
        if let detection {
            self.turnDetection = TurnDetectionSettings(
                threshold: detection.threshold ?? 0.5,
                prefixPaddingMs: detection.prefix_padding_ms ?? 300,
                silenceDurationMs: detection.silence_duration_ms ?? 500,
                createResponse: detection.create_response ?? true,
                interruptResponse: detection.interrupt_response ?? true
            )
        }
        return [self.event("session.updated", ["session": "{\"id\":\"echo\"}"])]
    }

    // MARK: Turn detection

    /// Frame level in dBFS above which a 20 ms frame counts as voiced; follows the session's VAD threshold.
    var voicedThresholdDBFS: Double { -55 + 40 * self.turnDetection.threshold }

    mutating func append(_ bytes: [UInt8], now: CallInstant) -> [String] {
        self.audio.append(contentsOf: bytes)
        return self.analyseAppended(now: now)
    }

    /// Runs the detector over the whole frames appended since it last ran.
    mutating func analyseAppended(now: CallInstant) -> [String] {
        var out: [String] = []
        let frame = AudioFrame.byteCount
        while self.analysedBytes + frame <= self.audio.count {
            let start = self.analysedBytes
            self.analysedBytes += frame
            let voiced = Level.dBFS(muLaw: self.audio[start..<(start + frame)]) > self.voicedThresholdDBFS
            out += self.analyse(frameStart: start, voiced: voiced, now: now)
            if let pending = self.pendingSpeechStart, self.droppedBytes + self.analysedBytes >= pending.reportAt {
                self.pendingSpeechStart = nil
                out += self.speechStarted(onsetByte: pending.onset, now: now)
            }
        }
        self.trimIdleAudio()
        return out
    }

    mutating func analyse(frameStart: Int, voiced: Bool, now: CallInstant) -> [String] {
        let frame = AudioFrame.byteCount
        if voiced {
            self.voicedRun += 1
            self.silentRun = 0
            self.lastVoicedEnd = frameStart + frame
            if self.utteranceStart == nil && self.voicedRun >= self.configuration.startFrames {
                let onset = frameStart + frame - self.voicedRun * frame
                self.utteranceStart = onset
                let reportAt = self.droppedBytes + frameStart + frame
                    + AudioFrame.bytesPerMillisecond * self.configuration.vadDelay.wholeMilliseconds
                self.pendingSpeechStart = (reportAt, onset)
                return []
            }
            return []
        }
        self.voicedRun = 0
        self.silentRun += 1
        guard let start = self.utteranceStart,
            self.silentRun * 20 >= self.turnDetection.silenceDurationMs
        else { return [] }
        var out: [String] = []
        if let pending = self.pendingSpeechStart {
            self.pendingSpeechStart = nil
            out += self.speechStarted(onsetByte: pending.onset, now: now)
        }
        return out + self.speechStopped(onsetByte: start, endByte: self.lastVoicedEnd, now: now)
    }

    mutating func speechStarted(onsetByte: Int, now: CallInstant) -> [String] {
        let item = self.makeID("item")
        self.userItemID = item
        var out = [
            self.event(
                "input_audio_buffer.speech_started",
                ["audio_start_ms": String((self.droppedBytes + onsetByte) / 8), "item_id": JSONText.quoted(item)]
            )
        ]
        if self.reply != nil && self.turnDetection.interruptResponse {
            out += self.finishReply(status: "cancelled", reason: "turn_detected")
        }
        return out
    }

    mutating func speechStopped(onsetByte: Int, endByte: Int, now: CallInstant) -> [String] {
        let item = self.userItemID ?? self.makeID("item")
        let paddingBytes = self.turnDetection.prefixPaddingMs * 8
        let from = max(0, onsetByte - paddingBytes)
        let to = min(self.audio.count, endByte + self.configuration.trailingAudioMs * 8)
        let utterance = Array(self.audio[from..<to])
        let endMs = (self.droppedBytes + self.audio.count) / 8
        var out = [
            self.event("input_audio_buffer.speech_stopped", ["audio_end_ms": String(endMs), "item_id": JSONText.quoted(item)]),
            self.event("input_audio_buffer.committed", ["item_id": JSONText.quoted(item)]),
            self.event(
                "conversation.item.created",
                ["item": "{\"id\":\(JSONText.quoted(item)),\"type\":\"message\",\"role\":\"user\"}"]
            ),
        ]
        // A transcript of sorts (the echo agent understands no words): how long the caller spoke.
        self.utterancesHeard += 1
        out.append(
            self.event(
                "conversation.item.input_audio_transcription.completed",
                ["item_id": JSONText.quoted(item), "content_index": "0",
                 "transcript": JSONText.quoted("utterance \(self.utterancesHeard) of \((endByte - onsetByte) / 8) ms")]
            )
        )
        self.resetTurn()
        self.lastUtterance = utterance
        if self.turnDetection.createResponse && self.reply == nil {
            out += self.startReply(utterance, now: now)
        }
        return out
    }

    mutating func resetTurn() {
        self.pendingSpeechStart = nil
        self.utteranceStart = nil
        self.voicedRun = 0
        self.silentRun = 0
        self.lastVoicedEnd = 0
        self.userItemID = nil
        self.trimIdleAudio()
    }

    /// Between utterances only the last prefix-padding worth of audio can matter: drop the rest, so a long silent
    /// call does not grow the buffer.
    mutating func trimIdleAudio() {
        guard self.utteranceStart == nil, self.voicedRun == 0 else { return }
        let keep = self.turnDetection.prefixPaddingMs * 8
        let drop = min(self.analysedBytes, self.audio.count - keep)
        guard drop > 0 else { return }
        self.audio.removeFirst(drop)
        self.analysedBytes -= drop
        self.droppedBytes += drop
    }

    // MARK: Replies

    mutating func startReply(_ audio: [UInt8], now: CallInstant) -> [String] {
        let responseID = self.makeID("resp")
        let itemID = self.makeID("item")
        self.reply = Reply(
            responseID: responseID,
            itemID: itemID,
            audio: audio,
            nextBurst: now,
            leadBytes: AudioFrame.bytesPerMillisecond * self.configuration.initialBurst.wholeMilliseconds
        )
        let rid = JSONText.quoted(responseID)
        let item = "{\"id\":\(JSONText.quoted(itemID)),\"type\":\"message\",\"role\":\"assistant\",\"status\":\"in_progress\"}"
        return [
            self.event("response.created", ["response": "{\"id\":\(rid),\"object\":\"realtime.response\",\"status\":\"in_progress\"}"]),
            self.event("response.output_item.added", ["response_id": rid, "output_index": "0", "item": item]),
            self.event("conversation.item.created", ["item": item]),
            self.event(
                "response.content_part.added",
                ["response_id": rid, "item_id": JSONText.quoted(itemID), "output_index": "0", "content_index": "0",
                 "part": "{\"type\":\"audio\"}"]
            ),
        ] + self.tick(now: now)
    }

    mutating func finishReply(status: String, reason: String?) -> [String] {
        guard let reply = self.reply else { return [] }
        self.reply = nil
        let rid = JSONText.quoted(reply.responseID)
        let iid = JSONText.quoted(reply.itemID)
        var out: [String] = []
        if status == "completed" {
            let ids = ["response_id": rid, "item_id": iid, "output_index": "0", "content_index": "0"]
            out.append(self.event(self.dialect == .ga ? "response.output_audio.done" : "response.audio.done", ids))
            out.append(
                self.event(
                    self.dialect == .ga ? "response.output_audio_transcript.done" : "response.audio_transcript.done",
                    ids.merging(["transcript": "\"(echo)\""]) { a, _ in a }
                )
            )
            out.append(self.event("response.content_part.done", ids.merging(["part": "{\"type\":\"audio\"}"]) { a, _ in a }))
            out.append(
                self.event(
                    "response.output_item.done",
                    ["response_id": rid, "output_index": "0",
                     "item": "{\"id\":\(iid),\"type\":\"message\",\"role\":\"assistant\",\"status\":\"completed\"}"]
                )
            )
        }
        let details = reason.map { ",\"status_details\":{\"type\":\(JSONText.quoted(status)),\"reason\":\(JSONText.quoted($0))}" } ?? ""
        out.append(
            self.event(
                "response.done",
                ["response": "{\"id\":\(rid),\"object\":\"realtime.response\",\"status\":\(JSONText.quoted(status))\(details)}"]
            )
        )
        return out
    }

    mutating func truncate(itemID: String?, audioEndMs: Int?, eventID: String?) -> [String] {
        guard let itemID, let produced = self.producedBytes[itemID] else {
            return [self.error(type: "invalid_request_error", code: "item_not_found", message: "no such assistant item", eventID: eventID)]
        }
        guard let ms = audioEndMs, ms >= 0, ms <= produced / 8 else {
            return [self.error(type: "invalid_request_error", code: "invalid_value",
                               message: "audio_end_ms is longer than the audio", eventID: eventID)]
        }
        return [
            self.event(
                "conversation.item.truncated",
                ["item_id": JSONText.quoted(itemID), "content_index": "0", "audio_end_ms": String(ms)]
            )
        ]
    }

    // MARK: JSON

    mutating func event(_ type: String, _ fields: [String: String]) -> String {
        var text = "{\"type\":\(JSONText.quoted(type)),\"event_id\":\(JSONText.quoted(self.makeID("event")))"
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            text += ",\(JSONText.quoted(key)):\(value)"
        }
        return text + "}"
    }

    /// One audio delta of `reply`, exactly as `event` writes it (the same keys in the same order), built in one
    /// allocation: deltas are most of what the agent sends, and `event` allocates a dozen times for one.
    mutating func audioDelta(_ chunk: ArraySlice<UInt8>, of reply: Reply) -> String {
        let type: StaticString = self.dialect == .ga ? "response.output_audio.delta" : "response.audio.delta"
        let eventID = JSONText.quoted(self.makeID("event"))
        let itemID = JSONText.quoted(reply.itemID)
        let responseID = JSONText.quoted(reply.responseID)
        let head: StaticString = "{\"type\":\""
        let afterType: StaticString = "\",\"event_id\":"
        let beforeDelta: StaticString = ",\"content_index\":0,\"delta\":\""
        let afterDelta: StaticString = "\",\"item_id\":"
        let beforeResponse: StaticString = ",\"output_index\":0,\"response_id\":"
        let count =
            head.utf8CodeUnitCount + type.utf8CodeUnitCount + afterType.utf8CodeUnitCount + eventID.utf8.count
            + beforeDelta.utf8CodeUnitCount + Base64.encodedCount(chunk.count) + afterDelta.utf8CodeUnitCount
            + itemID.utf8.count + beforeResponse.utf8CodeUnitCount + responseID.utf8.count + 1
        return JSONText.build(count: count) { out in
            out.append(head)
            out.append(type)
            out.append(afterType)
            out.append(eventID)
            out.append(beforeDelta)
            out.appendBase64(chunk)
            out.append(afterDelta)
            out.append(itemID)
            out.append(beforeResponse)
            out.append(responseID)
            out.append("}")
        }
    }

    mutating func error(type: String, code: String, message: String, eventID: String? = nil) -> String {
        let eid = eventID.map { ",\"event_id\":\(JSONText.quoted($0))" } ?? ""
        return self.event(
            "error",
            ["error": "{\"type\":\(JSONText.quoted(type)),\"code\":\(JSONText.quoted(code)),\"message\":\(JSONText.quoted(message))\(eid)}"]
        )
    }

    mutating func makeID(_ prefix: String) -> String {
        defer { self.nextID += 1 }
        return "\(prefix)_echo\(self.nextID)"
    }

    mutating func nextRandom() -> UInt64 {
        self.rng = self.rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return self.rng >> 33
    }

    // Field names mirror the wire.
    struct ClientMessage: Decodable {
        var type: String
        var event_id: String?
        var session: Session?
        var audio: String?
        var response_id: String?
        var item_id: String?
        var audio_end_ms: Int?

        struct Session: Decodable {
            var type: String?
            var audio: Audio?
            var input_audio_format: String?
            var output_audio_format: String?
            var turn_detection: TurnDetection?
        }
        struct Audio: Decodable {
            var input: Direction?
            var output: Direction?
        }
        struct Direction: Decodable {
            var format: Format?
            var turn_detection: TurnDetection?
        }
        struct Format: Decodable { var type: String? }
        struct TurnDetection: Decodable {
            var threshold: Double?
            var prefix_padding_ms: Int?
            var silence_duration_ms: Int?
            var create_response: Bool?
            var interrupt_response: Bool?
        }
    }
}

import FoundationEssentials

/// Which shape of the Realtime protocol the bridge speaks to the service.
public enum RealtimeDialect: String, Sendable, Equatable, CaseIterable {
    /// Current protocol: `output_modalities`, `audio.input.format {"type":"audio/pcmu"}`, `response.output_audio.*`.
    case ga
    /// Preview protocol (Azure preview, compatible servers): `OpenAI-Beta: realtime=v1`, `g711_ulaw`,
    /// `response.audio.*`.
    case beta
}

/// Server turn detection as sent in `session.update`.
public struct TurnDetectionSettings: Sendable, Equatable {
    public var threshold: Double
    public var prefixPaddingMs: Int
    public var silenceDurationMs: Int
    public var createResponse: Bool
    public var interruptResponse: Bool

    public init(
        threshold: Double = 0.5,
        prefixPaddingMs: Int = 300,
        silenceDurationMs: Int = 500,
        createResponse: Bool = true,
        interruptResponse: Bool = true
    ) {
        self.threshold = threshold
        self.prefixPaddingMs = prefixPaddingMs
        self.silenceDurationMs = silenceDurationMs
        self.createResponse = createResponse
        self.interruptResponse = interruptResponse
    }
}

public struct RealtimeSessionSettings: Sendable, Equatable {
    public var instructions: String
    public var voice: String
    public var turnDetection: TurnDetectionSettings
    /// Ask the service to transcribe the caller (needed to replay the conversation into a new session after a
    /// reconnect); the model is the dialect's usual one.
    public var transcribeInput: Bool

    /// The default voice of each dialect: `marin` is GA-only; beta (Azure preview) deployments know `alloy`.
    public static func defaultVoice(for dialect: RealtimeDialect) -> String {
        dialect == .ga ? "marin" : "alloy"
    }

    public init(
        instructions: String = "You are a helpful voice agent on a phone call. Keep answers short.",
        voice: String = "marin",
        turnDetection: TurnDetectionSettings = .init(),
        transcribeInput: Bool = true
    ) {
        self.transcribeInput = transcribeInput
        self.instructions = instructions
        self.voice = voice
        self.turnDetection = turnDetection
    }
}

/// Events the bridge sends to the Realtime service.
public enum RealtimeClientEvent: Sendable, Equatable {
    case sessionUpdate(RealtimeSessionSettings, eventID: String)
    /// Caller audio, base64 μ-law straight from the Twilio `media` payload.
    case inputAudioAppend(base64: String)
    case responseCancel(responseID: String, eventID: String)
    case itemTruncate(itemID: String, audioEndMs: Int, eventID: String)
    /// Ask for a response (after a false trigger left the conversation without one).
    case responseCreate(eventID: String)
    /// A text turn of the conversation so far, replayed into a new session after a reconnect.
    case conversationItemCreate(role: ConversationTurn.Role, text: String, eventID: String)

    public var type: String {
        switch self {
        case .sessionUpdate: "session.update"
        case .inputAudioAppend: "input_audio_buffer.append"
        case .responseCancel: "response.cancel"
        case .itemTruncate: "conversation.item.truncate"
        case .responseCreate: "response.create"
        case .conversationItemCreate: "conversation.item.create"
        }
    }
}

/// One turn of the conversation as text: what the caller said (the service's transcript) or what the AI said as
/// far as the caller heard it.
public struct ConversationTurn: Sendable, Equatable {
    public enum Role: String, Sendable, Equatable {
        case user
        case assistant
    }

    public var role: Role
    public var text: String

    public init(role: Role, text: String) {
        self.role = role
        self.text = text
    }
}

public struct RealtimeErrorInfo: Sendable, Equatable {
    public var type: String?
    public var code: String?
    public var message: String
    public var eventID: String?

    public init(type: String? = nil, code: String? = nil, message: String, eventID: String? = nil) {
        self.type = type
        self.code = code
        self.message = message
        self.eventID = eventID
    }

    /// `response.cancel` raced the end of the response: harmless by protocol.
    public var isCancelNotActive: Bool {
        self.code == "response_cancel_not_active" || self.message.lowercased().contains("no active response")
    }
}

/// Events from the Realtime service that the bridge acts on. Both spellings of the audio events are accepted
/// whatever the configured dialect.
public enum RealtimeServerEvent: Sendable, Equatable {
    case sessionCreated(sessionID: String?)
    case sessionUpdated
    case speechStarted(audioStartMs: Int?, itemID: String?)
    case speechStopped(audioEndMs: Int?, itemID: String?)
    case responseCreated(responseID: String)
    case outputItemAdded(responseID: String, itemID: String)
    case audioDelta(responseID: String, itemID: String, audio: [UInt8])
    case audioDone(responseID: String, itemID: String)
    case responseDone(responseID: String, status: String)
    case itemTruncated(itemID: String, audioEndMs: Int)
    /// The caller's words of an input item (`conversation.item.input_audio_transcription.completed`).
    case inputTranscript(itemID: String, transcript: String)
    /// The AI's words of an output item (`response.output_audio_transcript.done`, beta `response.audio_transcript.done`).
    case outputTranscript(itemID: String, transcript: String)
    case error(RealtimeErrorInfo)
    /// Any other event: valid, not needed by the bridge.
    case ignored(type: String)
}

public enum RealtimeDecodingError: Error, Sendable, Equatable {
    case invalidJSON
    case missingField(String)
    case invalidBase64
}

public enum RealtimeCodec {
    static let audioDeltaTypes: Set<String> = ["response.output_audio.delta", "response.audio.delta"]
    static let audioDoneTypes: Set<String> = ["response.output_audio.done", "response.audio.done"]

    /// The event types `decodeWithCodable` turns into something other than `.ignored`.
    static let decodedTypes: Set<String> = Set([
        "session.created", "session.updated", "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "response.created", "response.output_item.added", "response.done",
        "conversation.item.input_audio_transcription.completed", "response.output_audio_transcript.done",
        "response.audio_transcript.done", "conversation.item.truncated", "error",
    ]).union(audioDeltaTypes).union(audioDoneTypes)

    public static func decode(_ text: String) throws(RealtimeDecodingError) -> RealtimeServerEvent {
        if let delta = scanAudioDelta(text) {
            return delta
        }
        if let ignored = scanIgnored(text) {
            return ignored
        }
        return try decodeWithCodable(text)
    }

    /// The fast path for events the bridge does not act on (transcript deltas, content parts, committed buffers, rate
    /// limits: many a second from a real service while the AI talks), known by their top-level `type` alone, without
    /// a JSONDecoder each.
    static func scanIgnored(_ text: String) -> RealtimeServerEvent? {
        JSONScanner.withScanner(text) { scanner -> RealtimeServerEvent? in
            guard let range = scanner.topLevelStringValueRange(forKey: "type") else { return nil }
            let type = scanner.string(range)
            return Self.decodedTypes.contains(type) ? nil : .ignored(type: type)
        }
    }

    /// The fast path for audio deltas: a flat object with no escapes.
    static func scanAudioDelta(_ text: String) -> RealtimeServerEvent? {
        JSONScanner.withScanner(text) { scanner -> RealtimeServerEvent? in
            guard scanner.count(of: UInt8(ascii: "{")) == 1,
                let type = scanner.stringValueRange(forKey: "type"),
                scanner.equals(type, "response.output_audio.delta") || scanner.equals(type, "response.audio.delta"),
                let responseID = scanner.stringValueRange(forKey: "response_id"),
                let itemID = scanner.stringValueRange(forKey: "item_id"),
                let delta = scanner.stringValueRange(forKey: "delta"),
                let audio = Base64.decode(bytes: UnsafeBufferPointer(rebasing: scanner.bytes[delta]))
            else { return nil }
            return .audioDelta(responseID: scanner.string(responseID), itemID: scanner.string(itemID), audio: audio)
        }
    }

    static func decodeWithCodable(_ text: String) throws(RealtimeDecodingError) -> RealtimeServerEvent {
        let e: Envelope
        do {
            e = try JSONDecoder().decode(Envelope.self, from: Data(text.utf8))
        } catch {
            throw .invalidJSON
        }
        switch e.type {
        case "session.created":
            return .sessionCreated(sessionID: e.session?.id)
        case "session.updated":
            return .sessionUpdated
        case "input_audio_buffer.speech_started":
            return .speechStarted(audioStartMs: e.audio_start_ms, itemID: e.item_id)
        case "input_audio_buffer.speech_stopped":
            return .speechStopped(audioEndMs: e.audio_end_ms, itemID: e.item_id)
        case "response.created":
            guard let id = e.response?.id else { throw .missingField("response.id") }
            return .responseCreated(responseID: id)
        case "response.output_item.added":
            guard let rid = e.response_id else { throw .missingField("response_id") }
            guard let iid = e.item?.id else { throw .missingField("item.id") }
            return .outputItemAdded(responseID: rid, itemID: iid)
        case let t where audioDeltaTypes.contains(t):
            guard let rid = e.response_id else { throw .missingField("response_id") }
            guard let iid = e.item_id else { throw .missingField("item_id") }
            guard let delta = e.delta else { throw .missingField("delta") }
            guard let audio = Base64.decode(delta) else { throw .invalidBase64 }
            return .audioDelta(responseID: rid, itemID: iid, audio: audio)
        case let t where audioDoneTypes.contains(t):
            guard let rid = e.response_id else { throw .missingField("response_id") }
            guard let iid = e.item_id else { throw .missingField("item_id") }
            return .audioDone(responseID: rid, itemID: iid)
        case "response.done":
            guard let id = e.response?.id else { throw .missingField("response.id") }
            return .responseDone(responseID: id, status: e.response?.status ?? "completed")
        case "conversation.item.input_audio_transcription.completed":
            guard let iid = e.item_id else { throw .missingField("item_id") }
            return .inputTranscript(itemID: iid, transcript: e.transcript ?? "")
        case "response.output_audio_transcript.done", "response.audio_transcript.done":
            guard let iid = e.item_id else { throw .missingField("item_id") }
            return .outputTranscript(itemID: iid, transcript: e.transcript ?? "")
        case "conversation.item.truncated":
            guard let iid = e.item_id else { throw .missingField("item_id") }
            return .itemTruncated(itemID: iid, audioEndMs: e.audio_end_ms ?? 0)
        case "error":
            let info = e.error
            return .error(
                RealtimeErrorInfo(
                    type: info?.type,
                    code: info?.code,
                    message: info?.message ?? "",
                    eventID: info?.event_id
                )
            )
        default:
            return .ignored(type: e.type)
        }
    }

    // MARK: Client events

    /// The JSON text of a client event in the given dialect.
    public static func encode(_ event: RealtimeClientEvent, dialect: RealtimeDialect) -> String {
        switch event {
        case .inputAudioAppend(let base64):
            // Hot path (one allocation): the payload was validated as base64 on the way in, so it needs no escaping.
            let head: StaticString = "{\"type\":\"input_audio_buffer.append\",\"audio\":\""
            let tail: StaticString = "\"}"
            return JSONText.build(count: head.utf8CodeUnitCount + base64.utf8.count + tail.utf8CodeUnitCount) { out in
                out.append(head)
                out.append(base64)
                out.append(tail)
            }
        case .responseCancel(let responseID, let eventID):
            return "{\"type\":\"response.cancel\",\"event_id\":" + JSONText.quoted(eventID) + ",\"response_id\":"
                + JSONText.quoted(responseID) + "}"
        case .itemTruncate(let itemID, let audioEndMs, let eventID):
            return "{\"type\":\"conversation.item.truncate\",\"event_id\":" + JSONText.quoted(eventID)
                + ",\"item_id\":" + JSONText.quoted(itemID) + ",\"content_index\":0,\"audio_end_ms\":"
                + String(audioEndMs) + "}"
        case .responseCreate(let eventID):
            return "{\"type\":\"response.create\",\"event_id\":" + JSONText.quoted(eventID) + "}"
        case .sessionUpdate(let settings, let eventID):
            return encodeSessionUpdate(settings, eventID: eventID, dialect: dialect)
        case .conversationItemCreate(let role, let text, let eventID):
            // GA names the assistant's text part `output_text`; beta calls it `text`.
            let part = role == .user ? "input_text" : (dialect == .ga ? "output_text" : "text")
            return "{\"type\":\"conversation.item.create\",\"event_id\":" + JSONText.quoted(eventID)
                + ",\"item\":{\"type\":\"message\",\"role\":\"" + role.rawValue + "\",\"content\":[{\"type\":\"" + part
                + "\",\"text\":" + JSONText.quoted(text) + "}]}}"
        }
    }

    static func encodeSessionUpdate(_ s: RealtimeSessionSettings, eventID: String, dialect: RealtimeDialect) -> String {
        let head = "{\"type\":\"session.update\",\"event_id\":" + JSONText.quoted(eventID) + ",\"session\":"
        let td = s.turnDetection
        let turnDetection =
            "{\"type\":\"server_vad\",\"threshold\":\(td.threshold),\"prefix_padding_ms\":\(td.prefixPaddingMs),"
            + "\"silence_duration_ms\":\(td.silenceDurationMs),\"create_response\":\(td.createResponse),"
            + "\"interrupt_response\":\(td.interruptResponse)}"
        switch dialect {
        case .ga:
            let transcription = s.transcribeInput ? ",\"transcription\":{\"model\":\"gpt-4o-mini-transcribe\"}" : ""
            return head + "{\"type\":\"realtime\",\"output_modalities\":[\"audio\"],"
                + "\"instructions\":" + JSONText.quoted(s.instructions) + ",\"audio\":{\"input\":{\"format\":"
                + "{\"type\":\"audio/pcmu\"}" + transcription + ",\"turn_detection\":" + turnDetection + "},\"output\":{\"format\":"
                + "{\"type\":\"audio/pcmu\"},\"voice\":" + JSONText.quoted(s.voice) + "}}}}"
        case .beta:
            return head + "{\"modalities\":[\"audio\",\"text\"],\"instructions\":"
                + JSONText.quoted(s.instructions) + ",\"voice\":" + JSONText.quoted(s.voice)
                + ",\"input_audio_format\":\"g711_ulaw\",\"output_audio_format\":\"g711_ulaw\","
                + (s.transcribeInput ? "\"input_audio_transcription\":{\"model\":\"whisper-1\"}," : "")
                + "\"turn_detection\":" + turnDetection + "}}"
        }
    }

    // Field names mirror the wire.
    private struct Envelope: Decodable {
        var type: String
        var session: Session?
        var response: Response?
        var response_id: String?
        var item_id: String?
        var transcript: String?
        var item: Item?
        var delta: String?
        var audio_start_ms: Int?
        var audio_end_ms: Int?
        var error: ErrorBody?

        struct Session: Decodable { var id: String? }
        struct Response: Decodable {
            var id: String?
            var status: String?
        }
        struct Item: Decodable { var id: String? }
        struct ErrorBody: Decodable {
            var type: String?
            var code: String?
            var message: String?
            var event_id: String?
        }
    }
}

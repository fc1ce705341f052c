import FoundationEssentials

/// The `start` message's call metadata.
public struct TwilioStart: Sendable, Equatable {
    public var streamSid: String
    public var callSid: String
    public var accountSid: String
    public var tracks: [String]
    public var customParameters: [String: String]
    public var encoding: String
    public var sampleRate: Int
    public var channels: Int

    public init(
        streamSid: String,
        callSid: String,
        accountSid: String = "",
        tracks: [String] = ["inbound"],
        customParameters: [String: String] = [:],
        encoding: String = "audio/x-mulaw",
        sampleRate: Int = 8000,
        channels: Int = 1
    ) {
        self.streamSid = streamSid
        self.callSid = callSid
        self.accountSid = accountSid
        self.tracks = tracks
        self.customParameters = customParameters
        self.encoding = encoding
        self.sampleRate = sampleRate
        self.channels = channels
    }
}

/// A message from Twilio on the Media Streams WebSocket.
public enum TwilioInbound: Sendable, Equatable {
    case connected
    case start(TwilioStart)
    /// Caller audio: base64 μ-law exactly as received (it is forwarded without re-encoding).
    /// `chunk` is Twilio's per-stream media chunk number (1, 2, …), when present: holes in it are lost audio.
    case media(payload: String, chunk: Int? = nil)
    case mark(name: String)
    case dtmf(digit: String)
    case stop
    /// An event this bridge does not handle; Twilio adds events without notice.
    case unhandled(event: String)

    /// The `event` name, for counting and logs.
    public var kindName: String {
        switch self {
        case .connected: "connected"
        case .start: "start"
        case .media: "media"
        case .mark: "mark"
        case .dtmf: "dtmf"
        case .stop: "stop"
        case .unhandled: "unhandled"
        }
    }
}

public enum TwilioDecodingError: Error, Sendable, Equatable {
    case invalidJSON
    case missingField(String)
    case invalidBase64
    /// A field of the wrong JSON type (a number where a string belongs, …).
    case wrongType(String)
    /// A `media`, `mark` or `dtmf` message naming another stream than the one `start` opened.
    case wrongStreamSid
    /// A `media` payload over `TwilioCodec.maxPayloadBytes` (Twilio sends 160 bytes).
    case oversizedPayload
    /// A binary WebSocket frame (Twilio sends text only).
    case binaryFrame

    /// The kind in logs, the call log and metrics (after `twilio.`).
    public var kind: String {
        switch self {
        case .invalidJSON: "invalid_json"
        case .missingField: "missing_field"
        case .invalidBase64: "invalid_base64"
        case .wrongType: "wrong_type"
        case .wrongStreamSid: "wrong_stream_sid"
        case .oversizedPayload: "oversized_payload"
        case .binaryFrame: "binary_frame"
        }
    }
}

/// Messages the bridge sends to Twilio.
public enum TwilioOutbound: Sendable, Equatable {
    case media([UInt8])
    case mark(name: String)
    case clear
}

public enum TwilioCodec {
    /// Decodes one text frame. `media` takes the byte-scanner path; everything else, and any `media` the scanner
    /// cannot vouch for, goes through Codable.
    /// `streamSid`: the stream `start` opened, once known; a message naming another one is refused.
    public static func decode(_ text: String, streamSid: String? = nil) throws(TwilioDecodingError) -> TwilioInbound {
        if let media = scanMedia(text, streamSid: streamSid) {
            return .media(payload: media.payload, chunk: media.chunk)
        }
        return try self.decodeOther(text, streamSid: streamSid)
    }

    /// `decode` from the message's bytes where they lie (the connection's read buffer, or its unmasking scratch): a
    /// `media` message the scanner vouches for needs no `String` of the whole message; anything else is made one
    /// (invalid UTF-8 repaired, as a `String` of the frame would have it) and decoded as above.
    public static func decode(bytes: UnsafeBufferPointer<UInt8>, streamSid: String? = nil) throws(TwilioDecodingError) -> TwilioInbound {
        if let media = scanMedia(bytes: bytes, streamSid: streamSid) {
            return .media(payload: media.payload, chunk: media.chunk)
        }
        return try self.decodeOther(String(decoding: bytes, as: UTF8.self), streamSid: streamSid)
    }

    /// Everything but a `media` message the scanner vouched for: the `mark` fast path, then Codable.
    static func decodeOther(_ text: String, streamSid: String?) throws(TwilioDecodingError) -> TwilioInbound {
        if let name = scanMark(text, streamSid: streamSid) {
            return .mark(name: name)
        }
        return try decodeWithCodable(text, streamSid: streamSid)
    }

    /// The fast path for `mark` (every frame sent comes back as one, so half of a stream's messages are marks): nil
    /// unless the message is certainly a `mark` event for this stream whose top-level `mark` object starts with its
    /// `name` string, in compact JSON without escapes (anything else is left to Codable).
    static func scanMark(_ text: String, streamSid expected: String? = nil) -> String? {
        JSONScanner.withScanner(text) { scanner -> String? in
            let opening: StaticString = "\"mark\":{\"name\":\""
            guard let event = scanner.stringValueRange(forKey: "event"), scanner.equals(event, "mark"),
                scanner.occurrences(ofKey: "mark") == 1, scanner.occurrences(ofKey: "name") == 1,
                let name = scanner.stringValueRange(forKey: "name"), name.lowerBound >= opening.utf8CodeUnitCount,
                scanner.equals(name.lowerBound - opening.utf8CodeUnitCount..<name.lowerBound, opening),
                scanner.depth(at: name.lowerBound - opening.utf8CodeUnitCount) == 1
            else { return nil }
            if let expected {
                switch scanner.occurrences(ofKey: "streamSid") {
                case 0: break
                case 1:
                    guard let range = scanner.stringValueRange(forKey: "streamSid"), scanner.equals(range, expected) else { return nil }
                default: return nil
                }
            }
            return scanner.string(name)
        }
    }

    /// Largest `media` payload accepted, decoded: one second of audio (Twilio sends 20 ms).
    public static let maxPayloadBytes = 8000
    static let maxPayloadCharacters = (maxPayloadBytes + 2) / 3 * 4

    /// The fast path: nil unless the message is certainly a well-formed `media` event for this stream with a valid
    /// base64 payload of an acceptable size (anything else is left to Codable, which says what is wrong). One pass
    /// over the message (`TwilioMediaScanner`), then the payload's base64.
    static func scanMedia(_ text: String, streamSid expected: String? = nil) -> (payload: String, chunk: Int?)? {
        text.withUTF8Bytes { self.scanMedia(bytes: $0, streamSid: expected) }
    }

    static func scanMedia(bytes: UnsafeBufferPointer<UInt8>, streamSid expected: String? = nil) -> (payload: String, chunk: Int?)? {
        var scanner = TwilioMediaScanner(bytes: bytes)
        guard scanner.scan(), let event = scanner.event.result, scanner.equals(event, "media"),
            let payload = scanner.payload.result, payload.count <= Self.maxPayloadCharacters,
            Base64.isValid(UnsafeBufferPointer(rebasing: bytes[payload]))
        else { return nil }
        if let expected {
            switch scanner.streamSid.occurrences {
            case 0: break
            case 1:
                guard let range = scanner.streamSid.result,
                    expected.withUTF8Bytes({ scanner.equals(range, $0) })
                else { return nil }
            default: return nil
            }
        }
        // The chunk number, when it is one plain string of digits; anything else is left to Codable.
        var chunk: Int?
        switch scanner.chunk.occurrences {
        case 0: break
        case 1:
            guard let range = scanner.chunk.result else { return nil }
            chunk = scanner.integer(range)
        default: return nil
        }
        return (String(decoding: UnsafeBufferPointer(rebasing: bytes[payload]), as: UTF8.self), chunk)
    }

    /// A chunk number is 1–18 ASCII digits (the scanner's rule too, so both paths agree).
    static func chunkNumber(_ text: String) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 18, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        return Int(text)
    }

    static func decodeWithCodable(_ text: String, streamSid expected: String? = nil) throws(TwilioDecodingError) -> TwilioInbound {
        let envelope: Envelope
        do {
            envelope = try JSONDecoder().decode(Envelope.self, from: Data(text.utf8))
        } catch DecodingError.typeMismatch(_, let context) where !context.codingPath.isEmpty {
            throw .wrongType(context.codingPath.map(\.stringValue).joined(separator: "."))
        } catch DecodingError.valueNotFound(_, let context) where !context.codingPath.isEmpty {
            throw .wrongType(context.codingPath.map(\.stringValue).joined(separator: "."))
        } catch DecodingError.keyNotFound(let key, _) {
            throw .missingField(key.stringValue)
        } catch {
            throw .invalidJSON
        }
        if let expected, let named = envelope.streamSid, named != expected, ["media", "mark", "dtmf"].contains(envelope.event) {
            throw .wrongStreamSid
        }
        switch envelope.event {
        case "connected":
            return .connected
        case "start":
            guard let start = envelope.start else { throw .missingField("start") }
            guard let streamSid = start.streamSid ?? envelope.streamSid else { throw .missingField("streamSid") }
            return .start(
                TwilioStart(
                    streamSid: streamSid,
                    callSid: start.callSid ?? "",
                    accountSid: start.accountSid ?? "",
                    tracks: start.tracks ?? [],
                    customParameters: start.customParameters ?? [:],
                    encoding: start.mediaFormat?.encoding ?? "audio/x-mulaw",
                    sampleRate: start.mediaFormat?.sampleRate ?? 8000,
                    channels: start.mediaFormat?.channels ?? 1
                )
            )
        case "media":
            guard let payload = envelope.media?.payload else { throw .missingField("media.payload") }
            guard payload.utf8.count <= Self.maxPayloadCharacters else { throw .oversizedPayload }
            let chunk = envelope.media?.chunk.flatMap(chunkNumber)
            var copy = payload
            let valid = copy.withUTF8 { Base64.isValid($0) }
            guard valid else { throw .invalidBase64 }
            return .media(payload: payload, chunk: chunk)
        case "mark":
            guard let name = envelope.mark?.name else { throw .missingField("mark.name") }
            return .mark(name: name)
        case "dtmf":
            guard let digit = envelope.dtmf?.digit else { throw .missingField("dtmf.digit") }
            return .dtmf(digit: digit)
        case "stop":
            return .stop
        default:
            return .unhandled(event: envelope.event)
        }
    }

    /// The outbound JSON, built as a string (the hot path sends 50 of these per second per call).
    /// `media` and `mark` (one each per 20 ms frame) are built in one allocation.
    public static func encode(_ message: TwilioOutbound, quotedStreamSid: String) -> String {
        switch message {
        case .media(let bytes):
            let head: StaticString = "{\"event\":\"media\",\"streamSid\":"
            let middle: StaticString = ",\"media\":{\"payload\":\""
            let tail: StaticString = "\"}}"
            let count = head.utf8CodeUnitCount + quotedStreamSid.utf8.count + middle.utf8CodeUnitCount
                + Base64.encodedCount(bytes.count) + tail.utf8CodeUnitCount
            return JSONText.build(count: count) { out in
                out.append(head)
                out.append(quotedStreamSid)
                out.append(middle)
                out.appendBase64(bytes)
                out.append(tail)
            }
        case .mark(let name):
            let head: StaticString = "{\"event\":\"mark\",\"streamSid\":"
            let middle: StaticString = ",\"mark\":{\"name\":"
            let tail: StaticString = "}}"
            // The bridge's own names ("cb17") need no escape, and quoted they still fit in an inline small string.
            let quotedName = JSONText.needsEscaping(name) ? JSONText.quoted(name) : "\"" + name + "\""
            let count = head.utf8CodeUnitCount + quotedStreamSid.utf8.count + middle.utf8CodeUnitCount
                + quotedName.utf8.count + tail.utf8CodeUnitCount
            return JSONText.build(count: count) { out in
                out.append(head)
                out.append(quotedStreamSid)
                out.append(middle)
                out.append(quotedName)
                out.append(tail)
            }
        case .clear:
            return "{\"event\":\"clear\",\"streamSid\":" + quotedStreamSid + "}"
        }
    }

    private struct Envelope: Decodable {
        var event: String
        var streamSid: String?
        var start: Start?
        var media: Media?
        var mark: Mark?
        var dtmf: DTMF?

        struct Start: Decodable {
            var streamSid: String?
            var callSid: String?
            var accountSid: String?
            var tracks: [String]?
            var customParameters: [String: String]?
            var mediaFormat: MediaFormat?
        }
        struct MediaFormat: Decodable {
            var encoding: String?
            var sampleRate: Int?
            var channels: Int?
        }
        struct Media: Decodable {
            var payload: String?
            /// Twilio sends it as a string of digits; a number is accepted too, anything else ignored.
            var chunk: String?

            enum CodingKeys: String, CodingKey { case payload, chunk }

            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                self.payload = try container.decodeIfPresent(String.self, forKey: .payload)
                if let text = try? container.decodeIfPresent(String.self, forKey: .chunk) {
                    self.chunk = text
                } else if let number = try? container.decodeIfPresent(Int.self, forKey: .chunk) {
                    self.chunk = String(number)
                }
            }
        }
        struct Mark: Decodable { var name: String? }
        struct DTMF: Decodable { var digit: String? }
    }
}

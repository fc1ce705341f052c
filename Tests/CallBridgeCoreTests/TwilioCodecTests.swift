import Foundation
import Testing

@testable import CallBridgeCore

/// Twilio Media Streams messages, PROTOCOLS.md A3.
struct TwilioCodecTests {
    static let streamSid = "MZ18ad3ab5a668481ce02b83e7395059f0"
    static let callSid = "CA5f2d1b0b1e0d8c8b7a6f5e4d3c2b1a09"
    static let accountSid = "AC0123456789abcdef0123456789abcdef"
    /// 20 ms of μ-law silence.
    static let silencePayload = String(repeating: "/", count: 213) + "w=="

    // MARK: Inbound (A3 examples)

    @Test("connected")
    func connected() throws {
        let text = #"{"event":"connected","protocol":"Call","version":"1.0.0"}"#
        #expect(try TwilioCodec.decode(text) == .connected)
    }

    @Test("start with customParameters, tracks and mediaFormat")
    func start() throws {
        let text = """
            {"event":"start","sequenceNumber":"1",
             "start":{"accountSid":"\(Self.accountSid)","streamSid":"\(Self.streamSid)","callSid":"\(Self.callSid)",
                      "tracks":["inbound"],
                      "customParameters":{"tenant":"acme"},
                      "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},
             "streamSid":"\(Self.streamSid)"}
            """
        let expected = TwilioStart(
            streamSid: Self.streamSid,
            callSid: Self.callSid,
            accountSid: Self.accountSid,
            tracks: ["inbound"],
            customParameters: ["tenant": "acme"],
            encoding: "audio/x-mulaw",
            sampleRate: 8000,
            channels: 1
        )
        #expect(try TwilioCodec.decode(text) == .start(expected))
    }

    /// Values that differ from the defaults, so a decoder that ignored the fields would fail.
    @Test("start fields are read, not defaulted")
    func startNonDefaultValues() throws {
        let text = """
            {"event":"start","sequenceNumber":"1","start":{"accountSid":"AC9","streamSid":"MZ9","callSid":"CA9",
            "tracks":["inbound","outbound"],"customParameters":{"tenant":"acme","callToken":"t&k \\"q\\""},
            "mediaFormat":{"encoding":"audio/x-l16","sampleRate":16000,"channels":2}},"streamSid":"MZ9"}
            """
        let expected = TwilioStart(
            streamSid: "MZ9",
            callSid: "CA9",
            accountSid: "AC9",
            tracks: ["inbound", "outbound"],
            customParameters: ["tenant": "acme", "callToken": "t&k \"q\""],
            encoding: "audio/x-l16",
            sampleRate: 16000,
            channels: 2
        )
        #expect(try TwilioCodec.decode(text) == .start(expected))
    }

    @Test("start takes the top-level streamSid when start.streamSid is absent")
    func startStreamSidFallback() throws {
        let text = #"{"event":"start","start":{"callSid":"CA1"},"streamSid":"MZ-top"}"#
        guard case .start(let start) = try TwilioCodec.decode(text) else {
            Issue.record("not a start message")
            return
        }
        #expect(start.streamSid == "MZ-top")
        #expect(start.callSid == "CA1")
        #expect(start.tracks == [])
        #expect(start.customParameters == [:])
    }

    @Test("start without a start object or without any streamSid")
    func startMissingFields() {
        #expect(throws: TwilioDecodingError.missingField("start")) {
            try TwilioCodec.decode(#"{"event":"start","streamSid":"MZ1"}"#)
        }
        #expect(throws: TwilioDecodingError.missingField("streamSid")) {
            try TwilioCodec.decode(#"{"event":"start","start":{"callSid":"CA1"}}"#)
        }
    }

    @Test("media (A3 example with a real payload)")
    func media() throws {
        let text = """
            {"event":"media","sequenceNumber":"4",
             "media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"\(Self.silencePayload)"},
             "streamSid":"\(Self.streamSid)"}
            """
        #expect(try TwilioCodec.decode(text) == .media(payload: Self.silencePayload, chunk: 2))
        // The compact form takes the scanner path; both paths must give the same answer.
        let compact = #"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","#
            + #""timestamp":"5","payload":"/85OgAA="},"streamSid":"MZ1"}"#
        #expect(TwilioCodec.scanMedia(compact)?.payload == "/85OgAA=")
        #expect(TwilioCodec.scanMedia(compact)?.chunk == 2)
        #expect(try TwilioCodec.decodeWithCodable(compact) == .media(payload: "/85OgAA=", chunk: 2))
        #expect(try TwilioCodec.decode(compact) == .media(payload: "/85OgAA=", chunk: 2))
        // A numeric chunk is accepted too; a chunk that is not a number is ignored, not an error.
        let numeric = #"{"event":"media","media":{"chunk":7,"payload":"/85OgAA="}}"#
        #expect(try TwilioCodec.decode(numeric) == .media(payload: "/85OgAA=", chunk: 7))
        let odd = #"{"event":"media","media":{"chunk":"x1","payload":"/85OgAA="}}"#
        #expect(try TwilioCodec.decode(odd) == .media(payload: "/85OgAA=", chunk: nil))
    }

    @Test("media payload with JSON-escaped slashes is unescaped by the Codable path")
    func mediaEscapedSlash() throws {
        let text = #"{"event":"media","media":{"payload":"\/\/\/\/\/w=="},"streamSid":"MZ1"}"#
        #expect(TwilioCodec.scanMedia(text) == nil)
        #expect(try TwilioCodec.decode(text) == .media(payload: "/////w=="))
    }

    @Test("media with an empty payload is valid (any length is allowed)")
    func mediaEmptyPayload() throws {
        #expect(try TwilioCodec.decode(#"{"event":"media","media":{"payload":""}}"#) == .media(payload: ""))
    }

    @Test("dtmf")
    func dtmf() throws {
        let text = """
            {"event":"dtmf","streamSid":"\(Self.streamSid)","sequenceNumber":"5",\
            "dtmf":{"track":"inbound_track","digit":"1"}}
            """
        #expect(try TwilioCodec.decode(text) == .dtmf(digit: "1"))
        #expect(try TwilioCodec.decode(##"{"event":"dtmf","dtmf":{"digit":"#"}}"##) == .dtmf(digit: "#"))
    }

    @Test("mark: the fast path answers exactly what Codable answers, or leaves the message to it")
    func markFastPath() throws {
        let taken = [
            #"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"my label"}}"#,
            #"{"event":"mark","mark":{"name":"cb_m_17"},"streamSid":"MZ1"}"#,
            #"{"event":"mark","mark":{"name":"","extra":1},"streamSid":"MZ1"}"#,
        ]
        for text in taken {
            let fast = try #require(TwilioCodec.scanMark(text, streamSid: "MZ1"), "\(text)")
            #expect(try TwilioCodec.decodeWithCodable(text, streamSid: "MZ1") == .mark(name: fast))
        }
        let left = [
            // Another stream's mark, a name that is not the mark's, a nested mark, an escape, spaces, a second name.
            #"{"event":"mark","streamSid":"MZ9","mark":{"name":"cb1"}}"#,
            #"{"event":"mark","streamSid":"MZ1","mark":{"label":"x"},"name":"cb1"}"#,
            #"{"event":"mark","x":{"mark":{"name":"cb1"}}}"#,
            #"{"event":"mark","mark":{"name":"a\"b"}}"#,
            #"{"event":"mark", "mark":{"name":"cb1"}}"#,
            #"{"event":"mark","mark":{"name":"cb1","name":"cb2"}}"#,
            #"{"event":"media","mark":{"name":"cb1"}}"#,
        ]
        for text in left {
            #expect(TwilioCodec.scanMark(text, streamSid: "MZ1") == nil, "\(text)")
        }
        // What the fast path leaves is still decoded, or refused, by Codable.
        #expect(try TwilioCodec.decode(left[4], streamSid: "MZ1") == .mark(name: "cb1"))
        #expect(throws: TwilioDecodingError.missingField("mark.name")) { try TwilioCodec.decode(left[2], streamSid: "MZ1") }
    }

    @Test("mark")
    func mark() throws {
        let text = #"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"my label"}}"#
        #expect(try TwilioCodec.decode(text) == .mark(name: "my label"))
    }

    @Test("stop")
    func stop() throws {
        let text = """
            {"event":"stop","sequenceNumber":"5","stop":{"accountSid":"\(Self.accountSid)",\
            "callSid":"\(Self.callSid)"},"streamSid":"\(Self.streamSid)"}
            """
        #expect(try TwilioCodec.decode(text) == .stop)
    }

    @Test(
        "unknown events are unhandled, not errors",
        arguments: ["somethingNew", "Media", "", "médïa"]
    )
    func unknownEvent(event: String) throws {
        let text = #"{"event":"# + JSONText.quoted(event) + #","streamSid":"MZ1","x":{"y":[1,2]}}"#
        #expect(try TwilioCodec.decode(text) == .unhandled(event: event))
    }

    @Test(
        "invalid JSON",
        arguments: [
            "", "not json", "{", "}", "[]", "null", #"{"event":}"#, #"{"event":"media""#,
        ]
    )
    func invalidJSON(text: String) {
        #expect(throws: TwilioDecodingError.invalidJSON) { try TwilioCodec.decode(text) }
    }

    @Test("wrong types and missing fields say which field")
    func wrongTypes() {
        #expect(throws: TwilioDecodingError.missingField("event")) { try TwilioCodec.decode(#"{"streamSid":"MZ1"}"#) }
        #expect(throws: TwilioDecodingError.wrongType("event")) { try TwilioCodec.decode(#"{"event":5}"#) }
        #expect(throws: TwilioDecodingError.wrongType("media.payload")) { try TwilioCodec.decode(#"{"event":"media","media":{"payload":5}}"#) }
        #expect(throws: TwilioDecodingError.wrongType("media")) { try TwilioCodec.decode(#"{"event":"media","media":[1]}"#) }
    }

    @Test("a message for another stream, and an oversized payload, are refused")
    func streamSidAndSize() throws {
        let media = #"{"event":"media","streamSid":"MZ1","media":{"payload":"/85OgAA="}}"#
        #expect(try TwilioCodec.decode(media, streamSid: "MZ1") == .media(payload: "/85OgAA="))
        #expect(throws: TwilioDecodingError.wrongStreamSid) { try TwilioCodec.decode(media, streamSid: "MZ2") }
        #expect(throws: TwilioDecodingError.wrongStreamSid) {
            try TwilioCodec.decode(#"{"event":"mark","streamSid":"MZ9","mark":{"name":"cb1"}}"#, streamSid: "MZ2")
        }
        // Before start there is nothing to compare with.
        #expect(try TwilioCodec.decode(media) == .media(payload: "/85OgAA="))
        let big = Base64.encode([UInt8](repeating: 0xFF, count: TwilioCodec.maxPayloadBytes + 3))
        #expect(throws: TwilioDecodingError.oversizedPayload) { try TwilioCodec.decode(#"{"event":"media","media":{"payload":"\#(big)"}}"#) }
        let largest = Base64.encode([UInt8](repeating: 0xFF, count: TwilioCodec.maxPayloadBytes))
        #expect(throws: Never.self) { try TwilioCodec.decode(#"{"event":"media","media":{"payload":"\#(largest)"}}"#) }
        // Deep nesting is an error, not a crash.
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: TwilioDecodingError.self) { try TwilioCodec.decode(#"{"event":"media","x":\#(deep)}"#) }
    }

    @Test(
        "media with a non-base64 payload",
        arguments: ["@@@@", "Zm9", "Zg=a", "Zm9v Zm9v", "Zm-_", "A==="]
    )
    func invalidBase64(payload: String) {
        let text = #"{"event":"media","streamSid":"MZ1","media":{"payload":"# + JSONText.quoted(payload) + "}}"
        #expect(TwilioCodec.scanMedia(text) == nil)
        #expect(throws: TwilioDecodingError.invalidBase64) { try TwilioCodec.decode(text) }
    }

    @Test(
        "media without a payload",
        arguments: [
            #"{"event":"media","streamSid":"MZ1","media":{"track":"inbound","chunk":"1"}}"#,
            #"{"event":"media","streamSid":"MZ1"}"#,
        ]
    )
    func missingPayload(text: String) {
        #expect(throws: TwilioDecodingError.missingField("media.payload")) { try TwilioCodec.decode(text) }
    }

    @Test("mark and dtmf without their fields")
    func missingMarkAndDigit() {
        #expect(throws: TwilioDecodingError.missingField("mark.name")) {
            try TwilioCodec.decode(#"{"event":"mark","mark":{}}"#)
        }
        #expect(throws: TwilioDecodingError.missingField("dtmf.digit")) {
            try TwilioCodec.decode(#"{"event":"dtmf"}"#)
        }
    }

    // MARK: Outbound

    @Test("outbound media: exactly event, streamSid, media.payload")
    func encodeMedia() throws {
        let audio: [UInt8] = [0xFF, 0xCE, 0x4E, 0x80, 0x00]
        let text = TwilioCodec.encode(.media(audio), quotedStreamSid: JSONText.quoted(Self.streamSid))
        let object = try Self.parseObject(text)
        #expect(Set(object.keys) == ["event", "streamSid", "media"])
        #expect(object["event"] as? String == "media")
        #expect(object["streamSid"] as? String == Self.streamSid)
        let media = try #require(object["media"] as? [String: Any])
        #expect(Set(media.keys) == ["payload"])
        #expect(media["payload"] as? String == "/85OgAA=")
    }

    @Test("outbound media of 20 ms silence and of no audio")
    func encodeMediaSizes() throws {
        let silence = TwilioCodec.encode(.media([UInt8](repeating: 0xFF, count: 160)), quotedStreamSid: "\"MZ1\"")
        let media = try #require(try Self.parseObject(silence)["media"] as? [String: Any])
        #expect(media["payload"] as? String == Self.silencePayload)
        let empty = TwilioCodec.encode(.media([]), quotedStreamSid: "\"MZ1\"")
        let emptyMedia = try #require(try Self.parseObject(empty)["media"] as? [String: Any])
        #expect(emptyMedia["payload"] as? String == "")
    }

    @Test("outbound mark: exactly event, streamSid, mark.name; names are escaped")
    func encodeMark() throws {
        for name in ["r7:42", "my label", "quote \" back \\ slash", "line\nbreak\ttab", "bell\u{07}", "Zoë 🎧"] {
            let text = TwilioCodec.encode(.mark(name: name), quotedStreamSid: JSONText.quoted(Self.streamSid))
            let object = try Self.parseObject(text)
            #expect(Set(object.keys) == ["event", "streamSid", "mark"])
            #expect(object["event"] as? String == "mark")
            #expect(object["streamSid"] as? String == Self.streamSid)
            let mark = try #require(object["mark"] as? [String: Any])
            #expect(Set(mark.keys) == ["name"])
            #expect(mark["name"] as? String == name)
            // Twilio echoes the same shape back; our decoder must read it.
            #expect(try TwilioCodec.decode(text) == .mark(name: name))
        }
    }

    @Test("outbound clear: exactly event and streamSid")
    func encodeClear() throws {
        let text = TwilioCodec.encode(.clear, quotedStreamSid: JSONText.quoted(Self.streamSid))
        let object = try Self.parseObject(text)
        #expect(Set(object.keys) == ["event", "streamSid"])
        #expect(object["event"] as? String == "clear")
        #expect(object["streamSid"] as? String == Self.streamSid)
    }

    @Test("a streamSid with a quote and a backslash stays one valid string")
    func escapedStreamSid() throws {
        // Unescaped, this would close the string and inject a second "event" key.
        let sid = #"MZ"\","event":"x"#
        let quoted = JSONText.quoted(sid)
        #expect(quoted == #""MZ\"\\\",\"event\":\"x""#)
        let messages: [(TwilioOutbound, String)] = [
            (.media([1, 2, 3]), "media"), (.mark(name: "m"), "mark"), (.clear, "clear"),
        ]
        for (message, event) in messages {
            let text = TwilioCodec.encode(message, quotedStreamSid: quoted)
            let object = try Self.parseObject(text)
            #expect(object["streamSid"] as? String == sid, "\(message)")
            #expect(object["event"] as? String == event, "\(message)")
        }
    }

    // MARK: Helpers

    static func parseObject(_ text: String) throws -> [String: Any] {
        let value = try JSONSerialization.jsonObject(with: Data(text.utf8))
        return try #require(value as? [String: Any], "not a JSON object: \(text)")
    }
}

/// A model of what Twilio does with a bidirectional stream's outbound audio: buffer `media` in order, play it at
/// 8000 bytes/s, echo a `mark` when playout reaches it, and on `clear` drop the buffer and echo every pending mark.
public struct TwilioPlayout: Sendable {
    private var buffer: [UInt8] = []
    private var bufferHead = 0
    /// Marks not yet echoed, with the total enqueued byte count at the moment each was received.
    private var pendingMarks: [(name: String, position: Int)] = []
    public private(set) var enqueuedBytes = 0
    public private(set) var playedBytes = 0

    public init() {}

    public var bufferedBytes: Int { self.buffer.count - self.bufferHead }

    public mutating func media(_ bytes: [UInt8]) {
        self.buffer.append(contentsOf: bytes)
        self.enqueuedBytes += bytes.count
    }

    /// Returns the echo if nothing is buffered ahead of the mark.
    public mutating func mark(_ name: String) -> [String] {
        if self.bufferedBytes == 0 { return [name] }
        self.pendingMarks.append((name, self.enqueuedBytes))
        return []
    }

    /// Drops buffered audio; returns the echoes of every pending mark and the bytes dropped.
    public mutating func clear() -> (echoes: [String], droppedBytes: Int) {
        let dropped = self.bufferedBytes
        let echoes = self.pendingMarks.map(\.name)
        self.pendingMarks.removeAll()
        self.enqueuedBytes -= dropped
        self.buffer.removeAll(keepingCapacity: true)
        self.bufferHead = 0
        return (echoes, dropped)
    }

    /// Plays up to `count` bytes; silence fills an underrun. Returns what the caller hears, how much of it was
    /// real audio, and the marks reached.
    public mutating func play(_ count: Int) -> (audio: [UInt8], audioBytes: Int, echoes: [String]) {
        let available = min(count, self.bufferedBytes)
        var audio = Array(self.buffer[self.bufferHead..<(self.bufferHead + available)])
        self.bufferHead += available
        self.playedBytes += available
        if self.bufferHead == self.buffer.count {
            self.buffer.removeAll(keepingCapacity: true)
            self.bufferHead = 0
        }
        audio.append(contentsOf: repeatElement(MuLaw.silence, count: count - available))
        var echoes: [String] = []
        while let first = self.pendingMarks.first, first.position <= self.playedBytes {
            echoes.append(first.name)
            self.pendingMarks.removeFirst()
        }
        return (audio, available, echoes)
    }
}

/// Twilio-side codec for the simulator: encodes what Twilio sends, decodes what the bridge sends.
public enum TwilioSimulatorCodec {
    public static func connected() -> String {
        "{\"event\":\"connected\",\"protocol\":\"Call\",\"version\":\"1.0.0\"}"
    }

    public static func start(_ s: TwilioStart, sequence: Int) -> String {
        let params = s.customParameters.sorted { $0.key < $1.key }
            .map { JSONText.quoted($0.key) + ":" + JSONText.quoted($0.value) }.joined(separator: ",")
        return "{\"event\":\"start\",\"sequenceNumber\":\"\(sequence)\",\"start\":{\"accountSid\":"
            + JSONText.quoted(s.accountSid) + ",\"streamSid\":" + JSONText.quoted(s.streamSid) + ",\"callSid\":"
            + JSONText.quoted(s.callSid) + ",\"tracks\":[\"inbound\"],\"customParameters\":{" + params
            + "},\"mediaFormat\":{\"encoding\":\"audio/x-mulaw\",\"sampleRate\":8000,\"channels\":1}},\"streamSid\":"
            + JSONText.quoted(s.streamSid) + "}"
    }

    public static func media(_ bytes: [UInt8], sequence: Int, chunk: Int, timestampMs: Int, streamSid: String) -> String {
        "{\"event\":\"media\",\"sequenceNumber\":\"\(sequence)\",\"media\":{\"track\":\"inbound\",\"chunk\":\"\(chunk)\","
            + "\"timestamp\":\"\(timestampMs)\",\"payload\":\"" + Base64.encode(bytes) + "\"},\"streamSid\":"
            + JSONText.quoted(streamSid) + "}"
    }

    public static func mark(_ name: String, sequence: Int, streamSid: String) -> String {
        "{\"event\":\"mark\",\"sequenceNumber\":\"\(sequence)\",\"streamSid\":" + JSONText.quoted(streamSid)
            + ",\"mark\":{\"name\":" + JSONText.quoted(name) + "}}"
    }

    public static func stop(sequence: Int, accountSid: String, callSid: String, streamSid: String) -> String {
        "{\"event\":\"stop\",\"sequenceNumber\":\"\(sequence)\",\"stop\":{\"accountSid\":" + JSONText.quoted(accountSid)
            + ",\"callSid\":" + JSONText.quoted(callSid) + "},\"streamSid\":" + JSONText.quoted(streamSid) + "}"
    }

    /// What the bridge sent, as Twilio reads it.
    public static func decodeOutbound(_ text: String) -> TwilioOutbound? {
        guard let message = try? JSONDecoderBox.decode(Outbound.self, from: text) else { return nil }
        switch message.event {
        case "media":
            guard let payload = message.media?.payload, let bytes = Base64.decode(payload) else { return nil }
            return .media(bytes)
        case "mark":
            guard let name = message.mark?.name else { return nil }
            return .mark(name: name)
        case "clear":
            return .clear
        default:
            return nil
        }
    }

    struct Outbound: Decodable {
        var event: String
        var media: Media?
        var mark: Mark?
        struct Media: Decodable { var payload: String? }
        struct Mark: Decodable { var name: String? }
    }
}

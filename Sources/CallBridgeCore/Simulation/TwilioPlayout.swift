/// Twilio's playout of a bidirectional stream's outbound audio, by byte counts only: `media` is queued in order and
/// played at 8000 bytes/s; a `mark` is echoed when playout reaches it (at once if nothing is queued); `clear` drops
/// the queue and echoes every pending mark. Small enough to keep one per simulated call (`callbridge load`).
public struct TwilioPlayoutQueue: Sendable {
    /// Marks not yet echoed, with the total enqueued byte count at the moment each was received; live from `head`.
    private var pendingMarks: [(name: String, position: Int)] = []
    private var head = 0
    public private(set) var enqueuedBytes = 0
    public private(set) var playedBytes = 0

    public init() {}

    public var bufferedBytes: Int { self.enqueuedBytes - self.playedBytes }
    public var pendingMarkCount: Int { self.pendingMarks.count - self.head }

    public mutating func media(byteCount: Int) {
        self.enqueuedBytes += byteCount
    }

    /// The mark's name when it is echoed at once (nothing queued ahead of it); nil when it waits for playout.
    public mutating func mark(_ name: String) -> String? {
        if self.bufferedBytes == 0 { return name }
        self.pendingMarks.append((name, self.enqueuedBytes))
        return nil
    }

    /// Drops the queue; `echo` gets every pending mark in order. Returns the bytes dropped.
    public mutating func clear(echo: (String) -> Void) -> Int {
        let dropped = self.bufferedBytes
        for index in self.head..<self.pendingMarks.count { echo(self.pendingMarks[index].name) }
        self.pendingMarks.removeAll(keepingCapacity: true)
        self.head = 0
        self.enqueuedBytes = self.playedBytes
        return dropped
    }

    /// Plays up to `count` bytes; `echo` gets the marks reached. Returns how many bytes were real audio (the rest of
    /// `count` is silence: an underrun).
    public mutating func play(_ count: Int, echo: (String) -> Void) -> Int {
        let available = min(count, self.bufferedBytes)
        self.playedBytes += available
        while self.head < self.pendingMarks.count, self.pendingMarks[self.head].position <= self.playedBytes {
            echo(self.pendingMarks[self.head].name)
            self.head += 1
        }
        if self.head == self.pendingMarks.count {
            self.pendingMarks.removeAll(keepingCapacity: true)
            self.head = 0
        } else if self.head >= 64 && self.head * 2 >= self.pendingMarks.count {
            self.pendingMarks.removeFirst(self.head)
            self.head = 0
        }
        return available
    }
}

/// A model of what Twilio does with a bidirectional stream's outbound audio (`TwilioPlayoutQueue`), keeping the
/// audio itself so that what the caller hears can be recorded.
public struct TwilioPlayout: Sendable {
    private var queue = TwilioPlayoutQueue()
    private var buffer: [UInt8] = []
    private var bufferHead = 0

    public init() {}

    public var enqueuedBytes: Int { self.queue.enqueuedBytes }
    public var playedBytes: Int { self.queue.playedBytes }
    public var bufferedBytes: Int { self.queue.bufferedBytes }

    public mutating func media(_ bytes: [UInt8]) {
        self.buffer.append(contentsOf: bytes)
        self.queue.media(byteCount: bytes.count)
    }

    /// Returns the echo if nothing is buffered ahead of the mark.
    public mutating func mark(_ name: String) -> [String] {
        self.queue.mark(name).map { [$0] } ?? []
    }

    /// Drops buffered audio; returns the echoes of every pending mark and the bytes dropped.
    public mutating func clear() -> (echoes: [String], droppedBytes: Int) {
        var echoes: [String] = []
        let dropped = self.queue.clear { echoes.append($0) }
        self.buffer.removeAll(keepingCapacity: true)
        self.bufferHead = 0
        return (echoes, dropped)
    }

    /// Plays up to `count` bytes; silence fills an underrun. Returns what the caller hears, how much of it was
    /// real audio, and the marks reached.
    public mutating func play(_ count: Int) -> (audio: [UInt8], audioBytes: Int, echoes: [String]) {
        var echoes: [String] = []
        let available = self.queue.play(count) { echoes.append($0) }
        var audio = Array(self.buffer[self.bufferHead..<(self.bufferHead + available)])
        self.bufferHead += available
        if self.bufferHead == self.buffer.count {
            self.buffer.removeAll(keepingCapacity: true)
            self.bufferHead = 0
        }
        audio.append(contentsOf: repeatElement(MuLaw.silence, count: count - available))
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

    /// What the bridge sent, by kind and size only (what the playout model needs): the byte scanner when it can vouch
    /// for the message, Codable otherwise. Nil for anything Twilio would not act on.
    public static func summarizeOutbound(_ bytes: UnsafeBufferPointer<UInt8>) -> TwilioOutboundSummary? {
        let scanned = JSONScanner.withScanner(bytes: bytes) { scanner -> TwilioOutboundSummary? in
            guard let event = scanner.stringValueRange(forKey: "event") else { return nil }
            if scanner.equals(event, "media") {
                guard let payload = scanner.stringValueRange(forKey: "payload"), scanner.isBase64(payload) else { return nil }
                var padding = 0
                if payload.count >= 2 {
                    if scanner.bytes[payload.upperBound - 1] == UInt8(ascii: "=") { padding += 1 }
                    if scanner.bytes[payload.upperBound - 2] == UInt8(ascii: "=") { padding += 1 }
                }
                return .media(byteCount: payload.count / 4 * 3 - padding)
            }
            if scanner.equals(event, "mark") {
                guard let name = scanner.stringValueRange(forKey: "name") else { return nil }
                return .mark(name: scanner.string(name))
            }
            if scanner.equals(event, "clear") { return .clear }
            return nil
        }
        if let scanned { return scanned }
        switch Self.decodeOutbound(String(decoding: bytes, as: UTF8.self)) {
        case .media(let audio): return .media(byteCount: audio.count)
        case .mark(let name): return .mark(name: name)
        case .clear: return .clear
        case nil: return nil
        }
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

/// A message from the bridge as the load generator reads it: kind and size, no audio.
public enum TwilioOutboundSummary: Sendable, Equatable {
    case media(byteCount: Int)
    case mark(name: String)
    case clear
}

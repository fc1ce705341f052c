/// Where outbound JSON bytes go: an array in tests, a network buffer in the shell.
public protocol ByteSink {
    mutating func append(bytes: UnsafeRawBufferPointer)
}

extension Array: ByteSink where Element == UInt8 {
    public mutating func append(bytes: UnsafeRawBufferPointer) { self.append(contentsOf: bytes) }
}

extension ByteSink {
    mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { self.append(bytes: $0) }
    }

    /// `value` in decimal ASCII (no allocation).
    mutating func append(decimal value: Int) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 21) { digits in
            var n = value.magnitude
            var start = 21
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(n % 10)
                n /= 10
            } while n > 0
            if value < 0 {
                start -= 1
                digits[start] = UInt8(ascii: "-")
            }
            self.append(bytes: UnsafeRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(digits)[start..<21]))
        }
    }
}

/// The caller's side of a simulated Twilio stream, built once and shared by every call of a load run: the `media`
/// message of each 20 ms frame with its base64 payload already encoded, so a call only splices in its own fields
/// (`sequenceNumber`, `chunk`, `timestamp`, `streamSid`). The bytes are exactly what `TwilioSimulatorCodec` writes.
public struct TwilioMediaTemplate: Sendable {
    /// Base64 of each 160-byte frame.
    let payloads: [[UInt8]]
    /// The longest payload, for `maximumMediaByteCount` (computed once: it is asked for every frame).
    let maxPayloadCount: Int

    static let mediaHead = Array(#"{"event":"media","sequenceNumber":""#.utf8)
    static let mediaChunk = Array(#"","media":{"track":"inbound","chunk":""#.utf8)
    static let mediaTimestamp = Array(#"","timestamp":""#.utf8)
    static let mediaPayload = Array(#"","payload":""#.utf8)
    static let mediaStreamSid = Array(#""},"streamSid":"#.utf8)
    static let markHead = Array(#"{"event":"mark","sequenceNumber":""#.utf8)
    static let markStreamSid = Array(#"","streamSid":"#.utf8)
    static let markName = Array(#","mark":{"name":"#.utf8)
    static let close = Array("}".utf8)
    static let markClose = Array("}}".utf8)

    /// `audio` is 8 kHz μ-law; a last partial frame is padded with silence.
    public init(audio: [UInt8]) {
        var payloads: [[UInt8]] = []
        var start = 0
        while start < audio.count {
            var frame = Array(audio[start..<min(audio.count, start + AudioFrame.byteCount)])
            frame += repeatElement(MuLaw.silence, count: AudioFrame.byteCount - frame.count)
            payloads.append(Array(Base64.encode(frame).utf8))
            start += AudioFrame.byteCount
        }
        self.payloads = payloads
        self.maxPayloadCount = payloads.map(\.count).max() ?? 0
    }

    public var frameCount: Int { self.payloads.count }

    /// The `media` message of frame `frame`; `quotedStreamSid` is the stream's sid as a JSON string literal.
    public func writeMedia<Sink: ByteSink>(
        frame: Int,
        sequence: Int,
        chunk: Int,
        timestampMs: Int,
        quotedStreamSid: [UInt8],
        into sink: inout Sink
    ) {
        sink.append(Self.mediaHead)
        sink.append(decimal: sequence)
        sink.append(Self.mediaChunk)
        sink.append(decimal: chunk)
        sink.append(Self.mediaTimestamp)
        sink.append(decimal: timestampMs)
        sink.append(Self.mediaPayload)
        sink.append(self.payloads[frame])
        sink.append(Self.mediaStreamSid)
        sink.append(quotedStreamSid)
        sink.append(Self.close)
    }

    /// An upper bound of `writeMedia`'s size, to size a buffer once.
    public func maximumMediaByteCount(quotedStreamSidCount: Int) -> Int {
        let fixed = Self.mediaHead.count + Self.mediaChunk.count + Self.mediaTimestamp.count + Self.mediaPayload.count
            + Self.mediaStreamSid.count + Self.close.count
        return fixed + 3 * 20 + self.maxPayloadCount + quotedStreamSidCount
    }

    /// A `mark` echo; `quotedName` is the mark's name as a JSON string literal.
    public static func writeMark<Sink: ByteSink>(quotedName: [UInt8], sequence: Int, quotedStreamSid: [UInt8], into sink: inout Sink) {
        sink.append(Self.markHead)
        sink.append(decimal: sequence)
        sink.append(Self.markStreamSid)
        sink.append(quotedStreamSid)
        sink.append(Self.markName)
        sink.append(quotedName)
        sink.append(Self.markClose)
    }
}

import CallBridgeCore
import NIOCore
import NIOWebSocket

/// One frame as it came off the wire: its first byte (FIN, RSV1–3, opcode), its masking key, and its payload still
/// masked. A slice of the bytes read: nothing is copied until the payload is used.
struct WebSocketWireFrame {
    var firstByte: UInt8
    /// In wire order (`WebSocketMasking`'s form); nil for an unmasked frame.
    var maskKey: UInt32?
    var payload: ByteBuffer

    var fin: Bool { self.firstByte & 0x80 != 0 }
    var reservedBits: UInt8 { self.firstByte & 0x70 }
    var opcode: WebSocketOpcode { WebSocketOpcode(encodedWebSocketOpcode: self.firstByte & 0x0F)! }

    /// The payload unmasked: the bytes themselves when the frame is not masked, else a copy unmasked on the way.
    func unmaskedPayload(allocator: ByteBufferAllocator) -> ByteBuffer {
        guard let key = self.maskKey, self.payload.readableBytes > 0 else { return self.payload }
        var buffer = allocator.buffer(capacity: self.payload.readableBytes)
        buffer.writeMasked(self.payload, key: key)
        return buffer
    }

    /// Appends the payload, unmasked, to `buffer` (joining fragments).
    func appendUnmaskedPayload(to buffer: inout ByteBuffer) {
        if let key = self.maskKey {
            buffer.writeMasked(self.payload, key: key)
        } else {
            buffer.writeImmutableBuffer(self.payload)
        }
    }

    /// Runs `body` on the payload's bytes, unmasked: the buffer's own bytes when the frame is not masked, else
    /// `scratch` (reused: no allocation once it is large enough) unmasked into.
    func withUnmaskedBytes<Result>(scratch: inout [UInt8], _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        guard let key = self.maskKey else { return self.payload.withUnsafeReadableBytes(body) }
        let count = self.payload.readableBytes
        if scratch.count < count { scratch = [UInt8](repeating: 0, count: max(count, 2 * scratch.count)) }
        return scratch.withUnsafeMutableBytes { destination in
            let target = UnsafeMutableRawBufferPointer(rebasing: destination[..<count])
            self.payload.withUnsafeReadableBytes { source in WebSocketMasking.apply(source, into: target, key: key) }
            return body(UnsafeRawBufferPointer(target))
        }
    }

    /// The payload, unmasked, as a String (invalid UTF-8 repaired): one pass from the frame into the string.
    func text() -> String {
        guard let key = self.maskKey else { return String(buffer: self.payload) }
        let count = self.payload.readableBytes
        return self.payload.withUnsafeReadableBytes { source in
            String(unsafeUninitializedCapacity: count) { destination in
                WebSocketMasking.apply(source, into: UnsafeMutableRawBufferPointer(destination), key: key)
                return count
            }
        }
    }
}

/// RFC 6455 §5.2 framing, read: whole frames out of the bytes received, for `WebSocketConnectionHandler` (in place of
/// NIO's `WebSocketFrameDecoder` and the `ByteToMessageHandler` around it: no handler, no `WebSocketFrame` and its
/// boxed storage per frame).
///
/// It enforces what the decoder did (the frame size limit; control frames whole and at most 125 bytes) and refuses
/// reserved bits, which callbridge never negotiates an extension for.
enum WebSocketFrameParser {
    enum Step {
        /// A whole frame; the buffer's reader index has moved past it.
        case frame(WebSocketWireFrame)
        /// Not a whole frame yet; nothing consumed.
        case needMore
        /// The frame is larger than allowed (close with 1009).
        case tooLarge
        /// A control frame fragmented or longer than 125 bytes, or reserved bits set (close with 1002).
        case malformed
    }

    static func next(_ buffer: inout ByteBuffer, maximumFrameSize: Int) -> Step {
        let start = buffer.readerIndex
        let available = buffer.readableBytes
        guard available >= 2, let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return .needMore }
        guard first & 0x70 == 0 else { return .malformed }
        let isControl = first & 0x08 != 0
        var headerLength = 2
        var length: Int
        switch second & 0x7F {
        case 126:
            guard available >= 4, let word = buffer.getInteger(at: start + 2, as: UInt16.self) else { return .needMore }
            length = Int(word)
            headerLength = 4
        case 127:
            guard available >= 10, let quad = buffer.getInteger(at: start + 2, as: UInt64.self) else { return .needMore }
            guard quad <= UInt64(maximumFrameSize) else { return .tooLarge }
            length = Int(quad)
            headerLength = 10
        case let short:
            length = Int(short)
        }
        guard length <= maximumFrameSize else { return .tooLarge }
        if isControl && (first & 0x80 == 0 || length > 125) { return .malformed }
        let masked = second & 0x80 != 0
        var key: UInt32?
        if masked {
            guard available >= headerLength + 4, let word = buffer.getInteger(at: start + headerLength, as: UInt32.self) else {
                return .needMore
            }
            key = word
            headerLength += 4
        }
        guard available >= headerLength + length, let payload = buffer.getSlice(at: start + headerLength, length: length) else {
            return .needMore
        }
        buffer.moveReaderIndex(forwardBy: headerLength + length)
        return .frame(WebSocketWireFrame(firstByte: first, maskKey: key, payload: payload))
    }
}

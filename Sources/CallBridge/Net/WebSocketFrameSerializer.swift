import CallBridgeCore
import NIOCore
import NIOWebSocket

/// RFC 6455 §5.2 framing, written: what `WebSocketConnectionHandler` sends, byte for byte what NIO's
/// `WebSocketFrameEncoder` would, masked with `WebSocketMasking` (eight bytes a step) instead of byte by byte.
///
/// - A payload that nothing else holds, with room before its reader index (`webSocketPayload(capacity:)`), gets
///   the header in that room and is masked in place: one buffer, no copy (`send(text:)` hands its payload over).
/// - Otherwise a masked payload, or an unmasked one of up to `copyLimit` bytes, is copied (and masked) in one pass
///   into a new buffer after the header: one write. A `WebSocketFrame` written through the pipeline is always shared
///   while it passes (the `NIOAny` carrying it lives for the whole `write` call), so this is the path of frames that
///   handlers write.
/// - A larger unmasked payload is written as it is, after the header in a small buffer of its own.
///
/// Extension data (never negotiated by callbridge) is sent before the application data, masked as one run with it.
/// The FIN and RSV bits are sent as the frame has them.
enum WebSocketFrameSerializer {
    /// Largest header: two bytes, a 64-bit length and a masking key.
    static let maximumHeaderLength = 14
    /// Largest unmasked payload copied behind its header rather than written after a header of its own: a second
    /// write through the pipeline and the channel costs more than copying this much.
    static let copyLimit = 1024

    /// A frame's bytes: one buffer, or (a large unmasked payload) a header and then the payload as it is. A header of
    /// its own goes in `headerBuffer`, reused from frame to frame. The payload is taken (`consuming`), so that a
    /// caller that hands over its only reference gets the in-place encoding.
    static func serialize(
        firstByte: UInt8,
        key: UInt32?,
        extensionData: ByteBuffer? = nil,
        payload: consuming ByteBuffer,
        allocator: ByteBufferAllocator,
        headerBuffer: inout ByteBuffer?
    ) -> (ByteBuffer, ByteBuffer?) {
        if let extensionData, extensionData.readableBytes > 0 {
            return (Self.copying(firstByte: firstByte, key: key, extensionData: extensionData, data: payload, allocator: allocator), nil)
        }
        if Self.encodeInPlace(firstByte: firstByte, key: key, payload: &payload) { return (payload, nil) }
        if key != nil || payload.readableBytes <= Self.copyLimit {
            return (Self.copying(firstByte: firstByte, key: key, data: payload, allocator: allocator), nil)
        }
        var header = headerBuffer ?? allocator.buffer(capacity: Self.maximumHeaderLength)
        headerBuffer = nil  // so that `clear()` does not copy it (a reference left in a write queue still may)
        header.clear()
        header.moveWriterIndex(forwardBy: Self.setHeader(firstByte: firstByte, length: payload.readableBytes, key: nil, in: &header, at: 0))
        headerBuffer = header
        return (header, payload)
    }

    // MARK: Encoding

    /// The header's first byte: FIN, RSV1–3 and the opcode.
    static func firstByte(of frame: WebSocketFrame) -> UInt8 {
        (frame.fin ? 0x80 : 0) | (frame.rsv1 ? 0x40 : 0) | (frame.rsv2 ? 0x20 : 0) | (frame.rsv3 ? 0x10 : 0)
            | UInt8(webSocketOpcode: frame.opcode)
    }

    static func headerLength(payloadLength: Int, masked: Bool) -> Int {
        let extendedLength = payloadLength <= 125 ? 0 : payloadLength <= Int(UInt16.max) ? 2 : 8
        return 2 + extendedLength + (masked ? 4 : 0)
    }

    /// Writes a frame header at `index` (without moving the indices); returns its length.
    static func setHeader(firstByte: UInt8, length: Int, key: UInt32?, in buffer: inout ByteBuffer, at index: Int) -> Int {
        let maskBit: UInt8 = key == nil ? 0 : 0x80
        var i = index
        i += buffer.setInteger(firstByte, at: i)
        if length <= 125 {
            i += buffer.setInteger(UInt8(length) | maskBit, at: i)
        } else if length <= Int(UInt16.max) {
            i += buffer.setInteger(126 | maskBit, at: i)
            i += buffer.setInteger(UInt16(length), at: i)
        } else {
            i += buffer.setInteger(127 | maskBit, at: i)
            i += buffer.setInteger(UInt64(length), at: i)
        }
        if let key { i += buffer.setInteger(key, at: i) }  // big-endian: the key's first byte first
        return i - index
    }

    /// When `payload` is the only reference to its storage and has room for the header before its reader index:
    /// masks it in place (with a key), puts the header in front and returns true. Otherwise leaves it and returns
    /// false.
    static func encodeInPlace(firstByte: UInt8, key: UInt32?, payload: inout ByteBuffer) -> Bool {
        let headerLength = Self.headerLength(payloadLength: payload.readableBytes, masked: key != nil)
        guard payload.readerIndex >= headerLength else { return false }
        let done: Void? = payload.modifyIfUniquelyOwned { buffer in
            if let key { buffer.withUnsafeMutableReadableBytes { WebSocketMasking.apply($0, key: key) } }
            let start = buffer.readerIndex - headerLength
            _ = Self.setHeader(firstByte: firstByte, length: buffer.readableBytes, key: key, in: &buffer, at: start)
            buffer.moveReaderIndex(to: start)
        }
        return done != nil
    }

    /// Frames the payload that starts `payloadStart` bytes into `frame` and runs to its end: masks it in place (with
    /// a key) and writes the header just before it, in the room left there (at least `maximumHeaderLength` bytes is
    /// always enough). Returns where the frame starts.
    static func encodeInPlace(firstByte: UInt8, key: UInt32?, frame: UnsafeMutableRawBufferPointer, payloadStart: Int) -> Int {
        let length = frame.count - payloadStart
        let headerLength = Self.headerLength(payloadLength: length, masked: key != nil)
        precondition(payloadStart >= headerLength, "no room for the frame header")
        if let key { WebSocketMasking.apply(UnsafeMutableRawBufferPointer(rebasing: frame[payloadStart...]), key: key) }
        let maskBit: UInt8 = key == nil ? 0 : 0x80
        var i = payloadStart - headerLength
        let start = i
        func put(_ byte: UInt8) {
            frame[i] = byte
            i += 1
        }
        put(firstByte)
        if length <= 125 {
            put(UInt8(length) | maskBit)
        } else if length <= Int(UInt16.max) {
            put(126 | maskBit)
            for shift in stride(from: 8, through: 0, by: -8) { put(UInt8(truncatingIfNeeded: length >> shift)) }
        } else {
            put(127 | maskBit)
            for shift in stride(from: 56, through: 0, by: -8) { put(UInt8(truncatingIfNeeded: length >> shift)) }
        }
        if let key { for shift in stride(from: 24, through: 0, by: -8) { put(UInt8(truncatingIfNeeded: key >> UInt32(shift))) } }
        return start
    }

    /// A new buffer with the header, the extension data and the data (masked as one run when there is a key): one
    /// pass over the payload.
    static func copying(
        firstByte: UInt8,
        key: UInt32?,
        extensionData: ByteBuffer? = nil,
        data: ByteBuffer,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let extensionLength = extensionData?.readableBytes ?? 0
        let length = extensionLength + data.readableBytes
        let headerLength = Self.headerLength(payloadLength: length, masked: key != nil)
        var bytes = allocator.buffer(capacity: headerLength + length)
        bytes.moveWriterIndex(forwardBy: Self.setHeader(firstByte: firstByte, length: length, key: key, in: &bytes, at: 0))
        if let key {
            if let extensionData { bytes.writeMasked(extensionData, key: key) }
            bytes.writeMasked(data, key: key, indexOffset: extensionLength)
        } else {
            if let extensionData { bytes.writeImmutableBuffer(extensionData) }
            bytes.writeImmutableBuffer(data)
        }
        return bytes
    }
}

extension WebSocketMaskingKey {
    /// The key as `WebSocketMasking` takes it: the first byte most significant.
    var wireOrder: UInt32 {
        UInt32(self[0]) << 24 | UInt32(self[1]) << 16 | UInt32(self[2]) << 8 | UInt32(self[3])
    }
}

extension ByteBuffer {
    /// Appends `source`'s readable bytes XORed with `key` (`WebSocketMasking`): a copy and the (un)masking in one
    /// pass.
    mutating func writeMasked(_ source: ByteBuffer, key: UInt32, indexOffset: Int = 0) {
        let count = source.readableBytes
        guard count > 0 else { return }
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { destination in
            source.withUnsafeReadableBytes { WebSocketMasking.apply($0, into: destination, key: key, indexOffset: indexOffset) }
            return count
        }
    }
}

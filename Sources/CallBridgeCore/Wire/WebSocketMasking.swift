/// RFC 6455 §5.3 masking: payload byte `i` is XORed with key byte `(i + indexOffset) % 4`. Masking and unmasking
/// are the same operation.
///
/// Word at a time: the key is repeated into a 64-bit word (rotated for the index offset) and the payload is XORed
/// eight bytes per step with unaligned loads and stores, then the last 0–7 bytes one by one.
public enum WebSocketMasking {
    /// XORs `bytes` in place with `key`.
    ///
    /// - Parameters:
    ///   - key: The four key bytes in wire order, the first in the most significant byte (`0x37FA_213D` for the key
    ///     37 fa 21 3d).
    ///   - indexOffset: The position of `bytes`' first byte in the whole masked stream (only its value mod 4
    ///     matters; not negative): for a payload masked in pieces.
    public static func apply(_ bytes: UnsafeMutableRawBufferPointer, key: UInt32, indexOffset: Int = 0) {
        guard let base = bytes.baseAddress else { return }
        self.xor(from: UnsafeRawPointer(base), to: base, count: bytes.count, key: key, indexOffset: indexOffset)
    }

    /// Writes `source` XORed with `key` to the start of `destination` (at least as long) in one pass: a copy and
    /// the masking together. The two must not overlap unless they start at the same address.
    public static func apply(
        _ source: UnsafeRawBufferPointer,
        into destination: UnsafeMutableRawBufferPointer,
        key: UInt32,
        indexOffset: Int = 0
    ) {
        precondition(destination.count >= source.count, "masking destination too small")
        guard let from = source.baseAddress, let to = destination.baseAddress else { return }
        self.xor(from: from, to: to, count: source.count, key: key, indexOffset: indexOffset)
    }

    /// The key as it meets a run of bytes starting at `indexOffset`, repeated twice, in memory order (its first byte
    /// at the lowest address on either endianness).
    static func word(key: UInt32, indexOffset: Int) -> UInt64 {
        let shift = UInt32(truncatingIfNeeded: indexOffset & 3) &* 8
        let rotated = shift == 0 ? key : (key << shift) | (key >> (32 - shift))
        // `bigEndian` lays the most significant byte (the first key byte) out first.
        let inMemoryOrder = UInt64(rotated.bigEndian)
        return inMemoryOrder | inMemoryOrder << 32
    }

    @inline(__always)
    private static func xor(
        from source: UnsafeRawPointer,
        to destination: UnsafeMutableRawPointer,
        count: Int,
        key: UInt32,
        indexOffset: Int
    ) {
        let mask = self.word(key: key, indexOffset: indexOffset)
        var offset = 0
        while count - offset >= 8 {
            let word = source.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            destination.storeBytes(of: word ^ mask, toByteOffset: offset, as: UInt64.self)
            offset &+= 8
        }
        // The tail starts at a multiple of 8 from the start, so at the mask word's first byte.
        withUnsafeBytes(of: mask) { maskBytes in
            var k = 0
            while offset < count {
                let byte = source.load(fromByteOffset: offset, as: UInt8.self)
                destination.storeBytes(of: byte ^ maskBytes[k], toByteOffset: offset, as: UInt8.self)
                offset &+= 1
                k &+= 1
            }
        }
    }
}

import Testing

@testable import CallBridgeCore

/// RFC 6455 masking eight bytes a step, against the definition applied byte by byte.
struct WebSocketMaskingTests {
    /// The definition (§5.3): byte `i` XOR key byte `(i + offset) % 4`.
    static func reference(_ bytes: [UInt8], key: [UInt8], indexOffset: Int) -> [UInt8] {
        bytes.enumerated().map { $0.element ^ key[($0.offset + indexOffset) % 4] }
    }

    static func wireOrder(_ key: [UInt8]) -> UInt32 {
        key.reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func masked(_ bytes: [UInt8], key: [UInt8], indexOffset: Int = 0) -> [UInt8] {
        var copy = bytes
        copy.withUnsafeMutableBytes { WebSocketMasking.apply($0, key: Self.wireOrder(key), indexOffset: indexOffset) }
        return copy
    }

    @Test("RFC 6455 §5.7: \"Hello\" masked with 37 fa 21 3d")
    func rfcExample() {
        let key: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        #expect(Self.masked(Array("Hello".utf8), key: key) == [0x7F, 0x9F, 0x4D, 0x51, 0x58])
        #expect(Self.masked([0x7F, 0x9F, 0x4D, 0x51, 0x58], key: key) == Array("Hello".utf8))
        // From the second byte of the stream on: "ello" meets fa 21 3d 37.
        #expect(Self.masked(Array("ello".utf8), key: key, indexOffset: 1) == [0x9F, 0x4D, 0x51, 0x58])
    }

    @Test("in place: every length 0...40 and 1000, every index offset, at every alignment")
    func inPlaceMatchesTheDefinition() {
        var rng = SplitMix64(state: 0x6455)
        for length in Array(0...40) + [1000] {
            for indexOffset in 0..<4 {
                let key = rng.bytes(4)
                let bytes = rng.bytes(length)
                let expected = Self.reference(bytes, key: key, indexOffset: indexOffset)
                #expect(Self.masked(bytes, key: key, indexOffset: indexOffset) == expected, "length \(length), offset \(indexOffset)")
                // The offset counts mod 4.
                #expect(Self.masked(bytes, key: key, indexOffset: indexOffset + 8) == expected, "length \(length), offset \(indexOffset + 8)")
                for shift in 1..<8 {
                    // The same bytes `shift` bytes into a larger buffer, so the 8-byte loads are unaligned.
                    var padded = [UInt8](repeating: 0xA5, count: shift) + bytes + [0x5A]
                    padded.withUnsafeMutableBytes { raw in
                        let run = UnsafeMutableRawBufferPointer(rebasing: raw[shift..<(shift + length)])
                        WebSocketMasking.apply(run, key: Self.wireOrder(key), indexOffset: indexOffset)
                    }
                    #expect(Array(padded[shift..<(shift + length)]) == expected, "length \(length), offset \(indexOffset), shift \(shift)")
                    #expect(padded.prefix(shift).allSatisfy { $0 == 0xA5 } && padded.last == 0x5A, "wrote outside the run")
                }
            }
        }
    }

    @Test("copying: every length 0...40 and 1000, every index offset, into a larger destination")
    func copyingMatchesTheDefinition() {
        var rng = SplitMix64(state: 53)
        for length in Array(0...40) + [1000] {
            for indexOffset in 0..<4 {
                let key = rng.bytes(4)
                let bytes = rng.bytes(length)
                var destination = [UInt8](repeating: 0xEE, count: length + 3)
                bytes.withUnsafeBytes { source in
                    destination.withUnsafeMutableBytes { WebSocketMasking.apply(source, into: $0, key: Self.wireOrder(key), indexOffset: indexOffset) }
                }
                #expect(Array(destination.prefix(length)) == Self.reference(bytes, key: key, indexOffset: indexOffset), "length \(length), offset \(indexOffset)")
                #expect(destination.suffix(3) == [0xEE, 0xEE, 0xEE], "wrote past the source's length")
            }
        }
    }

    @Test("a payload masked in pieces with running offsets equals it masked whole")
    func piecesContinueTheKey() {
        var rng = SplitMix64(state: 7)
        let key = rng.bytes(4)
        let bytes = rng.bytes(301)
        var pieces: [UInt8] = []
        var start = 0
        for length in [3, 0, 17, 1, 8, 200, 72] {
            pieces += Self.masked(Array(bytes[start..<(start + length)]), key: key, indexOffset: start)
            start += length
        }
        #expect(pieces == Self.masked(bytes, key: key))
    }
}

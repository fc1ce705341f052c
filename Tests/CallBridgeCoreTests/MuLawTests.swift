import Testing

@testable import CallBridgeCore

/// G.711 μ-law against PROTOCOLS.md C1 / D2 / D3 (the encoder is the CPython `audioop` variant).
struct MuLawTests {
    // MARK: Decode (D2)

    @Test(
        "decode matches the D2 table",
        arguments: [
            (UInt8(0x00), Int16(-32124)), (0x01, -31100), (0x0F, -16764), (0x10, -15996),
            (0x4E, -988), (0x7E, -8), (0x7F, 0),
            (0x80, 32124), (0x8F, 16764), (0xCE, 988), (0xF0, 120), (0xFB, 32), (0xFE, 8), (0xFF, 0),
        ] as [(UInt8, Int16)]
    )
    func decodeTable(byte: UInt8, pcm: Int16) {
        #expect(MuLaw.decode(byte) == pcm)
        #expect(MuLaw.decodeTable[Int(byte)] == pcm)
    }

    @Test("decode(b) == -decode(b - 0x80) for all 128 pairs")
    func decodeSymmetry() {
        for low in UInt8(0)...0x7F {
            let high = low + 0x80
            #expect(MuLaw.decode(high) == -MuLaw.decode(low), "byte 0x\(String(high, radix: 16))")
        }
    }

    @Test("decode range: never ±32768, extremes are ±32124, monotone within each sign half")
    func decodeRange() {
        #expect(MuLaw.decodeTable.count == 256)
        #expect(MuLaw.decodeTable.max() == 32124)
        #expect(MuLaw.decodeTable.min() == -32124)
        // 0x80...0xFF: positive values falling from 32124 to 0; 0x00...0x7F: negative values rising to 0.
        for byte in 0x80..<0xFF {
            #expect(MuLaw.decodeTable[byte] > MuLaw.decodeTable[byte + 1])
        }
        for byte in 0x00..<0x7F {
            #expect(MuLaw.decodeTable[byte] < MuLaw.decodeTable[byte + 1])
        }
    }

    @Test("collection decode maps every byte")
    func decodeCollection() {
        #expect(MuLaw.decode([0xFF, 0xCE, 0x4E, 0x80, 0x00] as [UInt8]) == [0, 988, -988, 32124, -32124])
        #expect(MuLaw.decode([UInt8]()) == [])
    }

    // MARK: Encode (D3, audioop column)

    @Test(
        "encode matches the D3 audioop column",
        arguments: [
            (Int16(0), UInt8(0xFF)), (1, 0xFF), (2, 0xFF), (3, 0xFF),
            (4, 0xFE), (5, 0xFE), (8, 0xFE),
            (-1, 0x7E), (-2, 0x7E), (-3, 0x7E), (-4, 0x7E), (-5, 0x7E),
            (16, 0xFD), (32, 0xFB),
            (100, 0xF2), (-100, 0x72), (1000, 0xCE), (-1000, 0x4E),
            (4096, 0xAF), (8000, 0xA0), (-8000, 0x20), (16000, 0x90),
            (32124, 0x80), (32635, 0x80), (32767, 0x80), (-32768, 0x00),
            (-31611, 0x00), (-30587, 0x01),
        ] as [(Int16, UInt8)]
    )
    func encodeTable(pcm: Int16, byte: UInt8) {
        #expect(MuLaw.encode(pcm) == byte)
    }

    @Test("silence constant is what zero encodes to")
    func silence() {
        #expect(MuLaw.silence == 0xFF)
        #expect(MuLaw.encode(Int16(0)) == MuLaw.silence)
        #expect(MuLaw.decode(MuLaw.silence) == 0)
    }

    @Test("byte stream: [0, 1000, -1000, 32767, -32768] → ff ce 4e 80 00 (base64 vectors of D3)")
    func byteStreamVector() throws {
        let pcmLE = try #require(Base64.decode("AADoAxj8/38AgA=="))
        let pcm = Self.int16LE(pcmLE)
        #expect(pcm == [0, 1000, -1000, 32767, -32768])
        let ulaw = MuLaw.encode(pcm)
        #expect(ulaw == [0xFF, 0xCE, 0x4E, 0x80, 0x00])
        #expect(Base64.encode(ulaw) == "/85OgAA=")
        let back = MuLaw.decode(ulaw)
        #expect(back == [0, 988, -988, 32124, -32124])
        #expect(Base64.encode(Self.bytesLE(back)) == "AADcAyT8fH2Egg==")
    }

    @Test("1 kHz sine, amplitude 8000, 8 samples at 8 kHz → ff a9 a0 a9 ff 29 20 29")
    func sineVector() {
        let pcm: [Int16] = [0, 5657, 8000, 5657, 0, -5657, -8000, -5657]
        #expect(MuLaw.encode(pcm) == [0xFF, 0xA9, 0xA0, 0xA9, 0xFF, 0x29, 0x20, 0x29])
    }

    /// FNV-1a 64 of `audioop.lin2ulaw` over every Int16 from -32768 to 32767, computed with CPython 3.11.
    @Test("all 65 536 encodings match audioop (FNV-1a digest)")
    func exhaustiveDigest() {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for sample in Int16.min...Int16.max {
            hash ^= UInt64(MuLaw.encode(sample))
            hash = hash &* 0x100_0000_01b3
        }
        #expect(hash == 0xd5ee_23f7_d0ff_ae91)
    }

    /// C1: the audioop variant differs from the classic 16-bit encoder on exactly 381 inputs, all negative,
    /// from -31611 up to -1, always by one step towards the larger magnitude.
    @Test("differs from the classic 16-bit encoder on exactly 381 negative inputs")
    func differsFromClassicEncoder() {
        var differing: [Int16] = []
        for sample in Int16.min...Int16.max {
            let ours = MuLaw.encode(sample)
            let classic = Self.classicEncode(sample)
            if ours != classic {
                differing.append(sample)
                #expect(ours == classic &- 1, "sample \(sample)")
            }
        }
        #expect(differing.count == 381)
        #expect(differing.allSatisfy { $0 < 0 })
        #expect(differing.first == -31611)
        #expect(differing.last == -1)
    }

    @Test("encode is monotone non-increasing in byte order within each sign")
    func encodeMonotone() {
        var violations: [Int16] = []
        var previous = MuLaw.encode(Int16(0))
        for sample in Int16(1)...Int16.max {
            let byte = MuLaw.encode(sample)
            if byte > previous || byte < 0x80 { violations.append(sample) }
            previous = byte
        }
        previous = MuLaw.encode(Int16(-1))
        for sample in (Int(Int16.min)...(-2)).reversed() {
            let byte = MuLaw.encode(Int16(sample))
            if byte > previous || byte >= 0x80 { violations.append(Int16(sample)) }
            previous = byte
        }
        #expect(violations.isEmpty)
    }

    // MARK: Round trip

    @Test("encode(decode(b)) == b for every byte except 0x7F (negative zero → 0xFF)")
    func roundTrip() {
        var mismatches: [UInt8: UInt8] = [:]
        for byte in UInt8.min...UInt8.max {
            let again = MuLaw.encode(MuLaw.decode(byte))
            if again != byte { mismatches[byte] = again }
        }
        #expect(mismatches == [0x7F: 0xFF])
    }

    /// Segment e has a step of 8 << e, so rounding to its midpoint costs at most 4 << e. The floor shift of the
    /// 14-bit algorithm adds up to 3 more on the negative side. Checked over the whole unclipped range.
    @Test("decode(encode(x)) is within half a quantisation step of x")
    func quantisationError() {
        var violations: [Int] = []
        for sample in -32124...32124 {
            let byte = MuLaw.encode(Int16(sample))
            let segment = Int((~byte >> 4) & 0x07)
            let bound = (4 << segment) + (sample < 0 ? 3 : 0)
            if abs(Int(MuLaw.decode(byte)) - sample) > bound { violations.append(sample) }
        }
        #expect(violations.isEmpty, "first violations \(violations.prefix(5))")
    }

    // MARK: Helpers

    static func int16LE(_ bytes: [UInt8]) -> [Int16] {
        stride(from: 0, to: bytes.count - 1, by: 2).map {
            Int16(bitPattern: UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8)
        }
    }

    static func bytesLE(_ samples: [Int16]) -> [UInt8] {
        samples.flatMap { sample -> [UInt8] in
            let bits = UInt16(bitPattern: sample)
            return [UInt8(bits & 0xFF), UInt8(bits >> 8)]
        }
    }

    /// The classic Sun g711.c 16-bit encoder of PROTOCOLS.md C1 (bias 0x84, clip 32635).
    static func classicEncode(_ sample: Int16) -> UInt8 {
        let sign: Int = sample < 0 ? 0x80 : 0
        let magnitude = min(abs(Int(sample)), 32635) + 0x84
        var exponent = 7
        while exponent > 0 && magnitude & (0x80 << exponent) == 0 { exponent -= 1 }
        let mantissa = (magnitude >> (exponent + 3)) & 0x0F
        return ~UInt8(sign | exponent << 4 | mantissa)
    }
}

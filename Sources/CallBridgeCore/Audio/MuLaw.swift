/// G.711 μ-law, table driven.
///
/// Decoding is exact and shared by every G.711 variant. Encoding follows the 14-bit algorithm used by
/// CPython's `audioop` (bias 0x21, clip 8159 after an arithmetic `>> 2`), so WAV files converted by
/// `callbridge dial` match what Python tooling produces byte for byte (see PROTOCOLS.md D3).
public enum MuLaw {
    /// The byte an encoder produces for a zero sample; Twilio plays it as silence.
    public static let silence: UInt8 = 0xFF

    /// 256-entry decode table: μ-law byte → linear PCM16.
    public static let decodeTable: [Int16] = (0...255).map { decodeByAlgorithm(UInt8($0)) }

    /// 16 384-entry encode table indexed by `(sample >> 2) + 8192`.
    static let encodeTable: [UInt8] = (0..<16384).map { encode14(Int($0) - 8192) }

    @inline(__always)
    public static func decode(_ byte: UInt8) -> Int16 {
        decodeTable[Int(byte)]
    }

    @inline(__always)
    public static func encode(_ sample: Int16) -> UInt8 {
        encodeTable[(Int(sample) >> 2) + 8192]
    }

    public static func decode<C: Collection>(_ bytes: C) -> [Int16] where C.Element == UInt8 {
        bytes.map { decodeTable[Int($0)] }
    }

    public static func encode<C: Collection>(_ samples: C) -> [UInt8] where C.Element == Int16 {
        samples.map { encode($0) }
    }

    static func decodeByAlgorithm(_ byte: UInt8) -> Int16 {
        let u = ~byte
        let exponent = Int((u >> 4) & 0x07)
        let mantissa = Int(u & 0x0F)
        let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        return Int16(u & 0x80 != 0 ? -magnitude : magnitude)
    }

    /// Encodes one 14-bit sample (already shifted right by two).
    static func encode14(_ value: Int) -> UInt8 {
        var pcm = value
        let mask: Int
        if pcm < 0 {
            pcm = -pcm
            mask = 0x7F
        } else {
            mask = 0xFF
        }
        pcm = min(pcm, 8159) + 0x21
        let segmentEnds = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]
        guard let segment = segmentEnds.firstIndex(where: { pcm <= $0 }) else {
            return UInt8(0x7F ^ mask)
        }
        let uval = (segment << 4) | ((pcm >> (segment + 1)) & 0x0F)
        return UInt8(uval ^ mask)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Minimal RIFF/WAVE reading and writing for `callbridge dial`: PCM 8/16/24/32-bit, IEEE float 32/64,
/// μ-law and A-law, any rate and channel count in; 16-bit mono out.
public struct WAVAudio: Sendable, Equatable {
    public var sampleRate: Int
    /// Mono samples (channels are averaged).
    public var samples: [Int16]

    public init(sampleRate: Int, samples: [Int16]) {
        self.sampleRate = sampleRate
        self.samples = samples
    }
}

public enum WAVError: Error, Sendable, Equatable, CustomStringConvertible {
    case notRIFFWave
    case missingChunk(String)
    case unsupportedFormat(tag: Int, bitsPerSample: Int)
    case malformed(String)

    public var description: String {
        switch self {
        case .notRIFFWave: "not a RIFF/WAVE file"
        case .missingChunk(let name): "WAV file has no '\(name)' chunk"
        case .unsupportedFormat(let tag, let bits): "unsupported WAV encoding (format tag \(tag), \(bits) bits per sample)"
        case .malformed(let what): "malformed WAV file: \(what)"
        }
    }
}

public enum WAV {
    public static func decode(_ data: [UInt8]) throws(WAVError) -> WAVAudio {
        guard data.count >= 12, Array(data[0..<4]) == Array("RIFF".utf8), Array(data[8..<12]) == Array("WAVE".utf8)
        else { throw .notRIFFWave }
        var offset = 12
        var format: (tag: Int, channels: Int, rate: Int, bits: Int)?
        var body: ArraySlice<UInt8>?
        while offset + 8 <= data.count {
            let id = String(decoding: data[offset..<(offset + 4)], as: UTF8.self)
            let size = Int(readLE(data, offset + 4, 4))
            let start = offset + 8
            let end = min(data.count, start + size)
            if id == "fmt " {
                guard size >= 16, end - start >= 16 else { throw .malformed("short fmt chunk") }
                var tag = Int(readLE(data, start, 2))
                if tag == 0xFFFE, end - start >= 26 {  // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID
                    tag = Int(readLE(data, start + 24, 2))
                }
                format = (tag, Int(readLE(data, start + 2, 2)), Int(readLE(data, start + 4, 4)), Int(readLE(data, start + 14, 2)))
            } else if id == "data" {
                body = data[start..<end]
            }
            offset = start + size + (size & 1)
        }
        guard let format else { throw .missingChunk("fmt ") }
        guard let body else { throw .missingChunk("data") }
        guard format.channels >= 1, format.rate > 0 else { throw .malformed("zero channels or rate") }
        let bytesPerSample = max(1, format.bits / 8)
        let frameBytes = bytesPerSample * format.channels
        let frames = body.count / frameBytes
        var mono = [Int16]()
        mono.reserveCapacity(frames)
        let base = body.startIndex
        for f in 0..<frames {
            var sum = 0.0
            for c in 0..<format.channels {
                let at = base + f * frameBytes + c * bytesPerSample
                sum += try sampleValue(data, at, tag: format.tag, bits: format.bits)
            }
            let v = (sum / Double(format.channels)).rounded()
            mono.append(Int16(max(-32768, min(32767, v))))
        }
        return WAVAudio(sampleRate: format.rate, samples: mono)
    }

    /// One sample as a PCM16-scaled value.
    static func sampleValue(_ d: [UInt8], _ at: Int, tag: Int, bits: Int) throws(WAVError) -> Double {
        switch (tag, bits) {
        case (1, 8): return (Double(d[at]) - 128) * 256
        case (1, 16): return Double(Int16(bitPattern: UInt16(readLE(d, at, 2))))
        case (1, 24):
            let raw = Int32(bitPattern: UInt32(readLE(d, at, 3)) << 8) >> 8
            return Double(raw) / 256
        case (1, 32): return Double(Int32(bitPattern: UInt32(readLE(d, at, 4)))) / 65536
        case (3, 32): return Double(Float(bitPattern: UInt32(readLE(d, at, 4)))) * 32767
        case (3, 64): return Double(bitPattern: readLE(d, at, 8)) * 32767
        case (7, 8): return Double(MuLaw.decode(d[at]))
        case (6, 8): return Double(ALaw.decode(d[at]))
        default: throw .unsupportedFormat(tag: tag, bitsPerSample: bits)
        }
    }

    static func readLE(_ d: [UInt8], _ at: Int, _ count: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<count { v |= UInt64(d[at + i]) << (8 * UInt64(i)) }
        return v
    }

    /// 16-bit PCM mono WAV.
    public static func encode(samples: [Int16], sampleRate: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(44 + samples.count * 2)
        func put(_ s: String) { out.append(contentsOf: Array(s.utf8)) }
        func put32(_ v: Int) { for i in 0..<4 { out.append(UInt8((v >> (8 * i)) & 0xFF)) } }
        func put16(_ v: Int) { for i in 0..<2 { out.append(UInt8((v >> (8 * i)) & 0xFF)) } }
        put("RIFF"); put32(36 + samples.count * 2); put("WAVE")
        put("fmt "); put32(16); put16(1); put16(1); put32(sampleRate); put32(sampleRate * 2); put16(2); put16(16)
        put("data"); put32(samples.count * 2)
        for s in samples { put16(Int(UInt16(bitPattern: s))) }
        return out
    }
}

/// G.711 A-law decoding (for A-law WAV input only).
enum ALaw {
    static func decode(_ byte: UInt8) -> Int16 {
        let a = byte ^ 0x55
        var t = Int(a & 0x0F) << 4
        let seg = Int((a & 0x70) >> 4)
        switch seg {
        case 0: t += 8
        case 1: t += 0x108
        default: t = (t + 0x108) << (seg - 1)
        }
        return Int16(a & 0x80 != 0 ? t : -t)
    }
}

/// Sample-rate conversion to the telephone rate with a windowed-sinc low-pass, so downsampling does not alias.
public enum Resampler {
    public static func resample(_ samples: [Int16], from inputRate: Int, to outputRate: Int) -> [Int16] {
        guard inputRate != outputRate, !samples.isEmpty, inputRate > 0, outputRate > 0 else { return samples }
        let ratio = Double(outputRate) / Double(inputRate)
        // Cut off a little under the lower Nyquist frequency, relative to the input rate.
        let cutoff = 0.45 * min(1.0, ratio)
        let halfTaps = 16 * max(1, Int((1 / min(1.0, ratio)).rounded(.up)))
        let outCount = Int((Double(samples.count) * ratio).rounded(.down))
        var out = [Int16]()
        out.reserveCapacity(outCount)
        for n in 0..<outCount {
            let center = Double(n) / ratio
            let c = Int(center.rounded(.down))
            var acc = 0.0
            var norm = 0.0
            for k in (c - halfTaps + 1)...(c + halfTaps) where k >= 0 && k < samples.count {
                let x = center - Double(k)
                let sinc = x == 0 ? 2 * cutoff : sinPi(2 * cutoff * x) / (Double.pi * x)
                let w = 0.5 + 0.5 * cosPi(x / Double(halfTaps))  // Hann window
                let h = sinc * w
                acc += h * Double(samples[k])
                norm += h
            }
            let v = norm != 0 ? acc / norm : 0
            out.append(Int16(max(-32768, min(32767, v.rounded()))))
        }
        return out
    }

    static func sinPi(_ x: Double) -> Double { sin(Double.pi * x) }
    static func cosPi(_ x: Double) -> Double { cos(Double.pi * x) }
}

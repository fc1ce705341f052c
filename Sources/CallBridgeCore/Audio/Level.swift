#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Signal level helpers shared by the detectors.
public enum Level {
    /// `20·log10(x)`, clamped at -120 dB for silence.
    public static func decibels(amplitude x: Double) -> Double {
        x > 1e-6 ? 20 * log10(x) : -120
    }

    /// The amplitude ratio of a level in dB: `10^(dB/20)`.
    public static func amplitude(decibels: Double) -> Double {
        pow(10, decibels / 20)
    }

    /// RMS of μ-law bytes, in dB relative to full scale (32768).
    /// Inlinable so callers in other modules get a specialized copy: the unspecialized generic allocated once per
    /// byte (160 mallocs for a frame, measured by `make bench`).
    @inlinable
    public static func dBFS<C: Collection>(muLaw bytes: C) -> Double where C.Element == UInt8 {
        guard !bytes.isEmpty else { return -120 }
        var sum = 0.0
        for byte in bytes {
            let s = Double(MuLaw.decode(byte))
            sum += s * s
        }
        return decibels(amplitude: (sum / Double(bytes.count)).squareRoot() / 32768)
    }

    /// RMS of PCM16 samples, in dBFS (inlinable like the μ-law variant).
    @inlinable
    public static func dBFS<C: Collection>(pcm samples: C) -> Double where C.Element == Int16 {
        guard !samples.isEmpty else { return -120 }
        var sum = 0.0
        for sample in samples {
            let s = Double(sample)
            sum += s * s
        }
        return decibels(amplitude: (sum / Double(samples.count)).squareRoot() / 32768)
    }
}

import CallBridgeCore
import Foundation
import Synchronization

/// Loads the bundled Silero weights once per process (checked for size and checksum).
public enum SileroLoader {
    private static let cache = Mutex<SileroModel?>(nil)

    public static func model() throws -> SileroModel {
        if let cached = Self.cache.withLock({ $0 }) { return cached }
        guard let url = Bundle.module.url(forResource: "silero_vad_v6_8k", withExtension: "f32") else {
            throw CallBridgeError(.configurationInvalid, "the Silero weights (silero_vad_v6_8k.f32) are missing from the build")
        }
        let bytes: Data
        do {
            bytes = try Data(contentsOf: url)
        } catch {
            throw CallBridgeError(.configurationInvalid, "cannot read the Silero weights at \(url.path): \(error)")
        }
        do {
            let model = try SileroModel(littleEndianBytes: Array(bytes))
            Self.cache.withLock { $0 = model }
            return model
        } catch {
            throw CallBridgeError(.configurationInvalid, error.description)
        }
    }
}

/// Loads the fallback prompt: the bundled one, a raw 8 kHz μ-law file, or a WAV converted to it.
public enum FallbackPromptLoader {
    public static func load(_ setting: String?) throws -> [UInt8]? {
        if setting == "none" { return nil }
        let url: URL
        if let path = setting {
            url = URL(fileURLWithPath: path)
        } else {
            guard let bundled = Bundle.module.url(forResource: "fallback-prompt", withExtension: "ulaw") else {
                throw CallBridgeError(.configurationInvalid, "the bundled fallback prompt (fallback-prompt.ulaw) is missing from the build")
            }
            url = bundled
        }
        let bytes: [UInt8]
        do {
            bytes = Array(try Data(contentsOf: url))
        } catch {
            throw CallBridgeError(.configurationInvalid, "cannot read the fallback prompt at \(url.path): \(error)")
        }
        guard url.pathExtension.lowercased() == "wav" else {
            guard !bytes.isEmpty else { throw CallBridgeError(.configurationInvalid, "the fallback prompt \(url.path) is empty") }
            return bytes
        }
        do {
            let wav = try WAV.decode(bytes)
            return MuLaw.encode(Resampler.resample(wav.samples, from: wav.sampleRate, to: AudioFrame.sampleRate))
        } catch {
            throw CallBridgeError(.configurationInvalid, "the fallback prompt \(url.path) is not a WAV file this build reads: \(error)")
        }
    }
}

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

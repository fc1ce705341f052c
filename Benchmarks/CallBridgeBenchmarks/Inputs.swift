import CallBridgeCore
import Foundation

/// Deterministic inputs shaped like what the bridge sees on a call.
enum Inputs {
    /// 20 ms of a 440 Hz tone at about -20 dBFS with a little noise, as PCM16.
    static let pcmFrame: [Int16] = tone(samples: AudioFrame.byteCount, amplitude: 3000)
    /// The same frame in μ-law.
    static let muLawFrame: [UInt8] = MuLaw.encode(pcmFrame)
    /// Quiet line noise (about -55 dBFS): caller audio that keeps the VAD below its threshold.
    static let quietFrame: [UInt8] = MuLaw.encode(tone(samples: AudioFrame.byteCount, amplitude: 40))
    /// About 100 ms of reply audio: the size of a typical Realtime audio delta.
    static let replyAudio: [UInt8] = MuLaw.encode(tone(samples: 800, amplitude: 6000))

    static let streamSid = "MZ18ad3ab5a668481ce02b83e7395059f0"

    /// A Twilio `media` message as Twilio sends it (about 370 bytes).
    static func twilioMedia(payload: [UInt8], chunk: Int = 3) -> String {
        "{\"event\":\"media\",\"sequenceNumber\":\"\(chunk + 1)\",\"media\":{\"track\":\"inbound\",\"chunk\":\"\(chunk)\","
            + "\"timestamp\":\"\(chunk * 20)\",\"payload\":\"\(Base64.encode(payload))\"},\"streamSid\":\"\(streamSid)\"}"
    }

    /// A GA `response.output_audio.delta` carrying `audio`, with ids of the length the service uses.
    static func audioDelta(_ audio: [UInt8]) -> String {
        "{\"type\":\"response.output_audio.delta\",\"event_id\":\"event_CGr0v8TqkNZxQ1pVbJ7aX\","
            + "\"response_id\":\"resp_CGr0uYd3BSYw7Hb2nQe4L\",\"item_id\":\"item_CGr0u2kXo9bq1UvFcTx8M\","
            + "\"output_index\":0,\"content_index\":0,\"delta\":\"\(Base64.encode(audio))\"}"
    }

    /// The Silero weights the server ships, read from the source tree (found from this file's path).
    static func sileroModel() throws -> SileroModel {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let path = root.appendingPathComponent("Sources/CallBridge/Resources/silero_vad_v6_8k.f32").path
        guard let data = FileManager.default.contents(atPath: path) else { throw MissingFile(path: path) }
        return try SileroModel(littleEndianBytes: Array(data))
    }

    struct MissingFile: Error {
        var path: String
    }

    static func tone(samples: Int, amplitude: Double) -> [Int16] {
        var seed: UInt64 = 0x2545_F491_4F6C_DD1D
        return (0..<samples).map { i in
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let noise = Double(Int64(bitPattern: seed) >> 54) / 512 * amplitude * 0.05
            let value = amplitude * sin(2 * Double.pi * 440 * Double(i) / 8000) + noise
            return Int16(clamping: Int(value.rounded()))
        }
    }
}

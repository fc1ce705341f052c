import Foundation
import Testing

@testable import CallBridgeCore

@Suite struct SileroVADTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static let model: SileroModel = {
        let bytes = try! Data(contentsOf: root.appendingPathComponent("Sources/CallBridge/Resources/silero_vad_v6_8k.f32"))
        return try! SileroModel(littleEndianBytes: Array(bytes))
    }()

    /// The committed clip (speech + line noise at 10 dB SNR) as the model's float samples.
    static func clip() throws -> [Float] {
        let wav = try WAV.decode(Array(try Data(contentsOf: root.appendingPathComponent("Fixtures/silero/clip.wav"))))
        #expect(wav.sampleRate == 8000)
        return wav.samples.map { Float($0) / 32768 }
    }

    /// onnxruntime's probabilities for the clip (scripts/silero/reference.py).
    static func reference() throws -> [(startMs: Int, probability: Double)] {
        let text = try String(contentsOf: root.appendingPathComponent("Fixtures/silero/reference.csv"), encoding: .utf8)
        return text.split(whereSeparator: \.isNewline).dropFirst().map { line in
            let parts = line.split(separator: ",")
            return (Int(parts[0])!, Double(parts[1])!)
        }
    }

    @Test func matchesOnnxruntimeOnEveryWindow() throws {
        var vad = SileroVAD(model: Self.model)
        let probabilities = vad.process(try Self.clip())
        let reference = try Self.reference()
        #expect(probabilities.count == reference.count)
        var worst = 0.0
        for (p, r) in zip(probabilities, reference) { worst = max(worst, abs(Double(p) - r.probability)) }
        print("silero: max |p_swift − p_onnxruntime| = \(worst) over \(reference.count) windows")
        #expect(worst <= 1e-4)
        // The clip has speech in it, and the port sees it where onnxruntime does.
        #expect(zip(probabilities, reference).allSatisfy { ($0 > 0.5) == ($1.probability > 0.5) })
        #expect(probabilities.filter { $0 > 0.5 }.count > 50)
    }

    @Test func windowingDoesNotDependOnHowTheAudioArrives() throws {
        let samples = try Self.clip()
        var whole = SileroVAD(model: Self.model)
        let expected = whole.process(samples)
        // 160-sample Twilio frames: five frames give three windows, the rest carries over.
        var framed = SileroVAD(model: Self.model)
        var got: [Float] = []
        var i = 0
        while i < samples.count {
            got += framed.process(samples[i..<min(samples.count, i + 160)])
            i += 160
        }
        #expect(got == expected)
    }

    @Test func stateCarriesAcrossWindowsAndResetForgetsIt() throws {
        let samples = try Self.clip()
        let half = (samples.count / 2 / 256) * 256
        var continuous = SileroVAD(model: Self.model)
        let straight = continuous.process(samples)
        var interrupted = SileroVAD(model: Self.model)
        let first = interrupted.process(samples[..<half])
        interrupted.reset()
        let second = interrupted.process(samples[half...])
        #expect(first == Array(straight.prefix(first.count)))
        #expect(second != Array(straight.suffix(second.count)), "a reset must change what follows")
        // A fresh detector on the second half is exactly the reset one.
        var fresh = SileroVAD(model: Self.model)
        #expect(fresh.process(samples[half...]) == second)
    }

    /// The per-frame form (probabilities handed to a closure, nothing collected) sees the same windows.
    @Test func windowsHandedToAClosureMatchTheReturnedOnes() throws {
        let muLaw = MuLaw.encode(try Self.clip().prefix(8000).map { Int16(clamping: Int(($0 * 32768).rounded())) })
        var collecting = SileroVAD(model: Self.model)
        var handing = SileroVAD(model: Self.model)
        var expected: [Float] = []
        var got: [Float] = []
        for start in stride(from: 0, to: muLaw.count, by: 160) {
            let frame = Array(muLaw[start..<min(muLaw.count, start + 160)])
            expected += collecting.process(muLaw: frame)
            handing.process(muLaw: frame) { got.append($0) }
        }
        #expect(got.count == 8000 / 256)
        #expect(got == expected)
    }

    @Test func deterministic() throws {
        let samples = try Self.clip()
        var a = SileroVAD(model: Self.model)
        var b = SileroVAD(model: Self.model)
        #expect(a.process(samples) == b.process(samples))
    }

    @Test func aDamagedWeightsFileIsRefusedWithAClearReason() throws {
        let good = Array(try Data(contentsOf: Self.root.appendingPathComponent("Sources/CallBridge/Resources/silero_vad_v6_8k.f32")))
        #expect(throws: SileroWeightsError.wrongSize(bytes: 100, expected: 940_548)) { try SileroModel(littleEndianBytes: Array(good.prefix(100))) }
        var flipped = good
        flipped[1000] ^= 0x01
        #expect(throws: SileroWeightsError.self) { try SileroModel(littleEndianBytes: flipped) }
    }
}

import CallBridgeCore
import Foundation

// callbridge benchmarks: `make bench` (release build). Prints per-window and per-call costs of Silero VAD.
// Usage: CallBridgeBench [WEIGHTS] [WINDOWS]

let arguments = CommandLine.arguments
let weightsPath = arguments.count > 1 ? arguments[1] : "Sources/CallBridge/Resources/silero_vad_v6_8k.f32"
let windows = arguments.count > 2 ? Int(arguments[2]) ?? 20_000 : 20_000

guard let data = FileManager.default.contents(atPath: weightsPath) else {
    FileHandle.standardError.write(Data("cannot read \(weightsPath)\n".utf8))
    exit(1)
}
let model = try SileroModel(littleEndianBytes: Array(data))

// Speech-like input: a modulated harmonic tone with noise, deterministic.
var seed: UInt64 = 42
let samples: [Float] = (0..<(256 * 64)).map { i in
    seed = seed &* 6_364_136_223_846_793_005 &+ 1
    let noise = Float(Int64(bitPattern: seed >> 11) % 1000) / 100_000
    let t = Float(i) / 8000
    return 0.2 * (0.6 + 0.4 * sinf(2 * .pi * 4 * t)) * sinf(2 * .pi * 200 * t) + noise
}

var vad = SileroVAD(model: model)
var sink: Float = 0
// Warm up (weights into cache, pages touched).
for _ in 0..<2 { for p in vad.process(samples) { sink += p } }

let clock = ContinuousClock()
var done = 0
let start = clock.now
while done < windows {
    for p in vad.process(samples) { sink += p }
    done += samples.count / 256
}
let elapsed = clock.now - start
let perWindow = Double(elapsed.components.attoseconds) / 1e12 / Double(done)
    + Double(elapsed.components.seconds) * 1e6 / Double(done)
let perCallContinuous = perWindow * 31.25 / 1e6 * 100
print(String(format: "silero 8 kHz: %.2f µs per 32 ms window (%d windows)", perWindow, done))
print(String(format: "  continuous on one call: %.3f %% of a core; 1000 calls: %.2f cores", perCallContinuous, perCallContinuous * 10))
print(String(format: "  as the barge-in confirmer (~6 windows per pause): %.0f µs per pause", perWindow * 6))
if sink.isNaN { print("unreachable") }

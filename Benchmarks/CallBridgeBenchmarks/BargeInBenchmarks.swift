import Benchmark
import CallBridgeCore

func bargeInBenchmarks() {
    // The energy stage on each caller frame: the frame's level, then the detector's update.
    let frame = Inputs.muLawFrame
    var vad = EnergyVAD()
    var frameStart = CallInstant.zero
    Benchmark("EnergyVAD-frame", configuration: .hotPath(scaling: .one)) { _ in
        let level = Level.dBFS(muLaw: frame)
        blackHole(vad.process(levelDBFS: level, frameStart: frameStart))
        frameStart = frameStart + AudioFrame.duration
    }

    // Silero VAD, the optional second stage: one 32 ms window (256 μ-law samples) through the network.
    let window = Array((0..<4).flatMap { _ in frame }.prefix(SileroVAD.windowSamples))
    var silero: SileroVAD?
    Benchmark(
        "SileroVAD-window",
        configuration: .hotPath(scaling: .one),
        closure: { benchmark in
            guard var detector = silero else { return benchmark.error("the Silero weights did not load") }
            silero = nil  // keep the state's buffer uniquely referenced while it runs
            benchmark.startMeasurement()
            detector.process(muLaw: window) { blackHole($0) }
            benchmark.stopMeasurement()
            silero = detector
        },
        setup: { silero = SileroVAD(model: try Inputs.sileroModel()) }
    )
}

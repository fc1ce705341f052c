import Benchmark
import CallBridgeCore

// Micro-benchmarks of callbridge's per-frame hot path: `make bench` runs them (release), `make bench-check` compares
// them with the committed thresholds in Benchmarks/Thresholds/. Each benchmark reports wall-clock time and the
// number of mallocs per operation. Operations under about 250 ns run 1000 to a sample (`scalingFactor: .kilo`: the
// table shows per-operation values, marked `*`, and the thresholds hold the raw value of a whole sample); longer ones
// run one to a sample, so a sample rarely spans a preemption by the other jobs of a shared machine.
let benchmarks: @Sendable () -> Void = {
    audioBenchmarks()
    wireBenchmarks()
    bargeInBenchmarks()
    callBenchmarks()
}

extension Benchmark.Configuration {
    /// One sample runs `scaling` operations. Mallocs must match the committed count exactly; time may be up to
    /// `timeTolerance` percent slower than committed (the machines are shared and noisy) before the check fails.
    ///
    /// Only wall-clock time and malloc counts are measured: on Linux the CPU-time, memory and thread metrics read
    /// /proc inside the measured window, and those reads' own mallocs (16–20 per sample) would be counted as the
    /// benchmark's.
    static func hotPath(scaling: BenchmarkScalingFactor = .kilo, timeTolerance: Double = 100) -> Self {
        .init(
            metrics: [.wallClock, .mallocCountTotal],
            timeUnits: .nanoseconds,
            warmupIterations: 3,
            scalingFactor: scaling,
            maxDuration: .seconds(1),
            maxIterations: 10_000,
            thresholds: [
                .wallClock: .init(relative: [.p90: timeTolerance]),
                .mallocCountTotal: .init(absolute: [.p90: 0]),
            ]
        )
    }
}

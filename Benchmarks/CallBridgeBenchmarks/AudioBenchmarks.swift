import Benchmark
import CallBridgeCore

func audioBenchmarks() {
    let muLaw = Inputs.muLawFrame
    let pcm = Inputs.pcmFrame

    // The codec as the per-frame code uses it: byte by byte through the tables, into a buffer that is reused.
    var samples = [Int16](repeating: 0, count: AudioFrame.byteCount)
    Benchmark("MuLaw-decode-frame", configuration: .hotPath(scaling: .one)) { _ in
        samples.withUnsafeMutableBufferPointer { out in
            for i in 0..<AudioFrame.byteCount { out[i] = MuLaw.decode(muLaw[i]) }
        }
        blackHole(samples)
    }

    var bytes = [UInt8](repeating: 0, count: AudioFrame.byteCount)
    Benchmark("MuLaw-encode-frame", configuration: .hotPath(scaling: .one)) { _ in
        bytes.withUnsafeMutableBufferPointer { out in
            for i in 0..<AudioFrame.byteCount { out[i] = MuLaw.encode(pcm[i]) }
        }
        blackHole(bytes)
    }

    // Reply audio arrives in deltas of any size; one operation appends one delta and takes every whole frame.
    // The sizes cycle so partial tails carry over (4,800 bytes over 7 deltas: 30 frames).
    let deltaSizes = [800, 333, 1_600, 47, 960, 1_000, 60]
    let deltas = deltaSizes.map { Array(repeating: UInt8(0x55), count: $0) }
    var chunker = FrameChunker()
    var frame = [UInt8]()
    var next = 0
    Benchmark("FrameChunker-append-take", configuration: .hotPath()) { benchmark in
        for _ in benchmark.scaledIterations {
            chunker.append(deltas[next])
            next = next == deltas.count - 1 ? 0 : next + 1
            while chunker.nextFrame(into: &frame) { blackHole(frame) }
        }
    }

    // The pacer's decision on each 20 ms tick of the shared ticker.
    var pacer = TxPacer()
    var now = CallInstant.zero
    Benchmark("TxPacer-release", configuration: .hotPath()) { benchmark in
        for _ in benchmark.scaledIterations {
            now = now + AudioFrame.duration
            blackHole(pacer.release(now: now, on: .tick))
        }
    }
}

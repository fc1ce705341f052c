#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public enum SileroWeightsError: Error, Sendable, Equatable, CustomStringConvertible {
    case wrongSize(bytes: Int, expected: Int)
    case wrongChecksum(found: UInt64, expected: UInt64)

    public var description: String {
        switch self {
        case .wrongSize(let bytes, let expected):
            "Silero weights: \(bytes) bytes, expected \(expected) (235,137 float32 values of the 8 kHz model); "
                + "regenerate with scripts/silero/export_weights.py"
        case .wrongChecksum(let found, let expected):
            "Silero weights: checksum 0x\(String(found, radix: 16)) does not match 0x\(String(expected, radix: 16)); "
                + "the file is not silero-vad 6.2.3's 8 kHz model as exported by scripts/silero/export_weights.py"
        }
    }
}

/// The 8 kHz weights of Silero VAD v6 (silero-vad 6.2.3, MIT licence), shared read-only by every call.
///
/// The floats live in one allocation that never changes after `init`, so every call's detector can read them
/// through plain pointers (hence `@unchecked Sendable`).
public final class SileroModel: @unchecked Sendable {
    public static let floatCount = 235_137
    /// FNV-1a 64 of the little-endian float32 file written by scripts/silero/export_weights.py.
    public static let checksum: UInt64 = 0x5e7f_d4fc_51eb_c895

    // Offsets into `weights`, in the file's order.
    static let basis = 0  // (130, 128): 65 cosine rows then 65 −sine rows, Hann-windowed
    static let conv0 = basis + 130 * 128  // (128, 65, 3)
    static let bias0 = conv0 + 128 * 65 * 3
    static let conv1 = bias0 + 128  // (64, 128, 3)
    static let bias1 = conv1 + 64 * 128 * 3
    static let conv2 = bias1 + 64  // (64, 64, 3)
    static let bias2 = conv2 + 64 * 64 * 3
    static let conv3 = bias2 + 64  // (128, 64, 3)
    static let bias3 = conv3 + 128 * 64 * 3
    static let weightIH = bias3 + 128  // (512, 128), gates i, f, g, o
    static let weightHH = weightIH + 512 * 128  // (512, 128)
    static let biasLSTM = weightHH + 512 * 128  // (512): b_ih + b_hh
    static let decoderWeight = biasLSTM + 512  // (128)
    static let decoderBias = decoderWeight + 128  // (1)

    let weights: UnsafeMutablePointer<Float>
    /// The STFT basis is a Hann-windowed DFT: its first (DC cosine) row is the window itself. With it, a radix-2 FFT
    /// replaces the 66k-multiply-add basis product.
    let fftWindow: [Float]
    let twiddleCos: [Float]
    let twiddleSin: [Float]
    let bitReversed: [Int]

    /// Checks the size and checksum of the exported file, then reads it.
    public init(littleEndianBytes bytes: [UInt8]) throws(SileroWeightsError) {
        guard bytes.count == Self.floatCount * 4 else {
            throw .wrongSize(bytes: bytes.count, expected: Self.floatCount * 4)
        }
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01B3
        }
        guard hash == Self.checksum else { throw .wrongChecksum(found: hash, expected: Self.checksum) }
        let weights = UnsafeMutablePointer<Float>.allocate(capacity: Self.floatCount)
        for i in 0..<Self.floatCount {
            let bits = UInt32(bytes[4 * i]) | UInt32(bytes[4 * i + 1]) << 8 | UInt32(bytes[4 * i + 2]) << 16
                | UInt32(bytes[4 * i + 3]) << 24
            weights[i] = Float(bitPattern: bits)
        }
        self.weights = weights
        self.fftWindow = (0..<128).map { weights[Self.basis + $0] }
        self.twiddleCos = (0..<64).map { Float(cos(2 * Double.pi * Double($0) / 128)) }
        self.twiddleSin = (0..<64).map { Float(sin(2 * Double.pi * Double($0) / 128)) }
        self.bitReversed = (0..<128).map { i in
            var r = 0
            for bit in 0..<7 where i & (1 << bit) != 0 { r |= 1 << (6 - bit) }
            return r
        }
    }

    deinit {
        self.weights.deallocate()
    }
}

/// Silero VAD v6 at 8 kHz, streaming: 256-sample windows (32 ms) with the last 32 samples of the previous model
/// input carried as context, and the LSTM state carried between windows. A value per call; the model is shared.
///
/// One window costs about 384k multiply-adds. They run as SIMD dot products over contiguous rows (the convolutions
/// through an im2col of their three taps), in one scratch buffer, so a window allocates nothing.
public struct SileroVAD: Sendable {
    public static let windowSamples = 256
    public static let contextSamples = 32

    public let model: SileroModel
    /// State then scratch, in one buffer (copied with the value, so each copy has its own state).
    var buffer: [Float]
    var pending: [Float] = []

    // Layout of `buffer`.
    static let hidden = 0  // 128
    static let cell = 128  // 128
    static let context = 256  // 32
    static let stateCount = 288
    static let x = 288  // 320: context + chunk + reflect padding
    static let magnitude = x + 320  // 4 frames × 65 bins, frame-major
    static let columns = magnitude + 260  // im2col scratch, up to 4 × 384
    static let e0 = columns + 4 * 384  // 4 × 128, time-major
    static let e1 = e0 + 512  // 2 × 64
    static let e2 = e1 + 128  // 64
    static let e3 = e2 + 64  // 128
    static let gates = e3 + 128  // 512
    static let fftReal = gates + 512  // 128
    static let fftImag = fftReal + 128  // 128
    static let count = fftImag + 128

    public init(model: SileroModel) {
        self.model = model
        self.buffer = [Float](repeating: 0, count: Self.count)
        self.pending.reserveCapacity(2 * Self.windowSamples)
    }

    /// Forgets the LSTM state, the context and any partial window (a new active period).
    public mutating func reset() {
        for i in 0..<Self.stateCount { self.buffer[i] = 0 }
        self.pending.removeAll(keepingCapacity: true)
    }

    /// Feeds samples in [-1, 1); returns the speech probability of every window completed.
    public mutating func process<C: Collection>(_ samples: C) -> [Float] where C.Element == Float {
        self.pending.append(contentsOf: samples)
        var probabilities: [Float] = []
        var start = 0
        while self.pending.count - start >= Self.windowSamples {
            probabilities.append(self.window(at: start))
            start += Self.windowSamples
        }
        if start > 0 { self.pending.removeFirst(start) }
        return probabilities
    }

    /// Feeds 8 kHz μ-law (a Twilio frame is 160 bytes: five frames give three windows and carry the rest over).
    public mutating func process(muLaw bytes: [UInt8]) -> [Float] {
        self.process(bytes.lazy.map { Float(MuLaw.decode($0)) / 32768 })
    }

    /// One 32 ms window (the 256 samples at `start` in `pending`) through the network.
    mutating func window(at start: Int) -> Float {
        let w = self.model.weights
        return self.pending.withUnsafeBufferPointer { pending in
            self.buffer.withUnsafeMutableBufferPointer { buffer in
                let b = buffer.baseAddress!
                let x = b + Self.x
                // 1–2. Context + chunk (288), reflect-padded on the right by 32 (320); the new context is x[256..<288].
                for i in 0..<32 { x[i] = b[Self.context + i] }
                for i in 0..<256 { x[32 + i] = pending[start + i] }
                for i in 0..<32 { x[288 + i] = x[286 - i] }
                for i in 0..<32 { b[Self.context + i] = x[256 + i] }
                // 3–4. STFT (kernel 128, hop 64, 4 frames): a windowed 128-point FFT per frame, 65 magnitudes each.
                let mag = b + Self.magnitude
                for t in 0..<4 {
                    fftMagnitudes(x + t * 64, model: self.model, real: b + Self.fftReal, imag: b + Self.fftImag, into: mag + t * 65)
                }
                // 5. Encoder.
                let cols = b + Self.columns
                conv(mag, channels: 65, length: 4, stride: 1, w + SileroModel.conv0, w + SileroModel.bias0, outChannels: 128, into: b + Self.e0, columns: cols)
                conv(b + Self.e0, channels: 128, length: 4, stride: 2, w + SileroModel.conv1, w + SileroModel.bias1, outChannels: 64, into: b + Self.e1, columns: cols)
                conv(b + Self.e1, channels: 64, length: 2, stride: 2, w + SileroModel.conv2, w + SileroModel.bias2, outChannels: 64, into: b + Self.e2, columns: cols)
                conv(b + Self.e2, channels: 64, length: 1, stride: 1, w + SileroModel.conv3, w + SileroModel.bias3, outChannels: 128, into: b + Self.e3, columns: cols)
                // 6. One LSTM cell step: gates = W_ih x + W_hh h + b.
                let gates = b + Self.gates
                let input = b + Self.e3
                let h = b + Self.hidden
                let c = b + Self.cell
                for g in 0..<512 {
                    gates[g] = w[SileroModel.biasLSTM + g]
                        + dot(w + SileroModel.weightIH + g * 128, input, 128)
                        + dot(w + SileroModel.weightHH + g * 128, h, 128)
                }
                for i in 0..<128 {
                    let inputGate = sigmoid(gates[i])
                    let forgetGate = sigmoid(gates[128 + i])
                    let candidate = tanhf(gates[256 + i])
                    let outputGate = sigmoid(gates[384 + i])
                    c[i] = forgetGate * c[i] + inputGate * candidate
                    h[i] = outputGate * tanhf(c[i])
                }
                // 7. Decoder: ReLU → 1×1 conv → sigmoid.
                var logit = w[SileroModel.decoderBias]
                for i in 0..<128 { logit += w[SileroModel.decoderWeight + i] * max(0, h[i]) }
                return sigmoid(logit)
            }
        }
    }
}

/// Conv1d, kernel 3, padding 1, then ReLU. `input` is time-major (`length` × `channels`); so is the output.
/// Each output time step gathers its three taps per channel (im2col, channel-major to match the weights' (o, i, k)
/// layout), then each output channel is one dot product.
@inline(__always)
private func conv(
    _ input: UnsafeMutablePointer<Float>,
    channels: Int,
    length: Int,
    stride: Int,
    _ weight: UnsafeMutablePointer<Float>,
    _ bias: UnsafeMutablePointer<Float>,
    outChannels: Int,
    into output: UnsafeMutablePointer<Float>,
    columns: UnsafeMutablePointer<Float>
) {
    let outLength = (length + 2 - 3) / stride + 1
    let n = channels * 3
    for t in 0..<outLength {
        let column = columns + t * n
        for i in 0..<channels {
            for k in 0..<3 {
                let position = t * stride + k - 1
                column[i * 3 + k] = position >= 0 && position < length ? input[position * channels + i] : 0
            }
        }
    }
    if outLength == 4 {
        for o in 0..<outChannels {
            let sums = dot4(weight + o * n, columns, columns + n, columns + 2 * n, columns + 3 * n, n)
            for t in 0..<4 { output[t * outChannels + o] = max(0, sums[t] + bias[o]) }
        }
    } else {
        for o in 0..<outChannels {
            for t in 0..<outLength {
                output[t * outChannels + o] = max(0, dot(weight + o * n, columns + t * n, n) + bias[o])
            }
        }
    }
}

/// |DFT| of the Hann-windowed 128 samples at `x`, bins 0…64, by an in-place radix-2 FFT.
@inline(__always)
private func fftMagnitudes(
    _ x: UnsafeMutablePointer<Float>,
    model: SileroModel,
    real re: UnsafeMutablePointer<Float>,
    imag im: UnsafeMutablePointer<Float>,
    into out: UnsafeMutablePointer<Float>
) {
    model.fftWindow.withUnsafeBufferPointer { window in
        model.bitReversed.withUnsafeBufferPointer { reversed in
            for k in 0..<128 {
                re[reversed[k]] = window[k] * x[k]
                im[reversed[k]] = 0
            }
        }
    }
    model.twiddleCos.withUnsafeBufferPointer { cosines in
        model.twiddleSin.withUnsafeBufferPointer { sines in
            var size = 2
            while size <= 128 {
                let half = size / 2
                let step = 128 / size
                var start = 0
                while start < 128 {
                    for j in 0..<half {
                        let c = cosines[j * step]
                        let s = sines[j * step]
                        let a = start + j
                        let b = a + half
                        // (re + i·im)[b] · e^{−2πi j/size}
                        let tr = re[b] * c + im[b] * s
                        let ti = im[b] * c - re[b] * s
                        re[b] = re[a] - tr
                        im[b] = im[a] - ti
                        re[a] += tr
                        im[a] += ti
                    }
                    start += size
                }
                size *= 2
            }
        }
    }
    for f in 0...64 { out[f] = (re[f] * re[f] + im[f] * im[f]).squareRoot() }
}

@inline(__always)
private func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

/// acc + a·b: one fused instruction when built for a CPU with FMA (CALLBRIDGE_TARGET_CPU), else multiply then add
/// (without hardware FMA a fused multiply-add would be a slow library call).
@inline(__always)
private func multiplyAdd(_ acc: SIMD8<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    #if CALLBRIDGE_FMA
    return acc.addingProduct(a, b)
    #else
    return acc + a * b
    #endif
}

/// Σ a[i]·b[i] with SIMD8 lanes.
@inline(__always)
private func dot(_ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD8<Float>()
    var acc1 = SIMD8<Float>()
    var i = 0
    let ra = UnsafeRawPointer(a)
    let rb = UnsafeRawPointer(b)
    while i + 16 <= n {
        acc0 = multiplyAdd(acc0, ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self),
            rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
        acc1 = multiplyAdd(acc1, ra.loadUnaligned(fromByteOffset: (i + 8) * 4, as: SIMD8<Float>.self),
            rb.loadUnaligned(fromByteOffset: (i + 8) * 4, as: SIMD8<Float>.self))
        i += 16
    }
    var sum = (acc0 + acc1).sum()
    while i < n {
        sum += a[i] * b[i]
        i += 1
    }
    return sum
}

/// One row against four vectors at once: the row is read once for four outputs.
@inline(__always)
private func dot4(
    _ row: UnsafeMutablePointer<Float>,
    _ v0: UnsafeMutablePointer<Float>,
    _ v1: UnsafeMutablePointer<Float>,
    _ v2: UnsafeMutablePointer<Float>,
    _ v3: UnsafeMutablePointer<Float>,
    _ n: Int
) -> SIMD4<Float> {
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    var i = 0
    let r = UnsafeRawPointer(row)
    while i + 8 <= n {
        let w = r.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        a0 = multiplyAdd(a0, w, UnsafeRawPointer(v0).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
        a1 = multiplyAdd(a1, w, UnsafeRawPointer(v1).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
        a2 = multiplyAdd(a2, w, UnsafeRawPointer(v2).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
        a3 = multiplyAdd(a3, w, UnsafeRawPointer(v3).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
        i += 8
    }
    var s = SIMD4<Float>(a0.sum(), a1.sum(), a2.sum(), a3.sum())
    while i < n {
        s += SIMD4<Float>(v0[i], v1[i], v2[i], v3[i]) * row[i]
        i += 1
    }
    return s
}

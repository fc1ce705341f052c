import Synchronization

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
    /// The convolution and LSTM matrices again, repacked once for the register-blocked kernels: rows in blocks of
    /// 64, each block stored column by column (`n` columns of 64 contiguous floats), so the kernel streams through
    /// memory in order and never reduces across SIMD lanes; the LSTM's two matrices are joined into one (512, 256)
    /// acting on [x; h].
    let packed: UnsafeMutablePointer<Float>
    static let packedConv0 = 0
    static let packedConv1 = packedConv0 + 128 * 195
    static let packedConv2 = packedConv1 + 64 * 384
    static let packedConv3 = packedConv2 + 64 * 192
    static let packedLSTM = packedConv3 + 128 * 192
    static let packedCount = packedLSTM + 512 * 256
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
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: Self.packedCount)
        func pack(_ destination: Int, rows: Int, columns: Int, block: Int, _ element: (Int, Int) -> Float) {
            var p = destination
            for b in 0..<(rows / block) {
                for j in 0..<columns {
                    for r in 0..<block {
                        packed[p] = element(b * block + r, j)
                        p += 1
                    }
                }
            }
        }
        pack(Self.packedConv0, rows: 128, columns: 195, block: 64) { weights[Self.conv0 + $0 * 195 + $1] }
        pack(Self.packedConv1, rows: 64, columns: 384, block: 64) { weights[Self.conv1 + $0 * 384 + $1] }
        pack(Self.packedConv2, rows: 64, columns: 192, block: 64) { weights[Self.conv2 + $0 * 192 + $1] }
        pack(Self.packedConv3, rows: 128, columns: 192, block: 64) { weights[Self.conv3 + $0 * 192 + $1] }
        pack(Self.packedLSTM, rows: 512, columns: 256, block: 64) { row, column in
            column < 128 ? weights[Self.weightIH + row * 128 + column] : weights[Self.weightHH + row * 128 + column - 128]
        }
        self.packed = packed
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
        self.packed.deallocate()
        self.workspaces.withLock { workspaces in
            for workspace in workspaces { workspace.floats.deallocate() }
        }
    }

    /// Scratch space for one window (`SileroVAD.count` floats), lent to whichever call is computing one: a call keeps
    /// only its state between windows, and there are as many workspaces as windows computed at once (one per thread),
    /// not one per call.
    private let workspaces = Mutex<[Workspace]>([])

    /// One workspace's floats: used by one window at a time (it is out of the list meanwhile).
    private struct Workspace: @unchecked Sendable {
        let floats: UnsafeMutablePointer<Float>
    }

    func withWorkspace<R>(_ body: (UnsafeMutablePointer<Float>) -> R) -> R {
        let workspace = self.workspaces.withLock { $0.popLast() } ?? {
            let fresh = UnsafeMutablePointer<Float>.allocate(capacity: SileroVAD.count)
            fresh.initialize(repeating: 0, count: SileroVAD.count)
            return Workspace(floats: fresh)
        }()
        defer { self.workspaces.withLock { $0.append(workspace) } }
        return body(workspace.floats)
    }
}

/// Silero VAD v6 at 8 kHz, streaming: 256-sample windows (32 ms) with the last 32 samples of the previous model
/// input carried as context, and the LSTM state carried between windows. A value per call; the model is shared.
///
/// One window costs about 320k multiply-adds. They run as register-blocked products over weights repacked at load
/// time (the convolutions through an im2col of their three taps), in one scratch buffer, so a window allocates
/// nothing.
public struct SileroVAD: Sendable {
    public static let windowSamples = 256
    public static let contextSamples = 32

    public let model: SileroModel
    /// The state kept between windows: the start of the window's layout (copied with the value, so each copy has
    /// its own). The rest of the layout is scratch, borrowed from the model for each window.
    var state: [Float]
    var pending: [Float] = []

    // Layout of `buffer`. The encoder's output sits right before the hidden state: the LSTM reads [x; h] as one
    // 256-float vector.
    static let e3 = 0  // 128
    static let hidden = 128  // 128
    static let cell = 256  // 128
    static let context = 384  // 32
    static let stateRange = 128..<416
    static let stateCount = 416
    static let x = 416  // 320: context + chunk + reflect padding
    static let magnitude = x + 320  // 4 frames × 65 bins, frame-major
    static let columns = magnitude + 260  // im2col scratch, up to 4 × 384
    static let e0 = columns + 4 * 384  // 4 × 128, time-major
    static let e1 = e0 + 512  // 2 × 64
    static let e2 = e1 + 128  // 64
    static let gates = e2 + 64  // 512
    static let fftReal = gates + 512  // 128
    static let fftImag = fftReal + 128  // 128
    static let count = fftImag + 128

    public init(model: SileroModel) {
        self.model = model
        self.state = [Float](repeating: 0, count: Self.stateCount)
        self.pending.reserveCapacity(2 * Self.windowSamples)
    }

    /// Forgets the LSTM state, the context and any partial window (a new active period).
    public mutating func reset() {
        for i in Self.stateRange { self.state[i] = 0 }
        self.pending.removeAll(keepingCapacity: true)
    }

    /// Feeds samples in [-1, 1); returns the speech probability of every window completed.
    public mutating func process<C: Collection>(_ samples: C) -> [Float] where C.Element == Float {
        var probabilities: [Float] = []
        self.process(samples) { probabilities.append($0) }
        return probabilities
    }

    /// Feeds samples in [-1, 1) and hands `window` the speech probability of every window completed, in order,
    /// without collecting them in an array (the per-frame form).
    public mutating func process<C: Collection>(_ samples: C, window report: (Float) -> Void) where C.Element == Float {
        self.pending.append(contentsOf: samples)
        self.completeWindows(report)
    }

    /// Runs every whole window in `pending`, in order, and keeps the rest.
    private mutating func completeWindows(_ report: (Float) -> Void) {
        var start = 0
        while self.pending.count - start >= Self.windowSamples {
            report(self.window(at: start))
            start += Self.windowSamples
        }
        if start > 0 { self.pending.removeFirst(start) }
    }

    /// Feeds 8 kHz μ-law (a Twilio frame is 160 bytes: five frames give three windows and carry the rest over).
    public mutating func process(muLaw bytes: [UInt8]) -> [Float] {
        self.process(bytes.lazy.map { Float(MuLaw.decode($0)) / 32768 })
    }

    /// Feeds 8 kHz μ-law, handing `window` each completed window's probability (allocates nothing).
    ///
    /// Contiguous bytes (an array, a slice) are decoded straight into the pending samples by non-generic code: the
    /// generic path, called from another module unspecialized, allocated once per sample.
    public mutating func process<C: Collection>(muLaw bytes: C, window report: (Float) -> Void) where C.Element == UInt8 {
        let done: Void? = bytes.withContiguousStorageIfAvailable { self.process(muLawBytes: $0, window: report) }
        if done == nil {
            let copied = Array(bytes)
            copied.withUnsafeBufferPointer { self.process(muLawBytes: $0, window: report) }
        }
    }

    /// `process(muLaw:window:)` on contiguous bytes.
    public mutating func process(muLawBytes bytes: UnsafeBufferPointer<UInt8>, window report: (Float) -> Void) {
        for byte in bytes { self.pending.append(Float(MuLaw.decode(byte)) / 32768) }
        self.completeWindows(report)
    }

    /// One 32 ms window (the 256 samples at `start` in `pending`) through the network.
    mutating func window(at start: Int) -> Float {
        let w = self.model.weights
        let model = self.model
        return self.pending.withUnsafeBufferPointer { pending in
            self.state.withUnsafeMutableBufferPointer { state in
                model.withWorkspace { b in
                b.update(from: state.baseAddress!, count: Self.stateCount)
                defer { state.baseAddress!.update(from: b, count: Self.stateCount) }
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
                // 5. Encoder: four conv + ReLU layers (kernel 3, padding 1), each an im2col then a blocked product.
                let p = self.model.packed
                let cols = b + Self.columns
                im2col(mag, channels: 65, length: 4, stride: 1, into: cols)
                for t in 0..<4 {
                    product64(p + SileroModel.packedConv0, cols + t * 195, n: 195, blocks: 2, bias: w + SileroModel.bias0, relu: true, into: b + Self.e0 + t * 128)
                }
                im2col(b + Self.e0, channels: 128, length: 4, stride: 2, into: cols)
                for t in 0..<2 {
                    product64(p + SileroModel.packedConv1, cols + t * 384, n: 384, blocks: 1, bias: w + SileroModel.bias1, relu: true, into: b + Self.e1 + t * 64)
                }
                im2col(b + Self.e1, channels: 64, length: 2, stride: 2, into: cols)
                product64(p + SileroModel.packedConv2, cols, n: 192, blocks: 1, bias: w + SileroModel.bias2, relu: true, into: b + Self.e2)
                im2col(b + Self.e2, channels: 64, length: 1, stride: 1, into: cols)
                product64(p + SileroModel.packedConv3, cols, n: 192, blocks: 2, bias: w + SileroModel.bias3, relu: true, into: b + Self.e3)
                // 6. One LSTM cell step: gates = [W_ih W_hh] [x; h] + b, gates i, f, g, o.
                let gates = b + Self.gates
                let h = b + Self.hidden
                let c = b + Self.cell
                product64(p + SileroModel.packedLSTM, b + Self.e3, n: 256, blocks: 8, bias: w + SileroModel.biasLSTM, relu: false, into: gates)
                for i in 0..<128 {
                    let inputGate = sigmoid(gates[i])
                    let forgetGate = sigmoid(gates[128 + i])
                    let candidate = fastTanh(gates[256 + i])
                    let outputGate = sigmoid(gates[384 + i])
                    c[i] = forgetGate * c[i] + inputGate * candidate
                    h[i] = outputGate * fastTanh(c[i])
                }
                // 7. Decoder: ReLU → 1×1 conv → sigmoid.
                var logit = w[SileroModel.decoderBias]
                for i in 0..<128 { logit += w[SileroModel.decoderWeight + i] * max(0, h[i]) }
                return sigmoid(logit)
                }
            }
        }
    }
}

/// im2col for a kernel-3, padding-1 convolution: `input` is time-major (`length` × `channels`); column `t` of the
/// output holds the three taps of every channel in the weights' (i, k) order.
@inline(__always)
private func im2col(_ input: UnsafeMutablePointer<Float>, channels: Int, length: Int, stride: Int, into columns: UnsafeMutablePointer<Float>) {
    let outLength = (length + 2 - 3) / stride + 1
    let n = channels * 3
    for t in 0..<outLength {
        let column = columns + t * n
        for k in 0..<3 {
            let position = t * stride + k - 1
            if position >= 0 && position < length {
                let source = input + position * channels
                for i in 0..<channels { column[i * 3 + k] = source[i] }
            } else {
                for i in 0..<channels { column[i * 3 + k] = 0 }
            }
        }
    }
}

@inline(__always)
private func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
private func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// out[64b + r] = bias + Σ_j W[64b + r][j] · v[j] (then ReLU if asked): eight accumulators of eight rows each, one
/// broadcast per column, no reduction across lanes. conv2, conv3 and the LSTM's gates.
@inline(__always)
private func product64(
    _ packed: UnsafeMutablePointer<Float>, _ vector: UnsafeMutablePointer<Float>, n: Int, blocks: Int,
    bias: UnsafeMutablePointer<Float>, relu: Bool, into output: UnsafeMutablePointer<Float>
) {
    var p = packed
    for block in 0..<blocks {
        let bias = bias + block * 64
        var a0 = load8(bias), a1 = load8(bias + 8), a2 = load8(bias + 16), a3 = load8(bias + 24)
        var a4 = load8(bias + 32), a5 = load8(bias + 40), a6 = load8(bias + 48), a7 = load8(bias + 56)
        for j in 0..<n {
            let s = SIMD8(repeating: vector[j])
            a0 = multiplyAdd(a0, load8(p), s); a1 = multiplyAdd(a1, load8(p + 8), s)
            a2 = multiplyAdd(a2, load8(p + 16), s); a3 = multiplyAdd(a3, load8(p + 24), s)
            a4 = multiplyAdd(a4, load8(p + 32), s); a5 = multiplyAdd(a5, load8(p + 40), s)
            a6 = multiplyAdd(a6, load8(p + 48), s); a7 = multiplyAdd(a7, load8(p + 56), s)
            p += 64
        }
        let o = output + block * 64
        store8(a0, o); store8(a1, o + 8); store8(a2, o + 16); store8(a3, o + 24)
        store8(a4, o + 32); store8(a5, o + 40); store8(a6, o + 48); store8(a7, o + 56)
        if relu {
            for r in 0..<64 where o[r] < 0 { o[r] = 0 }
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

/// tanh through one expf: glibc's tanhf goes through expm1f and cost about as much as all the LSTM's multiply-adds.
/// The absolute error stays below 1e-6, far inside the 1e-4 bound against onnxruntime.
@inline(__always)
private func fastTanh(_ x: Float) -> Float { 1 - 2 / (expf(2 * x) + 1) }

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

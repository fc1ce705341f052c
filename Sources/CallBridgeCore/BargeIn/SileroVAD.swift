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
public final class SileroModel: Sendable {
    public static let floatCount = 235_137
    /// FNV-1a 64 of the little-endian float32 file written by scripts/silero/export_weights.py.
    public static let checksum: UInt64 = 0x5e7f_d4fc_51eb_c895

    let basis: [Float]  // (130, 128): 65 cosine rows then 65 −sine rows, Hann-windowed
    let conv0: [Float], bias0: [Float]  // (128, 65, 3)
    let conv1: [Float], bias1: [Float]  // (64, 128, 3)
    let conv2: [Float], bias2: [Float]  // (64, 64, 3)
    let conv3: [Float], bias3: [Float]  // (128, 64, 3)
    let weightIH: [Float], weightHH: [Float], biasLSTM: [Float]  // (512, 128) ×2, (512): gates i, f, g, o
    let decoderWeight: [Float]  // (128)
    let decoderBias: Float

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
        var floats = [Float](repeating: 0, count: Self.floatCount)
        for i in 0..<Self.floatCount {
            let bits = UInt32(bytes[4 * i]) | UInt32(bytes[4 * i + 1]) << 8 | UInt32(bytes[4 * i + 2]) << 16
                | UInt32(bytes[4 * i + 3]) << 24
            floats[i] = Float(bitPattern: bits)
        }
        var offset = 0
        func take(_ count: Int) -> [Float] {
            defer { offset += count }
            return Array(floats[offset..<(offset + count)])
        }
        self.basis = take(130 * 128)
        self.conv0 = take(128 * 65 * 3)
        self.bias0 = take(128)
        self.conv1 = take(64 * 128 * 3)
        self.bias1 = take(64)
        self.conv2 = take(64 * 64 * 3)
        self.bias2 = take(64)
        self.conv3 = take(128 * 64 * 3)
        self.bias3 = take(128)
        self.weightIH = take(512 * 128)
        self.weightHH = take(512 * 128)
        self.biasLSTM = take(512)
        self.decoderWeight = take(128)
        self.decoderBias = take(1)[0]
    }
}

/// Silero VAD v6 at 8 kHz, streaming: 256-sample windows (32 ms) with the last 32 samples of the previous model
/// input carried as context, and the LSTM state carried between windows. A value per call; the model is shared.
public struct SileroVAD: Sendable {
    public static let windowSamples = 256
    public static let contextSamples = 32

    public let model: SileroModel
    var hidden = [Float](repeating: 0, count: 128)
    var cell = [Float](repeating: 0, count: 128)
    var context = [Float](repeating: 0, count: SileroVAD.contextSamples)
    var pending: [Float] = []

    public init(model: SileroModel) {
        self.model = model
        self.pending.reserveCapacity(2 * Self.windowSamples)
    }

    /// Forgets the LSTM state, the context and any partial window (a new active period).
    public mutating func reset() {
        for i in 0..<128 {
            self.hidden[i] = 0
            self.cell[i] = 0
        }
        for i in 0..<Self.contextSamples { self.context[i] = 0 }
        self.pending.removeAll(keepingCapacity: true)
    }

    /// Feeds samples in [-1, 1); returns the speech probability of every window completed.
    public mutating func process<C: Collection>(_ samples: C) -> [Float] where C.Element == Float {
        self.pending.append(contentsOf: samples)
        var probabilities: [Float] = []
        var start = 0
        while self.pending.count - start >= Self.windowSamples {
            probabilities.append(self.window(self.pending[start..<(start + Self.windowSamples)]))
            start += Self.windowSamples
        }
        if start > 0 { self.pending.removeFirst(start) }
        return probabilities
    }

    /// Feeds 8 kHz μ-law (a Twilio frame is 160 bytes: five frames give three windows and carry the rest over).
    public mutating func process(muLaw bytes: [UInt8]) -> [Float] {
        self.process(bytes.lazy.map { Float(MuLaw.decode($0)) / 32768 })
    }

    /// One 32 ms window through the network.
    mutating func window(_ chunk: ArraySlice<Float>) -> Float {
        let m = self.model
        // 1–2. Context + chunk (288), reflect-padded on the right by 32 (320).
        var x = [Float](repeating: 0, count: 320)
        for i in 0..<32 { x[i] = self.context[i] }
        var j = 32
        for sample in chunk {
            x[j] = sample
            j += 1
        }
        for i in 0..<32 { x[288 + i] = x[288 - 2 - i] }
        for i in 0..<32 { self.context[i] = x[256 + i] }
        // 3–4. STFT as a strided convolution (kernel 128, hop 64: 4 frames), then magnitudes (65 bins).
        var magnitude = [Float](repeating: 0, count: 65 * 4)
        for t in 0..<4 {
            for f in 0..<65 {
                var re: Float = 0
                var im: Float = 0
                let cosRow = f * 128
                let sinRow = (65 + f) * 128
                for k in 0..<128 {
                    re += m.basis[cosRow + k] * x[t * 64 + k]
                    im += m.basis[sinRow + k] * x[t * 64 + k]
                }
                magnitude[f * 4 + t] = (re * re + im * im).squareRoot()
            }
        }
        // 5. Encoder: conv k=3 pad=1 + ReLU, channels 65→128 (stride 1), →64 (2), →64 (2), →128 (1).
        let e0 = Self.conv(magnitude, inChannels: 65, length: 4, m.conv0, m.bias0, outChannels: 128, stride: 1)
        let e1 = Self.conv(e0.values, inChannels: 128, length: e0.length, m.conv1, m.bias1, outChannels: 64, stride: 2)
        let e2 = Self.conv(e1.values, inChannels: 64, length: e1.length, m.conv2, m.bias2, outChannels: 64, stride: 2)
        let e3 = Self.conv(e2.values, inChannels: 64, length: e2.length, m.conv3, m.bias3, outChannels: 128, stride: 1)
        // 6. One LSTM cell step.
        var gates = m.biasLSTM
        for g in 0..<512 {
            var sum: Float = 0
            let row = g * 128
            for i in 0..<128 {
                sum += m.weightIH[row + i] * e3.values[i] + m.weightHH[row + i] * self.hidden[i]
            }
            gates[g] += sum
        }
        for i in 0..<128 {
            let inputGate = Self.sigmoid(gates[i])
            let forgetGate = Self.sigmoid(gates[128 + i])
            let candidate = tanhf(gates[256 + i])
            let outputGate = Self.sigmoid(gates[384 + i])
            self.cell[i] = forgetGate * self.cell[i] + inputGate * candidate
            self.hidden[i] = outputGate * tanhf(self.cell[i])
        }
        // 7. Decoder: ReLU → 1×1 conv → sigmoid.
        var logit = m.decoderBias
        for i in 0..<128 { logit += m.decoderWeight[i] * max(0, self.hidden[i]) }
        return Self.sigmoid(logit)
    }

    /// Conv1d, kernel 3, padding 1, then ReLU. Input and output are channel-major (channel × time).
    static func conv(
        _ input: [Float],
        inChannels: Int,
        length: Int,
        _ weight: [Float],
        _ bias: [Float],
        outChannels: Int,
        stride: Int
    ) -> (values: [Float], length: Int) {
        let outLength = (length + 2 - 3) / stride + 1
        var out = [Float](repeating: 0, count: outChannels * outLength)
        for o in 0..<outChannels {
            for t in 0..<outLength {
                var sum = bias[o]
                for i in 0..<inChannels {
                    let w = (o * inChannels + i) * 3
                    for k in 0..<3 {
                        let position = t * stride + k - 1
                        if position >= 0 && position < length {
                            sum += weight[w + k] * input[i * length + position]
                        }
                    }
                }
                out[o * outLength + t] = max(0, sum)
            }
        }
        return (out, outLength)
    }

    @inline(__always)
    static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }
}

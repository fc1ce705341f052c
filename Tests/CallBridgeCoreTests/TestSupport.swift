import Foundation

@testable import CallBridgeCore

/// Readable instants for call transcripts.
func t(_ ms: Int) -> CallInstant { .milliseconds(ms) }

/// `count` bytes counting up from `start`, so frames can be told apart.
func ramp(_ count: Int, from start: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: start + $0) }
}

extension Array where Element == CallAction {
    /// Only the Twilio media frames, in order.
    var mediaFrames: [[UInt8]] {
        self.compactMap { if case .sendTwilio(.media(let bytes)) = $0 { return bytes } else { return nil } }
    }

    var markNames: [String] {
        self.compactMap { if case .sendTwilio(.mark(let name)) = $0 { return name } else { return nil } }
    }
}

/// Test helpers on the core's seeded generator.
extension SplitMix64 {
    /// Uniform in 0..<bound (bound > 0).
    mutating func below(_ bound: Int) -> Int {
        Int(self.next() % UInt64(bound))
    }

    mutating func chance(_ numerator: Int, in denominator: Int) -> Bool {
        self.below(denominator) < numerator
    }

    mutating func pick<T>(_ items: [T]) -> T {
        items[self.below(items.count)]
    }

    /// A short message of up to `maxTokens` - 1 of `tokens`, for the scanners' key searches: nine times in ten it
    /// starts with `opening` (else `otherwise`) and nine times in ten it ends with `}`.
    mutating func tokenSoup(_ tokens: [String], opening: String, otherwise: String, maxTokens: Int) -> String {
        var text = self.chance(9, in: 10) ? opening : otherwise
        for _ in 0..<self.below(maxTokens) { text += self.pick(tokens) }
        text += self.chance(9, in: 10) ? "}" : ""
        return text
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8(truncatingIfNeeded: self.next() >> 40) }
    }
}

/// 20 ms frames of a 400 Hz tone whose RMS is `levelDBFS`, as μ-law.
func tone(_ levelDBFS: Double, frames: Int = 1) -> [UInt8] {
    let amplitude = 32768 * 2.0.squareRoot() * pow(10, levelDBFS / 20)
    return (0..<(frames * 160)).map { i in
        MuLaw.encode(Int16(clamping: Int((amplitude * sin(2 * Double.pi * 400 * Double(i) / 8000)).rounded())))
    }
}

/// A caller `media` payload of one 20 ms frame at `levelDBFS` (or μ-law silence).
func callerPayload(_ levelDBFS: Double?) -> String {
    Base64.encode(levelDBFS.map { tone($0) } ?? Array(repeating: MuLaw.silence, count: 160))
}

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

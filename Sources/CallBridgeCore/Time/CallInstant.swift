/// A point on the bridge's monotonic timeline. The shell maps its clock onto this; the core never reads a clock.
public struct CallInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var offset: Duration

    public init(offset: Duration) {
        self.offset = offset
    }

    public static let zero = CallInstant(offset: .zero)

    public static func milliseconds(_ ms: Int) -> CallInstant {
        CallInstant(offset: .milliseconds(ms))
    }

    public static func < (lhs: CallInstant, rhs: CallInstant) -> Bool { lhs.offset < rhs.offset }
    public static func + (lhs: CallInstant, rhs: Duration) -> CallInstant { CallInstant(offset: lhs.offset + rhs) }
    public static func - (lhs: CallInstant, rhs: Duration) -> CallInstant { CallInstant(offset: lhs.offset - rhs) }
    public static func - (lhs: CallInstant, rhs: CallInstant) -> Duration { lhs.offset - rhs.offset }

    public var description: String { "t+\(self.offset)" }
}

extension Duration {
    /// Whole milliseconds, truncated toward zero.
    public var wholeMilliseconds: Int {
        let (seconds, attoseconds) = self.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }

    /// Milliseconds as a floating value, for reports.
    public var millisecondsValue: Double {
        let (seconds, attoseconds) = self.components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

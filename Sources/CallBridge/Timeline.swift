import CallBridgeCore
import NIOCore

/// Maps the event loops' monotonic clock (`NIODeadline`: integer nanoseconds, read without any 128-bit arithmetic)
/// onto the core's `CallInstant`. A call's driver reads it once per event; timers go back to the loop as deadlines.
public struct Timeline: Sendable {
    public let epoch: NIODeadline

    public init() {
        self.epoch = .now()
    }

    public var now: CallInstant { self.instant(.now()) }

    public func instant(_ deadline: NIODeadline) -> CallInstant {
        CallInstant(offset: .nanoseconds(Int64(deadline.uptimeNanoseconds) - Int64(self.epoch.uptimeNanoseconds)))
    }

    public func deadline(_ at: CallInstant) -> NIODeadline {
        self.epoch + .nanoseconds(at.offset.wholeNanoseconds)
    }
}

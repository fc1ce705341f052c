import CallBridgeCore

/// Maps the process's monotonic clock onto the core's `CallInstant`.
public struct Timeline: Sendable {
    public let clock = ContinuousClock()
    public let epoch: ContinuousClock.Instant

    public init() {
        self.epoch = self.clock.now
    }

    public var now: CallInstant { CallInstant(offset: self.clock.now - self.epoch) }

    public func instant(_ at: CallInstant) -> ContinuousClock.Instant { self.epoch.advanced(by: at.offset) }
}

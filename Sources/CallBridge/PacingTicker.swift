import CallBridgeCore
import Synchronization

/// One shared 20 ms ticker for every call (a timer per call costs a wake-up per call per frame: see STACK.md).
///
/// Calls with frames waiting register; each tick, on absolute deadlines, every registered call gets a `tick`.
public final class PacingTicker: Sendable {
    public typealias Subscriber = @Sendable () -> Void

    private let period: Duration
    private let subscribers = Mutex<[Int: Subscriber]>([:])

    public init(period: Duration = AudioFrame.duration) {
        self.period = period
    }

    public func register(_ id: Int, _ subscriber: @escaping Subscriber) {
        self.subscribers.withLock { $0[id] = subscriber }
    }

    public func unregister(_ id: Int) {
        _ = self.subscribers.withLock { $0.removeValue(forKey: id) }
    }

    /// Runs until cancelled.
    public func run(clock: ContinuousClock = ContinuousClock()) async {
        var deadline = clock.now
        while !Task.isCancelled {
            deadline = deadline.advanced(by: self.period)
            let now = clock.now
            if now - deadline > .milliseconds(200) {
                deadline = now  // the process stalled: re-anchor instead of firing a burst of ticks
            }
            do {
                try await clock.sleep(until: deadline, tolerance: .zero)
            } catch {
                return
            }
            let due = self.subscribers.withLock { Array($0.values) }
            for tick in due { tick() }
        }
    }
}

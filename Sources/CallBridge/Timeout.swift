import Synchronization

/// Thrown by `withTimeout` when the operation did not finish in time.
public struct TimeoutError: Error, CustomStringConvertible, Sendable {
    public var limit: Duration
    public var description: String { "timed out after \(self.limit)" }
}

/// Runs `operation`, cancelling it and throwing `TimeoutError` if it takes longer than `limit`.
public func withTimeout<T: Sendable>(
    _ limit: Duration,
    clock: ContinuousClock = ContinuousClock(),
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await clock.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw TimeoutError(limit: limit)
        }
        return value
    }
}

/// Values recorded by one side of a test or tool, with a bounded wait for a condition over them.
public final class Observations<Value: Sendable>: Sendable {
    private struct Waiter {
        var id: Int
        var condition: @Sendable ([Value]) -> Bool
        var continuation: CheckedContinuation<Void, Never>
    }
    private struct State {
        var values: [Value] = []
        var waiters: [Waiter] = []
        var nextID = 0
    }
    private let state = Mutex(State())

    public init() {}

    public func record(_ value: Value) {
        let ready: [CheckedContinuation<Void, Never>] = self.state.withLock { state in
            state.values.append(value)
            let values = state.values
            let (met, pending) = (state.waiters.filter { $0.condition(values) }, state.waiters.filter { !$0.condition(values) })
            state.waiters = pending
            return met.map(\.continuation)
        }
        for continuation in ready { continuation.resume() }
    }

    /// Everything recorded so far.
    public var all: [Value] { self.state.withLock { $0.values } }

    /// Waits until `condition` holds over everything recorded, or throws `TimeoutError` after `limit`.
    public func wait(upTo limit: Duration, until condition: @escaping @Sendable ([Value]) -> Bool) async throws {
        try await withTimeout(limit) {
            let id = self.state.withLock { state -> Int in
                state.nextID += 1
                return state.nextID
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = self.state.withLock { state -> Bool in
                        if condition(state.values) || Task.isCancelled { return true }
                        state.waiters.append(Waiter(id: id, condition: condition, continuation: continuation))
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                let waiter = self.state.withLock { state -> Waiter? in
                    guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                    return state.waiters.remove(at: index)
                }
                waiter?.continuation.resume()
            }
            guard condition(self.all) else { throw TimeoutError(limit: limit) }
        }
    }
}

import Synchronization

/// A value set once by one task and awaited by others (e.g. the embedded agent's port).
final class AsyncValue<Value: Sendable>: Sendable {
    private enum State {
        case waiting([CheckedContinuation<Value, Never>])
        case ready(Value)
    }
    private let state = Mutex<State>(.waiting([]))

    init() {}

    func set(_ value: Value) {
        let waiters: [CheckedContinuation<Value, Never>] = self.state.withLock { state in
            guard case .waiting(let list) = state else { return [] }
            state = .ready(value)
            return list
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    /// The value if it is set, without waiting.
    var current: Value? {
        self.state.withLock { state in
            if case .ready(let value) = state { return value }
            return nil
        }
    }

    var value: Value {
        get async {
            await withCheckedContinuation { continuation in
                let ready: Value? = self.state.withLock { state in
                    switch state {
                    case .ready(let value):
                        return value
                    case .waiting(var list):
                        list.append(continuation)
                        state = .waiting(list)
                        return nil
                    }
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}

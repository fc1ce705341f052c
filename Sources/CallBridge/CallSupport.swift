import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Hands the memory freed by ended calls back to the system once the bridge has been idle for a moment (glibc's
/// `malloc_trim`). glibc keeps freed pages in its arenas: after a burst of calls the process would stay at its peak
/// size, and resident memory, which dashboards and the leak test read, would say little about what is in use.
final class IdleHeapTrim: Sendable {
    private typealias Trim = @convention(c) (Int) -> Int32
    /// nil where the C library has no `malloc_trim` (musl, Darwin).
    private static let trim: Trim? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim").map { unsafeBitCast($0, to: Trim.self) }
    /// Long enough that the gaps inside a burst of calls do not trim; trimming is a walk over the whole heap.
    static let delay = TimeAmount.milliseconds(200)

    private let registry: CallRegistry
    private let logger: Logger
    private let pending = Atomic<Bool>(false)
    private let eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()

    init(registry: CallRegistry, logger: Logger) {
        self.registry = registry
        self.logger = logger
    }

    /// The last active call just ended.
    func wentIdle() {
        guard Self.trim != nil, !self.pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        self.eventLoop.scheduleTask(in: Self.delay) {
            self.pending.store(false, ordering: .releasing)
            guard self.registry.activeCalls == 0, let trim = Self.trim else { return }
            let released = trim(0) == 1
            self.logger.debug("idle: heap trimmed", metadata: ["heap.released": .stringConvertible(released)])
        }
    }
}

/// The call's identity for its log lines, filled in when Twilio's `start` arrives.
final class CallMetadata: Sendable {
    private let metadata = Mutex<Logger.Metadata>([:])
    var current: Logger.Metadata { self.metadata.withLock { $0 } }
    func set(callSid: String, streamSid: String) {
        self.metadata.withLock {
            $0["call_sid"] = .string(callSid)
            $0["stream_sid"] = .string(streamSid)
        }
    }
}

/// Active-call bookkeeping shared by the routes (health, drain).
public final class CallRegistry: Sendable {
    private let active = Atomic<Int>(0)
    private let total = Atomic<Int>(0)
    /// Tasks waiting for the active count to reach 0.
    private let idleWaiters = Mutex<[Int: CheckedContinuation<Void, Never>]>([:])
    private let nextWaiter = Atomic<Int>(0)

    /// Returns true as soon as no call is active, false if that does not happen within `limit`.
    public func waitUntilIdle(upTo limit: Duration) async -> Bool {
        if self.activeCalls == 0 { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                let id = self.nextWaiter.add(1, ordering: .relaxed).newValue
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.idleWaiters.withLock { waiters -> Bool in
                            if self.activeCalls == 0 || Task.isCancelled { return true }
                            waiters[id] = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    self.idleWaiters.withLock { $0.removeValue(forKey: id) }?.resume()
                }
                return self.activeCalls == 0
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    public init() {}

    public var activeCalls: Int { self.active.load(ordering: .relaxed) }
    public var totalCalls: Int { self.total.load(ordering: .relaxed) }

    /// Counts the call and returns its process-unique number.
    func callStarted() -> Int {
        self.active.add(1, ordering: .relaxed)
        return self.total.add(1, ordering: .relaxed).newValue
    }

    /// Called each time the last active call ends (set once, before the server starts).
    let idleHandler = Mutex<(@Sendable () -> Void)?>(nil)

    func callEnded() {
        guard self.active.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        self.idleHandler.withLock { $0 }?()
        let waiters = self.idleWaiters.withLock { waiters in
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }
}

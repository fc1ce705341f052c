#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import Testing

@testable import CallBridge

/// `RealtimeScheduling` against the kernel (what a thread's policy is, read back), and `LoopTicker.runIfDue`.
@Suite struct RealtimeSchedulingTests {
    /// Each loop's thread's (policy, priority), read on the loop.
    static func policies(of group: MultiThreadedEventLoopGroup) async throws -> [(policy: Int32, priority: Int)] {
        var found: [(policy: Int32, priority: Int)] = []
        for loop in group.makeIterator() { found.append(try await loop.submit { RealtimeScheduling.currentThread() }.get()) }
        return found
    }

    @Test func everyLoopThreadAndNoOtherGetsTheKernelsAnswer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let before = RealtimeScheduling.currentThread()
        let loopsBefore = try await Self.policies(of: group)
        let outcome = await RealtimeScheduling.apply(priority: 4, to: group)
        let after = try await Self.policies(of: group)
        switch outcome {
        case .applied(let priority):
            #expect(priority == 4)
            #expect(after.allSatisfy { $0.policy == SCHED_RR && $0.priority == 4 })
            // Reset-on-fork is asked for with the policy: what a loop thread spawns starts at normal priority.
            let raw = try await group.next().submit { sched_getscheduler(0) }.get()
            #expect(raw & RealtimeScheduling.resetOnFork != 0)
        case .refused(let code):
            // Without CAP_SYS_NICE or RLIMIT_RTPRIO: the kernel's EPERM, said as such, and no thread changed.
            #expect(code == EPERM)
            #expect(outcome.description.contains("CAP_SYS_NICE"))
            #expect(after.map(\.policy) == loopsBefore.map(\.policy) && after.map(\.priority) == loopsBefore.map(\.priority))
        }
        // The thread that asked is not one of the loops and stays as it was.
        #expect(RealtimeScheduling.currentThread().policy == before.policy)
        #expect(RealtimeScheduling.currentThread().priority == before.priority)
        try await group.shutdownGracefully()
    }

    @Test func aPriorityTheKernelRejectsChangesNothing() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let before = try await Self.policies(of: group)
        // SCHED_RR has no priority 0: EINVAL from the first loop, whoever asks.
        #expect(await RealtimeScheduling.apply(priority: 0, to: group) == .refused(errno: EINVAL))
        let after = try await Self.policies(of: group)
        #expect(after.map(\.policy) == before.map(\.policy) && after.map(\.priority) == before.map(\.priority))
        try await group.shutdownGracefully()
    }

    @Test func aRefusalPartWayPutsTheLoopsAlreadyChangedBack() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let first = try #require(try await Self.policies(of: group).first)
        let calls = Mutex<[(policy: Int32, priority: Int)]>([])
        // The kernel says yes to the first loop and no to the second.
        let outcome = await RealtimeScheduling.apply(priority: 9, to: group) { policy, priority in
            calls.withLock { calls in
                calls.append((policy, priority))
                return calls.count == 2 ? EPERM : 0
            }
        }
        #expect(outcome == .refused(errno: EPERM))
        let made = calls.withLock { $0 }
        #expect(made.count == 3)  // yes, no, then the first loop back to what it had; the third never asked
        #expect(made.map(\.policy) == [SCHED_RR, SCHED_RR, first.policy])
        #expect(made.map(\.priority) == [9, 9, first.priority])
        try await group.shutdownGracefully()
    }

    // MARK: LoopTicker.runIfDue

    /// Ticks of a 5 ms ticker on an embedded loop (virtual time), with what a test wants to run inside the body.
    final class Ticks {
        var deadlines: [NIODeadline] = []
        var inside: (() -> Void)?
    }

    @Test func aDueTickRunsFromAReadOnceAndTheTimerMovesOn() throws {
        let loop = EmbeddedEventLoop()
        let ticks = Ticks()
        let start = loop.now
        // A read that the loop handles at the tick's deadline, queued before the tick's own timer: it runs first.
        var early: [Bool] = []
        let ticker = LoopTicker(eventLoop: loop, period: .milliseconds(5)) { ticks.deadlines.append($0) }
        loop.assumeIsolated().scheduleTask(deadline: start + .milliseconds(3)) {
            ticker.runIfDue(now: loop.now)  // not due: nothing
            early.append(ticks.deadlines.isEmpty)
        }
        loop.assumeIsolated().scheduleTask(deadline: start + .milliseconds(5)) {
            ticker.runIfDue(now: loop.now)  // due: runs now, inside the read
            early.append(ticks.deadlines == [start + .milliseconds(5)])
        }
        ticker.start()
        loop.advanceTime(by: .milliseconds(20))
        #expect(early == [true, true])
        // The timer for 5 ms was cancelled, not run again: one tick per deadline, in order.
        #expect(ticks.deadlines == [5, 10, 15, 20].map { start + .milliseconds($0) })
        #expect(ticker.resets == 0)
        ticker.stop()
    }

    @Test func aReadInsideATickDoesNotRunItAgain() throws {
        let loop = EmbeddedEventLoop()
        let ticks = Ticks()
        let start = loop.now
        let ticker = LoopTicker(eventLoop: loop, period: .milliseconds(5)) { deadline in
            ticks.deadlines.append(deadline)
            ticks.inside?()
        }
        ticks.inside = { ticker.runIfDue(now: loop.now) }  // as a write inside the tick that leads to a read
        ticker.start()
        loop.advanceTime(by: .milliseconds(10))
        #expect(ticks.deadlines == [5, 10].map { start + .milliseconds($0) })
        ticker.stop()
    }

    /// A real loop runs its due timers as one batch, so a read that ran a tick early may come too late to cancel
    /// that tick's timer, which then runs: it must do nothing.
    @Test func aTimerForATickAlreadyRunIsStale() throws {
        let loop = EmbeddedEventLoop()
        let ticks = Ticks()
        let start = loop.now
        let ticker = LoopTicker(eventLoop: loop, period: .milliseconds(5)) { ticks.deadlines.append($0) }
        ticker.start()
        loop.advanceTime(by: .milliseconds(5))  // its own timer: the 5 ms tick
        ticker.timerFired(for: start + .milliseconds(5))  // again, late: stale
        loop.advanceTime(by: .milliseconds(1))
        ticker.runIfDue(now: start + .milliseconds(10))  // a read at 10 ms runs the 10 ms tick
        ticker.timerFired(for: start + .milliseconds(10))  // the cancelled timer, already taken to run: stale
        #expect(ticks.deadlines == [5, 10].map { start + .milliseconds($0) })
        loop.advanceTime(to: start + .milliseconds(15))  // the timer armed after the read's tick
        #expect(ticks.deadlines == [5, 10, 15].map { start + .milliseconds($0) })
        ticker.stop()
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import NIOCore

/// Real-time scheduling (`SCHED_RR`) for the threads that pace audio: the event loops, where the calls, their legs
/// and the shared pacing tickers run. Telephony media servers offer the same (Asterisk's `-p`, FreeSWITCH's `-rp`):
/// under CPU contention from other processes a normal thread waits its turn behind them, and a pacing tick that
/// waits goes out late; a real-time thread runs as soon as it is runnable and takes no more CPU than before.
///
/// Only the loops' threads change; `SCHED_RESET_ON_FORK` keeps anything they spawn at normal priority. The kernel's
/// real-time throttling (`/proc/sys/kernel/sched_rt_runtime_us`, 95 % by default) still leaves the rest of the
/// machine a share should a loop ever spin.
///
/// Needs `CAP_SYS_NICE`, or an `RLIMIT_RTPRIO` of at least the priority (systemd's `LimitRTPRIO=`, Docker's
/// `--ulimit rtprio=`); without it the kernel refuses and the threads stay as they were.
public enum RealtimeScheduling {
    /// The priorities a user may ask for (`SCHED_RR`'s range on Linux).
    public static let priorities: ClosedRange<Int> = 1...99

    public enum Outcome: Sendable, Equatable {
        /// Every loop thread now runs at this priority.
        case applied(priority: Int)
        /// The kernel refused (`errno`); no thread changed.
        case refused(errno: Int32)

        /// What refused means, for a log line.
        public var description: String {
            switch self {
            case .applied(let priority): return "SCHED_RR priority \(priority)"
            case .refused(let code):
                let reason = String(cString: strerror(code))
                guard code == EPERM else { return reason }
                return "\(reason): needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least the priority (systemd LimitRTPRIO=, docker --ulimit rtprio=)"
            }
        }
    }

    /// The scheduling policy and priority of the calling thread (`SCHED_RESET_ON_FORK` masked off).
    public static func currentThread() -> (policy: Int32, priority: Int) {
        var param = sched_param()
        let policy = sched_getscheduler(0)
        _ = sched_getparam(0, &param)
        return (policy & ~resetOnFork, Int(param.sched_priority))
    }

    /// Puts every event loop of `group` in `SCHED_RR` at `priority`, each from its own thread. All or none: when the
    /// kernel refuses one, the loops already changed go back to the policy and priority they had.
    public static func apply(priority: Int, to group: any EventLoopGroup) async -> Outcome {
        await apply(priority: priority, to: group, set: setCurrentThread)
    }

    /// `apply`, with the call that changes the calling thread (policy, priority → 0 or errno) given.
    static func apply(
        priority: Int,
        to group: any EventLoopGroup,
        set: @escaping @Sendable (Int32, Int) -> Int32
    ) async -> Outcome {
        // Each changed loop with what its thread had before, to put back should a later one be refused.
        var changed: [(loop: any EventLoop, policy: Int32, priority: Int)] = []
        for loop in group.makeIterator() {
            let answer: (code: Int32, policy: Int32, priority: Int)? = try? await loop.submit {
                let before = currentThread()
                return (set(SCHED_RR, priority), before.policy, before.priority)
            }.get()
            guard let answer, answer.code == 0 else {
                for done in changed { _ = try? await done.loop.submit { set(done.policy, done.priority) }.get() }
                return .refused(errno: answer?.code ?? EINVAL)
            }
            changed.append((loop, answer.policy, answer.priority))
        }
        return .applied(priority: priority)
    }

    /// `SCHED_RESET_ON_FORK` (linux/sched.h), which Glibc's module does not always carry over.
    static let resetOnFork: Int32 = 0x4000_0000

    /// 0, or the errno of the refusal. Linux's `sched_setscheduler(0, …)` changes the calling thread only.
    @Sendable static func setCurrentThread(policy: Int32, priority: Int) -> Int32 {
        var param = sched_param()
        param.sched_priority = Int32(clamping: priority)
        return sched_setscheduler(0, policy | resetOnFork, &param) == 0 ? 0 : errno
    }
}

extension RealtimeScheduling.Outcome {
    /// What the kernel said to `priority`, as the process's log says it: a notice when applied, a warning with the
    /// reason when refused.
    public func log(asked priority: Int, to logger: Logger) {
        switch self {
        case .applied(let priority):
            logger.notice("event loops run in real-time scheduling", metadata: ["realtime_priority": .stringConvertible(priority)])
        case .refused:
            logger.warning(
                "real-time scheduling refused; the event loops run at normal priority",
                metadata: ["realtime_priority": .stringConvertible(priority), "reason": .string(self.description)]
            )
        }
    }
}

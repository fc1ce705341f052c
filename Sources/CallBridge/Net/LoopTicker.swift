import NIOCore

/// One periodic tick per event loop, on absolute deadlines (`next += period`), re-anchored to now only after a stall
/// longer than `stallLimit` (counted). Each tick runs `body` once for everything the loop serves: one wake-up per
/// period however many connections there are (STACK.md: never a timer per call, never `scheduleRepeatedTask`, whose
/// fixed delay drifts).
final class LoopTicker {
    let eventLoop: any EventLoop
    let period: TimeAmount
    let stallLimit: TimeAmount
    private(set) var resets = 0
    private var next: NIODeadline?
    private var scheduled: Scheduled<Void>?
    private var firing = false
    private let body: (NIODeadline) -> Void

    /// `body` gets the tick's deadline (the nominal instant, not the wake-up time).
    init(eventLoop: any EventLoop, period: TimeAmount = .milliseconds(20), stallLimit: TimeAmount = .milliseconds(200),
         body: @escaping (NIODeadline) -> Void) {
        self.eventLoop = eventLoop
        self.period = period
        self.stallLimit = stallLimit
        self.body = body
    }

    /// Starts ticking (on the loop).
    func start() {
        self.eventLoop.preconditionInEventLoop()
        guard self.next == nil else { return }
        self.next = self.eventLoop.now + self.period
        self.arm()
    }

    func stop() {
        self.scheduled?.cancel()
        self.scheduled = nil
        self.next = nil
    }

    private func arm() {
        guard let next = self.next else { return }
        self.scheduled = self.eventLoop.assumeIsolated().scheduleTask(deadline: next) { self.timerFired(for: next) }
    }

    /// Runs a tick whose deadline has passed now, instead of after the loop's current batch of I/O: an event loop runs
    /// its scheduled tasks only once every ready channel of the batch has been read, and under load a batch is
    /// hundreds of messages. A read handler calls this first, so a tick waits for one message's work at most. `now`
    /// is the loop's clock; does nothing from inside a tick. Whether a tick ran.
    @discardableResult
    func runIfDue(now: NIODeadline) -> Bool {
        guard !self.firing, let next = self.next, now >= next else { return false }
        self.scheduled?.cancel()
        self.fire()
        return true
    }

    /// The timer armed for `deadline`. A read may have run that tick already (`runIfDue`) after the loop had taken
    /// the timer off its queue to run it with others, too late for the cancel: the timer is then stale.
    func timerFired(for deadline: NIODeadline) {
        guard self.next == deadline else { return }
        self.fire()
    }

    private func fire() {
        guard let deadline = self.next else { return }
        self.firing = true
        self.body(deadline)
        self.firing = false
        var next = deadline + self.period
        let now = self.eventLoop.now
        if now - next > self.stallLimit {
            next = now + self.period
            self.resets += 1
        }
        self.next = next
        self.arm()
    }
}

/// Something a loop ticks, which knows its place in the loop's `TickList` (−1: not in it).
protocol TickListMember: AnyObject {
    var slot: Int { get set }
}

/// The members of one event loop that get its ticks: insert and remove in O(1) (swap with the last), so a loop with
/// a thousand connections walks an array. Walk it backwards by index: a member may leave while it is ticked.
struct TickList<Member: TickListMember> {
    private(set) var members: [Member] = []

    var count: Int { self.members.count }

    subscript(index: Int) -> Member { self.members[index] }

    mutating func insert(_ member: Member) {
        guard member.slot < 0 else { return }
        member.slot = self.members.count
        self.members.append(member)
    }

    mutating func remove(_ member: Member) {
        guard member.slot >= 0 else { return }
        let index = member.slot
        let last = self.members.removeLast()
        if index < self.members.count {
            self.members[index] = last
            last.slot = index
        }
        member.slot = -1
    }
}

/// A `TickListMember` that also keeps its phase in a `PhasedTickList` (−1: none yet).
protocol PhasedTickListMember: TickListMember {
    var phase: Int { get set }
}

/// The members of one event loop ticked in groups, one group per tick of a ticker `phases` times faster than the
/// frame period: every member still gets one tick per period, always in the same group (its phase, kept for good once
/// given), and a tick serves a `phases`-th of the loop. The work of a period is spread over it instead of landing in
/// one burst; a loop's tick is short, so each member's write time varies little from period to period, and the
/// connections' reads and writes interleave with the ticks instead of queueing behind one long one.
struct PhasedTickList<Member: PhasedTickListMember> {
    private(set) var groups: [TickList<Member>]
    private var turn = 0

    init(phases: Int) {
        self.groups = Array(repeating: TickList<Member>(), count: max(1, phases))
    }

    var phases: Int { self.groups.count }
    var count: Int { self.groups.reduce(0) { $0 + $1.count } }

    /// Adds `member` to its group; a member without one joins the smallest.
    mutating func insert(_ member: Member) {
        if member.phase < 0 || member.phase >= self.groups.count {
            var smallest = 0
            for group in self.groups.indices where self.groups[group].count < self.groups[smallest].count { smallest = group }
            member.phase = smallest
        }
        self.groups[member.phase].insert(member)
    }

    mutating func remove(_ member: Member) {
        guard member.phase >= 0 && member.phase < self.groups.count else { return }
        self.groups[member.phase].remove(member)
    }

    /// The group whose tick this is (the groups take turns).
    mutating func nextGroup() -> Int {
        defer { self.turn = (self.turn + 1) % self.groups.count }
        return self.turn
    }

    func count(of group: Int) -> Int { self.groups[group].count }

    subscript(group: Int, index: Int) -> Member { self.groups[group][index] }
}

extension ByteBufferAllocator {
    /// A buffer for a WebSocket frame's payload with room in front for the frame header, so that the frame encoder
    /// writes the header in place instead of a second buffer.
    func webSocketPayload(capacity: Int) -> ByteBuffer {
        var buffer = self.buffer(capacity: capacity + 14)
        buffer.moveWriterIndex(forwardBy: 14)
        buffer.moveReaderIndex(forwardBy: 14)
        return buffer
    }
}

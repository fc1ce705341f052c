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
        self.scheduled = self.eventLoop.assumeIsolated().scheduleTask(deadline: next) { self.fire() }
    }

    private func fire() {
        guard let deadline = self.next else { return }
        self.body(deadline)
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

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

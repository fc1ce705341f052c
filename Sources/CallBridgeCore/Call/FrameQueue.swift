/// FIFO of 160-byte frames waiting for the pacer, each tagged with the assistant item it belongs to.
public struct FrameQueue: Sendable, Equatable {
    public struct Frame: Sendable, Equatable {
        public var bytes: [UInt8]
        public var itemID: String

        public init(bytes: [UInt8], itemID: String) {
            self.bytes = bytes
            self.itemID = itemID
        }
    }

    private var storage: [Frame] = []
    private var head = 0

    public init() {}

    public var count: Int { self.storage.count - self.head }
    public var isEmpty: Bool { self.head == self.storage.count }

    public mutating func append(_ frame: Frame) {
        self.storage.append(frame)
    }

    /// Puts frames back at the head (a paused reply resuming where Twilio dropped it).
    public mutating func prepend(contentsOf frames: [Frame]) {
        guard !frames.isEmpty else { return }
        self.storage.replaceSubrange(0..<self.head, with: frames)
        self.head = 0
    }

    public mutating func popFirst() -> Frame? {
        guard self.head < self.storage.count else { return nil }
        let frame = self.storage[self.head]
        self.head += 1
        if self.head == self.storage.count {
            self.storage.removeAll(keepingCapacity: true)
            self.head = 0
        } else if self.head >= 256 && self.head * 2 >= self.storage.count {
            self.storage.removeSubrange(0..<self.head)
            self.head = 0
        }
        return frame
    }

    public mutating func removeAll(where shouldRemove: (Frame) -> Bool) {
        let kept = self.storage[self.head...].filter { !shouldRemove($0) }
        self.storage = Array(kept)
        self.head = 0
    }

    public mutating func removeAll() {
        self.storage.removeAll(keepingCapacity: true)
        self.head = 0
    }
}

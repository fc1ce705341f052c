/// FIFO of 160-byte frames waiting for the pacer, each tagged with the assistant item it belongs to.
///
/// The audio is kept back to back in one byte array, with a small record per frame beside it: a queued frame costs its
/// bytes plus 24, not an array of its own (header and allocator slack, about 50 bytes more, and a malloc per frame).
/// Storage larger than `retainedCapacity` is given back when the queue runs empty (the end of a reply), so a call
/// that is listening holds no reply audio.
public struct FrameQueue: Sendable, Equatable {
    public struct Frame: Sendable, Equatable {
        public var bytes: [UInt8]
        public var itemID: String

        public init(bytes: [UInt8], itemID: String) {
            self.bytes = bytes
            self.itemID = itemID
        }
    }

    /// Per queued frame: its item and its length (frames are 160 bytes, but nothing here depends on it).
    private struct Record: Sendable, Equatable {
        var itemID: String
        var length: Int
    }

    /// Bytes of storage a drained queue keeps (a few frames: the common case of short replies allocates nothing).
    static let retainedCapacity = 8 * AudioFrame.byteCount

    private var bytes: [UInt8] = []
    private var byteHead = 0
    private var records: [Record] = []
    private var head = 0

    public init() {}

    public var count: Int { self.records.count - self.head }
    public var isEmpty: Bool { self.head == self.records.count }
    /// Audio bytes queued.
    public var byteCount: Int { self.bytes.count - self.byteHead }
    /// Bytes of audio storage held (queued or not).
    var storageCapacity: Int { self.bytes.capacity }

    public static func == (lhs: FrameQueue, rhs: FrameQueue) -> Bool {
        lhs.records[lhs.head...] == rhs.records[rhs.head...] && lhs.bytes[lhs.byteHead...] == rhs.bytes[rhs.byteHead...]
    }

    public mutating func append(_ frame: Frame) {
        self.append(bytes: frame.bytes, itemID: frame.itemID)
    }

    /// Queues `bytes` as one frame of `itemID` (copied in; no array is kept per frame).
    public mutating func append<C: Collection>(bytes: C, itemID: String) where C.Element == UInt8 {
        self.bytes.append(contentsOf: bytes)
        self.records.append(Record(itemID: itemID, length: bytes.count))
    }

    /// Puts frames back at the head (a paused reply resuming where Twilio dropped it).
    public mutating func prepend(contentsOf frames: [Frame]) {
        guard !frames.isEmpty else { return }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(frames.reduce(0) { $0 + $1.bytes.count } + self.byteCount)
        var records: [Record] = []
        records.reserveCapacity(frames.count + self.count)
        for frame in frames {
            bytes.append(contentsOf: frame.bytes)
            records.append(Record(itemID: frame.itemID, length: frame.bytes.count))
        }
        bytes.append(contentsOf: self.bytes[self.byteHead...])
        records.append(contentsOf: self.records[self.head...])
        self.bytes = bytes
        self.records = records
        self.byteHead = 0
        self.head = 0
    }

    public mutating func popFirst() -> Frame? {
        guard self.head < self.records.count else { return nil }
        let record = self.records[self.head]
        let start = self.byteHead
        let frame = Frame(bytes: Array(self.bytes[start..<(start + record.length)]), itemID: record.itemID)
        self.head += 1
        self.byteHead += record.length
        if self.head == self.records.count {
            self.removeAll()
        } else if self.head >= 64 && self.head * 2 >= self.records.count {
            // Half consumed: move the rest to the front (amortised; the queue is only ever read from the head).
            self.records.removeSubrange(0..<self.head)
            self.bytes.removeSubrange(0..<self.byteHead)
            self.head = 0
            self.byteHead = 0
        }
        return frame
    }

    public mutating func removeAll(where shouldRemove: (Frame) -> Bool) {
        var kept: [Frame] = []
        while let frame = self.popFirst() {
            if !shouldRemove(frame) { kept.append(frame) }
        }
        self.prepend(contentsOf: kept)
    }

    /// Empties the queue; storage beyond `retainedCapacity` is freed.
    public mutating func removeAll() {
        if self.bytes.capacity > Self.retainedCapacity {
            self.bytes = []
            self.records = []
        } else {
            self.bytes.removeAll(keepingCapacity: true)
            self.records.removeAll(keepingCapacity: true)
        }
        self.head = 0
        self.byteHead = 0
    }
}

/// The caller's most recent 20 ms frames, kept for the barge-in confirmer (it needs the audio from just before an
/// onset): a ring of fixed storage, so keeping a frame copies 160 bytes and allocates nothing.
///
/// Kept like a list that, on reaching `limit + 1` frames, drops its oldest `trim`: between `limit - trim + 1` and
/// `limit` frames are always there (0.5–1 s with the defaults: the confirmer looks back 60 ms before an onset the
/// energy VAD finds within a few hundred ms), and the trimming happens in batches.
struct FrameHistory: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        var sequence: Int
        var start: CallInstant
    }

    let limit: Int
    let trim: Int
    private var storage: [UInt8]
    private var entries: [Entry]
    /// Ring index of the oldest frame.
    private var head = 0
    private(set) var count = 0

    init(limit: Int = 50, trim: Int = 25) {
        self.limit = limit
        self.trim = trim
        self.storage = [UInt8](repeating: 0, count: (limit + 1) * AudioFrame.byteCount)
        self.entries = [Entry](repeating: Entry(sequence: 0, start: .zero), count: limit + 1)
    }

    private func slot(_ index: Int) -> Int { (self.head + index) % (self.limit + 1) }

    /// Keeps `frame` (160 bytes) as frame number `sequence`, which started at `start`.
    mutating func append(sequence: Int, start: CallInstant, frame: UnsafeBufferPointer<UInt8>) {
        let slot = self.slot(self.count)
        let base = slot * AudioFrame.byteCount
        let length = min(frame.count, AudioFrame.byteCount)
        if let source = frame.baseAddress {
            self.storage.withUnsafeMutableBufferPointer { storage in
                (storage.baseAddress! + base).update(from: source, count: length)
            }
        }
        self.entries[slot] = Entry(sequence: sequence, start: start)
        self.count += 1
        if self.count > self.limit {
            self.head = self.slot(self.trim)
            self.count -= self.trim
        }
    }

    var oldest: Entry? { self.count > 0 ? self.entries[self.slot(0)] : nil }
    var newest: Entry? { self.count > 0 ? self.entries[self.slot(self.count - 1)] : nil }

    /// The first kept frame that started at or after `instant`.
    func first(startingAtOrAfter instant: CallInstant) -> Entry? {
        for index in 0..<self.count where self.entries[self.slot(index)].start >= instant {
            return self.entries[self.slot(index)]
        }
        return nil
    }

    /// Each kept frame with a sequence number in `range`, oldest first, as a slice of the ring (no copy).
    func forEach(in range: ClosedRange<Int>, _ body: (ArraySlice<UInt8>) -> Void) {
        for index in 0..<self.count {
            let slot = self.slot(index)
            guard range.contains(self.entries[slot].sequence) else { continue }
            let base = slot * AudioFrame.byteCount
            body(self.storage[base..<(base + AudioFrame.byteCount)])
        }
    }
}

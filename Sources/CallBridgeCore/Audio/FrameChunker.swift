/// Turns audio deltas of any size into exactly 160-byte frames.
///
/// Shaped like an incremental NIO decoder: `append` keeps the progress, `nextFrame` hands out whole frames,
/// a partial tail waits for the next delta and is padded with μ-law silence only by `finish()`. Storage grown past
/// sixteen frames by a large delta is given back once its whole frames are taken, so an idle chunker stays small.
public struct FrameChunker: Sendable {
    public let frameSize: Int
    private var buffer: [UInt8] = []
    private var readIndex = 0

    public init(frameSize: Int = AudioFrame.byteCount) {
        precondition(frameSize > 0, "frame size must be positive")
        self.frameSize = frameSize
        self.buffer.reserveCapacity(frameSize * 8)
    }

    /// Bytes held that do not yet make a whole frame, plus whole frames not yet taken.
    public var bufferedByteCount: Int { self.buffer.count - self.readIndex }
    /// Bytes of storage held.
    var storageCapacity: Int { self.buffer.capacity }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        self.compactIfNeeded()
        self.buffer.append(contentsOf: bytes)
    }

    /// The next whole frame, or nil when fewer than `frameSize` bytes are held. Each frame is a new array; use
    /// `nextFrame(into:)` where the frame is only looked at.
    public mutating func nextFrame() -> [UInt8]? {
        guard let range = self.takeFrame() else { return nil }
        return Array(self.buffer[range])
    }

    /// Replaces the contents of `frame` with the next whole frame and returns true, or returns false (leaving `frame`
    /// alone) when fewer than `frameSize` bytes are held. An array reused from call to call is not reallocated.
    public mutating func nextFrame(into frame: inout [UInt8]) -> Bool {
        guard let range = self.takeFrame() else { return false }
        frame.removeAll(keepingCapacity: true)
        frame.append(contentsOf: self.buffer[range])
        return true
    }

    private mutating func takeFrame() -> Range<Int>? {
        guard self.bufferedByteCount >= self.frameSize else {
            self.shrinkIfLarge()
            return nil
        }
        defer { self.readIndex += self.frameSize }
        return self.readIndex..<(self.readIndex + self.frameSize)
    }

    /// With less than a frame left, storage beyond sixteen frames goes back to the allocator (the tail is moved into
    /// an eight-frame array): a call keeps no delta-sized buffer between replies.
    private mutating func shrinkIfLarge() {
        guard self.buffer.capacity > self.frameSize * 16 else { return }
        var small: [UInt8] = []
        small.reserveCapacity(self.frameSize * 8)
        small.append(contentsOf: self.buffer[self.readIndex...])
        self.buffer = small
        self.readIndex = 0
    }

    /// Pads a partial tail with μ-law silence so it can be sent; call when the response's audio is done.
    /// Returns the padded frame, or nil when no partial tail was held.
    public mutating func finish() -> [UInt8]? {
        let remaining = self.bufferedByteCount
        guard remaining > 0 else {
            self.reset()
            return nil
        }
        precondition(remaining < self.frameSize, "take whole frames before finishing")
        var frame = Array(self.buffer[self.readIndex...])
        frame.append(contentsOf: repeatElement(MuLaw.silence, count: self.frameSize - remaining))
        self.reset()
        return frame
    }

    /// Drops everything held (barge-in flush).
    public mutating func reset() {
        self.buffer.removeAll(keepingCapacity: self.buffer.capacity <= self.frameSize * 16)
        self.readIndex = 0
    }

    private mutating func compactIfNeeded() {
        if self.readIndex > 0 && self.readIndex >= self.buffer.count / 2 {
            self.buffer.removeSubrange(0..<self.readIndex)
            self.readIndex = 0
        }
    }
}

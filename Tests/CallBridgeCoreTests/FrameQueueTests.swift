import Testing

@testable import CallBridgeCore

@Suite struct FrameQueueTests {
    func frame(_ item: String, _ first: Int) -> FrameQueue.Frame { .init(bytes: ramp(160, from: first), itemID: item) }

    @Test func framesComeOutInOrderWithTheirItems() {
        var queue = FrameQueue()
        for index in 0..<300 { queue.append(self.frame(index < 150 ? "a" : "b", index)) }
        #expect(queue.count == 300)
        #expect(queue.byteCount == 300 * 160)
        for index in 0..<300 {
            #expect(queue.popFirst() == self.frame(index < 150 ? "a" : "b", index))
        }
        #expect(queue.popFirst() == nil)
        #expect(queue.isEmpty)
    }

    /// Frames of any length keep their boundaries (the tail of a reply, a test's odd frame).
    @Test func framesOfOtherLengthsKeepTheirBoundaries() {
        var queue = FrameQueue()
        queue.append(.init(bytes: ramp(7), itemID: "x"))
        queue.append(bytes: ramp(160, from: 3)[...], itemID: "y")
        queue.append(.init(bytes: [], itemID: "z"))
        queue.append(.init(bytes: ramp(200, from: 9), itemID: "x"))
        #expect(queue.popFirst() == .init(bytes: ramp(7), itemID: "x"))
        #expect(queue.popFirst() == .init(bytes: ramp(160, from: 3), itemID: "y"))
        #expect(queue.popFirst() == .init(bytes: [], itemID: "z"))
        #expect(queue.popFirst() == .init(bytes: ramp(200, from: 9), itemID: "x"))
        #expect(queue.isEmpty)
    }

    /// Interleaved appends and pops across the compaction point lose and reorder nothing.
    @Test func interleavedAppendsAndPopsAcrossCompaction() {
        var queue = FrameQueue()
        var next = 0
        var expected = 0
        for round in 0..<400 {
            for _ in 0..<(round % 3 + 1) {
                queue.append(self.frame("i\(next % 5)", next))
                next += 1
            }
            for _ in 0..<(round % 2 + 1) {
                guard let popped = queue.popFirst() else { break }
                #expect(popped == self.frame("i\(expected % 5)", expected))
                expected += 1
            }
        }
        while let popped = queue.popFirst() {
            #expect(popped == self.frame("i\(expected % 5)", expected))
            expected += 1
        }
        #expect(expected == next)
    }

    @Test func prependPutsFramesBackAtTheHead() {
        var queue = FrameQueue()
        for index in 0..<4 { queue.append(self.frame("a", index)) }
        let first = queue.popFirst()!
        let second = queue.popFirst()!
        queue.prepend(contentsOf: [first, second])
        for index in 0..<4 { #expect(queue.popFirst() == self.frame("a", index)) }
        queue.prepend(contentsOf: [first])
        #expect(queue.count == 1)
        #expect(queue.popFirst() == first)
    }

    @Test func removeAllWhereKeepsTheRestInOrder() {
        var queue = FrameQueue()
        for index in 0..<10 { queue.append(self.frame(index % 2 == 0 ? "even" : "odd", index)) }
        _ = queue.popFirst()
        queue.removeAll { $0.itemID == "odd" }
        #expect(queue.count == 4)
        for index in [2, 4, 6, 8] { #expect(queue.popFirst() == self.frame("even", index)) }
    }

    /// A long reply's storage is given back when the queue drains; a short one's is kept for the next.
    @Test func drainedQueueGivesLargeStorageBack() {
        var queue = FrameQueue()
        for index in 0..<100 { queue.append(self.frame("a", index)) }
        #expect(queue.storageCapacity >= 100 * 160)
        while queue.popFirst() != nil {}
        #expect(queue.storageCapacity == 0)
        for index in 0..<3 { queue.append(self.frame("b", index)) }
        let small = queue.storageCapacity
        while queue.popFirst() != nil {}
        #expect(small > 0 && queue.storageCapacity == small)
        for index in 0..<100 { queue.append(self.frame("c", index)) }
        queue.removeAll()
        #expect(queue.storageCapacity == 0)
    }

    @Test func equalityComparesQueuedContentOnly() {
        var a = FrameQueue()
        var b = FrameQueue()
        a.append(self.frame("x", 0))
        a.append(self.frame("x", 1))
        _ = a.popFirst()
        b.append(self.frame("x", 1))
        #expect(a == b)
        b.append(self.frame("x", 2))
        #expect(a != b)
    }
}

import Testing

@testable import CallBridgeCore

@Suite struct FrameChunkerTests {
    @Test func firstChunkIsAWholeFrame() {
        var chunker = FrameChunker()
        chunker.append(ramp(159))
        #expect(chunker.nextFrame() == nil)
        chunker.append([159])
        #expect(chunker.nextFrame() == ramp(160))
        #expect(chunker.nextFrame() == nil)
    }

    /// The same 1000 bytes split at every offset give the same frames and the same padded tail.
    @Test func splitAtEveryOffsetGivesTheSameFrames() {
        let audio = ramp(1000, from: 7)
        var reference = FrameChunker()
        reference.append(audio)
        var expected: [[UInt8]] = []
        while let frame = reference.nextFrame() { expected.append(frame) }
        let expectedTail = reference.finish()
        #expect(expected.count == 6)
        #expect(expectedTail == Array(audio[960...]) + Array(repeating: 0xFF, count: 120))

        for split in 0...audio.count {
            var chunker = FrameChunker()
            var frames: [[UInt8]] = []
            chunker.append(audio[..<split])
            while let frame = chunker.nextFrame() { frames.append(frame) }
            chunker.append(audio[split...])
            while let frame = chunker.nextFrame() { frames.append(frame) }
            #expect(frames == expected, "split at \(split)")
            #expect(chunker.finish() == expectedTail, "tail, split at \(split)")
        }
    }

    @Test func manySmallDeltasKeepTheOrder() {
        let audio = ramp(160 * 5 + 3)
        var chunker = FrameChunker()
        var out: [UInt8] = []
        for byte in audio {
            chunker.append([byte])
            while let frame = chunker.nextFrame() {
                #expect(frame.count == 160)
                out += frame
            }
        }
        #expect(out == Array(audio.prefix(800)))
        #expect(chunker.bufferedByteCount == 3)
    }

    @Test func finishWithoutTailReturnsNil() {
        var chunker = FrameChunker()
        chunker.append(ramp(320))
        _ = chunker.nextFrame()
        _ = chunker.nextFrame()
        #expect(chunker.finish() == nil)
    }

    /// Taking frames into one reused array gives the same frames as `nextFrame()`, however the audio is split.
    @Test func takingIntoAReusedArrayGivesTheSameFrames() {
        let audio = ramp(1000, from: 3)
        var frame: [UInt8] = [9]
        for split in [0, 1, 159, 160, 161, 500, 999, 1000] {
            var reference = FrameChunker()
            var chunker = FrameChunker()
            for part in [audio[..<split], audio[split...]] {
                reference.append(part)
                chunker.append(part)
                while let expected = reference.nextFrame() {
                    let took = chunker.nextFrame(into: &frame)
                    #expect(took, "split at \(split)")
                    #expect(frame == expected, "split at \(split)")
                }
                let held = frame
                let refused = !chunker.nextFrame(into: &frame)
                #expect(refused, "split at \(split)")
                #expect(frame == held, "a refused take leaves the array alone")
            }
            #expect(chunker.finish() == reference.finish(), "tail, split at \(split)")
        }
    }

    @Test func resetDropsEverything() {
        var chunker = FrameChunker()
        chunker.append(ramp(250))
        chunker.reset()
        #expect(chunker.bufferedByteCount == 0)
        chunker.append(ramp(160, from: 50))
        #expect(chunker.nextFrame() == ramp(160, from: 50))
    }
}

@Suite struct FrameChunkerStorageTests {
    /// A 2 s delta grows the chunker; once its frames are taken, the storage is back to eight frames.
    @Test func largeDeltaStorageIsGivenBackAfterItsFramesAreTaken() {
        var chunker = FrameChunker()
        let initial = chunker.storageCapacity
        chunker.append(ramp(16_000 + 37))
        #expect(chunker.storageCapacity >= 16_037)
        var frame: [UInt8] = []
        var taken = 0
        while chunker.nextFrame(into: &frame) {
            #expect(frame == ramp(160, from: taken * 160))
            taken += 1
        }
        #expect(taken == 100)
        #expect(chunker.bufferedByteCount == 37)
        #expect(chunker.storageCapacity <= 16 * 160)
        // The partial tail survived the move and is completed by the next delta.
        chunker.append(ramp(123, from: 16_037))
        #expect(chunker.nextFrame() == ramp(160, from: 16_000))
        #expect(chunker.storageCapacity == initial || chunker.storageCapacity <= 16 * 160)
    }

    /// Frame-sized messages (the caller's audio) never reallocate: the storage stays what it was.
    @Test func smallAppendsKeepTheirStorage() {
        var chunker = FrameChunker()
        var frame: [UInt8] = []
        chunker.append(ramp(160))
        _ = chunker.nextFrame(into: &frame)
        let capacity = chunker.storageCapacity
        for index in 0..<500 {
            chunker.append(ramp(160, from: index))
            let took = chunker.nextFrame(into: &frame)
            let tookMore = chunker.nextFrame(into: &frame)
            #expect(took && !tookMore)
            #expect(chunker.storageCapacity == capacity)
        }
    }
}

import NIOCore
import Testing

@testable import CallBridge

#if canImport(Glibc)
import Glibc
#endif

/// The TLS channel's allocator: buffers behave as any `ByteBuffer`, and a large block's untouched pages cost nothing.
@Suite struct PageBackedAllocatorTests {
    /// How many of the whole pages inside `[start, start + count)` are resident.
    static func residentPages(_ start: UnsafeMutableRawPointer, _ count: Int) -> (resident: Int, pages: Int) {
        let page = PageBackedAllocator.pageSize
        let first = (Int(bitPattern: start) + 64 + page - 1) / page * page
        let end = (Int(bitPattern: start) + count) / page * page
        guard end > first else { return (0, 0) }
        var vector = [UInt8](repeating: 0, count: (end - first) / page)
        let status = vector.withUnsafeMutableBufferPointer { mincore(UnsafeMutableRawPointer(bitPattern: first), end - first, $0.baseAddress) }
        #expect(status == 0)
        return (vector.filter { $0 & 1 != 0 }.count, vector.count)
    }

    /// A block that reuses memory the process has written is handed out with its pages given back: the allocator's
    /// whole point (without it, every page of the reused block is resident).
    @Test func aLargeBlockFromReusedMemoryIsNotResident() throws {
        let size = 96 * 1024  // under glibc's mmap threshold: a heap block, reused on the next malloc of its size
        // Only a reused block shows anything (fresh heap is not resident either way): glibc hands a freed block back
        // for the next allocation of its size, unless another thread's allocation took it in between (tests run in
        // parallel), so this tries a few times.
        var reused: UnsafeMutableRawPointer?
        for _ in 0..<20 where reused == nil {
            let first = try #require(malloc(size))
            memset(first, 0x5A, size)
            #expect(Self.residentPages(first, size).resident == Self.residentPages(first, size).pages)
            free(first)
            let candidate = try #require(PageBackedAllocator.allocate(size))
            if candidate == first { reused = candidate } else { free(candidate) }
        }
        let second = try #require(reused, "malloc never reused the freed block, so this run cannot tell")
        defer { free(second) }
        let state = Self.residentPages(second, size)
        #expect(state.pages > 10)
        #expect(state.resident == 0, "\(state.resident) of \(state.pages) pages resident")
        // Usable as any block: written, then read back.
        memset(second, 0x33, size)
        #expect(second.load(fromByteOffset: size - 1, as: UInt8.self) == 0x33)
    }

    @Test func buffersKeepTheirBytesThroughGrowthAndCopies() {
        let allocator = PageBackedAllocator.allocator
        var buffer = allocator.buffer(capacity: 100)
        let pattern = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        buffer.writeBytes(pattern[..<50])
        buffer.writeBytes(pattern[50...])  // grows past the threshold
        var copy = buffer
        copy.writeBytes([1, 2, 3])  // copy on write
        #expect(buffer.readableBytesView.elementsEqual(pattern))
        #expect(copy.readableBytesView.elementsEqual(pattern + [1, 2, 3]))
        let large = allocator.buffer(capacity: 32 * 1024)
        #expect(large.capacity >= 32 * 1024)
    }
}

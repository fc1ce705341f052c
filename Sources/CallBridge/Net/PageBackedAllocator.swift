@_spi(CustomByteBufferAllocator) import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The allocator a TLS connection's channel has while its `NIOSSLHandler` is added (and so the one that handler
/// keeps): `malloc`, except that a new block of 16 KiB or more has the whole pages inside it given back
/// (`MADV_DONTNEED`) before it is used.
///
/// swift-nio-ssl gives every connection a 32 KiB plaintext read buffer and a 16 KiB outbound buffer from the channel's
/// allocator, and keeps both for the connection's life. A call's records are a few hundred bytes to a few KiB and
/// always start at the front of those buffers, so most of their pages are never written. A block carved from fresh
/// heap is not resident until written anyway, but one that reuses freed memory is: given back, its pages cost no
/// memory until the buffer reaches them. The block's contents are undefined either way (as `malloc`'s are); the
/// allocator's own bookkeeping lives outside the pages given back (before the block and after it, and in its first
/// bytes once freed). The handler allocates large blocks only for those two buffers (or to grow them), so the system
/// call does not matter; every other operation is plain `malloc`, `realloc` and `free`.
enum PageBackedAllocator {
    static let threshold = 16 * 1024
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    static let allocator = ByteBufferAllocator(
        allocate: { size in PageBackedAllocator.allocate(size) },
        reallocate: { pointer, _, newSize in realloc(pointer, newSize) },
        deallocate: { pointer in free(pointer) },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: count) }
    )

    static func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        guard let block = malloc(size) else { return nil }
        if size >= Self.threshold {
            // Whole pages only, and clear of the block's first bytes (where a freed block keeps its links).
            let address = Int(bitPattern: block)
            let start = (address + 64 + Self.pageSize - 1) / Self.pageSize * Self.pageSize
            let end = (address + size) / Self.pageSize * Self.pageSize
            if end > start, let page = UnsafeMutableRawPointer(bitPattern: start) {
                _ = madvise(page, end - start, Int32(MADV_DONTNEED))
            }
        }
        return block
    }
}

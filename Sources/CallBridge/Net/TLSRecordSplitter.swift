import NIOCore

/// Hands the TLS handler below it one complete TLS record per read, each followed by its own read-complete.
///
/// swift-nio-ssl decrypts everything a socket read brings into one plaintext buffer and delivers it at read-complete;
/// it needs 16 KiB free in that buffer for every record it decrypts, and the buffer never shrinks. A socket read that
/// completes two full records (a burst of audio from the service) therefore grows it from 32 to 64 KiB for the rest of
/// the connection. One record per read keeps it at 32 KiB. Records are found by their 5-byte header (type, version,
/// length); a partial record waits for the rest.
final class TLSRecordSplitter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let headerLength = 5
    private var pending: ByteBuffer?
    /// Whether this read already passed a read-complete down with a record.
    private var completedThisRead = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = TLSRecordSplitter.unwrapInboundIn(data)
        if var pending = self.pending {
            self.pending = nil
            pending.writeBuffer(&incoming)
            incoming = pending
        }
        while incoming.readableBytes >= Self.headerLength,
            let length = incoming.getInteger(at: incoming.readerIndex + 3, as: UInt16.self),
            incoming.readableBytes >= Self.headerLength + Int(length)
        {
            let record = incoming.readSlice(length: Self.headerLength + Int(length))!
            context.fireChannelRead(TLSRecordSplitter.wrapInboundOut(record))
            context.fireChannelReadComplete()
            self.completedThisRead = true
        }
        if incoming.readableBytes > 0 {
            incoming.discardReadBytes()
            self.pending = incoming
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !self.completedThisRead { context.fireChannelReadComplete() }
        self.completedThisRead = false
    }
}

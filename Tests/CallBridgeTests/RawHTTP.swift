import NIOCore
import NIOPosix

/// Sends raw bytes to a loopback port and returns the response's head (up to the blank line), then hangs up: for
/// requests no HTTP client library will send as they are, such as a WebSocket upgrade whose refusal is the point.
enum RawHTTP {
    struct NoResponse: Error {}

    final class HeadCollector: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer

        private var received = ByteBuffer()
        private let promise: EventLoopPromise<String>

        init(promise: EventLoopPromise<String>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var chunk = self.unwrapInboundIn(data)
            self.received.writeBuffer(&chunk)
            let text = String(buffer: self.received)
            if let end = text.range(of: "\r\n\r\n") {
                self.promise.succeed(String(text[..<end.lowerBound]))
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.promise.fail(NoResponse())
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.promise.fail(error)
            context.close(promise: nil)
        }
    }

    static func exchange(port: Int, request: String) async throws -> String {
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let promise = eventLoop.makePromise(of: String.self)
        let channel = try await ClientBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HeadCollector(promise: promise))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string: request))
        return try await promise.futureResult.get()
    }

    /// A loopback port nothing listens on: bound, read, and closed again.
    static func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }
}

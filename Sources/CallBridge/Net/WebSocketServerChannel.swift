import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// A WebSocket server on raw NIO: `ServerBootstrap`, optional TLS, the HTTP/1.1 upgrade, then
/// `WebSocketConnectionHandler` and the application's handler, which runs its protocol synchronously on the
/// connection's event loop. Plain HTTP requests (no upgrade) get 200 `ok` on `/healthz` and 404 elsewhere.
public enum WebSocketServerChannel {
    /// Decides an upgrade request: the extra response headers to accept it, nil to refuse it (403).
    public typealias Decision = @Sendable (HTTPRequestHead) -> HTTPHeaders?

    /// Binds and starts accepting; the future holds the listening channel (its `localAddress` has the port).
    public static func bind(
        host: String,
        port: Int,
        group: any EventLoopGroup,
        tlsContext: NIOSSLContext?,
        configuration: WebSocketConnectionHandler.Configuration = .init(),
        shouldUpgrade: @escaping Decision,
        makeHandler: @escaping @Sendable (any Channel, HTTPRequestHead) throws -> any ChannelHandler
    ) -> EventLoopFuture<any Channel> {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                    }
                    try Self.configure(
                        pipeline: channel.pipeline.syncOperations,
                        configuration: configuration,
                        shouldUpgrade: shouldUpgrade,
                        makeHandler: { head in try makeHandler(channel, head) }
                    )
                }
            }
            .bind(host: host, port: port)
    }

    /// The server pipeline after the transport (public for `EmbeddedChannel` tests).
    public static func configure(
        pipeline: ChannelPipeline.SynchronousOperations,
        configuration: WebSocketConnectionHandler.Configuration = .init(),
        shouldUpgrade: @escaping Decision,
        makeHandler: @escaping (HTTPRequestHead) throws -> any ChannelHandler
    ) throws {
        let fallback = PlainHTTPResponder()
        let fallbackRef = UnsafeTransfer(fallback)
        let makeHandlerRef = UnsafeTransfer(makeHandler)
        let upgrader = WebSocketServerUpgrader(
            maximumFrameSize: configuration.maximumMessageSize,
            shouldUpgrade: { channel, head in channel.eventLoop.makeSucceededFuture(shouldUpgrade(head)) },
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    try WebSocketConnectionHandler.addHandlers(
                        to: channel.pipeline.syncOperations,
                        role: .server,
                        configuration: configuration,
                        application: try makeHandlerRef.value(head)
                    )
                }
            }
        )
        try pipeline.configureHTTPServerPipeline(
            withServerUpgrade: (
                upgraders: [upgrader],
                completionHandler: { context in
                    context.pipeline.syncOperations.removeHandler(fallbackRef.value, promise: nil)
                }
            ),
            withErrorHandling: true
        )
        try pipeline.addHandler(fallback)
    }
}

/// Answers requests that are not upgrades: `GET /healthz` → 200 `ok`, anything else 404 (and a refused upgrade 403).
final class PlainHTTPResponder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var head: HTTPRequestHead?

    /// A refused upgrade is reported as an error, then its request comes here to be answered: nothing else to do.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOWebSocketUpgradeError { return }
        context.fireErrorCaught(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch PlainHTTPResponder.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            let isUpgrade = head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            let (status, body): (HTTPResponseStatus, String) =
                isUpgrade ? (.forbidden, "refused\n") : head.uri == "/healthz" ? (.ok, "ok\n") : (.notFound, "not found\n")
            var response = HTTPResponseHead(version: head.version, status: status)
            response.headers.add(name: "Content-Length", value: String(body.utf8.count))
            response.headers.add(name: "Content-Type", value: "text/plain")
            if isUpgrade { response.headers.add(name: "Connection", value: "close") }
            context.write(PlainHTTPResponder.wrapOutboundOut(.head(response)), promise: nil)
            context.write(PlainHTTPResponder.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(PlainHTTPResponder.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                if isUpgrade { context.close(promise: nil) }
            }
        }
    }
}

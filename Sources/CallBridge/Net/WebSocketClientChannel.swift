import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// Why a raw WebSocket connection could not be opened.
public enum WebSocketConnectError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidURL(String)
    /// The server answered the upgrade request with something other than 101.
    case upgradeRefused(status: UInt)
    /// The connection closed before the upgrade finished.
    case closedBeforeUpgrade
    /// No answer to the upgrade request within the connect timeout.
    case upgradeTimedOut

    public var description: String {
        switch self {
        case .invalidURL(let url): "not a ws:// or wss:// URL: \(url)"
        case .upgradeRefused(let status): "upgrade refused with HTTP \(status)"
        case .closedBeforeUpgrade: "connection closed before the upgrade"
        case .upgradeTimedOut: "no answer to the upgrade request"
        }
    }
}

/// A WebSocket client on a raw NIO channel: `ClientBootstrap`, TLS for `wss://`, the HTTP/1.1 upgrade (keeping a frame
/// that arrives in the same read as the 101: `leftOverBytesStrategy: .forwardBytes`), then `WebSocketConnectionHandler`
/// and the application's own handler. For clients that run their protocol synchronously on the event loop (the load
/// generator): no task or async sequence per connection.
public enum WebSocketClientChannel {
    public struct Target: Sendable, Equatable {
        public var tls: Bool
        public var host: String
        public var port: Int
        /// Path and query, as sent in the request line.
        public var target: String

        public init?(url: String) {
            guard let parts = URLParts(url), parts.scheme == "ws" || parts.scheme == "wss" else { return nil }
            self.tls = parts.scheme == "wss"
            self.host = parts.host
            self.port = parts.port ?? (self.tls ? 443 : 80)
            let path = parts.path.isEmpty ? "/" : parts.path
            self.target = parts.query.map { path + "?" + $0 } ?? path
        }

        /// The `Host` header.
        public var authority: String {
            let host = self.host.contains(":") ? "[\(self.host)]" : self.host
            return (self.port == (self.tls ? 443 : 80)) ? host : "\(host):\(self.port)"
        }
    }

    /// Connects on `eventLoop`; the future completes once the upgrade is done and `makeHandler`'s handler (added after
    /// `WebSocketConnectionHandler`) is in the pipeline. With `directWrites`, a `ws://` connection writes its frames
    /// straight to the socket (`DirectWrites`).
    public static func connect(
        url: String,
        headers: HTTPHeaders = [:],
        tlsContext: NIOSSLContext?,
        eventLoop: any EventLoop,
        configuration: WebSocketConnectionHandler.Configuration = .init(),
        connectTimeout: TimeAmount = .seconds(10),
        directWrites: Bool = false,
        makeHandler: @escaping @Sendable (any Channel) throws -> any ChannelHandler
    ) -> EventLoopFuture<any Channel> {
        guard let target = Target(url: url) else { return eventLoop.makeFailedFuture(WebSocketConnectError.invalidURL(url)) }
        if target.tls && tlsContext == nil {
            return eventLoop.makeFailedFuture(WebSocketConnectError.invalidURL(url + " (wss:// needs a TLS context)"))
        }
        let upgraded = eventLoop.makePromise(of: Void.self)
        var configuration = configuration
        // Frames go straight to the socket only where they are the socket's bytes: not under TLS.
        configuration.directWrites = directWrites && !target.tls
        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // Reads of at most 8 KiB: a TLS connection's plaintext buffer (32 KiB, never shrunk) then never has to
            // grow to take a burst of records, and the pooled read buffer kept per connection stays small.
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 512, initial: 2048, maximum: 8192))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if target.tls, let tlsContext {
                        // SNI carries a hostname only (an IP literal there fails the handshake).
                        let isAddress = target.host.allSatisfy { $0.isNumber || $0 == "." || $0 == ":" }
                        try channel.pipeline.syncOperations.addHandler(TLSRecordSplitter())
                        // The TLS handler takes its two long-lived buffers (and the allocator it grows them with)
                        // from the channel when it is added: only those come from `PageBackedAllocator`. Everything
                        // else on the channel (reads, messages) is allocated as usual.
                        try channel.syncOptions?.setOption(.allocator, value: PageBackedAllocator.allocator)
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tlsContext, serverHostname: isAddress ? nil : target.host)
                        )
                        try channel.syncOptions?.setOption(.allocator, value: ByteBufferAllocator())
                    }
                    try Self.configure(
                        pipeline: channel.pipeline.syncOperations,
                        target: target,
                        headers: headers,
                        configuration: configuration,
                        upgraded: upgraded,
                        makeHandler: { try makeHandler(channel) }
                    )
                }
            }
            .connect(host: target.host, port: target.port)
        connected.whenFailure { upgraded.fail($0) }
        return connected.flatMap { channel in
            // A server that accepts the connection but never answers the upgrade must not hold the caller forever.
            let timeout = channel.eventLoop.scheduleTask(in: connectTimeout) {
                upgraded.fail(WebSocketConnectError.upgradeTimedOut)
                channel.close(promise: nil)
            }
            upgraded.futureResult.whenComplete { _ in timeout.cancel() }
            return upgraded.futureResult.map { channel }
        }
    }

    /// The client pipeline after the transport (public for `EmbeddedChannel` tests): the HTTP client codec with the
    /// upgrader, and a handler that sends the upgrade request as soon as the channel is active.
    public static func configure(
        pipeline: ChannelPipeline.SynchronousOperations,
        target: Target,
        headers: HTTPHeaders,
        requestKey: String = NIOWebSocketClientUpgrader.randomRequestKey(),
        configuration: WebSocketConnectionHandler.Configuration,
        upgraded: EventLoopPromise<Void>,
        makeHandler: @escaping () throws -> any ChannelHandler
    ) throws {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.target)
        head.headers.add(name: "Host", value: target.authority)
        head.headers.add(contentsOf: headers)
        let requester = UpgradeRequestHandler(head: head, upgraded: upgraded)
        let handler = UnsafeTransfer(makeHandler)
        let upgrader = WebSocketClientUpgrader(
            requestKey: requestKey,
            maximumFrameSize: configuration.maximumMessageSize
        ) { channel, _ in
            channel.eventLoop.makeCompletedFuture {
                try WebSocketConnectionHandler.addHandlers(
                    to: channel.pipeline.syncOperations,
                    role: .client,
                    configuration: configuration,
                    application: try handler.value()
                )
                upgraded.succeed()
            }
        }
        let requesterRef = UnsafeTransfer(requester)
        try pipeline.addHTTPClientHandlers(
            leftOverBytesStrategy: .forwardBytes,
            withClientUpgrade: (
                upgraders: [upgrader],
                completionHandler: { context in
                    // The requester sits where WebSocket bytes will flow: out of the way before they do.
                    context.pipeline.syncOperations.removeHandler(requesterRef.value, promise: nil)
                }
            )
        )
        try pipeline.addHandler(requester)
    }
}

/// Sends the upgrade request once the channel is active; a response that reaches it means the upgrade was refused.
final class UpgradeRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let head: HTTPRequestHead
    let upgraded: EventLoopPromise<Void>
    private var sent = false

    init(head: HTTPRequestHead, upgraded: EventLoopPromise<Void>) {
        self.head = head
        self.upgraded = upgraded
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.sendRequest(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.sendRequest(context: context)
        context.fireChannelActive()
    }

    private func sendRequest(context: ChannelHandlerContext) {
        guard !self.sent else { return }
        self.sent = true
        context.write(UpgradeRequestHandler.wrapOutboundOut(.head(self.head)), promise: nil)
        context.writeAndFlush(UpgradeRequestHandler.wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let response) = UpgradeRequestHandler.unwrapInboundIn(data) {
            self.upgraded.fail(WebSocketConnectError.upgradeRefused(status: response.status.code))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.upgraded.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.upgraded.fail(WebSocketConnectError.closedBeforeUpgrade)
        context.fireChannelInactive()
    }
}

/// Moves a value that lives on one event loop through an API that wants `Sendable` (the value is only touched on
/// that loop).
struct UnsafeTransfer<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

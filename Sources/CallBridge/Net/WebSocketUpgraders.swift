import NIOCore
import NIOHTTP1
import NIOWebSocket

// NIO's WebSocket upgraders do the handshake (key checks, `Sec-WebSocket-Accept`) and then add NIO's frame decoder and
// `WebSocketFrameEncoder`, which cannot be taken out again (it is not a `RemovableChannelHandler`). These wrappers
// keep NIO's handshake and leave the pipeline to the caller's handlers: `WebSocketConnectionHandler` does its own
// framing.

/// `NIOWebSocketServerUpgrader`'s handshake without NIO's frame codec.
struct WebSocketServerUpgrader: HTTPServerProtocolUpgrader, Sendable {
    private let handshake: NIOWebSocketServerUpgrader
    private let upgradePipelineHandler: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<Void>

    init(
        maximumFrameSize: Int,
        shouldUpgrade: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>,
        upgradePipelineHandler: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<Void>
    ) {
        self.handshake = NIOWebSocketServerUpgrader(
            maxFrameSize: maximumFrameSize,
            automaticErrorHandling: false,
            shouldUpgrade: shouldUpgrade,
            upgradePipelineHandler: { channel, _ in channel.eventLoop.makeSucceededVoidFuture() }  // never called
        )
        self.upgradePipelineHandler = upgradePipelineHandler
    }

    var supportedProtocol: String { self.handshake.supportedProtocol }
    var requiredUpgradeHeaders: [String] { self.handshake.requiredUpgradeHeaders }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        self.handshake.buildUpgradeResponse(channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: initialResponseHeaders)
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        self.upgradePipelineHandler(context.channel, upgradeRequest)
    }
}

/// `NIOTypedWebSocketServerUpgrader`'s handshake without NIO's frame codec.
struct TypedWebSocketServerUpgrader<UpgradeResult: Sendable>: NIOTypedHTTPServerProtocolUpgrader {
    private let handshake: NIOTypedWebSocketServerUpgrader<UpgradeResult>
    private let upgradePipelineHandler: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>

    init(
        maximumFrameSize: Int,
        shouldUpgrade: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>,
        upgradePipelineHandler: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>
    ) {
        self.handshake = NIOTypedWebSocketServerUpgrader(
            maxFrameSize: maximumFrameSize,
            enableAutomaticErrorHandling: false,
            shouldUpgrade: shouldUpgrade,
            upgradePipelineHandler: upgradePipelineHandler  // never called: `upgrade` below calls it
        )
        self.upgradePipelineHandler = upgradePipelineHandler
    }

    var supportedProtocol: String { self.handshake.supportedProtocol }
    var requiredUpgradeHeaders: [String] { self.handshake.requiredUpgradeHeaders }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        self.handshake.buildUpgradeResponse(channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: initialResponseHeaders)
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        self.upgradePipelineHandler(channel, upgradeRequest)
    }
}

/// `NIOWebSocketClientUpgrader`'s handshake (the request key, the check of the server's accept) without NIO's frame
/// codec.
struct WebSocketClientUpgrader: NIOHTTPClientProtocolUpgrader, Sendable {
    private let handshake: NIOWebSocketClientUpgrader
    private let upgradePipelineHandler: @Sendable (any Channel, HTTPResponseHead) -> EventLoopFuture<Void>

    init(
        requestKey: String,
        maximumFrameSize: Int,
        upgradePipelineHandler: @escaping @Sendable (any Channel, HTTPResponseHead) -> EventLoopFuture<Void>
    ) {
        self.handshake = NIOWebSocketClientUpgrader(
            requestKey: requestKey,
            maxFrameSize: maximumFrameSize,
            automaticErrorHandling: false,
            upgradePipelineHandler: { channel, _ in channel.eventLoop.makeSucceededVoidFuture() }  // never called
        )
        self.upgradePipelineHandler = upgradePipelineHandler
    }

    var supportedProtocol: String { self.handshake.supportedProtocol }
    var requiredUpgradeHeaders: [String] { self.handshake.requiredUpgradeHeaders }

    func addCustom(upgradeRequestHeaders: inout HTTPHeaders) {
        self.handshake.addCustom(upgradeRequestHeaders: &upgradeRequestHeaders)
    }

    func shouldAllowUpgrade(upgradeResponse: HTTPResponseHead) -> Bool {
        self.handshake.shouldAllowUpgrade(upgradeResponse: upgradeResponse)
    }

    func upgrade(context: ChannelHandlerContext, upgradeResponse: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.upgradePipelineHandler(context.channel, upgradeResponse)
    }
}

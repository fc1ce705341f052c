import CallBridgeCore
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import ServiceLifecycle

/// The bridge's connections under Hummingbird's server: a media stream upgrade becomes a call hosted on its event
/// loop (`LoopCallHost`: no task or stream per frame); every other request goes to Hummingbird's HTTP responder.
/// A media upgrade the bridge refuses gets its own status (403 for a bad signature, 503 while draining or full).
struct BridgeChildChannel: HTTPChannelHandler {
    enum Decision: Sendable {
        case accept
        case refuse(HTTPResponseStatus)
    }

    /// What a connection became, known once its first request is read.
    enum Outcome: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case media(any Channel, NIOLoopBound<LoopCallHost>)
        case refused(any Channel)
    }

    /// The connection and its negotiation still to come: the server registers the channel (and so reads its request)
    /// only once `setup` has completed, so `setup` must not wait for the request.
    struct Value: ServerChildChannelValue {
        let outcome: EventLoopFuture<Outcome>
        let channel: any Channel
    }

    static let mediaPath = "/twilio/media"

    let responder: HTTPChannelHandler.Responder
    /// Decides a media upgrade (on the connection's event loop).
    let decide: @Sendable (HTTPRequestHead) -> Decision
    /// Makes the call's host for an accepted stream (on its event loop).
    let makeCall: @Sendable (any Channel, Logger) -> LoopCallHost

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // A media stream brings a 400-byte message every 20 ms: small reads, and a small read buffer kept per
            // connection (NIO's default grows it to 64 KiB and keeps it).
            try channel.syncOptions?.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 512, initial: 2048, maximum: 16384))
            let refusal = NIOLoopBoundBox<HTTPResponseStatus?>(nil, eventLoop: channel.eventLoop)
            let decide = self.decide
            let makeCall = self.makeCall
            let upgrader = TypedWebSocketServerUpgrader<Outcome>(
                maximumFrameSize: 1 << 16,
                shouldUpgrade: { channel, head in
                    guard Self.path(of: head.uri) == Self.mediaPath else {
                        // No other route upgrades: a WebSocket client gets a plain 404 and the connection closes.
                        refusal.value = .notFound
                        return channel.eventLoop.makeSucceededFuture(nil)
                    }
                    switch decide(head) {
                    case .accept:
                        return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
                    case .refuse(let status):
                        refusal.value = status
                        return channel.eventLoop.makeSucceededFuture(nil)
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        let host = makeCall(channel, logger)
                        try WebSocketConnectionHandler.addHandlers(
                            to: channel.pipeline.syncOperations,
                            role: .server,
                            configuration: .init(maximumMessageSize: 1 << 16, closeTimeout: .seconds(3), pingInterval: .seconds(20)),
                            application: TwilioMediaHandler(host: host)
                        )
                        host.twilioConnection = try channel.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
                        host.start()
                        return Outcome.media(channel, NIOLoopBound(host, eventLoop: channel.eventLoop))
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Outcome>(
                upgradeConfiguration: .init(
                    upgraders: [upgrader],
                    notUpgradingCompletionHandler: { channel in
                        channel.eventLoop.makeCompletedFuture {
                            if let status = refusal.value {
                                try channel.pipeline.syncOperations.addHandler(RefusedUpgradeResponder(status: status))
                                return Outcome.refused(channel)
                            }
                            try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                            try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
                            return Outcome.http(
                                try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                            )
                        }
                    }
                )
            )
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            let outcome = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            return Value(outcome: outcome, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        guard let outcome = try? await value.outcome.get() else {
            // The connection closed or sent garbage before a whole request: nothing to answer.
            value.channel.close(promise: nil)
            return
        }
        switch outcome {
        case .http(let channel):
            await self.handleHTTP(asyncChannel: channel, logger: logger)
        case .media(let channel, let host):
            let eventLoop = channel.eventLoop
            let released = eventLoop.flatSubmit { host.value.released.futureResult }
            await withGracefulShutdownHandler {
                try? await released.get()
            } onGracefulShutdown: {
                eventLoop.execute { host.value.perform { host.value.driver.shutdownRequested() } }
            }
        case .refused(let channel):
            try? await channel.closeFuture.get()
        }
    }

    static func path(of uri: String) -> Substring {
        uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    }
}

/// Answers a refused media upgrade with the bridge's status and closes the connection.
final class RefusedUpgradeResponder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let status: HTTPResponseStatus
    private var answered = false

    init(status: HTTPResponseStatus) { self.status = status }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = RefusedUpgradeResponder.unwrapInboundIn(data), !self.answered else { return }
        self.answered = true
        var head = HTTPResponseHead(version: .http1_1, status: self.status)
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "Content-Length", value: "0")
        context.write(RefusedUpgradeResponder.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(RefusedUpgradeResponder.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

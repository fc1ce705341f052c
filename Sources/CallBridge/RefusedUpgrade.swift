import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The request context of the bridge's and the echo agent's routers: Hummingbird's WebSocket context, plus the
/// identity of the connection (a refused media upgrade says why on that connection) and the connection itself
/// for the test double (which can cut it), without the reference cycle of hummingbird-websocket 2.8.1's own context.
///
/// That library stores the upgrade's handler together with a copy of the request context inside the context's
/// own `webSocket` box, and never empties the box: every upgraded request's context leaks, with its logger and
/// whatever else it holds. Here the box hangs off a holder the route empties once the connection is running
/// (`releaseWebSocketHandler()`), which frees the box, the context copy in it, and the holder.
struct WebSocketRouteContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    /// The connection's identity (`ObjectIdentifier` of its channel).
    let connection: ObjectIdentifier
    private let holder: Holder

    final class Holder: Sendable {
        let reference = Mutex<WebSocketHandlerReference<WebSocketRouteContext>?>(.init())
        /// Kept weakly: the context must not keep its connection alive.
        private let weakChannel: WeakChannel

        init(channel: any Channel) { self.weakChannel = WeakChannel(channel) }

        var channel: (any Channel)? { self.weakChannel.channel }
    }

    final class WeakChannel: @unchecked Sendable {
        // Written once, in init; Channel implementations are thread-safe.
        weak var channel: (any Channel)?
        init(_ channel: any Channel) { self.channel = channel }
    }

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.connection = ObjectIdentifier(source.channel)
        self.holder = Holder(channel: source.channel)
    }

    var webSocket: WebSocketHandlerReference<WebSocketRouteContext> {
        self.holder.reference.withLock { $0 } ?? .init()
    }

    /// The connection, while it is open.
    var channel: (any Channel)? { self.holder.channel }

    /// Call once the WebSocket handler runs: the library has no further use for the box.
    func releaseWebSocketHandler() {
        self.holder.reference.withLock { $0 = nil }
    }
}

/// Why media upgrades were refused, by connection, until that connection's HTTP pipeline answers.
///
/// hummingbird-websocket answers every refused upgrade itself: `400` when the upgrader declined, or a `307` redirect
/// to the same path when the request reached its HTTP responder. The route records the status it means (403 for a
/// bad signature, 503 while draining or full) here, and `RefusedUpgradeStatus`, which sits between the HTTP codec
/// and the library's responder, puts it on that response.
final class RefusedUpgrades: Sendable {
    private let statuses = Mutex<[ObjectIdentifier: HTTPResponse.Status]>([:])

    func refuse(_ connection: ObjectIdentifier, status: HTTPResponse.Status) {
        self.statuses.withLock { $0[connection] = status }
    }

    func take(_ channel: any Channel) -> HTTPResponse.Status? {
        self.statuses.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

/// Gives the response to a refused media upgrade the status its route chose (and drops the redirect's
/// `Location`); every other response passes through untouched. One per HTTP connection: it looks its connection
/// up once, when it is added, which happens right after the upgrade was refused.
final class RefusedUpgradeStatus: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let refused: RefusedUpgrades
    private var status: HTTPResponse.Status?

    init(_ refused: RefusedUpgrades) {
        self.refused = refused
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.status = self.refused.take(context.channel)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard let status = self.status, case .head(var head) = self.unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        self.status = nil
        head.status = status
        head.headerFields[.location] = nil
        head.headerFields[.connection] = "close"
        context.write(self.wrapOutboundOut(.head(head)), promise: promise)
    }
}

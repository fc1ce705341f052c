import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The request context of the echo agent's router: Hummingbird's WebSocket context, plus the connection itself (the
/// test double can cut it), without the reference cycle of hummingbird-websocket 2.8.1's own context.
///
/// That library stores the upgrade's handler together with a copy of the request context inside the context's
/// own `webSocket` box, and never empties the box: every upgraded request's context leaks, with its logger and
/// whatever else it holds. Here the box hangs off a holder the route empties once the connection is running
/// (`releaseWebSocketHandler()`), which frees the box, the context copy in it, and the holder.
struct WebSocketRouteContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
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

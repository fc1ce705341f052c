import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The request context of the bridge's router: Hummingbird's WebSocket context plus the connection, so that a refused
/// media upgrade can say why on that connection.
struct BridgeRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<BridgeRequestContext>
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.channel = source.channel
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

    func refuse(_ channel: any Channel, status: HTTPResponse.Status) {
        self.statuses.withLock { $0[ObjectIdentifier(channel)] = status }
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

import CallBridgeCore
import HTTPTypes
import Hummingbird
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import HummingbirdCore

/// The embedded echo agent as a Realtime-protocol WebSocket server on loopback (plain or TLS).
///
/// `callbridge run` starts it when no API key is configured, and the test suite uses it as the Realtime test double:
/// the bridge reaches it through exactly the same client path as the real service.
public struct EchoAgentServer: Sendable {
    /// What happens on an agent connection, for tests and the standalone command's logs.
    public enum Observation: Sendable, Equatable {
        case connected(connection: Int, dialect: RealtimeDialect)
        case clientEvent(connection: Int, type: String)
        case serverEvent(connection: Int, type: String)
        case disconnected(connection: Int)
        /// The agent dropped the connection on purpose (`dropsMidReply`).
        case dropped(connection: Int)
    }

    /// How the agent behaves on a connection.
    public enum Behavior: String, Sendable, CaseIterable {
        /// Detect utterances and play them back.
        case echo
        /// A hung service: send `session.created`, then never read, answer or close (for timeout and watchdog tests).
        case unresponsive
        /// A service that refuses the session: answers `session.update` with an `invalid_api_key` error quoting the
        /// key it was sent, as real services do (for the test that no secret reaches a log line).
        case rejectsSession = "rejects-session"
        /// Like `echo`, but the first connection closes (with a close frame) after the fifth audio delta of its
        /// first reply: a service that drops mid-reply, for the reconnect tests.
        case dropsMidReply = "drops-mid-reply"
        /// The same, but the TCP connection is cut with no close frame (a network drop).
        case vanishesMidReply = "vanishes-mid-reply"
        /// Like `echo`, after first sending every kind of bad event: invalid JSON, a binary frame, an event missing
        /// its fields, audio for a response that does not exist, and errors with several codes.
        case sendsJunk = "sends-junk"
    }

    public var host: String
    public var port: Int
    public var tlsConfiguration: TLSConfiguration?
    public var agent: EchoAgent.Configuration
    /// When set, connections must present this key (Bearer or `api-key`), or get 401.
    public var expectedAPIKey: String?
    public var behavior: Behavior
    public var logger: Logger
    public var observer: (@Sendable (Observation) -> Void)?

    public init(
        host: String = "127.0.0.1",
        port: Int = 0,
        tlsConfiguration: TLSConfiguration? = nil,
        agent: EchoAgent.Configuration = .init(),
        expectedAPIKey: String? = nil,
        behavior: Behavior = .echo,
        logger: Logger,
        observer: (@Sendable (Observation) -> Void)? = nil
    ) {
        self.behavior = behavior
        self.host = host
        self.port = port
        self.tlsConfiguration = tlsConfiguration
        self.agent = agent
        self.expectedAPIKey = expectedAPIKey
        self.logger = logger
        self.observer = observer
    }

    /// The paths a Realtime client may use: OpenAI's and Azure's.
    static let paths: [RouterPath] = ["/v1/realtime", "/openai/realtime", "/openai/v1/realtime"]

    /// Builds the server as a service; `onRunning` receives the bound port.
    public func makeApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let router = Router(context: WebSocketRouteContext.self)
        router.get("/healthz") { _, _ in "ok" }
        let counter = ConnectionCounter()
        let expectedKey = self.expectedAPIKey
        let agentConfiguration = self.agent
        let observer = self.observer
        let behavior = self.behavior
        for path in Self.paths {
            router.ws(path) { request, _ in
                if let expectedKey {
                    let bearer = request.headers[.authorization]
                    let apiKey = request.headers[HTTPField.Name("api-key")!]
                    guard bearer == "Bearer \(expectedKey)" || apiKey == expectedKey else {
                        throw HTTPError(.unauthorized, message: "invalid api key")
                    }
                }
                return .upgrade([:])
            } onUpgrade: { inbound, outbound, context in
                context.requestContext.releaseWebSocketHandler()
                let dialect: RealtimeDialect =
                    context.request.headers[HTTPField.Name("OpenAI-Beta")!] == "realtime=v1" ? .beta : .ga
                let connection = counter.next()
                observer?(.connected(connection: connection, dialect: dialect))
                if behavior == .rejectsSession {
                    var agent = EchoAgent(dialect: dialect, configuration: agentConfiguration)
                    for event in agent.connected() { try? await outbound.write(.text(event)) }
                    let headers = context.request.headers
                    let key = headers[.authorization].map { String($0.dropFirst("Bearer ".count)) } ?? headers[HTTPField.Name("api-key")!] ?? ""
                    var refused = false
                    do {
                        for try await message in inbound.messages(maxSize: 4 << 20) {
                            guard case .text(let text) = message, !refused else { continue }
                            observer?(.clientEvent(connection: connection, type: "session.update"))
                            refused = true
                            let error = "{\"type\":\"error\",\"event_id\":\"evt_reject\",\"error\":{\"type\":\"invalid_request_error\","
                                + "\"code\":\"invalid_api_key\",\"message\":\"Incorrect API key provided: \(key). Request: \(text.prefix(40).filter { $0 != "\"" && $0 != "\\" })\","
                                + "\"event_id\":\"cb_session_update\"}}"
                            try await outbound.write(.text(error))
                        }
                    } catch {}
                    observer?(.disconnected(connection: connection))
                    return
                }
                if behavior == .unresponsive {
                    var agent = EchoAgent(dialect: dialect, configuration: agentConfiguration)
                    for event in agent.connected() { try? await outbound.write(.text(event)) }
                    // Never iterate the inbound sequence: pings, events and close frames all go unanswered.
                    let (never, keepOpen) = AsyncStream.makeStream(of: Never.self)
                    for await _ in never {}  // ends only when the server cancels the connection
                    keepOpen.finish()
                    observer?(.disconnected(connection: connection))
                    return
                }
                await Self.serve(
                    EchoAgent(dialect: dialect, configuration: agentConfiguration),
                    connection: connection,
                    dropAfterDeltas: (behavior == .dropsMidReply || behavior == .vanishesMidReply) && connection == 1 ? 5 : nil,
                    junk: behavior == .sendsJunk,
                    inbound: inbound,
                    outbound: outbound,
                    observer: observer,
                    logger: context.logger
                )
                if behavior == .vanishesMidReply && connection == 1 {
                    // No close frame: the socket just goes away.
                    try? await context.requestContext.channel?.close(mode: .all)
                }
                observer?(.disconnected(connection: connection))
            }
        }
        let wsConfiguration = HTTP1WebSocketUpgradeChannel.Configuration(
            ws: WebSocketServerConfiguration(maxFrameSize: 4 << 20, autoPing: .disabled, closeTimeout: .seconds(3))
        )
        let base = HTTPServerBuilder.http1WebSocketUpgrade(webSocketRouter: router, configuration: wsConfiguration)
        let server = try self.tlsConfiguration.map { try HTTPServerBuilder.tls(base, tlsConfiguration: $0) } ?? base
        return Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(self.host, port: self.port), serverName: "callbridge-echo-agent"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: self.logger
        )
    }

    enum Input: Sendable {
        case message(String)
        case wake
        case closed
    }

    static func serve(
        _ initial: EchoAgent,
        connection: Int,
        dropAfterDeltas: Int? = nil,
        junk: Bool = false,
        inbound: WebSocketInboundStream,
        outbound: WebSocketOutboundWriter,
        observer: (@Sendable (Observation) -> Void)?,
        logger: Logger
    ) async {
        var agent = initial
        let timeline = Timeline()
        let (inputs, continuation) = AsyncStream.makeStream(of: Input.self)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in inbound.messages(maxSize: 4 << 20) {
                        if case .text(let text) = message { continuation.yield(.message(text)) }
                    }
                } catch {
                    logger.debug("echo agent read ended", metadata: ["error": "\(error)"])
                }
                continuation.yield(.closed)
            }
            var deltasSent = 0
            func send(_ events: [String]) async -> Bool {
                for event in events {
                    if let limit = dropAfterDeltas, deltasSent >= limit { return false }
                    if Self.type(of: event).hasSuffix("audio.delta") { deltasSent += 1 }
                    if let observer { observer(.serverEvent(connection: connection, type: Self.type(of: event))) }
                    do {
                        try await outbound.write(.text(event))
                    } catch {
                        return false
                    }
                }
                return true
            }
            var armed: CallInstant?
            var open = await send(agent.connected())
            if junk {
                let silence = Base64.encode([UInt8](repeating: MuLaw.silence, count: 160))
                let events = [
                    "{not json", #"{"type":"response.output_audio.delta"}"#, #"{"type":5}"#,
                    #"{"type":"response.output_audio.delta","response_id":"resp_ghost","item_id":"item_ghost","delta":"\#(silence)"}"#,
                    #"{"type":"error","error":{"type":"server_error","code":"rate_limit_exceeded","message":"slow down"}}"#,
                    #"{"type":"error","error":{"type":"server_error","code":"server_error","message":"oops"}}"#,
                    #"{"type":"error","error":{"type":"invalid_request_error","message":"no code"}}"#,
                    #"{"type":"brand.new.event","x":[1,{"y":null}]}"#,
                ]
                for event in events { try? await outbound.write(.text(event)) }
                try? await outbound.write(.binary(ByteBuffer(bytes: [1, 2, 3])))
            }
            loop: for await input in inputs {
                let now = timeline.now
                let out: [String]
                switch input {
                case .message(let text):
                    out = agent.received(text, now: now)
                    if let observer, let type = agent.lastReceivedType {
                        observer(.clientEvent(connection: connection, type: type))
                    }
                case .wake:
                    armed = nil
                    out = agent.tick(now: now)
                case .closed:
                    break loop
                }
                if open { open = await send(out) }
                if let limit = dropAfterDeltas, deltasSent >= limit {
                    observer?(.dropped(connection: connection))
                    break loop  // returning from the handler closes the connection with a close frame
                }
                if let wake = agent.nextWakeup, armed != wake {
                    armed = wake
                    let deadline = timeline.deadline(wake)
                    group.addTask {
                        let wait = deadline - NIODeadline.now()
                        if wait > .zero { try? await Task.sleep(for: .nanoseconds(wait.nanoseconds), tolerance: .zero) }
                        continuation.yield(.wake)
                    }
                }
            }
            continuation.finish()
            group.cancelAll()
        }
    }

    /// The `type` of a server event this agent built (always its first field).
    static func type(of event: String) -> String {
        guard let start = event.range(of: "{\"type\":\""), let end = event[start.upperBound...].firstIndex(of: "\"") else {
            return "?"
        }
        return String(event[start.upperBound..<end])
    }
}

final class ConnectionCounter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { self.value.add(1, ordering: .relaxed).newValue }
}


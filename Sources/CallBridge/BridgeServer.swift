import CallBridgeCore
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import ServiceLifecycle

/// `callbridge run`: the Twilio-facing server, the shared pacing ticker and, when configured, the embedded echo
/// agent, run as one service group.
public struct BridgeServer: Sendable {
    /// What a started bridge reports once it is listening.
    public struct Ready: Sendable, Equatable {
        public var port: Int
        /// The embedded echo agent's URL, when calls go to it.
        public var echoAgentURL: String?
    }

    public let configuration: AppConfiguration
    public let logger: Logger
    public let callLog: CallLog
    public let registry = CallRegistry()
    let ticker = PacingTicker()
    let timeline = Timeline()

    public init(configuration: AppConfiguration, logger: Logger, callLog: CallLog) {
        self.configuration = configuration
        self.logger = logger
        self.callLog = callLog
    }

    /// Runs until SIGTERM/SIGINT (when `handleSignals`) or until the task is cancelled.
    public func run(handleSignals: Bool = true, onReady: @escaping @Sendable (Ready) async -> Void = { _ in }) async throws {
        // Fail at start, not on the first call, if the confirmer's weights are missing or damaged.
        let makeConfirmer: @Sendable () -> (any SpeechConfirmer)?
        switch self.configuration.confirmer {
        case .energy:
            makeConfirmer = { nil }
        case .silero:
            let model = try SileroLoader.model()
            let threshold = self.configuration.sileroThreshold
            makeConfirmer = { SileroConfirmer(model: model, threshold: threshold) }
        }
        let endpoint = AsyncValue<RealtimeEndpoint>()
        let agentURL = AsyncValue<String?>()
        var services: [any Service] = [TickerService(ticker: self.ticker)]
        if self.configuration.usesEchoAgent {
            let dialect = self.configuration.dialect
            let agent = EchoAgentServer(agent: self.configuration.echoAgent, logger: self.logger.with(label: "echo-agent"))
            services.append(
                try agent.makeApplication { port in
                    let url = "ws://127.0.0.1:\(port)/v1/realtime"
                    var headers = HTTPFields()
                    if dialect == .beta { headers[HTTPField.Name("OpenAI-Beta")!] = "realtime=v1" }
                    endpoint.set(RealtimeEndpoint(url: url, dialect: dialect, headers: headers))
                    agentURL.set(url)
                }
            )
        } else {
            endpoint.set(.remote(self.configuration))
            agentURL.set(nil)
        }
        let app = self.makeApplication(endpoint: endpoint, makeConfirmer: makeConfirmer) { port in
            await onReady(Ready(port: port, echoAgentURL: await agentURL.value))
        }
        services.append(app)
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) },
                gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
                logger: self.logger
            )
        )
        try await group.run()
    }

    func makeApplication(
        endpoint: AsyncValue<RealtimeEndpoint>,
        makeConfirmer: @escaping @Sendable () -> (any SpeechConfirmer)?,
        onRunning: @escaping @Sendable (Int) async -> Void
    ) -> some ApplicationProtocol {
        let router = Router(context: BasicWebSocketRequestContext.self)
        let configuration = self.configuration
        let registry = self.registry
        router.get("/healthz") { _, _ -> Response in
            let body = "{\"status\":\"ok\",\"active_calls\":\(registry.activeCalls),\"total_calls\":\(registry.totalCalls)}"
            return Response(
                status: .ok,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: body))
            )
        }
        // Twilio calls the voice webhook with POST (form body) by default, or GET (query string) if so configured.
        @Sendable func twiml(_ form: [(name: String, value: String)]) -> Response {
            let wanted = ["From", "To", "CallSid"]
            let parameters = wanted.compactMap { name in form.first(where: { $0.name == name }) }
            let xml = TwiML.connectStream(url: configuration.streamURL, parameters: parameters)
            return Response(status: .ok, headers: [.contentType: "text/xml"], body: .init(byteBuffer: ByteBuffer(string: xml)))
        }
        router.post("/twilio/voice") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 64 * 1024)
            return twiml(FormURLEncoded.parse(String(buffer: body)))
        }
        router.get("/twilio/voice") { request, _ -> Response in
            twiml(FormURLEncoded.parse(request.uri.query ?? ""))
        }
        let session = CallSession(
            configuration: configuration.call,
            endpoint: { await endpoint.value },
            makeConfirmer: makeConfirmer,
            ticker: self.ticker,
            timeline: self.timeline,
            callLog: self.callLog,
            registry: registry
        )
        router.ws("/twilio/media") { inbound, outbound, context in
            await session.run(twilioInbound: inbound, twilioOutbound: outbound, logger: context.logger)
        }
        let wsConfiguration = HTTP1WebSocketUpgradeChannel.Configuration(
            ws: WebSocketServerConfiguration(maxFrameSize: 1 << 16, autoPing: .enabled(timePeriod: .seconds(20)), closeTimeout: .seconds(3))
        )
        return Application(
            router: router,
            server: .http1WebSocketUpgrade(webSocketRouter: router, configuration: wsConfiguration),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "callbridge"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: self.logger
        )
    }
}

/// The shared ticker as a service of the group.
struct TickerService: Service {
    let ticker: PacingTicker
    func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.ticker.run()
        }
    }
}

extension Logger {
    func with(label: String) -> Logger {
        var copy = Logger(label: label, factory: { _ in self.handler })
        copy.logLevel = self.logLevel
        return copy
    }
}

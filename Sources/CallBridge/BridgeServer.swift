import CallBridgeCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization
import UnixSignals

/// `callbridge run`: the Twilio-facing server, the shared pacing ticker and, when configured, the embedded echo
/// agent, run as one service group.
public struct BridgeServer: Sendable {
    /// Sizes NIO's shared event-loop group (the server's and the calls'): call before the group is first used.
    public static func useEventLoopThreads(_ count: Int) {
        NIOSingletons.groupLoopCountSuggestion = count
    }

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
    public let metrics = BridgeMetrics()
    let admission = Admission()
    let timeline = Timeline()

    /// `logger` is wrapped so that no configured secret (the API key, …) ever reaches a log line.
    public init(configuration: AppConfiguration, logger: Logger, callLog: CallLog) {
        self.configuration = configuration
        self.logger = logger.redacting(configuration.secrets)
        self.callLog = callLog
        self.metrics.setMaxCalls(configuration.maxCalls)
    }

    /// Starts a graceful drain, as SIGTERM does: new calls are refused, active ones finish (up to the drain timeout),
    /// then the server stops. A second call ends the drain at once.
    public func drain() { self.admission.requestDrain() }

    /// Whether a new call would be refused now, and why (`draining`, `max_calls`).
    public var refusal: String? { self.admission.refusal(active: self.registry.activeCalls, limit: self.configuration.maxCalls) }

    /// Runs until the task is cancelled, or until a drain (`drain()`, or SIGTERM/SIGINT when `handleSignals`) has
    /// let the calls finish.
    public func run(handleSignals: Bool = true, onReady: @escaping @Sendable (Ready) async -> Void = { _ in }) async throws {
        try self.configuration.validate()
        if !self.configuration.checksSignatures {
            self.logger.warning(
                "INSECURE: Twilio request signatures and per-call tokens are NOT checked (--insecure-no-signature); anyone who can reach this port can open calls on your API key"
            )
        }
        if let priority = self.configuration.realtimePriority {
            // The calls run on the shared group's loops (Hummingbird's default, and their Realtime legs with them).
            let outcome = await RealtimeScheduling.apply(priority: priority, to: MultiThreadedEventLoopGroup.singleton)
            outcome.log(asked: priority, to: self.logger)
            if case .applied(let priority) = outcome { self.metrics.setRealtimePriority(priority) }
        }
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
        var services: [any Service] = []
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
        let heapTrim = IdleHeapTrim(registry: self.registry, logger: self.logger)
        self.registry.idleHandler.withLock { $0 = { heapTrim.wentIdle() } }
        var call = self.configuration.call
        call.fallbackPrompt = try FallbackPromptLoader.load(self.configuration.fallbackPrompt)
        let app = self.makeApplication(endpoint: endpoint, call: call, makeConfirmer: makeConfirmer) { port in
            await onReady(Ready(port: port, echoAgentURL: await agentURL.value))
        }
        services.append(app)
        let groupRef = AsyncValue<ServiceGroup>()
        let drainService = DrainService(
            admission: self.admission,
            registry: self.registry,
            metrics: self.metrics,
            timeout: self.configuration.drainTimeout,
            handleSignals: handleSignals,
            logger: self.logger,
            shutdown: { await groupRef.value.triggerGracefulShutdown() }
        )
        // Graceful shutdown runs in reverse order: the app (its calls) first, the embedded agent after it.
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: drainService, successTerminationBehavior: .ignore)] + services.map { .init(service: $0) },
                gracefulShutdownSignals: [],
                logger: self.logger
            )
        )
        groupRef.set(group)
        try await group.run()
    }

    func makeApplication(
        endpoint: AsyncValue<RealtimeEndpoint>,
        call: CallConfiguration,
        makeConfirmer: @escaping @Sendable () -> (any SpeechConfirmer)?,
        onRunning: @escaping @Sendable (Int) async -> Void
    ) -> some ApplicationProtocol {
        let router = Router(context: BasicRequestContext.self)
        let configuration = self.configuration
        let registry = self.registry
        let metrics = self.metrics
        let admission = self.admission
        let logger = self.logger
        @Sendable func json(_ status: HTTPResponse.Status, _ body: String) -> Response {
            Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        // Liveness: the process answers.
        router.get("/healthz") { _, _ -> Response in
            json(.ok, "{\"status\":\"ok\",\"active_calls\":\(registry.activeCalls),\"total_calls\":\(registry.totalCalls)}")
        }
        // Readiness: a new call would be admitted (503 while draining or at --max-calls).
        router.get("/readyz") { _, _ -> Response in
            let active = registry.activeCalls
            let limit = configuration.maxCalls.map(String.init) ?? "null"
            if let refusal = admission.refusal(active: active, limit: configuration.maxCalls) {
                return json(.serviceUnavailable, "{\"status\":\"\(refusal)\",\"active_calls\":\(active),\"max_calls\":\(limit)}")
            }
            return json(.ok, "{\"status\":\"ready\",\"active_calls\":\(active),\"max_calls\":\(limit)}")
        }
        router.get("/metrics") { _, _ -> Response in
            metrics.setActiveCalls(registry.activeCalls)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.exposition()))
            )
        }
        // Twilio calls the voice webhook with POST (form body) by default, or GET (query string) if so configured.
        @Sendable func twiml(_ form: [(name: String, value: String)]) -> Response {
            if let refusal = admission.refusal(active: registry.activeCalls, limit: configuration.maxCalls) {
                metrics.callRejected(reason: refusal)
                logger.notice("call rejected", metadata: ["reason": .string(refusal), "call_sid": .string(form.first { $0.name == "CallSid" }?.value ?? "")])
                return Response(status: .ok, headers: [.contentType: "text/xml"], body: .init(byteBuffer: ByteBuffer(string: TwiML.reject())))
            }
            let wanted = ["From", "To", "CallSid"]
            var parameters = wanted.compactMap { name in form.first(where: { $0.name == name }) }
            if let key = configuration.callTokenKey {
                // Bound to this CallSid; the stream's `start` must hand it back before any audio reaches the model.
                let callSid = form.first { $0.name == "CallSid" }?.value ?? ""
                let expiresAt = Int64(Date().timeIntervalSince1970) + configuration.callTokenLifetime.components.seconds
                parameters.append((CallToken.parameterName, CallToken.make(callSid: callSid, expiresAt: expiresAt, key: key)))
            }
            let xml = TwiML.connectStream(url: configuration.streamURL, parameters: parameters)
            return Response(status: .ok, headers: [.contentType: "text/xml"], body: .init(byteBuffer: ByteBuffer(string: xml)))
        }
        /// nil when the request is Twilio's (or checks are off); else why not.
        @Sendable func signatureProblem(_ request: Request, formParameters: [(name: String, value: String)], jsonBody: [UInt8]?) -> String? {
            guard configuration.checksSignatures, let token = configuration.twilioAuthToken else { return nil }
            guard let signature = request.headers[HTTPField.Name("X-Twilio-Signature")!] else { return "missing_signature" }
            guard let url = configuration.publicURL(forTarget: request.head.path ?? "/") else { return "no_public_url" }
            let valid =
                if let jsonBody {
                    TwilioSignature.isValid(signature: signature, authToken: token, url: url, jsonBody: jsonBody)
                } else {
                    TwilioSignature.isValid(signature: signature, authToken: token, url: url, parameters: formParameters)
                }
            return valid ? nil : "wrong_signature"
        }
        @Sendable func forbidden(_ route: String, _ reason: String) -> Response {
            metrics.authFailed(route: route, reason: reason)
            logger.warning("request refused: signature check failed", metadata: ["route": .string(route), "reason": .string(reason)])
            return Response(status: .forbidden, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "forbidden\n")))
        }
        router.post("/twilio/voice") { request, _ -> Response in
            let body = Array(buffer: try await request.body.collect(upTo: 64 * 1024))
            let isJSON = request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true
            let form: [(name: String, value: String)]
            if isJSON {
                // The JSON variant: fields are the object's string values; the body is bound by bodySHA256.
                let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
                form = object.compactMap { key, value in (value as? String).map { (key, $0) } }
            } else {
                form = FormURLEncoded.parse(String(decoding: body, as: UTF8.self))
            }
            if let problem = signatureProblem(request, formParameters: isJSON ? [] : form, jsonBody: isJSON ? body : nil) {
                return forbidden("voice", problem)
            }
            return twiml(form)
        }
        router.get("/twilio/voice") { request, _ -> Response in
            // A GET's parameters are in the query string, which the signature covers as part of the URL.
            if let problem = signatureProblem(request, formParameters: [], jsonBody: nil) { return forbidden("voice", problem) }
            return twiml(FormURLEncoded.parse(request.uri.query ?? ""))
        }
        /// Why a media stream may not start: 403 (signature), 503 (draining or full), or nil.
        @Sendable func mediaRefusal(signature: String?) -> HTTPResponse.Status? {
            // Twilio signs the upgrade over the exact <Stream url> it was given, with no parameters.
            if configuration.checksSignatures, let token = configuration.twilioAuthToken {
                let valid = signature.map {
                    TwilioSignature.isValid(signature: $0, authToken: token, url: configuration.streamURL, trailingSlash: true)
                } ?? false
                guard valid else {
                    let reason = signature == nil ? "missing_signature" : "wrong_signature"
                    metrics.authFailed(route: "media", reason: reason)
                    logger.warning("media stream refused: signature check failed", metadata: ["reason": .string(reason)])
                    return .forbidden
                }
            }
            // A stream Twilio opens while draining or full is refused before it is upgraded (Twilio ends the call).
            if let refusal = admission.refusal(active: registry.activeCalls, limit: configuration.maxCalls) {
                metrics.callRejected(reason: refusal)
                logger.notice("media stream refused", metadata: ["reason": .string(refusal)])
                return .serviceUnavailable
            }
            return nil
        }
        // Media streams are calls hosted on their event loops (no task or stream per frame); every other request goes
        // to the router.
        let shared = LoopCallHost.Shared(
            endpoint: endpoint,
            tlsContexts: TLSContextCache(),
            registry: registry,
            environment: .init(
                configuration: call,
                security: .init(
                    callTokenKey: configuration.callTokenKey,
                    startTimeout: configuration.startTimeout,
                    maxCallDuration: configuration.maxCallDuration
                ),
                makeConfirmer: makeConfirmer,
                timeline: self.timeline,
                callLog: self.callLog,
                metrics: metrics
            )
        )
        let server = HTTPServerBuilder { responder in
            BridgeChildChannel(
                responder: responder,
                decide: { head in
                    mediaRefusal(signature: head.headers.first(name: "X-Twilio-Signature")).map { .refuse(HTTPResponseStatus(statusCode: $0.code)) } ?? .accept
                },
                makeCall: { channel, requestLogger in
                    let callMetadata = CallMetadata()
                    var callLogger = requestLogger
                    let inherited = callLogger.handler.metadataProvider
                    callLogger.handler.metadataProvider = Logger.MetadataProvider {
                        var metadata = inherited?.get() ?? [:]
                        metadata.merge(callMetadata.current) { _, new in new }
                        return metadata
                    }
                    return LoopCallHost(twilio: channel, shared: shared, loop: LoopCalls.forLoop(channel.eventLoop), logger: callLogger, callMetadata: callMetadata)
                }
            )
        }
        return Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "callbridge"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: self.logger
        )
    }
}

/// Who may start a call: nobody once a drain began; nobody beyond `--max-calls`.
final class Admission: Sendable {
    private let drainRequests = Atomic<Int>(0)
    private let signal = AsyncStream.makeStream(of: Void.self)

    var isDraining: Bool { self.drainRequests.load(ordering: .acquiring) > 0 }
    /// A second drain request (a second signal) cuts the drain short.
    var isDrainCut: Bool { self.drainRequests.load(ordering: .acquiring) > 1 }

    func refusal(active: Int, limit: Int?) -> String? {
        if self.isDraining { return "draining" }
        if let limit, active >= limit { return "max_calls" }
        return nil
    }

    func requestDrain() {
        if self.drainRequests.add(1, ordering: .acquiringAndReleasing).newValue == 1 { self.signal.continuation.yield() }
    }

    /// Returns when the first drain is requested, or nil when the stream is finished.
    func firstDrainRequest() async -> Void? {
        var iterator = self.signal.stream.makeAsyncIterator()
        return await iterator.next()
    }

    func finish() { self.signal.continuation.finish() }
}

/// Turns SIGTERM/SIGINT into a drain: stop admitting calls, wait for the active ones to end (up to the drain
/// timeout, or until a second signal), then shut the service group down, which ends what is left as `shutdown`
/// (after the audio drain) with clean closes on both legs. `callbridge run` then exits 0.
struct DrainService: Service, CustomStringConvertible {
    var description: String { "DrainService" }

    let admission: Admission
    let registry: CallRegistry
    let metrics: BridgeMetrics
    let timeout: Duration
    let handleSignals: Bool
    let logger: Logger
    let shutdown: @Sendable () async -> Void

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            if self.handleSignals {
                let admission = self.admission
                let logger = self.logger
                group.addTask {
                    for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                        logger.notice(admission.isDraining ? "second signal: ending the drain now" : "signal: draining", metadata: ["signal": .string("\(signal)")])
                        admission.requestDrain()
                    }
                }
            }
            await withGracefulShutdownHandler {
                guard await self.admission.firstDrainRequest() != nil else { return }
                await self.drain()
            } onGracefulShutdown: {
                self.admission.finish()
            }
            // The group shuts services down in order, this one last: returning before its turn would be an error.
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    func drain() async {
        self.metrics.setDraining(true)
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: self.timeout)
        self.logger.notice(
            "draining: new calls are refused",
            metadata: ["active_calls": .stringConvertible(self.registry.activeCalls), "drain.timeout_s": .stringConvertible(self.timeout.components.seconds)]
        )
        var outcome = "all calls ended"
        // Woken when the last call ends; a second signal is noticed within 100 ms.
        while !(await self.registry.waitUntilIdle(upTo: .milliseconds(100))) {
            if self.admission.isDrainCut {
                outcome = "cut short by a second signal"
                break
            }
            if clock.now >= deadline {
                outcome = "drain timeout"
                break
            }
        }
        self.logger.notice("drain finished; stopping", metadata: ["drain.outcome": .string(outcome), "active_calls": .stringConvertible(self.registry.activeCalls)])
        await self.shutdown()
    }
}

extension Logger {
    func with(label: String) -> Logger {
        var copy = Logger(label: label, factory: { _ in self.handler })
        copy.logLevel = self.logLevel
        return copy
    }
}

import CallBridgeCore
import HummingbirdWSClient
import HummingbirdWebSocket
import Logging
import NIOCore
import Synchronization

/// Runs phone calls; each `run` is one call: the Twilio leg it was accepted on, the Realtime leg it opens, and the single consumer loop that
/// feeds every event to the call's state machine and executes its actions in order.
///
/// This is the per-call actor: state is mutated only by the loop, synchronously, and a transition's actions finish
/// before the next event is read.
final class CallSession: Sendable {
    enum Input: Sendable {
        case event(CallEvent)
        case realtimeAttached(WebSocketOutboundWriter)
        case realtimeFinished
        case twilioFinished
    }

    let configuration: CallConfiguration
    let endpoint: @Sendable () async -> RealtimeEndpoint
    let ticker: PacingTicker
    let timeline: Timeline
    let callLog: CallLog
    let registry: CallRegistry

    init(
        configuration: CallConfiguration,
        endpoint: @escaping @Sendable () async -> RealtimeEndpoint,
        ticker: PacingTicker,
        timeline: Timeline,
        callLog: CallLog,
        registry: CallRegistry
    ) {
        self.configuration = configuration
        self.endpoint = endpoint
        self.ticker = ticker
        self.timeline = timeline
        self.callLog = callLog
        self.registry = registry
    }

    func run(twilioInbound: WebSocketInboundStream, twilioOutbound: WebSocketOutboundWriter, logger baseLogger: Logger) async {
        let endpoint = await self.endpoint()
        let (inputs, continuation) = AsyncStream.makeStream(of: Input.self)
        let id = self.registry.callStarted()
        defer {
            self.ticker.unregister(id)
            self.registry.callEnded()
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await Self.readTwilio(twilioInbound, into: continuation, logger: baseLogger) }
            group.addTask { await Self.runRealtimeLeg(endpoint, into: continuation, logger: baseLogger) }

            var machine = CallStateMachine(configuration: self.configuration, now: self.timeline.now)
            var logger = baseLogger
            var realtime: WebSocketOutboundWriter?
            var quotedStreamSid = JSONText.quoted("")
            var ticking = false
            var twilioOpen = true
            var realtimeOpen = true

            loop: for await input in inputs {
                let event: CallEvent
                switch input {
                case .event(let e):
                    event = e
                case .realtimeAttached(let writer):
                    realtime = writer
                    if machine.isEnded {
                        try? await writer.close(.normalClosure, reason: "call ended")
                    }
                    continue
                case .realtimeFinished:
                    realtimeOpen = false
                    realtime = nil
                    if machine.isEnded && !twilioOpen { break loop }
                    continue
                case .twilioFinished:
                    twilioOpen = false
                    if machine.isEnded && (!realtimeOpen || realtime == nil) { break loop }
                    continue
                }
                if case .twilioReceived(.start(let start)) = event {
                    quotedStreamSid = JSONText.quoted(start.streamSid)
                    logger[metadataKey: "call.sid"] = .string(start.callSid)
                    logger[metadataKey: "stream.sid"] = .string(start.streamSid)
                    logger.info("call started", metadata: ["call.parameters": .string("\(start.customParameters)")])
                }
                if case .realtimeReceived(.sessionCreated(let sid?)) = event {
                    logger[metadataKey: "realtime.session.id"] = .string(sid)
                }
                let actions = machine.handle(event, now: self.timeline.now)
                for action in actions {
                    switch action {
                    case .sendTwilio(let message):
                        guard twilioOpen else { continue }
                        do {
                            try await twilioOutbound.write(.text(TwilioCodec.encode(message, quotedStreamSid: quotedStreamSid)))
                        } catch {
                            logger.debug("twilio write failed", metadata: ["error": "\(error)"])
                        }
                    case .sendRealtime(let clientEvent):
                        guard let writer = realtime else { continue }
                        do {
                            try await writer.write(.text(RealtimeCodec.encode(clientEvent, dialect: endpoint.dialect)))
                        } catch {
                            logger.debug("realtime write failed", metadata: ["error": "\(error)"])
                        }
                    case .logBadMessage(let kind):
                        logger.warning("bad message", metadata: ["message.kind": .string(kind)])
                    case .logUpstreamError(let info):
                        logger.warning(
                            "realtime error",
                            metadata: [
                                "error.type": .string(info.type ?? ""), "error.code": .string(info.code ?? ""),
                                "error.message": .string(info.message), "error.event_id": .string(info.eventID ?? ""),
                            ]
                        )
                    case .endCall(let reason):
                        if let summary = machine.summary {
                            self.callLog.write(summary)
                            logger.info(
                                "call ended",
                                metadata: [
                                    "end.reason": .string(reason.rawValue), "tx.frames": .stringConvertible(summary.counters.txFrames),
                                    "tx.resets": .stringConvertible(summary.counters.txScheduleResets),
                                    "barge_in.events": .stringConvertible(summary.counters.bargeInEvents),
                                ]
                            )
                        }
                        if let writer = realtime {
                            try? await writer.close(.normalClosure, reason: "call ended")
                        }
                        if twilioOpen {
                            try? await twilioOutbound.close(.normalClosure, reason: "call ended")
                        }
                    }
                }
                if machine.wantsTicks != ticking {
                    ticking = machine.wantsTicks
                    if ticking {
                        self.ticker.register(id) { continuation.yield(.event(.tick)) }
                    } else {
                        self.ticker.unregister(id)
                    }
                }
                // Once ended, wait for both legs to finish their close handshakes; a leg still connecting is cancelled.
                if machine.isEnded && !twilioOpen && (!realtimeOpen || realtime == nil) { break loop }
            }
            continuation.finish()
            group.cancelAll()
        }
    }

    static func readTwilio(_ inbound: WebSocketInboundStream, into continuation: AsyncStream<Input>.Continuation, logger: Logger) async {
        do {
            for try await message in inbound.messages(maxSize: 1 << 16) {
                switch message {
                case .text(let text):
                    do throws(TwilioDecodingError) {
                        continuation.yield(.event(.twilioReceived(try TwilioCodec.decode(text))))
                    } catch {
                        continuation.yield(.event(.twilioMalformed(error)))
                    }
                case .binary:
                    continuation.yield(.event(.twilioMalformed(.invalidJSON)))
                }
            }
        } catch {
            logger.debug("twilio leg read ended", metadata: ["error": "\(error)"])
        }
        continuation.yield(.event(.twilioClosed))
        continuation.yield(.twilioFinished)
    }

    static func runRealtimeLeg(_ endpoint: RealtimeEndpoint, into continuation: AsyncStream<Input>.Continuation, logger: Logger) async {
        let connected = Atomic<Bool>(false)
        do {
            let closeFrame = try await WebSocketClient.connect(
                url: endpoint.url,
                configuration: endpoint.clientConfiguration,
                tlsConfiguration: endpoint.tlsConfiguration,
                logger: logger
            ) { inbound, outbound, _ in
                connected.store(true, ordering: .relaxed)
                continuation.yield(.realtimeAttached(outbound))
                continuation.yield(.event(.realtimeConnected))
                for try await message in inbound.messages(maxSize: 4 << 20) {
                    switch message {
                    case .text(let text):
                        do throws(RealtimeDecodingError) {
                            continuation.yield(.event(.realtimeReceived(try RealtimeCodec.decode(text))))
                        } catch {
                            continuation.yield(.event(.realtimeMalformed(error)))
                        }
                    case .binary:
                        continuation.yield(.event(.realtimeUnexpectedFrame))
                    }
                }
            }
            // A close frame back means the close handshake completed; nil means the connection just dropped.
            let detail = closeFrame.map { "close \($0.closeCode) \($0.reason ?? "")" } ?? "connection closed without a close frame"
            logger.info(
                "realtime leg closed",
                metadata: ["close.handshake": .stringConvertible(closeFrame != nil), "close.detail": .string(detail)]
            )
            continuation.yield(.event(.realtimeClosed(.closed(detail))))
        } catch {
            if connected.load(ordering: .relaxed) {
                logger.error("realtime leg failed", metadata: ["error": "\(error)"])
                continuation.yield(.event(.realtimeClosed(.closed("\(error)"))))
            } else {
                logger.error("realtime connect failed", metadata: ["error": "\(error)", "realtime.url": .string(endpoint.url)])
                continuation.yield(.event(.realtimeClosed(.connectFailed("\(error)"))))
            }
        }
        continuation.yield(.realtimeFinished)
    }
}

/// Active-call bookkeeping shared by the routes (health, drain).
public final class CallRegistry: Sendable {
    private let active = Atomic<Int>(0)
    private let total = Atomic<Int>(0)

    public init() {}

    public var activeCalls: Int { self.active.load(ordering: .relaxed) }
    public var totalCalls: Int { self.total.load(ordering: .relaxed) }

    /// Counts the call and returns its process-unique number.
    func callStarted() -> Int {
        self.active.add(1, ordering: .relaxed)
        return self.total.add(1, ordering: .relaxed).newValue
    }

    func callEnded() {
        self.active.subtract(1, ordering: .relaxed)
    }
}

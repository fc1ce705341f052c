import CallBridgeCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `callbridge load`: N simulated Twilio calls against a bridge's media URL, ramped up, each streaming the caller's
/// audio in real time and playing what the bridge sends the way Twilio does (see `LoadCall`).
///
/// Built to drive a thousand calls from the machine the bridge runs on: SwiftNIO directly, one channel handler per
/// call that does the Twilio side synchronously on its event loop, one 20 ms ticker per loop that writes every call's
/// next frame (precomputed JSON, per-call fields spliced in) and flushes each call once, the byte scanner for what
/// comes back, and measurements in per-loop HdrHistograms merged at the end.
public struct LoadGenerator: Sendable {
    public struct Options: Sendable {
        /// The bridge's media stream URL (ws:// or wss://).
        public var url: String
        public var calls: Int
        public var ramp: Duration
        public var duration: Duration
        public var script: LoadScript
        /// PEM CA trusted for wss:// in addition to the system roots.
        public var caFile: String?
        /// Event loops (threads) the calls are spread over.
        public var threads: Int
        /// Sign as Twilio does: each call first POSTs the voice webhook (signed) and presents the TwiML's token.
        public var signing: Signing?
        /// How often `progress` is called.
        public var progressInterval: Duration
        /// Run the event loops in `SCHED_RR` at this priority (`RealtimeScheduling`); nil: normal scheduling.
        public var realtimePriority: Int?

        public init(
            url: String,
            calls: Int,
            ramp: Duration,
            duration: Duration,
            script: LoadScript,
            caFile: String? = nil,
            threads: Int = 1,
            signing: Signing? = nil,
            progressInterval: Duration = .seconds(1),
            realtimePriority: Int? = nil
        ) {
            self.realtimePriority = realtimePriority
            self.url = url
            self.calls = calls
            self.ramp = ramp
            self.duration = duration
            self.script = script
            self.caFile = caFile
            self.threads = max(1, threads)
            self.signing = signing
            self.progressInterval = progressInterval
        }
    }

    public struct Signing: Sendable {
        public var authToken: String
        /// Where the voice webhook is POSTed.
        public var webhookURL: String
        /// The URL the signature covers (the bridge's public URL plus the path); the webhook URL when nil.
        public var signedWebhookURL: String?

        public init(authToken: String, webhookURL: String, signedWebhookURL: String? = nil) {
            self.authToken = authToken
            self.webhookURL = webhookURL
            self.signedWebhookURL = signedWebhookURL
        }
    }

    /// A progress sample.
    public struct Progress: Sendable {
        public var elapsed: Duration
        public var active: Int
        public var completed: Int
        public var failed: Int
        /// Messages sent and received per second since the previous sample.
        public var messagesPerSecond: Double
        /// p99 pacing jitter over the frames received since the previous sample, ms.
        public var jitterP99Ms: Double?
    }

    public let options: Options
    public let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    public func run(progress: @escaping @Sendable (Progress) -> Void = { _ in }) async throws -> LoadReport {
        let options = self.options
        guard WebSocketClientChannel.Target(url: options.url) != nil else {
            throw WebSocketConnectError.invalidURL(options.url)
        }
        var tlsContext: NIOSSLContext?
        if options.url.lowercased().hasPrefix("wss") {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let ca = options.caFile { tls.additionalTrustRoots = [.file(ca)] }
            tlsContext = try NIOSSLContext(configuration: tls)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        var scheduling = LoadReport.Scheduling.normal
        if let priority = options.realtimePriority {
            switch await RealtimeScheduling.apply(priority: priority, to: group) {
            case .applied(let priority): scheduling = .realtime(priority: priority)
            case let refused: scheduling = .refused(priority: priority, reason: refused.description)
            }
        }
        let ended = AsyncStream.makeStream(of: Void.self)
        let frames = max(1, options.duration.wholeMilliseconds / 20)
        var created: [LoadLoop] = []
        for eventLoop in group.makeIterator() {
            let loop = LoadLoop(eventLoop: eventLoop, script: options.script, callFrames: frames) { ended.continuation.yield() }
            try await eventLoop.submit { loop.start() }.get()
            created.append(loop)
        }
        let loops = created
        let clock = ContinuousClock()
        let started = clock.now
        let reporter = Task {
            var previousMessages = 0
            var previousAt = started
            while !Task.isCancelled {
                try? await clock.sleep(for: options.progressInterval)
                guard !Task.isCancelled else { return }
                var sample = LoadLoop.Sample()
                for loop in loops {
                    if let s = try? await loop.eventLoop.submit({ loop.sample() }).get() { sample.add(s) }
                }
                let now = clock.now
                let seconds = max(0.001, (now - previousAt).millisecondsValue / 1000)
                progress(
                    Progress(
                        elapsed: now - started,
                        active: sample.active,
                        completed: sample.completed,
                        failed: sample.failed,
                        messagesPerSecond: Double(sample.messages - previousMessages) / seconds,
                        jitterP99Ms: sample.window.milliseconds(atPercentile: 99)
                    )
                )
                previousMessages = sample.messages
                previousAt = now
            }
        }
        defer { reporter.cancel() }
        // Ramp: call i starts at i × ramp / N, on loop i mod loops.
        for index in 0..<options.calls {
            let offset = options.calls > 1 ? options.ramp * Double(index) / Double(options.calls) : .zero
            try? await clock.sleep(until: started + offset)
            let loop = loops[index % loops.count]
            if let signing = options.signing {
                Task { await Self.startSignedCall(index: index, signing: signing, loop: loop, options: options, tlsContext: tlsContext) }
            } else {
                Self.startCall(index: index, loop: loop, options: options, tlsContext: tlsContext, callSid: nil, parameters: [:], signature: nil)
            }
        }
        var remaining = options.calls
        for await _ in ended.stream {
            remaining -= 1
            if remaining == 0 { break }
        }
        reporter.cancel()
        var stats = LoadStats()
        for loop in loops {
            let s = try await loop.eventLoop.submit { loop.finalStats() }.get()
            stats.merge(s)
        }
        try await group.shutdownGracefully()
        return LoadReport(
            callsRequested: options.calls,
            rampSeconds: options.ramp.millisecondsValue / 1000,
            durationSeconds: options.duration.millisecondsValue / 1000,
            elapsedSeconds: (clock.now - started).millisecondsValue / 1000,
            stats: stats,
            scheduling: scheduling
        )
    }

    static func randomHex(_ count: Int) -> String {
        String((0..<count).map { _ in "0123456789abcdef".randomElement()! })
    }

    /// Opens one call's media stream on `loop`; the call runs from there on its own.
    static func startCall(
        index: Int,
        loop: LoadLoop,
        options: Options,
        tlsContext: NIOSSLContext?,
        callSid: String?,
        parameters: [String: String],
        signature: (authToken: String, streamURL: String)?
    ) {
        let start = TwilioStart(
            streamSid: "MZ" + Self.randomHex(32),
            callSid: callSid ?? "CA" + Self.randomHex(32),
            accountSid: "AC" + Self.randomHex(32),
            customParameters: parameters
        )
        var headers = HTTPHeaders()
        if let signature {
            headers.add(name: "X-Twilio-Signature", value: TwilioSignature.compute(authToken: signature.authToken, url: signature.streamURL))
        }
        WebSocketClientChannel.connect(
            url: options.url,
            headers: headers,
            tlsContext: tlsContext,
            eventLoop: loop.eventLoop,
            configuration: .init(maximumMessageSize: 1 << 16),
            // Each call's messages of a tick go straight to its socket (one `writev`), past NIO's write path: about
            // 8 % of the generator's CPU (side by side at 250 calls). Over TLS (`wss://`) they go through NIO.
            directWrites: true
        ) { _ in
            LoadCallHandler(loop: loop, start: start)
        }.whenFailure { error in
            loop.connectFailed(error)
        }
    }

    /// Twilio's flow with signatures: the signed voice webhook first, then the media upgrade signed over the TwiML's
    /// `<Stream url>`, with the TwiML's parameters (the per-call token among them) in `start`.
    static func startSignedCall(index: Int, signing: Signing, loop: LoadLoop, options: Options, tlsContext: NIOSSLContext?) async {
        let callSid = "CA" + Self.randomHex(32)
        let form: [(name: String, value: String)] = [
            ("AccountSid", "AC" + Self.randomHex(32)), ("ApiVersion", "2010-04-01"), ("CallSid", callSid),
            ("CallStatus", "ringing"), ("Direction", "inbound"), ("From", "+1415555\(String(format: "%04d", index % 10000))"),
            ("To", "+15005550006"),
        ]
        do {
            let twiml = try await Self.postWebhook(signing: signing, form: form)
            guard let stream = TwiML.parseStream(twiml) else {
                throw CallBridgeError(.dialFailed, "the voice webhook answered without a <Stream>: \(twiml.prefix(200))")
            }
            try await loop.eventLoop.submit {
                Self.startCall(
                    index: index,
                    loop: loop,
                    options: options,
                    tlsContext: tlsContext,
                    callSid: callSid,
                    parameters: stream.parameters,
                    signature: (signing.authToken, stream.url)
                )
            }.get()
        } catch {
            loop.eventLoop.execute { loop.connectFailed(error) }
        }
    }

    static func postWebhook(signing: Signing, form: [(name: String, value: String)]) async throws -> String {
        guard let url = URL(string: signing.webhookURL) else {
            throw CallBridgeError(.configurationInvalid, "not a URL: \(signing.webhookURL)")
        }
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let body = form.map { "\($0.name)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.value)" }
            .joined(separator: "&")
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        request.setValue(
            TwilioSignature.compute(authToken: signing.authToken, url: signing.signedWebhookURL ?? signing.webhookURL, parameters: form),
            forHTTPHeaderField: "X-Twilio-Signature"
        )
        request.httpBody = Data(body.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else { throw CallBridgeError(.dialFailed, "the voice webhook answered HTTP \(status)") }
        return String(decoding: data, as: UTF8.self)
    }
}

extension ByteBuffer: ByteSink {
    public mutating func append(bytes: UnsafeRawBufferPointer) { self.writeBytes(bytes) }
}

/// The calls of one event loop, their shared 20 ms ticker and their measurements. Confined to `eventLoop`.
final class LoadLoop: @unchecked Sendable {
    /// What the progress display reads.
    struct Sample {
        var active = 0
        var completed = 0
        var failed = 0
        var messages = 0
        var window = LatencyHistogram()

        mutating func add(_ other: Sample) {
            self.active += other.active
            self.completed += other.completed
            self.failed += other.failed
            self.messages += other.messages
            self.window.merge(other.window)
        }
    }

    let eventLoop: any EventLoop
    let script: LoadScript
    /// Caller frames per call (its duration).
    let callFrames: Int
    var stats = LoadStats()
    /// Where a call's `media` frame is built before it is written (`WebSocketConnectionHandler.sendNow`).
    var frameScratch: [UInt8] = []
    private let callEnded: @Sendable () -> Void
    /// Calls that are streaming, in four phases 5 ms apart (as the bridge ticks its calls, and as independent phone
    /// calls would arrive: not all in the same instant); a call's place is in its `phase` and `slot`.
    private var calls = PhasedTickList<LoadCallHandler>(phases: 4)
    private var ticker: LoopTicker?

    init(eventLoop: any EventLoop, script: LoadScript, callFrames: Int, callEnded: @escaping @Sendable () -> Void) {
        self.eventLoop = eventLoop
        self.script = script
        self.callFrames = callFrames
        self.callEnded = callEnded
    }

    func start() {
        let period = TimeAmount.microseconds(20_000 / Int64(self.calls.phases))
        let ticker = LoopTicker(eventLoop: self.eventLoop, period: period) { [unowned self] deadline in self.tick(deadline) }
        self.ticker = ticker
        ticker.start()
    }

    func add(_ call: LoadCallHandler) { self.calls.insert(call) }

    /// A due tick now, from a message's read at `now` (`LoopTicker.runIfDue`).
    func tickIfDue(now: NIODeadline) { self.ticker?.runIfDue(now: now) }

    func remove(_ call: LoadCallHandler) { self.calls.remove(call) }

    private func tick(_ deadline: NIODeadline) {
        let late = self.eventLoop.now - deadline
        self.stats.tickLateness.record(.nanoseconds(max(0, late.nanoseconds)))
        // This phase's calls: every call's frame first, then one flush per call. Backwards: a call that hangs up
        // leaves the list.
        let group = self.calls.nextGroup()
        var index = self.calls.count(of: group) - 1
        while index >= 0 {
            if index < self.calls.count(of: group) { self.calls[group, index].tick(deadline: deadline) }
            index -= 1
        }
        for call in self.calls.groups[group].members { call.flush() }
    }

    func connectFailed(_ error: any Error) {
        self.stats.callsFailedToConnect += 1
        self.stats.recordFailure("connect: \(error)")
        self.callEnded()
    }

    func ended(_ call: LoadCallHandler, disconnected reason: String?) {
        self.remove(call)
        if let reason {
            self.stats.callsDisconnected += 1
            self.stats.recordFailure("disconnected: \(reason)")
        } else {
            self.stats.callsCompleted += 1
        }
        self.callEnded()
    }

    func sample() -> Sample {
        defer { self.stats.jitterWindow.reset() }
        return Sample(
            active: self.stats.callsConnected - self.stats.callsCompleted - self.stats.callsDisconnected,
            completed: self.stats.callsCompleted,
            failed: self.stats.callsFailedToConnect + self.stats.callsDisconnected,
            messages: self.stats.messagesSent + self.stats.messagesReceived,
            window: self.stats.jitterWindow
        )
    }

    func finalStats() -> LoadStats {
        self.ticker?.stop()
        var stats = self.stats
        stats.jitterWindow.reset()
        return stats
    }
}

/// One simulated Twilio call: `connected` and `start` once the upgrade is done, then a caller frame every tick, mark
/// echoes as playout reaches them, and `stop` plus the close handshake after the call's duration.
final class LoadCallHandler: ChannelInboundHandler, PhasedTickListMember, WebSocketTextBytesReceiver {
    typealias InboundIn = WebSocketInboundMessage
    typealias OutboundOut = WebSocketFrame

    enum Phase {
        /// Sending and receiving. → `hangingUp` (duration over), `ended` (the bridge closed first).
        case streaming
        /// `stop` sent, close handshake under way. → `ended`.
        case hangingUp
        case ended
    }

    let loop: LoadLoop
    let start: TwilioStart
    let quotedStreamSid: [UInt8]
    var call = LoadCall()
    var slot = -1
    var phase = -1
    private var state = Phase.streaming
    private var context: ChannelHandlerContext?
    /// The connection's WebSocket handler, which frames and writes each message directly (no `WebSocketFrame`).
    private var connection: WebSocketConnectionHandler?
    /// The call's time origin: caller frame k leaves at origin + 20 ms × (k + 1).
    private var origin: NIODeadline?
    private var needsFlush = false
    private var peerCloseCode: UInt16?

    init(loop: LoadLoop, start: TwilioStart) {
        self.loop = loop
        self.start = start
        self.quotedStreamSid = Array(JSONText.quoted(start.streamSid).utf8)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.connection = try? context.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
        self.loop.stats.callsConnected += 1
        self.write(TwilioSimulatorCodec.connected())
        self.write(TwilioSimulatorCodec.start(self.start, sequence: self.call.nextSequence()))
        self.flush()
        self.loop.add(self)
    }

    /// Time on the call's timeline.
    private func elapsed(_ deadline: NIODeadline) -> Duration {
        guard let origin = self.origin else { return .zero }
        return .nanoseconds((deadline - origin).nanoseconds)
    }

    func tick(deadline: NIODeadline) {
        guard case .streaming = self.state, let context = self.context else { return }
        if self.origin == nil { self.origin = deadline - .milliseconds(20) }
        if self.call.framesSent >= self.loop.callFrames {
            self.hangUp(context: context, at: deadline)
            return
        }
        let frame = self.call.tick(script: self.loop.script, stats: &self.loop.stats) { self.echoes.append($0) }
        self.sendEchoes()
        let template = self.loop.script.media
        let index = self.call.framesSent - 1
        let sequence = self.call.nextSequence()
        func write(into sink: inout some ByteSink) {
            template.writeMedia(
                frame: frame,
                sequence: sequence,
                chunk: index + 1,
                timestampMs: index * 20,
                quotedStreamSid: self.quotedStreamSid,
                into: &sink
            )
        }
        guard let connection = self.connection else {
            var buffer = self.allocator(context).webSocketPayload(
                capacity: template.maximumMediaByteCount(quotedStreamSidCount: self.quotedStreamSid.count)
            )
            write(into: &buffer)
            return self.send(buffer)
        }
        // Built in the loop's scratch and written at once: no buffer, no gathering (echoes gathered before it go
        // with it, in one `writev`).
        self.loop.stats.messagesSent += 1
        var scratch = self.loop.frameScratch
        self.loop.frameScratch = []
        connection.sendNow(text: &scratch) { write(into: &$0) }
        self.loop.frameScratch = scratch
    }

    private func hangUp(context: ChannelHandlerContext, at deadline: NIODeadline) {
        self.state = .hangingUp
        self.call.finish(at: self.elapsed(deadline), stats: &self.loop.stats)
        self.loop.remove(self)
        self.write(
            TwilioSimulatorCodec.stop(
                sequence: self.call.nextSequence(),
                accountSid: self.start.accountSid,
                callSid: self.start.callSid,
                streamSid: self.start.streamSid
            )
        )
        self.flush()
        context.close(promise: nil)  // the close handshake (WebSocketConnectionHandler)
    }

    func flush() {
        guard self.needsFlush, let context = self.context else { return }
        self.needsFlush = false
        if let connection = self.connection { connection.flush() } else { context.flush() }
    }

    /// Mark echoes Twilio owes the bridge, collected while the call's state is being updated.
    private var echoes: [String] = []

    private func sendEchoes() {
        guard !self.echoes.isEmpty else { return }
        for name in self.echoes { self.echo(name) }
        self.echoes.removeAll(keepingCapacity: true)
    }

    private func echo(_ name: String) {
        guard let context = self.context else { return }
        let quotedName = Array(JSONText.quoted(name).utf8)
        var buffer = self.allocator(context).webSocketPayload(capacity: 64 + quotedName.count + self.quotedStreamSid.count)
        TwilioMediaTemplate.writeMark(
            quotedName: quotedName,
            sequence: self.call.nextSequence(),
            quotedStreamSid: self.quotedStreamSid,
            into: &buffer
        )
        self.loop.stats.marksEchoed += 1
        self.send(buffer)
    }

    private func write(_ text: String) {
        guard let context = self.context else { return }
        var buffer = self.allocator(context).webSocketPayload(capacity: text.utf8.count)
        buffer.writeString(text)
        self.send(buffer)
    }

    /// The connection's kept allocator (the channel's, looked up, only without one).
    private func allocator(_ context: ChannelHandlerContext) -> ByteBufferAllocator {
        self.connection?.allocator ?? context.channel.allocator
    }

    private func send(_ buffer: consuming ByteBuffer) {
        guard let context = self.context else { return }
        self.loop.stats.messagesSent += 1
        self.needsFlush = true
        if let connection = self.connection {
            connection.send(text: consume buffer)
        } else {
            context.write(LoadCallHandler.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: buffer)), promise: nil)
        }
    }

    /// What the bridge sends, read in place from the connection's buffer (the connection handler calls this).
    func webSocketText(bytes: UnsafeRawBufferPointer) {
        // The arrival's time first: a tick that runs now writes a quarter of the loop's calls, and that is the
        // generator's delay, not the bridge's jitter.
        let now = self.loop.eventLoop.now
        self.loop.tickIfDue(now: now)
        self.loop.stats.messagesReceived += 1
        guard case .streaming = self.state, self.context != nil else { return }
        guard let message = TwilioSimulatorCodec.summarizeOutbound(bytes.bindMemory(to: UInt8.self)) else {
            self.loop.stats.badMessages += 1
            return
        }
        let at = self.elapsed(now)
        self.call.received(message, at: at, script: self.loop.script, stats: &self.loop.stats) { self.echoes.append($0) }
        self.sendEchoes()
        self.flush()
    }

    func webSocketBinary(_ data: ByteBuffer) {
        self.loop.stats.messagesReceived += 1
        guard case .streaming = self.state else { return }
        self.loop.stats.badMessages += 1
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Messages come through `webSocketText(bytes:)`; only a pipeline without the receiver set sends them here.
        switch LoadCallHandler.unwrapInboundIn(data) {
        case .text(let buffer): buffer.withUnsafeReadableBytes { self.webSocketText(bytes: $0) }
        case .binary(let buffer): self.webSocketBinary(buffer)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? WebSocketPeerClosed { self.peerCloseCode = closed.code ?? 1005 }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch self.state {
        case .streaming:
            self.state = .ended
            self.call.finish(at: self.elapsed(context.eventLoop.now), stats: &self.loop.stats)
            let reason = self.peerCloseCode.map { "bridge closed the stream (\($0))" } ?? "connection dropped"
            self.loop.ended(self, disconnected: reason)
        case .hangingUp:
            self.state = .ended
            self.loop.ended(self, disconnected: nil)
        case .ended:
            break
        }
        self.context = nil
        self.connection = nil
        context.fireChannelInactive()
    }
}

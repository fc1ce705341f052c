import CallBridgeCore
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// `callbridge dial`: a Twilio stand-in. It streams a caller's audio in real time as Media Streams `media`
/// messages, models Twilio's playout of what comes back (8000 bytes/s, marks echoed when reached, `clear` empties
/// the buffer and echoes pending marks), records what the caller hears, and reports timing.
public struct DialClient: Sendable {
    /// How long, after the caller's `stop`, the bridge has to close the stream before the client closes it.
    static let closeWait: Duration = .seconds(3)
    public struct Options: Sendable {
        public var url: String
        /// 8 kHz μ-law caller audio.
        public var callerAudio: [UInt8]
        /// When set, the barge-in audio starts playing at this offset (mixed over anything still playing).
        public var bargeInAt: Duration?
        /// Audio for the barge-in; the caller audio again when nil.
        public var bargeInAudio: [UInt8]?
        public var duration: Duration
        public var customParameters: [String: String]
        public var caFile: String?
        /// Stop as soon as this returns true for the trace so far (tests); nil runs for `duration`.
        public var stopWhen: (@Sendable (DialTrace) -> Bool)?
        /// Feed what the caller hears back into what they send, like a phone's acoustic echo.
        public var echo: EchoPath?
        /// The CallSid of the `start` message (random when nil); a per-call token is bound to it.
        public var callSid: String?
        /// Sign the upgrade as Twilio does: X-Twilio-Signature over `url` (the public <Stream url>) with `authToken`.
        public var signing: (authToken: String, url: String)?

        public init(
            url: String,
            callerAudio: [UInt8],
            bargeInAt: Duration? = nil,
            bargeInAudio: [UInt8]? = nil,
            duration: Duration,
            customParameters: [String: String] = [:],
            caFile: String? = nil,
            stopWhen: (@Sendable (DialTrace) -> Bool)? = nil,
            echo: EchoPath? = nil
        ) {
            self.echo = echo
            self.url = url
            self.callerAudio = callerAudio
            self.bargeInAt = bargeInAt
            self.bargeInAudio = bargeInAudio
            self.duration = duration
            self.customParameters = customParameters
            self.caFile = caFile
            self.stopWhen = stopWhen
        }
    }

    /// An echo path: what the caller hears comes back `delay` later, `lossDB` quieter.
    public struct EchoPath: Sendable, Equatable {
        public var lossDB: Double
        public var delay: Duration

        public init(lossDB: Double, delay: Duration) {
            self.lossDB = lossDB
            self.delay = delay
        }

        var gain: Double { Level.amplitude(decibels: -self.lossDB) }
        var delaySamples: Int { self.delay.wholeMilliseconds * AudioFrame.bytesPerMillisecond }
    }

    public struct Result: Sendable {
        public var trace: DialTrace
        public var report: DialReport
        /// What the caller heard, μ-law, one byte per 1/8000 s from the first caller frame.
        public var heard: [UInt8]
        /// Everything the bridge sent, in order (for protocol assertions).
        public var received: [TwilioOutbound]
        /// Whether the bridge closed the socket before the simulator hung up.
        public var closedByBridge: Bool
    }

    struct State {
        var playout = TwilioPlayout()
        var trace = DialTrace()
        var heard: [UInt8] = []
        var received: [TwilioOutbound] = []
        var closedByBridge = false
        /// The caller hung up (sent `stop`).
        var stopSent = false
        var started: ContinuousClock.Instant?
        var clearSeenAfterBargeIn = false
    }

    final class Shared: Sendable {
        let state = Mutex(State())
        let sequence = Atomic<Int>(0)
    }

    public let options: Options
    public let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    public func run() async throws -> Result {
        let shared = Shared()
        let options = self.options
        let clock = ContinuousClock()
        let streamSid = "MZ" + Self.hex(32)
        let callSid = options.callSid ?? "CA" + Self.hex(32)
        let accountSid = "AC" + Self.hex(32)
        @Sendable func nextSequence() -> Int { shared.sequence.add(1, ordering: .relaxed).newValue }

        var tls: TLSConfiguration?
        if options.url.hasPrefix("wss") {
            var config = TLSConfiguration.makeClientConfiguration()
            if let ca = options.caFile { config.additionalTrustRoots = [.file(ca)] }
            tls = config
        }
        let bargeAudio = options.bargeInAudio ?? options.callerAudio
        let bargeStartFrame = options.bargeInAt.map { $0.wholeMilliseconds / 20 }
        let bargeOnsetFrame = bargeStartFrame.flatMap { start in
            DialReport.firstVoicedFrame(in: bargeAudio).map { start + $0 }
        }
        let sentAudio = DialReport.mix(options.callerAudio, bargeAudio, at: bargeStartFrame, totalFrames: options.duration.wholeMilliseconds / 20)
        shared.state.withLock {
            $0.trace.callerUtteranceEnds = DialReport.utteranceEnds(in: sentAudio)
            $0.trace.callerVoicedFrames = DialReport.voicedFrames(in: sentAudio)
            $0.trace.bargeInOnset = bargeOnsetFrame.map { .milliseconds($0 * 20) }
        }

        try await WebSocketClient.connect(
            url: options.url,
            configuration: .init(
                maxFrameSize: 1 << 16,
                additionalHeaders: options.signing.map { signing in
                    [HTTPField.Name("X-Twilio-Signature")!: TwilioSignature.compute(authToken: signing.authToken, url: signing.url)]
                } ?? [:],
                closeTimeout: .seconds(3)
            ),
            tlsConfiguration: tls,
            logger: self.logger
        ) { inbound, outbound, _ in
            try await outbound.write(.text(TwilioSimulatorCodec.connected()))
            let start = TwilioStart(
                streamSid: streamSid,
                callSid: callSid,
                accountSid: accountSid,
                customParameters: options.customParameters
            )
            try await outbound.write(.text(TwilioSimulatorCodec.start(start, sequence: nextSequence())))
            let t0 = clock.now
            shared.state.withLock { $0.started = t0 }

            try await withThrowingTaskGroup(of: Void.self) { group in
                // What the bridge sends: buffer it like Twilio, echo marks as Twilio would.
                group.addTask {
                    for try await message in inbound.messages(maxSize: 1 << 16) {
                        guard case .text(let text) = message, let decoded = TwilioSimulatorCodec.decodeOutbound(text) else {
                            continue
                        }
                        let at = clock.now - t0
                        let echoes: [String] = shared.state.withLock { s in
                            s.received.append(decoded)
                            switch decoded {
                            case .media(let bytes):
                                s.trace.mediaArrivals.append(.init(at: at, bytes: bytes.count))
                                s.playout.media(bytes)
                                return []
                            case .mark(let name):
                                s.trace.marksReceived += 1
                                return s.playout.mark(name)
                            case .clear:
                                s.trace.clears.append(at)
                                if let onset = s.trace.bargeInOnset, at >= onset { s.clearSeenAfterBargeIn = true }
                                return s.playout.clear().echoes
                            }
                        }
                        for name in echoes {
                            try await outbound.write(.text(TwilioSimulatorCodec.mark(name, sequence: nextSequence(), streamSid: streamSid)))
                            shared.state.withLock { $0.trace.marksEchoed += 1 }
                        }
                    }
                    // After our stop the bridge closing the stream is the answer, not a hang-up.
                    shared.state.withLock { if !$0.stopSent { $0.closedByBridge = true } }
                }
                // The caller: one 20 ms frame out and 20 ms of playout per tick, on absolute deadlines. A write that
                // fails because the bridge hung up ends the call; the report is still produced.
                group.addTask {
                    do {
                        try await Self.speak(
                            sentAudio: sentAudio,
                            frames: options.duration.wholeMilliseconds / 20,
                            from: t0,
                            clock: clock,
                            shared: shared,
                            options: options,
                            bargeOnsetFrame: bargeOnsetFrame,
                            streamSid: streamSid,
                            nextSequence: nextSequence,
                            outbound: outbound
                        )
                    } catch is CancellationError {
                        return
                    } catch {
                        let bridgeGone = shared.state.withLock { $0.closedByBridge }
                        if !bridgeGone { throw error }
                        return
                    }
                    let bridgeGone = shared.state.withLock { $0.closedByBridge }
                    if !bridgeGone {
                        shared.state.withLock { $0.stopSent = true }
                        try? await outbound.write(
                            .text(TwilioSimulatorCodec.stop(sequence: nextSequence(), accountSid: accountSid, callSid: callSid, streamSid: streamSid))
                        )
                    }
                }
                // The call ends when the caller is done. After its stop, what the bridge had already sent is still
                // read until the bridge closes the stream (up to a close timeout), so `received` holds every message
                // the bridge sent: Twilio would not play those frames, but the bridge counted them as sent.
                try await group.next()
                if shared.state.withLock({ $0.stopSent }) {
                    group.addTask { try await Task.sleep(for: Self.closeWait) }
                    try await group.next()
                }
                group.cancelAll()
            }
        }
        return shared.state.withLock { s in
            Result(trace: s.trace, report: DialReport(trace: s.trace), heard: s.heard, received: s.received, closedByBridge: s.closedByBridge)
        }
    }

    static func speak(
        sentAudio: [UInt8],
        frames totalFrames: Int,
        from t0: ContinuousClock.Instant,
        clock: ContinuousClock,
        shared: Shared,
        options: Options,
        bargeOnsetFrame: Int?,
        streamSid: String,
        nextSequence: @Sendable () -> Int,
        outbound: WebSocketOutboundWriter
    ) async throws {
        for frameIndex in 0..<totalFrames {
            // Frame k holds the audio of [20k, 20k + 20) ms and, as on a real line, leaves once it has been captured.
            try await clock.sleep(until: t0.advanced(by: .milliseconds(20 * (frameIndex + 1))), tolerance: .zero)
            let (ended, stop) = shared.state.withLock { s in (s.closedByBridge, options.stopWhen?(s.trace) ?? false) }
            if ended || stop { return }
            // Twilio plays 20 ms, then the caller's next 20 ms go out (with the echo of what they heard, if any).
            let (frame, echoes): ([UInt8], [String]) = shared.state.withLock { s in
                let played = s.playout.play(AudioFrame.byteCount)
                s.heard.append(contentsOf: played.audio)
                if let onset = bargeOnsetFrame, frameIndex >= onset, !s.clearSeenAfterBargeIn {
                    s.trace.playedAfterBargeInBytes += played.audioBytes
                }
                let speech = sentAudio[(frameIndex * 160)..<((frameIndex + 1) * 160)]
                guard let echo = options.echo else { return (Array(speech), played.echoes) }
                return (Self.addEcho(echo, to: speech, heard: s.heard, at: frameIndex * 160), played.echoes)
            }
            try await outbound.write(
                .text(
                    TwilioSimulatorCodec.media(
                        frame,
                        sequence: nextSequence(),
                        chunk: frameIndex + 1,
                        timestampMs: frameIndex * 20,
                        streamSid: streamSid
                    )
                )
            )
            for name in echoes {
                try await outbound.write(.text(TwilioSimulatorCodec.mark(name, sequence: nextSequence(), streamSid: streamSid)))
                shared.state.withLock { $0.trace.marksEchoed += 1 }
            }
        }
    }

    /// `speech` (starting at sample `position` of the call) plus the echo of what was heard `echo.delay` earlier.
    static func addEcho(_ echo: EchoPath, to speech: ArraySlice<UInt8>, heard: [UInt8], at position: Int) -> [UInt8] {
        let gain = echo.gain
        return speech.enumerated().map { offset, byte in
            let source = position + offset - echo.delaySamples
            let echoed = source >= 0 && source < heard.count ? Double(MuLaw.decode(heard[source])) * gain : 0
            return MuLaw.encode(Int16(clamping: Int((Double(MuLaw.decode(byte)) + echoed).rounded())))
        }
    }

    static func hex(_ count: Int) -> String {
        String((0..<count).map { _ in "0123456789abcdef".randomElement()! })
    }
}

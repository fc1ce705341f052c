import CallBridge
import CallBridgeCore
import Foundation
import HummingbirdWSClient
import Logging
import NIOSSL
import Synchronization
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Whole calls over real loopback sockets: a Twilio-protocol client (the `dial` simulator), the bridge as
/// `callbridge run` builds it, and the echo agent as the Realtime test double behind a real TLS handshake.
@Suite(.serialized) struct EndToEndTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let caFile = fixtures.appendingPathComponent("tls/test-ca.pem").path
    static let apiKey = "sk-test-e2e"

    /// The Realtime double's TLS: the localhost certificate the test CA signed.
    static func agentTLS() throws -> TLSConfiguration {
        TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(Self.fixtures.appendingPathComponent("tls/localhost.pem").path).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: Self.fixtures.appendingPathComponent("tls/localhost.key").path, format: .pem))
        )
    }

    static func logger(capturing lines: Observations<LogLine>? = nil, json: Observations<String>? = nil) -> Logger {
        // Standard error gets only what E2E_LOG asks for (nothing by default); the capture sees debug and up.
        let level = ProcessInfo.processInfo.environment["E2E_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        // No `logger.logLevel =` afterwards: on a multiplex handler that would overwrite every handler's own level.
        return Logger(label: "e2e") { label in
            var stream = StreamLogHandler.standardError(label: label)
            stream.logLevel = level
            var handlers: [any LogHandler] = [stream]
            if let lines {
                var capture = CapturingLogHandler(lines: lines)
                capture.logLevel = .debug
                handlers.append(capture)
            }
            if let json {
                // The production JSON formatter, writing into the test instead of standard error.
                var handler = JSONLogHandler(label: label) { json.record($0) }
                handler.logLevel = .trace
                handlers.append(handler)
            }
            return MultiplexLogHandler(handlers)
        }
    }

    static var logger: Logger { Self.logger() }

    /// A half-second fallback prompt (a 1 kHz tone), so tests of upstream failure do not wait for the bundled one.
    static let shortFallbackPrompt: String = {
        // Always the same bytes, so one file serves every test run (written atomically: runs may overlap).
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("callbridge-test-fallback-1khz-500ms.ulaw")
        let tone = (0..<4000).map { i in MuLaw.encode(Int16(8000 * sin(Double(i) / 8000 * 2 * .pi * 1000))) }
        try? Data(tone).write(to: url, options: .atomic)
        return url.path
    }()

    /// A loud, speech-like stretch (well above every detector's threshold), 20 ms frames.
    static func speech(_ frames: Int) -> [UInt8] {
        (0..<(frames * 160)).map { i in
            let envelope = 0.6 + 0.4 * sin(Double(i) / 8000 * 2 * .pi * 4)
            return MuLaw.encode(Int16(9000 * envelope * sin(Double(i) / 8000 * 2 * .pi * 300)))
        }
    }

    static func silence(_ frames: Int) -> [UInt8] { Array(repeating: MuLaw.silence, count: frames * 160) }

    /// A spoken fixture (Fixtures/audio, 8 kHz) as μ-law: real speech, for the Silero confirmer.
    static func spoken(_ name: String) throws -> [UInt8] {
        let wav = try WAV.decode(Array(try Data(contentsOf: Self.fixtures.appendingPathComponent("audio/\(name).wav"))))
        return MuLaw.encode(Resampler.resample(wav.samples, from: wav.sampleRate, to: 8000))
    }

    /// Runs the echo agent over TLS and the bridge against it, then `body` with the bridge's port.
    static func withBridge(
        dialect: RealtimeDialect,
        trustTestCA: Bool = true,
        auth: RealtimeAuth = .bearer,
        apiKey: String = Self.apiKey,
        agent: EchoAgent.Configuration = .init(),
        behavior: EchoAgentServer.Behavior = .echo,
        call: CallConfiguration = .init(),
        maxCalls: Int? = nil,
        twilioAuthToken: String? = nil,
        startTimeout: Duration = .seconds(10),
        captureLogs: Bool = true,
        fallbackPrompt: String? = Self.shortFallbackPrompt,
        _ body: @escaping @Sendable (_ call: Harness) async throws -> Void
    ) async throws {
        let agentEvents = Observations<EchoAgentServer.Observation>()
        let agentTimes = Observations<TimedObservation>()
        let logs = Observations<LogLine>()
        let jsonLines = Observations<String>()
        let calls = Observations<CallSummary>()
        let tls = try Self.agentTLS()
        let agentServer = EchoAgentServer(
            tlsConfiguration: tls,
            agent: agent,
            expectedAPIKey: Self.apiKey,
            behavior: behavior,
            logger: Self.logger,
            observer: {
                // Without capture (the leak test) only the first few are kept: thousands would be the growth it measures.
                guard captureLogs || agentEvents.all.count < 50 else { return }
                // Timed first: a test that waits for an event then reads its time finds it.
                agentTimes.record(TimedObservation(observation: $0, at: .now))
                agentEvents.record($0)
            }
        )
        let agentPort = AsyncStream.makeStream(of: Int.self)
        let bridgePort = AsyncStream.makeStream(of: Int.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let agentApp = try agentServer.makeApplication { port in agentPort.continuation.yield(port) }
            let agentTask = Task { try await agentApp.run() }
            defer { agentTask.cancel() }
            var ports = agentPort.stream.makeAsyncIterator()
            let port = try #require(await ports.next())
            let configuration = AppConfiguration(
                host: "127.0.0.1",
                port: 0,
                publicURL: "https://bridge.example.com",
                realtimeURL: "wss://localhost:\(port)/v1/realtime",
                apiKey: apiKey,
                realtimeAuth: auth,
                dialect: dialect,
                realtimeCAFile: trustTestCA ? Self.caFile : nil,
                agent: .remote,
                call: call,
                maxCalls: maxCalls,
                twilioAuthToken: twilioAuthToken,
                // Without a token the tests play Twilio unsigned, as `--insecure-no-signature` allows.
                insecureNoSignature: twilioAuthToken == nil,
                startTimeout: startTimeout,
                fallbackPrompt: fallbackPrompt
            )
            let logURL = FileManager.default.temporaryDirectory.appendingPathComponent("callbridge-e2e-\(UUID()).jsonl")
            defer { try? FileManager.default.removeItem(at: logURL) }
            let log = try CallLog(path: logURL.path)
            log.observe { summary in
                if captureLogs || calls.all.count < 50 { calls.record(summary) }
            }
            // (The leak test keeps no log lines: thousands of calls' worth would be the growth it measures.)
            let logger = captureLogs ? Self.logger(capturing: logs, json: jsonLines) : Self.logger
            let bridge = BridgeServer(configuration: configuration, logger: logger, callLog: log)
            group.addTask {
                // A bridge that cannot start ends the wait for its port (the test then fails instead of hanging).
                defer { bridgePort.continuation.finish() }
                try await bridge.run(handleSignals: false) { ready in bridgePort.continuation.yield(ready.port) }
            }
            var bridgePorts = bridgePort.stream.makeAsyncIterator()
            let listening = try #require(await bridgePorts.next())
            try await body(
                Harness(
                    port: listening, agentEvents: agentEvents, agentTimes: agentTimes, calls: calls, logs: logs, jsonLines: jsonLines,
                    bridge: bridge, stopAgent: { agentTask.cancel() }
                )
            )
            // Let every call finish its close handshakes before the servers go away.
            if captureLogs {
                try? await logs.wait(upTo: .seconds(10)) { lines in
                    lines.filter { $0.message == "call released" }.count >= lines.filter { $0.message == "call started" }.count
                }
            }
            agentTask.cancel()
            group.cancelAll()
        }
    }

    // MARK: The whole call

    @Test(arguments: RealtimeDialect.allCases)
    func wholeCallWithServerVADBargeIn(dialect: RealtimeDialect) async throws {
        // The agent streams in real time here so its reply is still in progress when the caller barges in.
        try await Self.withBridge(dialect: dialect, agent: .init(speedFactor: 1)) { call in
            let (port, agentEvents, calls) = (call.port, call.agentEvents, call.calls)
            // Caller: 1.2 s of speech, then silence. The echo starts about 0.5 s after it and lasts about 1.5 s;
            // at 2.6 s the caller talks over it.
            let caller = Self.silence(10) + Self.speech(60)
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(port)/twilio/media",
                callerAudio: caller,
                bargeInAt: .milliseconds(2600),
                bargeInAudio: Self.speech(20),
                duration: .milliseconds(3800),
                customParameters: ["tenant": "acme"]
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            try await agentEvents.wait(upTo: .seconds(10)) { $0.contains { if case .disconnected = $0 { true } else { false } } }

            // Twilio leg: 160-byte frames, each followed by its mark; one clear; nothing of the old reply after it.
            let received = result.received
            let media = received.compactMap { if case .media(let bytes) = $0 { bytes.count } else { nil } }
            #expect(!media.isEmpty)
            #expect(media.allSatisfy { $0 == 160 })
            for (index, message) in received.enumerated() where index + 1 < received.count {
                if case .media = message {
                    guard case .mark = received[index + 1] else {
                        Issue.record("media at \(index) is not followed by its mark")
                        break
                    }
                }
            }
            #expect(received.filter { $0 == .clear }.count == 1)
            let clearAt = try #require(result.trace.clears.first)
            let bargeInEnd = try #require(result.trace.callerUtteranceEnds.last)
            let stale = result.trace.mediaArrivals.filter { $0.at > clearAt && $0.at < bargeInEnd }
            #expect(stale.isEmpty, "nothing of the interrupted reply arrives after the clear")
            let bargeInToClear = try #require(result.report.bargeInToClearMs)
            #expect(bargeInToClear < 1000)

            // Realtime leg, as the service saw it: configuration first, audio, then the barge-in pair in order.
            let clientTypes = agentEvents.all.compactMap { if case .clientEvent(_, let type) = $0 { type } else { nil } }
            #expect(clientTypes.first == "session.update")
            #expect(clientTypes.dropFirst().first == "input_audio_buffer.append")
            let cancel = try #require(clientTypes.firstIndex(of: "response.cancel"))
            let truncate = try #require(clientTypes.firstIndex(of: "conversation.item.truncate"))
            #expect(cancel < truncate)
            let serverTypes = agentEvents.all.compactMap { if case .serverEvent(_, let type) = $0 { type } else { nil } }
            let deltaName = dialect == .ga ? "response.output_audio.delta" : "response.audio.delta"
            #expect(serverTypes.contains(deltaName))
            #expect(serverTypes.contains("conversation.item.truncated"), "the truncate was accepted: audio_end_ms within the audio")
            #expect(agentEvents.all.contains(.connected(connection: 1, dialect: dialect)))
            // The Realtime leg ended with a completed close handshake, not a dropped connection.
            try await call.logs.wait(upTo: .seconds(10)) { $0.contains { $0.message == "realtime leg closed" } }
            let closed = try #require(call.logs.all.first { $0.message == "realtime leg closed" })
            #expect(closed.metadata["close.handshake"] == "true")

            // The call log line.
            let summary = try #require(calls.all.first)
            #expect(summary.endReason == .twilioStop)
            #expect(summary.counters.firstChunkBytes == 160)
            #expect(summary.counters.txFrames == media.count)
            #expect(summary.counters.bargeInEvents == 1)
            #expect(summary.counters.upstreamErrors == 0)
            #expect(summary.counters.badMessages == 0)
            #expect(summary.counters.cancelsSent == 1)
            #expect(summary.customParameters == ["tenant": "acme"])
            #expect(summary.callSid.hasPrefix("CA"))
        }
    }

    /// Local barge-in against a service whose VAD reports speech 300 ms late: the AI stops within 80 ms of the
    /// caller's onset and nothing of the interrupted reply is heard after that.
    @Test func localBargeInStopsTheAIWithin80msWhenTheServiceVADIsLate() async throws {
        try await Self.withBridge(dialect: .ga, agent: .init(speedFactor: 1, vadDelay: .milliseconds(300))) { call in
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: Self.silence(10) + Self.speech(60),
                bargeInAt: .milliseconds(2900),
                // Real speech: the Silero confirmer (on by default) must hear a voice, not a tone.
                bargeInAudio: try Self.spoken("interrupt"),
                duration: .milliseconds(4200)
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            let stop = try #require(result.report.bargeInToClearMs)
            #expect(stop < 80, "the AI stopped \(stop) ms after the caller's onset")
            let heard = try #require(result.report.heardAfterBargeInMs)
            #expect(heard <= 80, "\(heard) ms of the interrupted reply were heard")
            let summary = try #require(call.calls.all.first)
            #expect(summary.counters.bargeInPauses >= 1)
            #expect(summary.counters.bargeInEvents >= 1)
            #expect(summary.counters.cancelsSent == 1)
            #expect(summary.counters.upstreamErrors == 0)
        }
    }

    /// Only the AI's own echo comes back (12 dB down, 120 ms late): no barge-in, no cancel, and the service never
    /// hears the echo, so it never answers it.
    @Test func anEchoOnlyCallHasNoBargeInAndNoReplyToTheEcho() async throws {
        try await Self.withBridge(dialect: .ga) { call in
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: Self.silence(5) + Self.speech(40),
                duration: .milliseconds(5000),
                echo: .init(lossDB: 12, delay: .milliseconds(120))
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            #expect(result.report.clears == 0)
            #expect(result.report.mediaMessages > 40, "the reply played")
            let summary = try #require(call.calls.all.first)
            #expect(summary.counters.bargeInEvents == 0)
            #expect(summary.counters.bargeInPauses == 0)
            #expect(summary.counters.cancelsSent == 0)
            #expect(summary.counters.responses == 1, "no reply to the echo")
            #expect(summary.counters.echoSilencedMessages > 0)
            let appended = call.agentEvents.all.filter { $0 == .clientEvent(connection: 1, type: "input_audio_buffer.append") }.count
            #expect(appended >= summary.counters.rxMessages - 2, "every caller message reached the service, some as silence")
        }
    }

    @Test func replyIsTheCallersOwnAudioPacedAt20ms() async throws {
        try await Self.withBridge(dialect: .ga) { call in
            let (port, calls) = (call.port, call.calls)
            let caller = Self.silence(5) + Self.speech(25)
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(port)/twilio/media",
                callerAudio: caller,
                duration: .milliseconds(4000),
                stopWhen: { trace in
                    // Stop once the reply has played out.
                    trace.mediaArrivals.count >= 40 && trace.marksEchoed == trace.marksReceived
                }
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            // The echo: what the caller heard contains their own speech, byte for byte.
            let spoken = Array(Self.speech(25).prefix(160 * 20))
            let heard = result.heard
            let found = (0...(heard.count - spoken.count)).contains { Array(heard[$0..<($0 + spoken.count)]) == spoken }
            #expect(found, "the caller hears their own words echoed back")
            #expect(result.report.frameSizes.keys.sorted() == [160])
            #expect(result.report.marksEchoed == result.report.marksReceived)
            #expect(calls.all.first?.counters.marksPlayed == result.report.marksEchoed)
        }
    }

    // MARK: Failures end calls cleanly

    @Test func realtimeServiceGoingAwayEndsTheCallOnTheTwilioLeg() async throws {
        try await Self.withBridge(dialect: .ga) { call in
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: Self.silence(5) + Self.speech(20),
                duration: .seconds(15)
            )
            async let dialed = withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await call.agentEvents.wait(upTo: .seconds(10)) {
                $0.contains(.clientEvent(connection: 1, type: "input_audio_buffer.append"))
            }
            call.stopAgent()
            let result = try await dialed
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            #expect(result.closedByBridge, "the bridge hangs up the Twilio leg when the service goes away for good")
            // It was up, so the bridge tried to reconnect, five times with backoff, before giving up.
            #expect(call.calls.all.first?.endReason == .realtimeConnectFailed)
            #expect(call.calls.all.first?.counters.upstreamReconnects == 5)
            #expect(call.calls.all.first?.counters.fallbackPlayed == true)
            #expect(result.heard.contains(Self.fallbackTone), "the caller heard the fallback prompt, not dead air")
        }
    }

    @Test func untrustedCertificateFailsTheRealtimeLegAndEndsTheCallCleanly() async throws {
        try await Self.withBridge(dialect: .ga, trustTestCA: false) { call in
            let (port, agentEvents, calls) = (call.port, call.agentEvents, call.calls)
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(port)/twilio/media",
                callerAudio: Self.speech(10),
                duration: .seconds(10)
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            #expect(result.closedByBridge, "the bridge hangs up the Twilio leg")
            #expect(calls.all.first?.endReason == .realtimeConnectFailed)
            #expect(calls.all.first?.counters.upstreamReconnects == 0, "a certificate that does not verify is not retried")
            #expect(!agentEvents.all.contains { if case .connected = $0 { true } else { false } }, "verification was not skipped")
        }
    }

    /// A service that accepts the connection and then never answers anything (not even the close frame): the call
    /// ends on the session-ready deadline and its resources are released after the close grace, not never.
    @Test func aHungServiceCannotHoldACallForever() async throws {
        let call = CallConfiguration(sessionReadyTimeout: .milliseconds(500))
        try await Self.withBridge(dialect: .ga, behavior: .unresponsive, call: call) { harness in
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(harness.port)/twilio/media",
                callerAudio: Self.speech(10),
                duration: .seconds(10)
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await harness.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            #expect(harness.calls.all.first?.endReason == .realtimeNotReady)
            #expect(result.closedByBridge)
            try await harness.logs.wait(upTo: .seconds(10)) { $0.contains { $0.message == "call released" } }
            #expect(harness.logs.all.contains { $0.message == "close handshake timed out" })
        }
    }

    @Test func aWrongAPIKeyFailsTheRealtimeLegAndEndsTheCallCleanly() async throws {
        try await Self.withBridge(dialect: .ga, apiKey: "sk-wrong") { call in
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: Self.speech(10),
                duration: .seconds(10)
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            #expect(result.closedByBridge)
            #expect(call.calls.all.first?.endReason == .realtimeConnectFailed)
            #expect(call.calls.all.first?.counters.upstreamReconnects == 0, "the service's 401 to a first connection is not retried")
            #expect(result.heard.contains(Self.fallbackTone), "the caller heard the fallback prompt, not dead air")
        }
    }

    /// Also the Azure-style `api-key` header path.
    @Test func malformedTwilioMessagesAreCountedAndTheCallGoesOn() async throws {
        try await Self.withBridge(dialect: .ga, auth: .apiKey) { call in
            let (port, agentEvents, calls) = (call.port, call.agentEvents, call.calls)
            try await withTimeout(.seconds(20)) {
                try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/twilio/media", logger: Self.logger) { inbound, outbound, _ in
                    let start = TwilioStart(streamSid: "MZbad", callSid: "CAbad")
                    try await outbound.write(.text(TwilioSimulatorCodec.connected()))
                    try await outbound.write(.text(TwilioSimulatorCodec.start(start, sequence: 1)))
                    try await outbound.write(.text("this is not json"))
                    try await outbound.write(.text("{\"event\":\"media\",\"media\":{\"payload\":\"***\"}}"))
                    try await outbound.write(.binary(.init(bytes: [1, 2, 3])))
                    try await outbound.write(.text("{\"event\":\"brand_new_event\"}"))
                    try await outbound.write(.text(TwilioSimulatorCodec.media(Self.silence(1), sequence: 2, chunk: 1, timestampMs: 0, streamSid: "MZbad")))
                    // The audio still reaches the service.
                    try await agentEvents.wait(upTo: .seconds(10)) {
                        $0.contains(.clientEvent(connection: 1, type: "input_audio_buffer.append"))
                    }
                    try await outbound.write(.text(TwilioSimulatorCodec.stop(sequence: 3, accountSid: "AC", callSid: "CAbad", streamSid: "MZbad")))
                    for try await _ in inbound {}
                }
            }
            try await calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            let summary = try #require(calls.all.first)
            #expect(summary.counters.badMessages == 4)
            #expect(summary.counters.badMessagesByKind == [
                "twilio.invalid_json": 1, "twilio.invalid_base64": 1, "twilio.binary_frame": 1, "twilio.unknown_event": 1,
            ])
            #expect(summary.endReason == .twilioStop)
            #expect(summary.callSid == "CAbad")
        }
    }

    // MARK: HTTP routes

    @Test func voiceWebhookAndHealth() async throws {
        try await Self.withBridge(dialect: .ga) { call in
            let port = call.port
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/twilio/voice")!)
            request.httpMethod = "POST"
            request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
            request.httpBody = Data("CallSid=CA42&From=%2B14155550100&To=%2B15005550006&CallerName=Zo%C3%AB+%26+Co".utf8)
            // The Host header must not leak into the Stream URL.
            request.setValue("attacker.example", forHTTPHeaderField: "Host")
            let (body, response) = try await URLSession.shared.data(for: request)
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
            #expect((response as? HTTPURLResponse)?.value(forHTTPHeaderField: "Content-Type") == "text/xml")
            let xml = String(decoding: body, as: UTF8.self)
            #expect(xml.contains("<Connect><Stream url=\"wss://bridge.example.com/twilio/media\">"))
            #expect(xml.contains("<Parameter name=\"From\" value=\"+14155550100\"/>"))
            #expect(xml.contains("<Parameter name=\"To\" value=\"+15005550006\"/>"))
            #expect(xml.contains("<Parameter name=\"CallSid\" value=\"CA42\"/>"))
            #expect(!xml.contains("attacker"))

            // The GET form of the webhook reads the query string.
            let (getBody, _) = try await URLSession.shared.data(
                from: URL(string: "http://127.0.0.1:\(port)/twilio/voice?CallSid=CA43&From=%2B14155550101&To=%2B15005550006")!
            )
            #expect(String(decoding: getBody, as: UTF8.self).contains("<Parameter name=\"From\" value=\"+14155550101\"/>"))

            let (health, healthResponse) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/healthz")!)
            #expect((healthResponse as? HTTPURLResponse)?.statusCode == 200)
            #expect(String(decoding: health, as: UTF8.self).contains("\"status\":\"ok\""))
        }
    }
}

/// What a running bridge under test exposes.
struct Harness: Sendable {
    var port: Int
    var agentEvents: Observations<EchoAgentServer.Observation>
    /// The same, with when each happened.
    var agentTimes: Observations<TimedObservation>
    var calls: Observations<CallSummary>
    var logs: Observations<LogLine>
    /// Every log line as the JSON formatter wrote it.
    var jsonLines: Observations<String>
    var bridge: BridgeServer
    var stopAgent: @Sendable () -> Void
}

struct TimedObservation: Sendable {
    var observation: EchoAgentServer.Observation
    var at: ContinuousClock.Instant
}

struct LogLine: Sendable {
    var level: Logger.Level
    var message: String
    var metadata: [String: String]
}

/// Records every log line (swift-log's test-kit pattern) so tests can assert on what the shell logged.
struct CapturingLogHandler: LogHandler {
    let lines: Observations<LogLine>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(self.metadataProvider?.get() ?? [:]) { _, new in new }
            .merging(event.metadata ?? [:]) { _, new in new }
        self.lines.record(LogLine(level: event.level, message: "\(event.message)", metadata: merged.mapValues { "\($0)" }))
    }
}

extension EndToEndTests {
    /// A byte of the short fallback prompt's tone that silence and the echo agent's audio never contain.
    static let fallbackTone: [UInt8] = {
        let prompt = Array(FileManager.default.contents(atPath: shortFallbackPrompt) ?? Data())
        return Array(prompt[800..<960])
    }()
}

extension Array where Element == UInt8 {
    func contains(_ run: [UInt8]) -> Bool {
        guard run.count <= self.count, !run.isEmpty else { return false }
        return (0...(self.count - run.count)).contains { self[$0..<($0 + run.count)].elementsEqual(run) }
    }
}

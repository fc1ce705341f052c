import ArgumentParser
import CallBridge
import CallBridgeCore
import Foundation
import Logging
import NIOSSL

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test a bridge: N concurrent Twilio-protocol calls, ramped up, each talking in real time.",
        discussion: """
            Each call sends connected and start, then real-time 20 ms media from --audio, and plays what the bridge \
            sends the way Twilio does (8000 bytes/s; a mark is echoed when the audio before it has played; clear \
            empties the buffer and echoes pending marks). Each call speaks, lets the AI answer, and talks over it at \
            --barge-in-at; the pattern repeats every --cycle seconds for the whole call, so long calls keep having \
            turns. After --duration seconds a call sends stop and closes.

            Report (percentiles from HdrHistogram): pacing jitter = |inter-arrival − 20 ms| of each media frame \
            received within a reply, not counting the first 3 frames of each run (the pacer's lead burst; a gap over \
            100 ms starts a run), the same definition as `callbridge dial`; first audio = end of the caller's \
            utterance (last frame above −40 dBFS) → first AI media frame of the reply; barge-in = onset of the \
            barge-in audio → clear received; errors and disconnects.

            Exit status: 0 when every call connected and ran to its end; 1 if any call failed to connect (TCP, TLS, \
            upgrade, webhook) or was disconnected by the bridge before it hung up.
            """
    )

    @Argument(help: "The bridge's media stream URL, e.g. ws://127.0.0.1:8080/twilio/media (ws:// or wss://).")
    var url: String

    @Option(help: "Concurrent calls.")
    var calls: Int = 10

    @Option(help: "Seconds over which the calls are started (call i starts at i × ramp / calls).")
    var ramp: Double = 10

    @Option(help: "Seconds each call lasts.")
    var duration: Double = 60

    @Option(help: "Caller audio (WAV).")
    var audio: String = "Fixtures/audio/hello.wav"

    @Option(help: "Seconds into each cycle at which the caller talks over the AI.")
    var bargeInAt: Double = 6.5

    @Option(help: "Audio for the barge-in (WAV).")
    var bargeInAudio: String = "Fixtures/audio/interrupt.wav"

    @Flag(help: "Never talk over the AI (no barge-in figures).")
    var noBargeIn = false

    @Option(help: "Seconds after which the speak/answer/barge-in pattern repeats (default: long enough for the caller's audio, the barge-in and the AI's answer to it, plus 2 s).")
    var cycle: Double?

    @Option(help: "PEM CA file to trust for wss:// URLs, in addition to the system roots.")
    var caFile: String?

    @Option(help: "Event-loop threads the calls are spread over.")
    var threads: Int = 1

    @Option(help: "Twilio auth token: sign the voice webhook and the media upgrade, and present the TwiML's call token in start (needs --webhook-url). (env: TWILIO_AUTH_TOKEN)")
    var twilioAuthToken: String?

    @Option(help: "The bridge's voice webhook, POSTed (signed) before each call, e.g. http://127.0.0.1:8080/twilio/voice.")
    var webhookURL: String?

    @Option(help: "The URL the webhook signature covers, when it is not --webhook-url (the bridge's --public-url plus /twilio/voice).")
    var webhookSignedURL: String?

    @Option(help: "Also write the report as JSON to this file ('-': standard output, the text report then goes to standard error).")
    var json: String?

    @Option(help: "Seconds between progress updates (default: 1 on a terminal, 5 otherwise).")
    var progressInterval: Double?

    @Option(help: "Run the generator's event loops in real-time scheduling, SCHED_RR at this priority, 1…99; 0: off (as `run --realtime-priority`; the report says whether the kernel allowed it). (env: CALLBRIDGE_LOAD_REALTIME_PRIORITY, default: 0)")
    var realtimePriority: Int?

    @Option(help: "Log level for the generator's own logs (standard error).")
    var logLevel: String = "warning"

    func validate() throws {
        guard self.calls >= 1 else { throw ValidationError("--calls must be at least 1") }
        guard self.threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        for (name, value) in [("--ramp", self.ramp), ("--duration", self.duration), ("--barge-in-at", self.bargeInAt)] {
            guard value.isFinite, value >= 0, value < 24 * 3600 else { throw ValidationError("\(name) must be between 0 and 86400 seconds") }
        }
        if let cycle = self.cycle, !(cycle.isFinite && cycle >= 0.2 && cycle < 3600) {
            throw ValidationError("--cycle must be between 0.2 and 3600 seconds")
        }
    }

    func run() async throws {
        let logger = try makeLogger(label: "callbridge.load", level: self.logLevel)
        let caller = try loadTelephoneAudio(self.audio)
        let barge = self.noBargeIn ? nil : try loadTelephoneAudio(self.bargeInAudio)
        let bargeAt: Duration? = self.noBargeIn ? nil : .milliseconds(Int(self.bargeInAt * 1000))
        let cycle = self.cycle.map { Duration.milliseconds(Int($0 * 1000)) }
            ?? LoadScript.defaultCycle(callerAudio: caller, bargeInAudio: barge, bargeInAt: bargeAt)
        var signing: LoadGenerator.Signing?
        if let token = self.twilioAuthToken ?? environment("TWILIO_AUTH_TOKEN") {
            guard let webhook = self.webhookURL else {
                throw ValidationError("signing (--twilio-auth-token or TWILIO_AUTH_TOKEN) needs --webhook-url")
            }
            signing = .init(authToken: token, webhookURL: webhook, signedWebhookURL: self.webhookSignedURL)
        }
        let options = LoadGenerator.Options(
            url: self.url,
            calls: self.calls,
            ramp: .milliseconds(Int(self.ramp * 1000)),
            duration: .milliseconds(Int(self.duration * 1000)),
            script: LoadScript(callerAudio: caller, bargeInAudio: barge, bargeInAt: bargeAt, cycle: cycle),
            caFile: self.caFile,
            threads: self.threads,
            signing: signing,
            progressInterval: .milliseconds(Int((self.progressInterval ?? (isatty(2) != 0 ? 1 : 5)) * 1000)),
            realtimePriority: try resolveRealtimePriority(self.realtimePriority, "CALLBRIDGE_LOAD_REALTIME_PRIORITY", flag: "--realtime-priority")
        )
        let terminal = isatty(2) != 0
        let report = try await LoadGenerator(options: options, logger: logger).run { p in
            let jitter = p.jitterP99Ms.map { String(format: "%.2f ms", $0) } ?? "n/a"
            let line = String(
                format: "t=%5.0fs calls active %d done %d failed %d | %.0f msgs/s | jitter p99 %@",
                p.elapsed.millisecondsValue / 1000, p.active, p.completed, p.failed, p.messagesPerSecond, jitter
            )
            FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
        }
        if terminal { FileHandle.standardError.write(Data("\n".utf8)) }
        switch self.json {
        case "-"?:
            FileHandle.standardError.write(Data((report.text + "\n").utf8))
            print(report.json)
        case let path?:
            try Data((report.json + "\n").utf8).write(to: URL(fileURLWithPath: path))
            print(report.text)
        case nil:
            print(report.text)
        }
        if report.failedCalls > 0 { throw ExitCode(1) }
    }
}

struct LoadAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load-agent",
        abstract: "Run the Realtime load double: the echo agent on raw NIO, for 1000 sessions in one process.",
        discussion: """
            Speaks the Realtime protocol like `callbridge echo-agent` (both dialects, per connection: \
            OpenAI-Beta: realtime=v1 means beta): every caller utterance is detected by an energy VAD and played \
            back, as the real service streams a reply: 1 s of audio at once, then 400 ms every 100 ms, in deltas \
            of 100–400 ms. Handles session.update, input_audio_buffer.append/clear, response.create/cancel, \
            conversation.item.truncate and conversation.item.create. Paths: /v1/realtime, /openai/realtime, \
            /openai/v1/realtime.
            """
    )

    @OptionGroup var listen: DoubleListenOptions

    @Option(help: "Event-loop threads.")
    var threads: Int = 1

    @Option(help: "Seconds between stats lines on standard error (0: none).")
    var statsInterval: Double = 10

    @Option(help: "Run the event loops in real-time scheduling, SCHED_RR at this priority, 1…99; 0: off (as `run --realtime-priority`). (env: CALLBRIDGE_LOAD_AGENT_REALTIME_PRIORITY, default: 0)")
    var realtimePriority: Int?

    @Option(help: "Log level.")
    var logLevel: String = "info"

    func run() async throws {
        let logger = try makeLogger(label: "callbridge.load-agent", level: self.logLevel)
        let tls = try self.listen.tlsConfiguration()
        let server = LoadAgentServer(
            host: self.listen.host,
            port: self.listen.port ?? 8091,
            tlsConfiguration: tls,
            threads: self.threads,
            expectedAPIKey: self.listen.apiKey,
            logger: logger,
            realtimePriority: try resolveRealtimePriority(self.realtimePriority, "CALLBRIDGE_LOAD_AGENT_REALTIME_PRIORITY", flag: "--realtime-priority")
        )
        let running = try await server.start()
        if let priority = server.realtimePriority { running.scheduling?.log(asked: priority, to: logger) }
        let url = "\(tls == nil ? "ws" : "wss")://\(self.listen.host):\(running.port)/v1/realtime"
        logger.notice("load agent listening", metadata: ["realtime.url": .string(url)])
        FileHandle.standardOutput.write(Data("listening \(url)\n".utf8))
        let interval = self.statsInterval
        let stats = Task {
            guard interval > 0 else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
                if let s = try? await running.snapshot() {
                    logger.info(
                        "load agent stats",
                        metadata: [
                            "sessions.active": .stringConvertible(s.sessionsOpened - s.sessionsClosed),
                            "sessions.total": .stringConvertible(s.sessionsOpened),
                            "events.received": .stringConvertible(s.eventsReceived),
                            "events.sent": .stringConvertible(s.eventsSent),
                        ]
                    )
                }
            }
        }
        // Runs until SIGINT/SIGTERM end the process.
        try await running.wait()
        stats.cancel()
    }
}

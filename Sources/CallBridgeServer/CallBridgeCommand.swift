import ArgumentParser
import CallBridge
import CallBridgeCore
import Foundation
import Logging
import NIOSSL

@main
struct CallBridgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "callbridge",
        abstract: "Puts a realtime speech-to-speech model on the phone: Twilio Media Streams ⇄ OpenAI Realtime.",
        subcommands: [Run.self, Dial.self, Load.self, VadCommand.self, EchoAgentCommand.self, LoadAgentCommand.self, Drain.self],
        defaultSubcommand: Run.self
    )
}

/// Reads an option, then its environment variable, then the default.
func resolve<T>(_ value: T?, _ variable: String, _ parse: (String) -> T?, default fallback: T) throws -> T {
    if let value { return value }
    if let raw = ProcessInfo.processInfo.environment[variable], !raw.isEmpty {
        guard let parsed = parse(raw) else {
            throw ValidationError("environment variable \(variable) has an invalid value '\(raw)'")
        }
        return parsed
    }
    return fallback
}

/// A duration in milliseconds from a flag or its variable: whole 20 ms frames, 20…`max`.
func wholeFrames(_ value: Int?, _ variable: String, flag: String, default fallback: Int, max: Int) throws -> Duration {
    let ms = try resolve(value, variable, { Int($0) }, default: fallback)
    guard ms >= 20, ms <= max, ms % 20 == 0 else {
        throw ValidationError("\(variable) (\(flag)) must be 20, 40, … \(max), not \(ms)")
    }
    return .milliseconds(ms)
}

/// A real-time priority from a flag or its variable: 1…99, or 0 (the default) for none.
func resolveRealtimePriority(_ value: Int?, _ variable: String, flag: String) throws -> Int? {
    let priority = try resolve(value, variable, { Int($0) }, default: 0)
    guard priority == 0 || RealtimeScheduling.priorities.contains(priority) else {
        throw ValidationError("\(variable) (\(flag)) must be 1…99, or 0 for normal scheduling, not \(priority)")
    }
    return priority == 0 ? nil : priority
}

func environment(_ variable: String) -> String? {
    ProcessInfo.processInfo.environment[variable].flatMap { $0.isEmpty ? nil : $0 }
}

/// Bootstraps logging for the process: text or JSON lines on standard error, at `level`, with every secret the
/// environment holds (the API key, Twilio's auth token) redacted from every line, whoever logs it.
func makeLogger(label: String, level: String, format: LogFormat = .text) throws -> Logger {
    guard let parsed = Logger.Level(rawValue: level) else {
        throw ValidationError("log level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    let secrets = ["OPENAI_API_KEY", "TWILIO_AUTH_TOKEN"].compactMap(environment)
    LoggingSystem.bootstrap { label in
        var handler: any LogHandler
        switch format {
        case .text: handler = StreamLogHandler.standardError(label: label)
        case .json: handler = JSONLogHandler(label: label)
        }
        handler.logLevel = parsed
        return RedactingLogHandler(wrapping: handler, secrets: secrets)
    }
    var logger = Logger(label: label)
    logger.logLevel = parsed
    return logger
}

extension RealtimeDialect: ExpressibleByArgument {}
extension RealtimeAuth: ExpressibleByArgument {}
extension AgentMode: ExpressibleByArgument {}
extension EchoAgentServer.Behavior: ExpressibleByArgument {}
extension ConfirmerMode: ExpressibleByArgument {}
extension LogFormat: ExpressibleByArgument {}
extension ReconnectPolicy.GapSound: ExpressibleByArgument {}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the bridge.",
        discussion: """
            Every option also reads the environment variable shown. With no OPENAI_API_KEY and the default \
            --realtime-url, calls are answered by the embedded echo agent, which plays each caller utterance back.
            """
    )

    @Option(help: "Address to listen on. (env: CALLBRIDGE_HOST, default: 0.0.0.0)")
    var host: String?

    @Option(help: "Port to listen on. (env: CALLBRIDGE_PORT, default: 8080)")
    var port: Int?

    @Option(help: "Public https base URL Twilio reaches; the wss://…/twilio/media Stream URL is derived from it. (env: CALLBRIDGE_PUBLIC_URL, default: http://localhost:<port>)")
    var publicURL: String?

    @Option(help: "Realtime WebSocket URL. (env: CALLBRIDGE_REALTIME_URL, default: \(AppConfiguration.defaultRealtimeURL))")
    var realtimeURL: String?

    @Option(help: "How the API key (env: OPENAI_API_KEY) is sent: bearer or api-key (Azure). (env: CALLBRIDGE_REALTIME_AUTH, default: bearer)")
    var realtimeAuth: RealtimeAuth?

    @Option(help: "Realtime protocol shape: ga or beta. (env: CALLBRIDGE_DIALECT, default: ga)")
    var dialect: RealtimeDialect?

    @Option(help: "PEM file of a CA to trust in addition to the system roots. (env: CALLBRIDGE_REALTIME_CA_FILE)")
    var realtimeCAFile: String?

    @Option(help: "Who answers: auto, echo or remote. (env: CALLBRIDGE_AGENT, default: auto)")
    var agent: AgentMode?

    @Option(help: "Model instructions. (env: CALLBRIDGE_INSTRUCTIONS, default: a short phone-agent prompt)")
    var instructions: String?

    @Option(help: "Model voice. (env: CALLBRIDGE_VOICE, default: marin with --dialect ga, alloy with beta)")
    var voice: String?

    @Option(help: "Server VAD threshold, 0…1. (env: CALLBRIDGE_VAD_THRESHOLD, default: 0.5)")
    var vadThreshold: Double?

    @Option(help: "Server VAD prefix padding in ms. (env: CALLBRIDGE_VAD_PREFIX_PADDING_MS, default: 300)")
    var vadPrefixPaddingMs: Int?

    @Option(help: "Server VAD silence duration in ms. (env: CALLBRIDGE_VAD_SILENCE_DURATION_MS, default: 500)")
    var vadSilenceDurationMs: Int?

    @Option(help: "Server VAD interrupt_response. (env: CALLBRIDGE_VAD_INTERRUPT_RESPONSE, default: false with --barge-in local, true with server)")
    var vadInterruptResponse: Bool?

    @Option(help: "Frames sent ahead of their 20 ms deadline. (env: CALLBRIDGE_TX_LEAD_FRAMES, default: 2)")
    var txLeadFrames: Int?

    @Option(help: "Event-loop threads for the calls: each carries its calls' two legs and one pacing ticker. (env: CALLBRIDGE_THREADS, default: one per core)")
    var threads: Int?

    @Option(help: "Run the event loops (the calls and their pacing) in real-time scheduling, SCHED_RR at this priority, 1…99; 0: off. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO this high (systemd LimitRTPRIO=); refused, the bridge warns and runs at normal priority (callbridge_realtime_priority 0). (env: CALLBRIDGE_REALTIME_PRIORITY, default: 0)")
    var realtimePriority: Int?

    /// Sizes NIO's shared event-loop group, before anything starts it.
    func applyThreads() throws {
        guard self.threads != nil || environment("CALLBRIDGE_THREADS") != nil else { return }
        let count = try resolve(self.threads, "CALLBRIDGE_THREADS", { Int($0) }, default: 0)
        guard (1...256).contains(count) else {
            throw ValidationError("CALLBRIDGE_THREADS (--threads) must be 1…256, not \(count)")
        }
        BridgeServer.useEventLoopThreads(count)
    }

    @Option(help: "Caller audio per input_audio_buffer.append, ms, in whole 20 ms frames (20…200): 20 forwards each Twilio message at once; 40 halves the Realtime leg's messages for up to 20 ms more before the service hears the caller. (env: CALLBRIDGE_INPUT_APPEND_MS, default: 40)")
    var inputAppendMs: Int?

    @Option(help: "Silence the bridge put in place of echo (while the AI speaks and the caller does not) per input_audio_buffer.append, ms, in whole 20 ms frames (at least --input-append-ms, at most 1000): it tells the service nothing, so it need not go out every 40 ms; the caller's own audio sends it at once. (env: CALLBRIDGE_SILENCE_APPEND_MS, default: 200)")
    var silenceAppendMs: Int?

    @Option(help: "Caller audio per input_audio_buffer.append while the local VAD hears the caller speak, ms, in whole 20 ms frames (at least --input-append-ms, at most 400): the onset and the end of the speech still go out at once, so the service's end-of-turn silence reaches it as soon as before; only its view of speech under way lags, by up to this. (env: CALLBRIDGE_SPEECH_APPEND_MS, default: 100)")
    var speechAppendMs: Int?

    @Option(help: "Caller audio per input_audio_buffer.append outside the caller's turns (neither VAD hears them, and since their last turn ended a reply has started or 3 s have passed), ms, in whole 20 ms frames (at least --input-append-ms, at most 1000): an onset the local VAD hears sends what was gathered at once, and a turn's end-of-silence goes out in --input-append-ms appends; only speech the local VAD misses reaches the service later, by up to this. (env: CALLBRIDGE_QUIET_APPEND_MS, default: 200)")
    var quietAppendMs: Int?

    /// The four append lengths, from the flags or the environment, each checked.
    func appendDurations() throws -> (input: Duration, silence: Duration, speech: Duration, quiet: Duration) {
        (
            input: try wholeFrames(self.inputAppendMs, "CALLBRIDGE_INPUT_APPEND_MS", flag: "--input-append-ms", default: 40, max: 200),
            silence: try wholeFrames(self.silenceAppendMs, "CALLBRIDGE_SILENCE_APPEND_MS", flag: "--silence-append-ms", default: 200, max: 1000),
            speech: try wholeFrames(self.speechAppendMs, "CALLBRIDGE_SPEECH_APPEND_MS", flag: "--speech-append-ms", default: 100, max: 400),
            quiet: try wholeFrames(self.quietAppendMs, "CALLBRIDGE_QUIET_APPEND_MS", flag: "--quiet-append-ms", default: 200, max: 1000)
        )
    }

    @Option(help: "One Twilio mark per this many 20 ms frames (1…5; always after a reply's last frame and before a clear): Twilio's echo of a mark confirms every frame before it, so 2 knows the played position to 40 ms for half the mark messages each way. (env: CALLBRIDGE_MARK_EVERY_FRAMES, default: 2)")
    var markEveryFrames: Int?

    func markEvery() throws -> Int {
        let frames = try resolve(self.markEveryFrames, "CALLBRIDGE_MARK_EVERY_FRAMES", { Int($0) }, default: 2)
        guard (1...5).contains(frames) else {
            throw ValidationError("CALLBRIDGE_MARK_EVERY_FRAMES (--mark-every-frames) must be 1…5, not \(frames)")
        }
        return frames
    }

    @Option(help: "Barge-in confirmer: silero (neural VAD, run only when the energy stage pauses the AI) or energy. (env: CALLBRIDGE_VAD, default: silero)")
    var vad: ConfirmerMode?

    @Option(help: "Silero speech probability that confirms a barge-in, 0…1. (env: CALLBRIDGE_SILERO_THRESHOLD, default: 0.5)")
    var sileroThreshold: Float?

    @Option(help: "Embedded echo agent only: report speech this late, like a slow service VAD, ms. (env: CALLBRIDGE_ECHO_AGENT_VAD_DELAY_MS, default: 0)")
    var echoAgentVadDelayMs: Int?

    @OptionGroup(title: "Barge-in") var bargeIn: BargeInOptions
    @OptionGroup(title: "Watchdogs") var watchdog: WatchdogOptions

    @Option(help: "File the per-call JSON lines are appended to. (env: CALLBRIDGE_CALL_LOG, default: standard output)")
    var callLog: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical. (env: CALLBRIDGE_LOG_LEVEL, default: info)")
    var logLevel: String?

    @Option(help: "json (one object per line) or text. (env: CALLBRIDGE_LOG_FORMAT, default: text on a terminal, json otherwise)")
    var logFormat: LogFormat?

    @Flag(help: "Do not check Twilio's request signatures or the per-call tokens: anyone who reaches the port can open calls. Local testing only; the default without TWILIO_AUTH_TOKEN when the embedded echo agent answers. (env: CALLBRIDGE_INSECURE_NO_SIGNATURE=1)")
    var insecureNoSignature = false

    @Option(help: "Seconds the per-call token in the TwiML stays valid. (env: CALLBRIDGE_CALL_TOKEN_LIFETIME, default: 300)")
    var callTokenLifetime: Int?

    @Option(help: "Seconds a media stream may take to send start before it is closed. (env: CALLBRIDGE_START_TIMEOUT, default: 10)")
    var startTimeout: Int?

    @Option(help: "Calls are ended cleanly after this many seconds. (env: CALLBRIDGE_MAX_CALL_DURATION, default: 14400)")
    var maxCallDuration: Int?

    @Option(help: "Reconnect attempts in a row after the Realtime leg drops mid-call (backoff 0.2 s doubling to 3 s); 0 turns reconnects off. (env: CALLBRIDGE_RECONNECT_ATTEMPTS, default: 5)")
    var reconnectAttempts: Int?

    @Option(help: "What the caller hears while the Realtime leg reconnects: silence or tone (two soft beeps). (env: CALLBRIDGE_RECONNECT_GAP_SOUND, default: silence)")
    var reconnectGapSound: ReconnectPolicy.GapSound?

    @Option(help: "Replace the model session after this many minutes, between turns, replaying the conversation (providers cap sessions at 60 min); 0: never. (env: CALLBRIDGE_SESSION_RECYCLE_MINUTES, default: 55)")
    var sessionRecycleMinutes: Int?

    func sessionRecycleAfter() throws -> Duration? {
        let minutes = try resolve(self.sessionRecycleMinutes, "CALLBRIDGE_SESSION_RECYCLE_MINUTES", { Int($0) }, default: 55)
        return minutes > 0 ? .seconds(minutes * 60) : nil
    }

    func reconnectPolicy() throws -> ReconnectPolicy? {
        let attempts = try resolve(self.reconnectAttempts, "CALLBRIDGE_RECONNECT_ATTEMPTS", { Int($0) }, default: 5)
        guard attempts > 0 else { return nil }
        let sound = try resolve(self.reconnectGapSound, "CALLBRIDGE_RECONNECT_GAP_SOUND", { ReconnectPolicy.GapSound(rawValue: $0) }, default: .silence)
        return ReconnectPolicy(maxAttempts: attempts, gapSound: sound)
    }

    @Option(help: "What the caller hears when the model's service fails for good, before the call ends: a raw 8 kHz μ-law file or a WAV, or none. (env: CALLBRIDGE_FALLBACK_PROMPT, default: a bundled spoken apology)")
    var fallbackPrompt: String?

    @Option(help: "Concurrent calls admitted; more are rejected and /readyz answers 503. (env: CALLBRIDGE_MAX_CALLS, default: unlimited)")
    var maxCalls: Int?

    @Option(help: "Seconds a drain (SIGTERM/SIGINT) lets active calls finish before ending them; a second signal ends it at once. (env: CALLBRIDGE_DRAIN_TIMEOUT, default: 300)")
    var drainTimeout: Int?

    func makeConfiguration() throws -> AppConfiguration {
        let port = try resolve(self.port, "CALLBRIDGE_PORT", { Int($0) }, default: 8080)
        let bargeIn = try self.bargeIn.configuration()
        let turnDetection = TurnDetectionSettings(
            threshold: try resolve(self.vadThreshold, "CALLBRIDGE_VAD_THRESHOLD", { Double($0) }, default: 0.5),
            prefixPaddingMs: try resolve(self.vadPrefixPaddingMs, "CALLBRIDGE_VAD_PREFIX_PADDING_MS", { Int($0) }, default: 300),
            silenceDurationMs: try resolve(self.vadSilenceDurationMs, "CALLBRIDGE_VAD_SILENCE_DURATION_MS", { Int($0) }, default: 500),
            // With local barge-in the bridge decides interruptions and cancels itself.
            interruptResponse: try resolve(
                self.vadInterruptResponse,
                "CALLBRIDGE_VAD_INTERRUPT_RESPONSE",
                { Bool($0) },
                default: !bargeIn.localEnabled
            )
        )
        let defaults = RealtimeSessionSettings()
        let appends = try self.appendDurations()
        let dialect = try resolve(self.dialect, "CALLBRIDGE_DIALECT", { RealtimeDialect(rawValue: $0) }, default: .ga)
        let session = RealtimeSessionSettings(
            instructions: try resolve(self.instructions, "CALLBRIDGE_INSTRUCTIONS", { $0 }, default: defaults.instructions),
            voice: try resolve(self.voice, "CALLBRIDGE_VOICE", { $0 }, default: RealtimeSessionSettings.defaultVoice(for: dialect)),
            turnDetection: turnDetection
        )
        let pacer = TxPacer.Configuration(
            leadFrames: try resolve(self.txLeadFrames, "CALLBRIDGE_TX_LEAD_FRAMES", { Int($0) }, default: 2)
        )
        return AppConfiguration(
            host: try resolve(self.host, "CALLBRIDGE_HOST", { $0 }, default: "0.0.0.0"),
            port: port,
            publicURL: self.publicURL ?? environment("CALLBRIDGE_PUBLIC_URL"),
            realtimeURL: try resolve(self.realtimeURL, "CALLBRIDGE_REALTIME_URL", { $0 }, default: AppConfiguration.defaultRealtimeURL),
            apiKey: environment("OPENAI_API_KEY"),
            realtimeAuth: try resolve(self.realtimeAuth, "CALLBRIDGE_REALTIME_AUTH", { RealtimeAuth(rawValue: $0) }, default: .bearer),
            dialect: dialect,
            realtimeCAFile: self.realtimeCAFile ?? environment("CALLBRIDGE_REALTIME_CA_FILE"),
            agent: try resolve(self.agent, "CALLBRIDGE_AGENT", { AgentMode(rawValue: $0) }, default: .auto),
            call: CallConfiguration(
                pacer: pacer,
                inputAppendDuration: appends.input,
                silenceAppendDuration: appends.silence,
                speechAppendDuration: appends.speech,
                quietAppendDuration: appends.quiet,
                markEveryFrames: try self.markEvery(),
                session: session,
                bargeIn: bargeIn,
                watchdog: try self.watchdog.configuration(),
                reconnect: try self.reconnectPolicy(),
                sessionRecycleAfter: try self.sessionRecycleAfter()
            ),
            callLogPath: self.callLog ?? environment("CALLBRIDGE_CALL_LOG"),
            echoAgent: EchoAgent.Configuration(
                vadDelay: try milliseconds(self.echoAgentVadDelayMs, "CALLBRIDGE_ECHO_AGENT_VAD_DELAY_MS", default: 0)
            ),
            confirmer: try resolve(self.vad, "CALLBRIDGE_VAD", { ConfirmerMode(rawValue: $0) }, default: .silero),
            sileroThreshold: try resolve(self.sileroThreshold, "CALLBRIDGE_SILERO_THRESHOLD", { Float($0) }, default: 0.5),
            maxCalls: try self.maxCalls ?? environment("CALLBRIDGE_MAX_CALLS").map { raw in
                guard let limit = Int(raw) else {
                    throw ValidationError("environment variable CALLBRIDGE_MAX_CALLS has an invalid value '\(raw)'")
                }
                return limit
            },
            drainTimeout: .seconds(try resolve(self.drainTimeout, "CALLBRIDGE_DRAIN_TIMEOUT", { Int($0) }, default: 300)),
            twilioAuthToken: environment("TWILIO_AUTH_TOKEN"),
            callTokenLifetime: .seconds(try resolve(self.callTokenLifetime, "CALLBRIDGE_CALL_TOKEN_LIFETIME", { Int($0) }, default: 300)),
            startTimeout: .seconds(try resolve(self.startTimeout, "CALLBRIDGE_START_TIMEOUT", { Int($0) }, default: 10)),
            maxCallDuration: .seconds(try resolve(self.maxCallDuration, "CALLBRIDGE_MAX_CALL_DURATION", { Int($0) }, default: 4 * 3600)),
            fallbackPrompt: self.fallbackPrompt ?? environment("CALLBRIDGE_FALLBACK_PROMPT"),
            realtimePriority: try resolveRealtimePriority(self.realtimePriority, "CALLBRIDGE_REALTIME_PRIORITY", flag: "--realtime-priority")
        )
    }

    /// Signatures are checked unless switched off, or unless there is no token and the embedded echo agent answers
    /// (so `make run` works on a fresh clone).
    func insecure(for configuration: AppConfiguration) throws -> Bool {
        if self.insecureNoSignature { return true }
        if try resolve(nil, "CALLBRIDGE_INSECURE_NO_SIGNATURE", { ["1", "true", "yes"].contains($0.lowercased()) ? true : ["0", "false", "no"].contains($0.lowercased()) ? false : nil }, default: false) {
            return true
        }
        return configuration.twilioAuthToken == nil && configuration.usesEchoAgent
    }

    func run() async throws {
        try self.applyThreads()
        let logger = try makeLogger(
            label: "callbridge",
            level: try resolve(self.logLevel, "CALLBRIDGE_LOG_LEVEL", { $0 }, default: "info"),
            format: try resolve(self.logFormat, "CALLBRIDGE_LOG_FORMAT", { LogFormat(rawValue: $0) }, default: LogFormat.automatic)
        )
        var settings = try self.makeConfiguration()
        settings.insecureNoSignature = try self.insecure(for: settings)
        let configuration = settings
        do {
            try configuration.validate()
        } catch {
            throw ValidationError(error.description)
        }
        if configuration.usesEchoAgent {
            logger.notice(
                "embedded echo agent answers calls",
                metadata: ["reason": .string(configuration.agent == .echo ? "--agent echo" : "no OPENAI_API_KEY and the default --realtime-url")]
            )
        } else {
            logger.notice("realtime service", metadata: ["realtime.url": .string(configuration.realtimeURL), "dialect": .string(configuration.dialect.rawValue)])
        }
        if configuration.publicURL == nil {
            logger.notice("no --public-url: the TwiML Stream URL points at localhost, which Twilio cannot reach", metadata: ["stream.url": .string(configuration.streamURL)])
        }
        let callLog = try CallLog(path: configuration.callLogPath)
        let server = BridgeServer(configuration: configuration, logger: logger, callLog: callLog)
        try await server.run { ready in
            var metadata: Logger.Metadata = [
                "port": .stringConvertible(ready.port),
                "twilio.voice": .string("POST http://\(configuration.host):\(ready.port)/twilio/voice"),
                "twilio.media": .string("ws://\(configuration.host):\(ready.port)/twilio/media"),
            ]
            if let agent = ready.echoAgentURL { metadata["echo_agent.url"] = .string(agent) }
            logger.notice("callbridge listening", metadata: metadata)
        }
    }
}

struct Drain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a running bridge's graceful drain (for a Kubernetes preStop hook or a deploy script).",
        discussion: """
            Sends SIGTERM to the bridge process: it stops admitting calls (/readyz answers 503, the voice webhook \
            answers <Reject/>), lets active calls finish up to its --drain-timeout, then exits 0. With --wait, \
            returns only when that process has exited, so the hook holds the pod until its calls are done.
            """
    )

    @Option(help: "Process id of the bridge (in a container it is 1).")
    var pid: Int32 = 1

    @Flag(help: "Wait until the process has exited.")
    var wait = false

    @Option(help: "With --wait, give up after this many seconds (exit 1).")
    var timeout: Int = 3600

    func run() async throws {
        guard kill(self.pid, SIGTERM) == 0 else {
            throw ValidationError("cannot signal process \(self.pid): \(String(cString: strerror(errno)))")
        }
        guard self.wait else { return }
        let deadline = ContinuousClock.now.advanced(by: .seconds(self.timeout))
        // kill(pid, 0) fails with ESRCH once the process is gone.
        while kill(self.pid, 0) == 0 || errno == EPERM {
            if ContinuousClock.now >= deadline {
                FileHandle.standardError.write(Data("callbridge drain: process \(self.pid) still running after \(self.timeout) s\n".utf8))
                throw ExitCode(1)
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

struct Dial: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call a bridge the way Twilio does, without a phone.",
        discussion: """
            Streams FILE.wav (any common rate and sample width, converted to 8 kHz μ-law) as real-time 20 ms media \
            messages, plays back what the bridge sends at 8000 bytes/s with Twilio's mark and clear semantics, \
            and prints time to first audio, frame sizes, pacing jitter and barge-in figures.
            """
    )

    @Argument(help: "The bridge's media stream URL, e.g. ws://127.0.0.1:8080/twilio/media.")
    var url: String

    @Option(help: "Caller audio (WAV).")
    var audio: String

    @Option(help: "Write what the caller hears to this WAV file (8 kHz, 16-bit).")
    var record: String?

    @Option(help: "Seconds into the call at which the caller talks over the AI (plays --barge-in-audio, or the same file again).")
    var bargeInAt: Double?

    @Option(help: "Audio for the barge-in (WAV); default: the --audio file.")
    var bargeInAudio: String?

    @Option(help: "Call length in seconds (default: the audio's length plus 8 s, plus the barge-in audio).")
    var duration: Double?

    @Option(help: "PEM CA file to trust for wss:// URLs, in addition to the system roots.")
    var caFile: String?

    @Option(help: "Echo path: feed what the caller hears back into what they send, this many dB quieter.")
    var echoLossDb: Double?

    @Option(help: "Echo path delay in ms (with --echo-loss-db; default 120).")
    var echoDelayMs: Int?

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    @Option(help: "Log level for the simulator's own logs (standard error).")
    var logLevel: String = "warning"

    func validate() throws {
        for (name, value) in [("--barge-in-at", self.bargeInAt), ("--duration", self.duration)] {
            if let value, !(value.isFinite && value >= 0 && value < 24 * 3600) {
                throw ValidationError("\(name) must be a number of seconds between 0 and 86400")
            }
        }
    }

    func run() async throws {
        let logger = try makeLogger(label: "callbridge.dial", level: self.logLevel)
        let caller = try loadTelephoneAudio(self.audio)
        let barge = try self.bargeInAudio.map { try loadTelephoneAudio($0) }
        let callerSeconds = Double(caller.count) / 8000
        var seconds = self.duration ?? (callerSeconds + 8)
        if self.duration == nil, let at = self.bargeInAt {
            seconds = max(seconds, at + Double((barge ?? caller).count) / 8000 + 4)
        }
        let options = DialClient.Options(
            url: self.url,
            callerAudio: caller,
            bargeInAt: self.bargeInAt.map { .milliseconds(Int($0 * 1000)) },
            bargeInAudio: barge,
            duration: .milliseconds(Int(seconds * 1000)),
            caFile: self.caFile,
            echo: self.echoLossDb.map { DialClient.EchoPath(lossDB: $0, delay: .milliseconds(max(0, self.echoDelayMs ?? 120))) }
        )
        let result: DialClient.Result
        do {
            result = try await DialClient(options: options, logger: logger).run()
        } catch {
            throw CallBridgeError(.dialFailed, "could not call \(self.url): \(error)")
        }
        if let record = self.record {
            let pcm = result.heard.map { MuLaw.decode($0) }
            try Data(WAV.encode(samples: pcm, sampleRate: 8000)).write(to: URL(fileURLWithPath: record))
        }
        print(self.json ? reportJSON(result.report) : result.report.text)
    }
}

func loadTelephoneAudio(_ path: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ValidationError("cannot read audio file '\(path)'")
    }
    do {
        let wav = try WAV.decode(Array(data))
        return MuLaw.encode(Resampler.resample(wav.samples, from: wav.sampleRate, to: 8000))
    } catch {
        throw ValidationError("\(path): \(error.description)")
    }
}

func reportJSON(_ r: DialReport) -> String {
    func num(_ v: Double?) -> String { v.map { String($0) } ?? "null" }
    let sizes = r.frameSizes.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
    return "{\"media_messages\":\(r.mediaMessages),\"frame_sizes\":{\(sizes)},"
        + "\"first_audio_after_speech_ms\":\(num(r.firstAudioAfterSpeechMs)),\"jitter_p50_ms\":\(num(r.jitterP50Ms)),"
        + "\"jitter_p95_ms\":\(num(r.jitterP95Ms)),\"jitter_max_ms\":\(num(r.jitterMaxMs)),"
        + "\"intervals_measured\":\(r.intervalsMeasured),\"clears\":\(r.clears),"
        + "\"barge_in_to_clear_ms\":\(num(r.bargeInToClearMs)),\"heard_after_barge_in_ms\":\(num(r.heardAfterBargeInMs)),"
        + "\"marks_received\":\(r.marksReceived),\"marks_echoed\":\(r.marksEchoed)}"
}

struct EchoAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-agent",
        abstract: "Run the echo agent alone, as a Realtime-protocol server (for trying remote mode, TLS or auth)."
    )

    @OptionGroup var listen: DoubleListenOptions

    @Option(help: "echo (play each utterance back) or unresponsive (a hung service, for timeout tests).")
    var behavior: EchoAgentServer.Behavior = .echo

    @Option(help: "Report speech this late, like a slow service VAD (ms of audio).")
    var vadDelayMs: Int = 0

    @Option(help: "Log level.")
    var logLevel: String = "info"

    func run() async throws {
        let logger = try makeLogger(label: "callbridge.echo-agent", level: self.logLevel)
        let tls = try self.listen.tlsConfiguration()
        let port = self.listen.port ?? 8090
        let scheme = tls == nil ? "ws" : "wss"
        let server = EchoAgentServer(
            host: self.listen.host,
            port: port,
            tlsConfiguration: tls,
            agent: EchoAgent.Configuration(vadDelay: .milliseconds(max(0, self.vadDelayMs))),
            expectedAPIKey: self.listen.apiKey,
            behavior: self.behavior,
            logger: logger
        )
        let app = try server.makeApplication { port in
            logger.notice("echo agent listening", metadata: ["realtime.url": .string("\(scheme)://\(self.listen.host):\(port)/v1/realtime")])
        }
        try await app.runService()
    }
}

/// Where a Realtime test double (`echo-agent`, `load-agent`) listens, with what TLS, and which key it wants.
struct DoubleListenOptions: ParsableArguments {
    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port; default: 8090 for echo-agent, 8091 for load-agent).")
    var port: Int?

    @Option(help: "PEM certificate chain to serve TLS (wss://) with.")
    var tlsCert: String?

    @Option(help: "PEM private key for --tls-cert.")
    var tlsKey: String?

    @Option(help: "Require this API key (Authorization: Bearer or api-key header).")
    var apiKey: String?

    /// nil: plain ws://.
    func tlsConfiguration() throws -> TLSConfiguration? {
        switch (self.tlsCert, self.tlsKey) {
        case (let cert?, let key?):
            return TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            )
        case (nil, nil):
            return nil
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
    }
}

/// Where barge-in is decided.
enum BargeInMode: String, ExpressibleByArgument, CaseIterable {
    /// Local VAD, echo guard and gates in the bridge (the service's VAD still commits and is deduplicated).
    case local
    /// Only the service's `speech_started`.
    case server
}

/// Milliseconds from an option, then its environment variable, then the default.
func milliseconds(_ value: Int?, _ variable: String, default fallback: Int) throws -> Duration {
    let ms = try resolve(value, variable, { Int($0) }, default: fallback)
    guard ms >= 0 else { throw ValidationError("\(variable) must not be negative") }
    return .milliseconds(ms)
}

struct BargeInOptions: ParsableArguments {
    @Option(help: "local or server. (env: CALLBRIDGE_BARGE_IN, default: local)")
    var bargeIn: BargeInMode?

    @Option(help: "Energy VAD sensitivity, 0…1: threshold = noise floor + (1 − sensitivity) × 20 dB. (env: CALLBRIDGE_VAD_SENSITIVITY, default: 0.6)")
    var vadSensitivity: Double?

    @Option(help: "Noise-floor averaging window in ms. (env: CALLBRIDGE_VAD_FLOOR_WINDOW_MS, default: 2000)")
    var vadFloorWindowMs: Int?

    @Option(help: "Absolute VAD threshold in dBFS. (env: CALLBRIDGE_VAD_MIN_DBFS, default: -40)")
    var vadMinDbfs: Double?

    @Option(help: "Voiced 20 ms frames in a row before speech starts. (env: CALLBRIDGE_VAD_START_FRAMES, default: 2)")
    var vadStartFrames: Int?

    @Option(help: "Silence before speech ends, ms. (env: CALLBRIDGE_VAD_HANGOVER_MS, default: 300)")
    var vadHangoverMs: Int?

    @Option(help: "Longest echo path considered, ms. (env: CALLBRIDGE_ECHO_MAX_DELAY_MS, default: 400)")
    var echoMaxDelayMs: Int?

    @Option(help: "Echo return loss assumed until learned, dB (Geigel). (env: CALLBRIDGE_ECHO_MIN_LOSS_DB, default: 6)")
    var echoMinLossDb: Double?

    @Option(help: "With a learned echo path, how far above the expected echo the caller must be, dB. (env: CALLBRIDGE_ECHO_MARGIN_DB, default: 6)")
    var echoMarginDb: Double?

    @Option(help: "Turn on the extra time gate: caller energy soon after audible AI audio counts as echo. (env: CALLBRIDGE_ECHO_AGE_GATE, default: false)")
    var echoAgeGate: Bool?

    @Option(help: "The time gate's window, ms. (env: CALLBRIDGE_ECHO_AGE_GATE_MS, default: 150)")
    var echoAgeGateMs: Int?

    @Option(help: "Echo-only frames before a learned echo path is trusted. (env: CALLBRIDGE_ECHO_ESTIMATION_FRAMES, default: 50)")
    var echoEstimationFrames: Int?

    @Option(help: "Lowest inbound/outbound level correlation that counts as an echo path. (env: CALLBRIDGE_ECHO_MIN_CORRELATION, default: 0.6)")
    var echoMinCorrelation: Double?

    @Option(help: "AI audio quieter than this cannot echo, dBFS. (env: CALLBRIDGE_ECHO_FAR_END_SILENCE_DBFS, default: -50)")
    var echoFarEndSilenceDbfs: Double?

    @Option(help: "Most loss the relaxed rule may assume on a line with little echo, dB. (env: CALLBRIDGE_ECHO_MAX_ASSUMED_LOSS_DB, default: 30)")
    var echoMaxAssumedLossDb: Double?

    @Option(help: "Noise floor at the start of a call, lowest, dBFS. (env: CALLBRIDGE_VAD_INITIAL_FLOOR_DBFS, default: -60)")
    var vadInitialFloorDbfs: Double?

    @Option(help: "Noise floor at the start of a call, highest, dBFS. (env: CALLBRIDGE_VAD_MAX_INITIAL_FLOOR_DBFS, default: -35)")
    var vadMaxInitialFloorDbfs: Double?

    @Option(help: "Continuous speech longer than this re-anchors the noise floor, ms. (env: CALLBRIDGE_VAD_MAX_SPEECH_MS, default: 15000)")
    var vadMaxSpeechMs: Int?

    @Option(help: "A tentative pause is decided by then, ms. (env: CALLBRIDGE_MAX_PAUSE_MS, default: 1000)")
    var maxPauseMs: Int?

    @Option(help: "After a local barge-in the service never heard, ask it to go on after this, ms; 0 is off. (env: CALLBRIDGE_FALSE_TRIGGER_MS, default: 1500)")
    var falseTriggerMs: Int?

    @Option(help: "Send the service silence while only the AI's echo is on the line. (env: CALLBRIDGE_ECHO_SILENCE, default: true)")
    var echoSilence: Bool?

    @Option(help: "Caller audio re-sent when speech is detected during echo silencing, ms. (env: CALLBRIDGE_PRE_ROLL_MS, default: 300)")
    var preRollMs: Int?

    @Option(help: "Playout grace after the last confirmed frame, ms. (env: CALLBRIDGE_PLAYOUT_GRACE_MS, default: 250)")
    var playoutGraceMs: Int?

    @Option(help: "No new barge-in within this long of the last, ms. (env: CALLBRIDGE_INTERRUPT_LOCK_MS, default: 700)")
    var interruptLockMs: Int?

    @Option(help: "Speech needed to commit a barge-in, ms from onset. (env: CALLBRIDGE_MIN_SPEECH_MS, default: 150)")
    var minSpeechMs: Int?

    @Option(help: "Uninterruptible greeting at the start of the call, ms; 0 is off. (env: CALLBRIDGE_GREETING_WINDOW_MS, default: 0)")
    var greetingWindowMs: Int?

    @Option(help: "After a false alarm, no new pause for this long, ms. (env: CALLBRIDGE_RECOVERY_DELAY_MS, default: 500)")
    var recoveryDelayMs: Int?

    @Option(help: "Pending-cancel lock failsafe, ms. (env: CALLBRIDGE_CANCEL_TIMEOUT_MS, default: 3000)")
    var cancelTimeoutMs: Int?

    func configuration() throws -> BargeInConfiguration {
        let d = BargeInConfiguration()
        let mode = try resolve(self.bargeIn, "CALLBRIDGE_BARGE_IN", { BargeInMode(rawValue: $0) }, default: .local)
        let sensitivity = try resolve(self.vadSensitivity, "CALLBRIDGE_VAD_SENSITIVITY", { Double($0) }, default: d.vad.sensitivity)
        guard (0...1).contains(sensitivity) else { throw ValidationError("--vad-sensitivity must be between 0 and 1") }
        let vad = EnergyVAD.Configuration(
            noiseFloorWindow: try milliseconds(self.vadFloorWindowMs, "CALLBRIDGE_VAD_FLOOR_WINDOW_MS", default: 2000),
            sensitivity: sensitivity,
            absoluteThresholdDBFS: try resolve(self.vadMinDbfs, "CALLBRIDGE_VAD_MIN_DBFS", { Double($0) }, default: d.vad.absoluteThresholdDBFS),
            startFrames: try resolve(self.vadStartFrames, "CALLBRIDGE_VAD_START_FRAMES", { Int($0) }, default: d.vad.startFrames),
            hangover: try milliseconds(self.vadHangoverMs, "CALLBRIDGE_VAD_HANGOVER_MS", default: 300),
            initialNoiseFloorDBFS: try resolve(self.vadInitialFloorDbfs, "CALLBRIDGE_VAD_INITIAL_FLOOR_DBFS", { Double($0) }, default: d.vad.initialNoiseFloorDBFS),
            maxInitialNoiseFloorDBFS: try resolve(self.vadMaxInitialFloorDbfs, "CALLBRIDGE_VAD_MAX_INITIAL_FLOOR_DBFS", { Double($0) }, default: d.vad.maxInitialNoiseFloorDBFS),
            maxSpeechDuration: try milliseconds(self.vadMaxSpeechMs, "CALLBRIDGE_VAD_MAX_SPEECH_MS", default: 15000)
        )
        let echo = EchoGuard.Configuration(
            maxEchoDelay: try milliseconds(self.echoMaxDelayMs, "CALLBRIDGE_ECHO_MAX_DELAY_MS", default: 400),
            minEchoReturnLossDB: try resolve(self.echoMinLossDb, "CALLBRIDGE_ECHO_MIN_LOSS_DB", { Double($0) }, default: d.echo.minEchoReturnLossDB),
            doubleTalkMarginDB: try resolve(self.echoMarginDb, "CALLBRIDGE_ECHO_MARGIN_DB", { Double($0) }, default: d.echo.doubleTalkMarginDB),
            estimationFrames: try resolve(self.echoEstimationFrames, "CALLBRIDGE_ECHO_ESTIMATION_FRAMES", { Int($0) }, default: d.echo.estimationFrames),
            minCorrelation: try resolve(self.echoMinCorrelation, "CALLBRIDGE_ECHO_MIN_CORRELATION", { Double($0) }, default: d.echo.minCorrelation),
            farEndSilenceDBFS: try resolve(self.echoFarEndSilenceDbfs, "CALLBRIDGE_ECHO_FAR_END_SILENCE_DBFS", { Double($0) }, default: d.echo.farEndSilenceDBFS),
            maxAssumedLossDB: try resolve(self.echoMaxAssumedLossDb, "CALLBRIDGE_ECHO_MAX_ASSUMED_LOSS_DB", { Double($0) }, default: d.echo.maxAssumedLossDB)
        )
        let ageGateOn = try resolve(self.echoAgeGate, "CALLBRIDGE_ECHO_AGE_GATE", { Bool($0) }, default: false)
        let ageGate = try milliseconds(self.echoAgeGateMs, "CALLBRIDGE_ECHO_AGE_GATE_MS", default: 150)
        let echoSilence = try resolve(self.echoSilence, "CALLBRIDGE_ECHO_SILENCE", { Bool($0) }, default: true)
        return BargeInConfiguration(
            localEnabled: mode == .local,
            vad: vad,
            echo: echo,
            echoAgeGate: ageGateOn ? ageGate : nil,
            substituteEchoWithSilence: mode == .local && echoSilence,
            preRoll: try milliseconds(self.preRollMs, "CALLBRIDGE_PRE_ROLL_MS", default: 300),
            playoutGrace: try milliseconds(self.playoutGraceMs, "CALLBRIDGE_PLAYOUT_GRACE_MS", default: 250),
            interruptLock: try milliseconds(self.interruptLockMs, "CALLBRIDGE_INTERRUPT_LOCK_MS", default: 700),
            minSpeechDuration: try milliseconds(self.minSpeechMs, "CALLBRIDGE_MIN_SPEECH_MS", default: 150),
            greetingWindow: try milliseconds(self.greetingWindowMs, "CALLBRIDGE_GREETING_WINDOW_MS", default: 0),
            recoveryDelay: try milliseconds(self.recoveryDelayMs, "CALLBRIDGE_RECOVERY_DELAY_MS", default: 500),
            cancelTimeout: try milliseconds(self.cancelTimeoutMs, "CALLBRIDGE_CANCEL_TIMEOUT_MS", default: 3000),
            falseTriggerWindow: try milliseconds(self.falseTriggerMs, "CALLBRIDGE_FALSE_TRIGGER_MS", default: 1500),
            maxPause: try milliseconds(self.maxPauseMs, "CALLBRIDGE_MAX_PAUSE_MS", default: 1000)
        )
    }
}

struct WatchdogOptions: ParsableArguments {
    @Option(help: "How often the watchdogs check a call, ms. (env: CALLBRIDGE_WATCHDOG_INTERVAL_MS, default: 1000)")
    var watchdogIntervalMs: Int?

    @Option(help: "SAFETY_FUSE: reset a response whose audio is over but that never finished, after ms. (env: CALLBRIDGE_SAFETY_FUSE_MS, default: 2000)")
    var safetyFuseMs: Int?

    @Option(help: "Clear a silent or unfinished response after ms. (env: CALLBRIDGE_STUCK_RESPONSE_MS, default: 15000)")
    var stuckResponseMs: Int?

    @Option(help: "Flag no caller media / unechoed marks after ms. (env: CALLBRIDGE_STALL_WARNING_MS, default: 5000)")
    var stallWarningMs: Int?

    @Option(help: "End the call on such a stall after ms. (env: CALLBRIDGE_STALL_LIMIT_MS, default: 30000)")
    var stallLimitMs: Int?

    @Option(help: "AUDIO_DRAIN: on shutdown, wait at most this long for the last audio to play, ms. (env: CALLBRIDGE_AUDIO_DRAIN_MS, default: 5000)")
    var audioDrainMs: Int?

    func configuration() throws -> WatchdogConfiguration {
        WatchdogConfiguration(
            checkInterval: try milliseconds(self.watchdogIntervalMs, "CALLBRIDGE_WATCHDOG_INTERVAL_MS", default: 1000),
            safetyFuseAfter: try milliseconds(self.safetyFuseMs, "CALLBRIDGE_SAFETY_FUSE_MS", default: 2000),
            stuckResponseAfter: try milliseconds(self.stuckResponseMs, "CALLBRIDGE_STUCK_RESPONSE_MS", default: 15000),
            stallWarningAfter: try milliseconds(self.stallWarningMs, "CALLBRIDGE_STALL_WARNING_MS", default: 5000),
            stallLimit: try milliseconds(self.stallLimitMs, "CALLBRIDGE_STALL_LIMIT_MS", default: 30000),
            audioDrainLimit: try milliseconds(self.audioDrainMs, "CALLBRIDGE_AUDIO_DRAIN_MS", default: 5000)
        )
    }
}

/// Which detector `callbridge vad` shows.
enum Detector: String, ExpressibleByArgument, CaseIterable {
    case silero
    case energy
}

struct VadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vad",
        abstract: "Show what a voice detector sees in a recording, as CSV (for tuning barge-in).",
        discussion: """
            Silero prints one line per 32 ms window: start_ms,probability. Energy prints one line per 20 ms frame: \
            start_ms,level_dbfs,floor_dbfs,threshold_dbfs,voiced,speech. Input: a WAV file (any common rate and \
            sample width, converted to 8 kHz) or raw 8 kHz μ-law (--mulaw, or a .ulaw/.mulaw/.raw file).
            """
    )

    @Argument(help: "Recording to analyse.")
    var file: String

    @Option(help: "silero or energy.")
    var detector: Detector = .silero

    @Flag(help: "The file is raw 8 kHz μ-law.")
    var mulaw = false

    func run() throws {
        guard let data = FileManager.default.contents(atPath: self.file) else {
            throw ValidationError("cannot read '\(self.file)'")
        }
        let raw = self.mulaw || ["ulaw", "mulaw", "raw"].contains(URL(fileURLWithPath: self.file).pathExtension.lowercased())
        let pcm: [Int16]
        if raw {
            pcm = Array(data).map { MuLaw.decode($0) }
        } else {
            do {
                let wav = try WAV.decode(Array(data))
                pcm = Resampler.resample(wav.samples, from: wav.sampleRate, to: 8000)
            } catch {
                throw ValidationError("\(self.file): \(error.description)")
            }
        }
        var out = ""
        switch self.detector {
        case .silero:
            var vad = SileroVAD(model: try SileroLoader.model())
            out += "start_ms,probability\n"
            for (index, probability) in vad.process(pcm.map { Float($0) / 32768 }).enumerated() {
                out += "\(index * 32),\(probability)\n"
            }
        case .energy:
            var vad = EnergyVAD()
            out += "start_ms,level_dbfs,floor_dbfs,threshold_dbfs,voiced,speech\n"
            var frame = 0
            while (frame + 1) * 160 <= pcm.count {
                let update = vad.process(levelDBFS: Level.dBFS(pcm: pcm[(frame * 160)..<((frame + 1) * 160)]), frameStart: .milliseconds(frame * 20))
                out += "\(frame * 20),\(String(format: "%.1f", update.levelDBFS)),\(String(format: "%.1f", update.noiseFloorDBFS)),"
                    + "\(String(format: "%.1f", update.thresholdDBFS)),\(update.voiced ? 1 : 0),\(vad.isSpeaking ? 1 : 0)\n"
                frame += 1
            }
        }
        print(out, terminator: "")
    }
}

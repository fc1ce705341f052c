import Foundation
import Testing

@testable import CallBridgeCore

/// Golden call transcripts: `Fixtures/calls/*.events` are timestamped event scripts; each is replayed through the
/// call core and its actions compared with `NAME.golden`. `make fixtures-update` (UPDATE_GOLDEN=1) rewrites the
/// goldens on purpose; review the diff before committing.
///
/// Script lines (`#` starts a comment):
///   config local|server [watchdog] [greeting=MS] [agegate=MS] [ticker=MS]
///   MS connected | ready                       Realtime socket open | session.updated
///   MS caller DBFS|silence [xN]                 N caller frames (one per 20 ms from MS)
///   MS created R | item R I | delta R I DBFS xN | audio_done R I | done R STATUS
///   MS speech_started | mark NAME|allmarks | tick [xN] | stop | shutdown | wait
///   MS error CODE [EVENT_ID] | timer KIND GEN
///
/// `ticker=MS` runs the shared pacing ticker as the shell does: a tick at MS + 20 ms × k, delivered before the
/// script's events at or after that instant, and only while the call wants ticks (frames are waiting); `MS wait` lets
/// it run until MS. Without it, a script's only ticks are its `tick` lines.
@Suite struct ReplayTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/calls")

    static var scripts: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: Self.directory.path)) ?? [])
            .filter { $0.hasSuffix(".events") }.map { String($0.dropLast(".events".count)) }.sorted()
    }

    @Test func everyScriptHasAGolden() {
        #expect(Self.scripts.count >= 10)
    }

    @Test(arguments: Self.scripts)
    func replay(name: String) throws {
        let script = try String(contentsOf: Self.directory.appendingPathComponent("\(name).events"), encoding: .utf8)
        let transcript = try Replay.run(script)
        let goldenURL = Self.directory.appendingPathComponent("\(name).golden")
        if ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] == "1" {
            try transcript.write(to: goldenURL, atomically: true, encoding: .utf8)
            return
        }
        let golden = try String(contentsOf: goldenURL, encoding: .utf8)
        #expect(transcript == golden, "\(name): the transcript changed; run `make fixtures-update` if on purpose")
    }
}

enum Replay {
    struct ScriptError: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var description: String { "script line \(self.line): \(self.text)" }
    }

    static func run(_ script: String) throws -> String {
        var machine: CallStateMachine?
        var nextTick: Int?
        var out: [String] = []
        var sentMarks: [String] = []
        for (number, raw) in script.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let words = line.split(separator: " ").map(String.init)
            guard !words.isEmpty else { continue }
            if words[0] == "config" {
                machine = CallStateMachine(configuration: try Self.configuration(words.dropFirst()), now: t(0))
                nextTick = words.first { $0.hasPrefix("ticker=") }.flatMap { Int($0.dropFirst("ticker=".count)) }
                continue
            }
            guard var sm = machine, let ms = Int(words[0]), words.count >= 2 else {
                throw ScriptError(line: number + 1, text: line)
            }
            let events = try Self.events(Array(words.dropFirst()), at: ms, marks: sentMarks, line: number + 1)
            func handle(_ event: CallEvent, at: Int) {
                for action in sm.handle(event, now: t(at)) {
                    if case .sendTwilio(.mark(let name)) = action { sentMarks.append(name) }
                    out.append("\(at) \(Self.describe(action))")
                }
            }
            func runTicker(until: Int) {
                while let tick = nextTick, tick <= until {
                    if sm.wantsTicks { handle(.tick, at: tick) }
                    nextTick = tick + 20
                }
            }
            runTicker(until: ms)
            for (at, event) in events {
                runTicker(until: at)
                handle(event, at: at)
            }
            if words[1] == "mark" || words[1] == "allmarks" { sentMarks.removeAll() }
            machine = sm
        }
        if let summary = machine?.summary { out.append("summary \(summary.jsonLine)") }
        return out.joined(separator: "\n") + "\n"
    }

    static func configuration(_ words: ArraySlice<String>) throws -> CallConfiguration {
        var bargeIn = BargeInConfiguration()
        var watchdog: WatchdogConfiguration?
        for word in words {
            let parts = word.split(separator: "=").map(String.init)
            switch parts[0] {
            case "local": bargeIn.localEnabled = true
            case "server": bargeIn = .serverOnly
            case "watchdog": watchdog = .init()
            case "greeting": bargeIn.greetingWindow = .milliseconds(Int(parts[1]) ?? 0)
            case "agegate": bargeIn.echoAgeGate = .milliseconds(Int(parts[1]) ?? 0)
            case "ticker": break  // read by `run`
            default: throw ScriptError(line: 0, text: "unknown config \(word)")
            }
        }
        return CallConfiguration(bargeIn: bargeIn, watchdog: watchdog)
    }

    static func count(_ words: [String], _ index: Int) -> Int {
        guard words.count > index, words[index].hasPrefix("x") else { return 1 }
        return Int(words[index].dropFirst()) ?? 1
    }

    static func events(_ w: [String], at ms: Int, marks: [String], line: Int) throws -> [(Int, CallEvent)] {
        func arg(_ i: Int) throws -> String {
            guard w.count > i else { throw ScriptError(line: line, text: w.joined(separator: " ")) }
            return w[i]
        }
        switch w[0] {
        case "connected": return [(ms, .realtimeConnected)]
        case "ready": return [(ms, .realtimeReceived(.sessionUpdated))]
        case "caller":
            let level = try arg(1) == "silence" ? nil : Double(try arg(1))
            return (0..<Self.count(w, 2)).map { (ms + 20 * $0, .twilioReceived(.media(payload: callerPayload(level)))) }
        case "created": return [(ms, .realtimeReceived(.responseCreated(responseID: try arg(1))))]
        case "item": return [(ms, .realtimeReceived(.outputItemAdded(responseID: try arg(1), itemID: try arg(2))))]
        case "delta":
            let level = Double(try arg(3)) ?? -30
            let audio = (0..<Self.count(w, 4)).flatMap { tone(level - Double($0 % 5), frames: 1) }
            return [(ms, .realtimeReceived(.audioDelta(responseID: try arg(1), itemID: try arg(2), audio: audio)))]
        case "audio_done": return [(ms, .realtimeReceived(.audioDone(responseID: try arg(1), itemID: try arg(2))))]
        case "done": return [(ms, .realtimeReceived(.responseDone(responseID: try arg(1), status: try arg(2))))]
        case "speech_started": return [(ms, .realtimeReceived(.speechStarted(audioStartMs: nil, itemID: nil)))]
        case "mark": return [(ms, .twilioReceived(.mark(name: try arg(1))))]
        case "allmarks": return marks.map { (ms, .twilioReceived(.mark(name: $0))) }
        case "tick": return (0..<Self.count(w, 1)).map { (ms + 20 * $0, .tick) }
        case "stop": return [(ms, .twilioReceived(.stop))]
        case "shutdown": return [(ms, .shutdownRequested)]
        case "wait": return []
        case "error":
            let info = RealtimeErrorInfo(type: "invalid_request_error", code: try arg(1), message: "", eventID: w.count > 2 ? w[2] : nil)
            return [(ms, .realtimeReceived(.error(info)))]
        case "timer":
            guard let kind = TimerID.Kind(rawValue: try arg(1)), let generation = UInt64(try arg(2)) else {
                throw ScriptError(line: line, text: w.joined(separator: " "))
            }
            return [(ms, .timerFired(TimerID(kind, generation: generation)))]
        default:
            throw ScriptError(line: line, text: w.joined(separator: " "))
        }
    }

    /// One action per line, in a stable text form (audio shown by size and level, not bytes).
    static func describe(_ action: CallAction) -> String {
        switch action {
        case .sendTwilio(.media(let bytes)): "twilio.media \(bytes.count)B \(Self.level(bytes))"
        case .sendTwilio(.mark(let name)): "twilio.mark \(name)"
        case .sendTwilio(.clear): "twilio.clear"
        case .sendRealtime(.inputAudioAppend(let base64)):
            "realtime.append " + (Base64.decode(base64).map { Self.level($0) } ?? "invalid")
        case .sendRealtime(.sessionUpdate(let settings, let eventID)):
            "realtime.session.update \(eventID) interrupt_response=\(settings.turnDetection.interruptResponse)"
        case .sendRealtime(.responseCancel(let responseID, let eventID)): "realtime.response.cancel \(responseID) \(eventID)"
        case .sendRealtime(.itemTruncate(let itemID, let ms, let eventID)): "realtime.truncate \(itemID) audio_end_ms=\(ms) \(eventID)"
        case .sendRealtime(.responseCreate(let eventID)): "realtime.response.create \(eventID)"
        case .sendRealtime(.conversationItemCreate(let role, let text, let eventID)): "realtime.item.create \(role.rawValue) \(JSONText.quoted(text)) \(eventID)"
        case .logBadMessage(let kind): "log.bad_message \(kind)"
        case .logUpstreamError(let info): "log.upstream_error \(info.code ?? "-")"
        case .logWatchdog(let kind): "log.watchdog \(kind)"
        case .scheduleTimer(let id, let at): "timer \(id) at \(at.offset.wholeMilliseconds)"
        case .endCall(let reason): "end \(reason.rawValue)"
        case .connectRealtime(let attempt): "realtime.connect attempt=\(attempt)"
        case .closeRealtime: "realtime.close"
        }
    }

    static func level(_ bytes: [UInt8]) -> String {
        if bytes.allSatisfy({ $0 == MuLaw.silence }) { return "silence" }
        return "\(Int(Level.dBFS(muLaw: bytes).rounded()))dBFS"
    }
}

import CallBridge
import CallBridgeCore
import Foundation
import HummingbirdWSClient
import Logging
import Synchronization
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Operations, end to end: the call log and `/metrics` after real calls, JSON logs with the call's identity and no
/// secret in them, and the drain of a real `callbridge run` process on SIGTERM.
extension EndToEndTests {
    static func get(_ url: String) async throws -> (status: Int, body: String) {
        let (body, response) = try await URLSession.shared.data(from: URL(string: url)!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: body, as: UTF8.self))
    }

    static func postVoice(port: Int, callSid: String) async throws -> String {
        try await Self.webhook(port: port, body: "CallSid=\(callSid)&From=%2B14155550100&To=%2B15005550006", signature: nil).body
    }

    /// The value of one sample line of a Prometheus exposition (`name{labels} value`).
    static func sample(_ exposition: String, _ series: String) -> Double? {
        for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    // MARK: Call log and /metrics

    @Test func twoBargeInsShowInTheCallLogAndInMetrics() async throws {
        // The agent streams in real time, so each reply is still playing when the caller talks over it.
        try await Self.withBridge(dialect: .ga, agent: .init(speedFactor: 1)) { call in
            // 0.2–1.4 s the caller speaks; the echo plays from about 1.9 s for 1.2 s. The caller talks over it at
            // 2.3 s for 0.8 s; that reply plays from about 3.6 s, and the caller talks over it again at 3.9 s.
            let caller = Self.silence(10) + Self.speech(60) + Self.silence(45) + Self.speech(40) + Self.silence(40)
                + Self.speech(20) + Self.silence(60)
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: caller,
                duration: .milliseconds(5800),
                customParameters: ["From": "+14155550100", "To": "+15005550006"]
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            let summary = try #require(call.calls.all.first)
            #expect(summary.counters.bargeInEvents == 2)
            #expect(summary.counters.bargeInLatencies.count == 2)
            #expect(summary.counters.truncationAudioEndMs.count == 2)
            #expect(result.report.clears >= 2)
            let line = summary.jsonLine
            #expect(line.contains(#""barge_in_events":2,"#))
            #expect(line.contains(#""from":"+14155550100","to":"+15005550006","#))
            #expect(line.contains(#""ended_by":"twilio""#))
            #expect(summary.startTime?.hasSuffix("Z") == true)

            // The call's socket work is over (close handshakes done) before it leaves the active count.
            try await call.logs.wait(upTo: .seconds(10)) { $0.contains { $0.message == "call released" } }
            let (status, metrics) = try await Self.get("http://127.0.0.1:\(call.port)/metrics")
            #expect(status == 200)
            #expect(Self.sample(metrics, #"callbridge_barge_ins_total{outcome="confirmed"}"#) == 2)
            #expect(Self.sample(metrics, "callbridge_barge_in_latency_seconds_count") == 2)
            let latencySum = try #require(Self.sample(metrics, "callbridge_barge_in_latency_seconds_sum"))
            let logged = summary.counters.bargeInLatencies.map { Double($0.components.attoseconds) / 1e18 + Double($0.components.seconds) }
            #expect(abs(latencySum - logged.reduce(0, +)) < 0.001)
            #expect(Self.sample(metrics, "callbridge_tx_frames_total") == Double(summary.counters.txFrames))
            #expect(Self.sample(metrics, "callbridge_turn_latency_seconds_count") == Double(summary.counters.turnLatencies.count))
            #expect(Self.sample(metrics, "callbridge_first_audio_latency_seconds_count") == 1)
            #expect(Self.sample(metrics, #"callbridge_calls_ended_total{end_reason="twilio_stop",ended_by="twilio"}"#) == 1)
            #expect(Self.sample(metrics, "callbridge_calls_started_total") == 1)
            #expect(Self.sample(metrics, "callbridge_active_calls") == 0)
            #expect(Self.sample(metrics, "callbridge_draining") == 0)
            let audioIn = try #require(Self.sample(metrics, "callbridge_audio_in_seconds_total"))
            #expect(abs(audioIn - Double(summary.counters.audioInBytes) / 8000) < 0.01)
        }
    }

    // MARK: Logs

    /// Every line is one JSON object with level, timestamp and message; the call's lines carry its sids; the API key
    /// appears nowhere, not even when the service quotes it back in an error.
    static func checkJSONLogs(_ lines: [String], secret: String, callSid: String) throws {
        #expect(!lines.isEmpty)
        var callLines = 0
        for line in lines {
            #expect(!line.contains(secret), "a log line leaks the key: \(line)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            #expect(object["level"] is String && object["timestamp"] is String && object["message"] is String)
            #expect(line.hasSuffix("}\n"))
            if object["call_sid"] as? String == callSid {
                callLines += 1
                #expect(object["stream_sid"] is String)
            }
        }
        #expect(callLines >= 2, "call-scoped lines carry call_sid and stream_sid")
    }

    @Test func jsonLogsCarryTheCallAndNeverTheAPIKey() async throws {
        try await Self.withBridge(dialect: .ga) { call in
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: Self.silence(5) + Self.speech(25),
                duration: .milliseconds(3000)
            )
            _ = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            try await call.logs.wait(upTo: .seconds(10)) { $0.contains { $0.message == "call released" } }
            let callSid = try #require(call.calls.all.first).callSid
            try Self.checkJSONLogs(call.jsonLines.all, secret: Self.apiKey, callSid: callSid)
            let ended = try #require(call.jsonLines.all.first { $0.contains(#""message":"call ended""#) })
            #expect(ended.contains(#""call_sid":"\#(callSid)""#))
        }
    }

    @Test func anErrorQuotingTheAPIKeyIsLoggedRedacted() async throws {
        try await Self.withBridge(dialect: .ga, behavior: .rejectsSession) { call in
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: Self.speech(10),
                duration: .seconds(10)
            )
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            try await call.logs.wait(upTo: .seconds(10)) { $0.contains { $0.message == "call released" } }
            #expect(result.closedByBridge)
            let summary = try #require(call.calls.all.first)
            #expect(summary.endReason == .realtimeRejected)
            #expect(summary.counters.upstreamErrorsByCode == ["invalid_api_key": 1])
            try Self.checkJSONLogs(call.jsonLines.all, secret: Self.apiKey, callSid: summary.callSid)
            // The error itself is logged, with the key replaced.
            let error = try #require(call.jsonLines.all.first { $0.contains(#""message":"realtime error""#) })
            #expect(error.contains("Incorrect API key provided: [REDACTED]"))
            #expect(!summary.jsonLine.contains(Self.apiKey))
        }
    }

    @Test func maxCallsRefusesTheNextCallAndReadinessSaysSo() async throws {
        try await Self.withBridge(dialect: .ga, maxCalls: 1) { call in
            #expect(try await Self.get("http://127.0.0.1:\(call.port)/readyz").status == 200)
            let options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: Self.silence(5) + Self.speech(25),
                duration: .milliseconds(2500)
            )
            async let first = withTimeout(.seconds(20)) { try await DialClient(options: options, logger: Self.logger).run() }
            try await call.logs.wait(upTo: .seconds(10)) { $0.contains { $0.message == "call started" } }
            let ready = try await Self.get("http://127.0.0.1:\(call.port)/readyz")
            #expect(ready.status == 503)
            #expect(ready.body.contains(#""status":"max_calls""#))
            #expect(try await Self.postVoice(port: call.port, callSid: "CAfull").contains("<Reject"))
            #expect(try await Self.upgradeStatus(port: call.port, signature: nil) == 503)
            _ = try await first
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            try await call.logs.wait(upTo: .seconds(10)) { $0.contains { $0.message == "call released" } }
            #expect(try await Self.get("http://127.0.0.1:\(call.port)/readyz").status == 200)
            let metrics = try await Self.get("http://127.0.0.1:\(call.port)/metrics").body
            #expect(Self.sample(metrics, #"callbridge_calls_rejected_total{reason="max_calls"}"#) == 2)
            #expect(Self.sample(metrics, "callbridge_max_calls") == 1)
        }
    }
}

// MARK: Drain of a real process

/// `callbridge run` as a child process (the binary `swift build --build-tests` puts next to the test bundle), its
/// JSON log lines read from standard error as they come.
final class BridgeProcess: Sendable {
    let process: Process
    let lines = Observations<[String: String]>()
    /// The exit status, recorded by the process's termination handler.
    let exits = Observations<Int32>()
    let callLog: URL
    let port: Int

    deinit {
        // The call log is the test's to read, not to leave behind (a leak test's runs to megabytes).
        try? FileManager.default.removeItem(at: self.callLog)
    }

    /// `keepLine`: which of its JSON log lines to record (a test running thousands of calls keeps only the few it
    /// waits for). `environment`: added to the test's own, which loses every CALLBRIDGE_ variable and the API key.
    init(
        arguments: [String] = [],
        environment extra: [String: String] = [:],
        keepLine: @escaping @Sendable ([String: String]) -> Bool = { _ in true }
    ) async throws {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var binary = directory.appendingPathComponent("callbridge")
        if !FileManager.default.isExecutableFile(atPath: binary.path) {
            binary = directory.deletingLastPathComponent().appendingPathComponent("callbridge")
        }
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw CallBridgeError(.configurationInvalid, "no callbridge binary next to the tests (\(directory.path)); run `swift build --build-tests`")
        }
        self.callLog = FileManager.default.temporaryDirectory.appendingPathComponent("callbridge-drain-\(UUID()).jsonl")
        let process = Process()
        process.executableURL = binary
        process.arguments = ["run", "--host", "127.0.0.1", "--port", "0", "--call-log", self.callLog.path, "--log-format", "json"] + arguments
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CALLBRIDGE_") }
        environment["OPENAI_API_KEY"] = nil
        environment.merge(extra) { $1 }
        process.environment = environment
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        let lines = self.lines
        let pending = Mutex<[UInt8]>([])
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            guard !data.isEmpty else {
                handle.readabilityHandler = nil
                return
            }
            // Whole lines only: a read can end in the middle of one.
            let complete: [[UInt8]] = pending.withLock { buffer in
                buffer.append(contentsOf: data)
                guard let last = buffer.lastIndex(of: UInt8(ascii: "\n")) else { return [] }
                let done = Array(buffer[...last])
                buffer.removeFirst(last + 1)
                return done.split(separator: UInt8(ascii: "\n")).map(Array.init)
            }
            for line in complete {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else { continue }
                let fields = object.compactMapValues { $0 as? String }
                if fields["message"] == "callbridge listening" || keepLine(fields) { lines.record(fields) }
            }
        }
        let exits = self.exits
        process.terminationHandler = { exits.record($0.terminationStatus) }
        try process.run()
        self.process = process
        try await lines.wait(upTo: .seconds(30)) { $0.contains { $0["message"] == "callbridge listening" } }
        self.port = Int(lines.all.first { $0["message"] == "callbridge listening" }?["port"] ?? "") ?? 0
    }

    func signal(_ number: Int32 = SIGTERM) { kill(self.process.processIdentifier, number) }

    /// The process's open file descriptors (sockets included), from /proc.
    var openFiles: Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(self.process.processIdentifier)/fd"))?.count ?? 0
    }

    /// The process's resident memory (VmRSS), from /proc.
    var residentBytes: Int { self.status("VmRSS") * 1024 }

    /// The process's threads, from /proc.
    var threads: Int { self.status("Threads") }

    /// A number field of /proc/PID/status (the first number after the colon).
    func status(_ field: String) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(self.process.processIdentifier)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix(field + ":") } ?? ""
        return Int(line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? 0
    }

    /// Waits for the process to exit; its exit status.
    func exitStatus(within limit: Duration) async throws -> Int32 {
        do {
            try await self.exits.wait(upTo: limit) { !$0.isEmpty }
        } catch {
            self.process.terminate()
            throw CallBridgeError(.configurationInvalid, "callbridge run did not exit within \(limit)")
        }
        return self.exits.all[0]
    }

    var summaries: [String] {
        (try? String(contentsOf: self.callLog, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? []
    }
}

extension EndToEndTests {
    @Test func sigtermDrainsTheCallInProgressRefusesNewOnesAndExitsZero() async throws {
        let bridge = try await BridgeProcess()
        let port = bridge.port
        // A 4.5 s call: the caller speaks, the echo agent answers; SIGTERM lands in the middle of it.
        // The caller's progress, frame by frame (the simulator reports its trace every 20 ms).
        let heardFrames = Observations<Int>()
        let options = DialClient.Options(
            url: "ws://127.0.0.1:\(port)/twilio/media",
            callerAudio: Self.silence(5) + Self.speech(40) + Self.silence(150),
            duration: .milliseconds(4500),
            stopWhen: { trace in
                heardFrames.record(trace.mediaArrivals.count)
                return false
            }
        )
        let start = ContinuousClock.now
        async let dialed = withTimeout(.seconds(30)) { try await DialClient(options: options, logger: Self.logger).run() }
        // SIGTERM while the AI is answering.
        try await heardFrames.wait(upTo: .seconds(10)) { ($0.last ?? 0) >= 5 }
        bridge.signal()
        let signalledAt = ContinuousClock.now - start
        try await bridge.lines.wait(upTo: .seconds(10)) { $0.contains { $0["message"] == "draining: new calls are refused" } }
        // Not ready, new calls rejected by TwiML, a new media stream refused.
        let ready = try await Self.get("http://127.0.0.1:\(port)/readyz")
        #expect(ready.status == 503)
        #expect(ready.body.contains(#""status":"draining""#))
        #expect(try await Self.postVoice(port: port, callSid: "CAlate").contains("<Reject"))
        #expect(try await Self.upgradeStatus(port: port, signature: nil) == 503)
        let metrics = try await Self.get("http://127.0.0.1:\(port)/metrics").body
        #expect(Self.sample(metrics, "callbridge_draining") == 1)
        // The call in progress keeps flowing and ends normally, by the caller.
        let result = try await dialed
        #expect(!result.closedByBridge)
        let afterSignal = result.trace.mediaArrivals.filter { $0.at > signalledAt + .milliseconds(100) }
        #expect(!afterSignal.isEmpty, "audio kept flowing after SIGTERM")
        #expect(try await bridge.exitStatus(within: .seconds(15)) == 0)
        let summaries = bridge.summaries
        #expect(summaries.count == 1)
        #expect(summaries.first?.contains(#""end_reason":"twilio_stop""#) == true)
        #expect(bridge.lines.all.contains { $0["message"] == "drain finished; stopping" && $0["drain.outcome"] == "all calls ended" })
    }

    @Test func aSecondSignalCutsTheDrainShortAndEndsCallsCleanly() async throws {
        let bridge = try await BridgeProcess(arguments: ["--drain-timeout", "120"])
        let options = DialClient.Options(
            url: "ws://127.0.0.1:\(bridge.port)/twilio/media",
            callerAudio: Self.silence(5) + Self.speech(20) + Self.silence(1500),
            duration: .seconds(30)
        )
        async let dialed = withTimeout(.seconds(40)) { try await DialClient(options: options, logger: Self.logger).run() }
        try await bridge.lines.wait(upTo: .seconds(10)) { $0.contains { $0["message"] == "call started" } }
        bridge.signal()
        try await bridge.lines.wait(upTo: .seconds(10)) { $0.contains { $0["message"] == "draining: new calls are refused" } }
        // The first signal alone waits for the call: the bridge still answers, as draining.
        #expect(try await Self.get("http://127.0.0.1:\(bridge.port)/healthz").status == 200)
        #expect(try await Self.get("http://127.0.0.1:\(bridge.port)/readyz").status == 503)
        #expect(bridge.exits.all.isEmpty)
        bridge.signal(SIGINT)
        #expect(try await bridge.exitStatus(within: .seconds(15)) == 0)
        let result = try await dialed
        #expect(result.closedByBridge, "the bridge ended the call, with a close frame")
        #expect(bridge.summaries.first?.contains(#""end_reason":"shutdown","#) == true)
        #expect(bridge.lines.all.contains { $0["drain.outcome"] == "cut short by a second signal" })
    }
}

extension EndToEndTests {
    /// The preStop hook's command: signals the bridge and returns only once it has exited.
    @Test func drainCommandStartsTheDrainAndWaitsForTheExit() async throws {
        let bridge = try await BridgeProcess()
        let drain = Process()
        drain.executableURL = bridge.process.executableURL
        drain.arguments = ["drain", "--pid", String(bridge.process.processIdentifier), "--wait", "--timeout", "30"]
        let drainExits = Observations<Int32>()
        drain.terminationHandler = { drainExits.record($0.terminationStatus) }
        try drain.run()
        try await drainExits.wait(upTo: .seconds(20)) { !$0.isEmpty }
        #expect(drainExits.all == [0])
        #expect(!bridge.process.isRunning, "drain --wait returned only after the bridge exited")
        #expect(try await bridge.exitStatus(within: .seconds(1)) == 0)
        #expect(bridge.lines.all.contains { $0["drain.outcome"] == "all calls ended" })
    }
}

extension EndToEndTests {
    /// Each thread of a process: its name, scheduling policy and real-time priority (/proc/PID/task/TID/stat
    /// fields 41 and 40).
    static func threadScheduling(pid: Int32) -> [(name: String, policy: Int32, priority: Int)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { tid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { return nil }
            // Fields after the name start at field 3.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 38, let priority = Int(fields[37]), let policy = Int32(fields[38]) else { return nil }
            return (String(stat[stat.index(after: open)..<close]), policy, priority)
        }
    }

    /// `run --realtime-priority`: the kernel's answer, read back from /proc, is what the log and the gauge say, and
    /// only the event loops' threads (NIO's shared group, "NIO-SGLTN-1-#n") change.
    @Test func realtimePriorityPutsTheEventLoopsInRoundRobinAndSaysSo() async throws {
        let bridge = try await BridgeProcess(arguments: ["--realtime-priority", "3"])
        defer { bridge.signal(SIGKILL) }
        let threads = Self.threadScheduling(pid: bridge.process.processIdentifier)
        let loops = threads.filter { $0.name.hasPrefix("NIO-SGLTN-1-") }
        let others = threads.filter { !$0.name.hasPrefix("NIO-SGLTN-1-") }
        #expect(!loops.isEmpty && !others.isEmpty)
        #expect(others.allSatisfy { $0.policy == SCHED_OTHER })
        let gauge = Self.sample(try await Self.get("http://127.0.0.1:\(bridge.port)/metrics").body, "callbridge_realtime_priority")
        if bridge.lines.all.contains(where: { $0["message"] == "event loops run in real-time scheduling" && $0["realtime_priority"] == "3" }) {
            #expect(loops.allSatisfy { $0.policy == SCHED_RR && $0.priority == 3 })
            #expect(gauge == 3)
        } else {
            let refusal = try #require(bridge.lines.all.first { $0["message"]?.hasPrefix("real-time scheduling refused") == true })
            #expect(refusal["reason"]?.contains("CAP_SYS_NICE") == true)
            #expect(loops.allSatisfy { $0.policy == SCHED_OTHER })
            #expect(gauge == 0)
        }
    }

    /// Out of range, the flag or the variable stops the bridge at start with the reason.
    @Test func aRealtimePriorityOutOfRangeIsRefusedAtStart() async throws {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var binary = directory.appendingPathComponent("callbridge")
        if !FileManager.default.isExecutableFile(atPath: binary.path) {
            binary = directory.deletingLastPathComponent().appendingPathComponent("callbridge")
        }
        for (arguments, environment) in [(["--realtime-priority", "100"], [:]), ([], ["CALLBRIDGE_REALTIME_PRIORITY": "-1"])] {
            let process = Process()
            process.executableURL = binary
            process.arguments = ["run", "--host", "127.0.0.1", "--port", "0"] + arguments
            process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CALLBRIDGE_") }.merging(environment) { $1 }
            let stderr = Pipe()
            process.standardError = stderr
            process.standardOutput = FileHandle.nullDevice
            let exits = Observations<Int32>()
            process.terminationHandler = { exits.record($0.terminationStatus) }
            try process.run()
            try await exits.wait(upTo: .seconds(20)) { !$0.isEmpty }
            let message = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(exits.all != [0])
            #expect(message.contains("CALLBRIDGE_REALTIME_PRIORITY (--realtime-priority) must be 1…99"), "\(message)")
        }
    }
}

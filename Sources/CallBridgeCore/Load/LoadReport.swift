/// The final report of `callbridge load`: every loop's `LoadStats` merged, as percentiles.
public struct LoadReport: Sendable, Equatable {
    /// Percentiles of one latency, in milliseconds (nil when nothing was measured).
    public struct Summary: Sendable, Equatable {
        public var count: UInt64
        public var p50: Double?
        public var p90: Double?
        public var p99: Double?
        public var p999: Double?
        public var max: Double?

        public init(_ histogram: LatencyHistogram) {
            self.count = histogram.count
            self.p50 = histogram.milliseconds(atPercentile: 50)
            self.p90 = histogram.milliseconds(atPercentile: 90)
            self.p99 = histogram.milliseconds(atPercentile: 99)
            self.p999 = histogram.milliseconds(atPercentile: 99.9)
            self.max = histogram.maxMilliseconds
        }
    }

    /// How the generator's event loops were scheduled.
    public enum Scheduling: Sendable, Equatable {
        case normal
        /// `SCHED_RR` at this priority.
        case realtime(priority: Int)
        /// Real-time was asked for and the kernel refused (why): normal.
        case refused(priority: Int, reason: String)

        var text: String {
            switch self {
            case .normal: return "normal"
            case .realtime(let priority): return "real-time, SCHED_RR priority \(priority)"
            case .refused(let priority, let reason): return "normal (SCHED_RR priority \(priority) refused: \(reason))"
            }
        }

        var priority: Int? {
            if case .realtime(let priority) = self { return priority }
            return nil
        }
    }

    public var callsRequested: Int
    public var rampSeconds: Double
    public var durationSeconds: Double
    /// Wall-clock time of the whole run.
    public var elapsedSeconds: Double
    public var stats: LoadStats
    public var jitter: Summary
    public var firstAudio: Summary
    public var bargeIn: Summary
    public var tickLateness: Summary
    public var scheduling: Scheduling

    public init(
        callsRequested: Int,
        rampSeconds: Double,
        durationSeconds: Double,
        elapsedSeconds: Double,
        stats: LoadStats,
        scheduling: Scheduling = .normal
    ) {
        self.scheduling = scheduling
        self.callsRequested = callsRequested
        self.rampSeconds = rampSeconds
        self.durationSeconds = durationSeconds
        self.elapsedSeconds = elapsedSeconds
        self.stats = stats
        self.jitter = Summary(stats.jitter)
        self.firstAudio = Summary(stats.firstAudio)
        self.bargeIn = Summary(stats.bargeIn)
        self.tickLateness = Summary(stats.tickLateness)
    }

    /// Calls that failed to connect or that the bridge dropped: any of them fails the run.
    public var failedCalls: Int { self.stats.callsFailedToConnect + self.stats.callsDisconnected }

    public var text: String {
        let s = self.stats
        func line(_ name: String, _ summary: Summary) -> String {
            guard summary.count > 0 else { return "\(name): none measured" }
            return "\(name) (\(summary.count)): p50 \(Self.ms(summary.p50)), p90 \(Self.ms(summary.p90)), "
                + "p99 \(Self.ms(summary.p99)), p99.9 \(Self.ms(summary.p999)), max \(Self.ms(summary.max))"
        }
        var lines = [
            "calls: \(self.callsRequested) requested, \(s.callsConnected) connected, \(s.callsCompleted) completed, "
                + "\(s.callsFailedToConnect) failed to connect, \(s.callsDisconnected) disconnected by the bridge",
            line("pacing jitter |interval − 20 ms|", self.jitter),
            line("first audio (caller stops → first AI frame)", self.firstAudio),
            line("barge-in (caller onset → clear)", self.bargeIn),
            "barge-ins without a clear: \(s.bargeInsWithoutClear)",
            line("generator tick lateness (its own delays, part of the jitter above)", self.tickLateness),
            "generator scheduling: \(self.scheduling.text)",
            "messages: \(s.messagesSent) sent (\(s.framesSent) media frames), \(s.messagesReceived) received "
                + "(\(s.mediaReceived) media, \(s.marksReceived) marks, \(s.clearsReceived) clears), "
                + "\(s.marksEchoed) marks echoed, \(s.badMessages) unreadable",
        ]
        for (kind, count) in s.failures.sorted(by: { $0.key < $1.key }) {
            lines.append("failure: \(kind) × \(count)")
        }
        return lines.joined(separator: "\n")
    }

    public var json: String {
        let s = self.stats
        func summary(_ x: Summary) -> String {
            "{\"count\":\(x.count),\"p50\":\(Self.number(x.p50)),\"p90\":\(Self.number(x.p90)),\"p99\":\(Self.number(x.p99)),"
                + "\"p999\":\(Self.number(x.p999)),\"max\":\(Self.number(x.max))}"
        }
        let failures = s.failures.sorted { $0.key < $1.key }.map { JSONText.quoted($0.key) + ":\($0.value)" }
            .joined(separator: ",")
        return "{\"calls\":{\"requested\":\(self.callsRequested),\"connected\":\(s.callsConnected),"
            + "\"completed\":\(s.callsCompleted),\"failed_to_connect\":\(s.callsFailedToConnect),"
            + "\"disconnected\":\(s.callsDisconnected)},"
            + "\"ramp_s\":\(Self.number(self.rampSeconds)),\"duration_s\":\(Self.number(self.durationSeconds)),"
            + "\"elapsed_s\":\(Self.number(self.elapsedSeconds)),"
            + "\"jitter_ms\":\(summary(self.jitter)),\"first_audio_ms\":\(summary(self.firstAudio)),"
            + "\"barge_in_ms\":\(summary(self.bargeIn)),\"generator_tick_lateness_ms\":\(summary(self.tickLateness)),"
            + "\"generator_realtime_priority\":\(self.scheduling.priority.map(String.init) ?? "null"),\"barge_ins_without_clear\":\(s.bargeInsWithoutClear),"
            + "\"frames_sent\":\(s.framesSent),\"messages_sent\":\(s.messagesSent),\"messages_received\":\(s.messagesReceived),"
            + "\"media_received\":\(s.mediaReceived),\"marks_received\":\(s.marksReceived),\"marks_echoed\":\(s.marksEchoed),"
            + "\"clears_received\":\(s.clearsReceived),\"bad_messages\":\(s.badMessages),"
            + "\"errors\":\(self.failedCalls + s.badMessages),\"failures\":{\(failures)}}"
    }

    static func ms(_ value: Double?) -> String {
        value.map { String(format2: $0) + " ms" } ?? "n/a"
    }

    /// A JSON number with at most three decimals, or null.
    static func number(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "null" }
        let thousandths = (value * 1000).rounded()
        if thousandths == thousandths.rounded(.towardZero), abs(thousandths) < 1e15 {
            let n = Int(thousandths)
            let sign = n < 0 ? "-" : ""
            let m = n.magnitude
            let fraction = m % 1000
            let padded = fraction < 10 ? "00\(fraction)" : fraction < 100 ? "0\(fraction)" : "\(fraction)"
            return "\(sign)\(m / 1000).\(padded)"
        }
        return String(value)
    }
}

import CallBridgeCore
import CoreMetrics
import Prometheus
import Synchronization

/// The bridge's Prometheus metrics (`GET /metrics`), recorded through swift-metrics with a Prometheus factory over a
/// registry of this server's own, so several bridges in one process (the tests) never share numbers.
///
/// Calls publish what changed in their counters about once a second and when they end; the names and labels are a
/// contract with the dashboards in deploy/ (see the README's metrics table).
public final class BridgeMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    let activeCalls: CoreMetrics.Gauge
    let draining: CoreMetrics.Gauge
    let maxCalls: CoreMetrics.Gauge
    /// The event loops' `SCHED_RR` priority, 0 when they run at normal priority (not asked for, or refused).
    let realtimePriority: CoreMetrics.Gauge
    let callsStarted: CoreMetrics.Counter
    let txFrames: CoreMetrics.Counter
    let txScheduleResets: CoreMetrics.Counter
    let txLateFrames: CoreMetrics.Counter
    let txUnderruns: CoreMetrics.Counter
    let audioIn: CoreMetrics.FloatingPointCounter
    let audioOut: CoreMetrics.FloatingPointCounter
    let bargeInLatency: CoreMetrics.Timer
    let turnLatency: CoreMetrics.Timer
    let firstAudioLatency: CoreMetrics.Timer
    /// From a pacing tick's deadline to the end of that tick's writes, once per event loop per tick: the latest any
    /// frame of the tick went out, so the bridge's own share of the pacing jitter.
    let tickLateness: CoreMetrics.Timer
    /// Upstream error codes seen so far: the label set is capped, later codes count as `other`.
    let errorCodes = Mutex<Set<String>>([])
    static let maxErrorCodes = 50

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let ms: (Int) -> Duration = { .milliseconds($0) }
        factory.durationHistogramBuckets = [
            "callbridge_barge_in_latency_seconds": [20, 40, 60, 80, 100, 150, 200, 300, 500, 1000].map(ms),
            "callbridge_turn_latency_seconds": [100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000].map(ms),
            "callbridge_first_audio_latency_seconds": [100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000].map(ms),
            "callbridge_tx_tick_lateness_seconds": [1, 2, 3, 5, 10, 20, 50, 100, 200].map(ms),
        ]
        self.registry = registry
        self.factory = factory
        self.activeCalls = CoreMetrics.Gauge(label: "callbridge_active_calls", factory: factory)
        self.draining = CoreMetrics.Gauge(label: "callbridge_draining", factory: factory)
        self.maxCalls = CoreMetrics.Gauge(label: "callbridge_max_calls", factory: factory)
        self.realtimePriority = CoreMetrics.Gauge(label: "callbridge_realtime_priority", factory: factory)
        self.callsStarted = CoreMetrics.Counter(label: "callbridge_calls_started_total", factory: factory)
        self.txFrames = CoreMetrics.Counter(label: "callbridge_tx_frames_total", factory: factory)
        self.txScheduleResets = CoreMetrics.Counter(label: "callbridge_tx_schedule_resets_total", factory: factory)
        self.txLateFrames = CoreMetrics.Counter(label: "callbridge_tx_late_frames_total", factory: factory)
        self.txUnderruns = CoreMetrics.Counter(label: "callbridge_tx_underruns_total", factory: factory)
        self.audioIn = CoreMetrics.FloatingPointCounter(label: "callbridge_audio_in_seconds_total", factory: factory)
        self.audioOut = CoreMetrics.FloatingPointCounter(label: "callbridge_audio_out_seconds_total", factory: factory)
        self.bargeInLatency = CoreMetrics.Timer(label: "callbridge_barge_in_latency_seconds", factory: factory)
        self.turnLatency = CoreMetrics.Timer(label: "callbridge_turn_latency_seconds", factory: factory)
        self.firstAudioLatency = CoreMetrics.Timer(label: "callbridge_first_audio_latency_seconds", factory: factory)
        self.tickLateness = CoreMetrics.Timer(label: "callbridge_tx_tick_lateness_seconds", factory: factory)
        self.draining.record(0)
        self.realtimePriority.record(0)
        self.activeCalls.record(0)
        // Labelled series that dashboards expect to see at zero before anything happened.
        for outcome in ["confirmed", "false_alarm"] { _ = self.counter("callbridge_barge_ins_total", ["outcome": outcome]) }
        for (kind, _) in CallCounters().watchdogTrips { _ = self.counter("callbridge_watchdog_trips_total", ["kind": kind]) }
        for reason in ["draining", "max_calls"] { _ = self.counter("callbridge_calls_rejected_total", ["reason": reason]) }
        for route in ["voice", "media", "start"] { _ = self.counter("callbridge_auth_failures_total", ["route": route]) }
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> String {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        self.registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    func counter(_ name: String, _ labels: [String: String]) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: name, dimensions: labels.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, factory: self.factory)
    }

    // MARK: Events

    func setMaxCalls(_ limit: Int?) { self.maxCalls.record(limit ?? 0) }
    func setRealtimePriority(_ priority: Int) { self.realtimePriority.record(priority) }
    func setDraining(_ on: Bool) { self.draining.record(on ? 1 : 0) }
    func setActiveCalls(_ count: Int) { self.activeCalls.record(count) }
    func callStarted() { self.callsStarted.increment() }

    func callRejected(reason: String) {
        self.counter("callbridge_calls_rejected_total", ["reason": reason]).increment()
    }

    /// A request or stream refused by the signature or call-token check (`route`: voice, media, start).
    func authFailed(route: String, reason: String) {
        self.counter("callbridge_auth_failures_total", ["route": route]).increment()
    }

    func callEnded(_ reason: EndReason) {
        self.counter("callbridge_calls_ended_total", ["end_reason": reason.rawValue, "ended_by": reason.endedBy]).increment()
    }

    /// Adds what changed between two snapshots of one call's counters.
    func publish(_ now: CallCounters, since before: CallCounters) {
        // The counter is looked up (a labelled one: a registry lookup and an allocation) only when it changed: most
        // publishes of most calls change nothing.
        func add(_ counter: @autoclosure () -> CoreMetrics.Counter, _ new: Int, _ old: Int) {
            if new > old { counter().increment(by: Int64(new - old)) }
        }
        add(self.txFrames, now.txFrames, before.txFrames)
        add(self.txScheduleResets, now.txScheduleResets, before.txScheduleResets)
        add(self.txLateFrames, now.txLateFrames, before.txLateFrames)
        add(self.txUnderruns, now.txUnderruns, before.txUnderruns)
        add(self.counter("callbridge_barge_ins_total", ["outcome": "confirmed"]), now.bargeInEvents, before.bargeInEvents)
        add(self.counter("callbridge_barge_ins_total", ["outcome": "false_alarm"]), now.bargeInFalseAlarms, before.bargeInFalseAlarms)
        for (trip, old) in zip(now.watchdogTrips, before.watchdogTrips) where trip.count > old.count {
            add(self.counter("callbridge_watchdog_trips_total", ["kind": trip.kind]), trip.count, old.count)
        }
        for (kind, count) in now.badMessagesByKind where count > before.badMessagesByKind[kind, default: 0] {
            add(self.counter("callbridge_bad_messages_total", ["kind": kind]), count, before.badMessagesByKind[kind, default: 0])
        }
        for (code, count) in now.upstreamErrorsByCode where count > before.upstreamErrorsByCode[code, default: 0] {
            let label = self.errorCodeLabel(code)
            add(self.counter("callbridge_upstream_errors_total", ["code": label]), count, before.upstreamErrorsByCode[code, default: 0])
        }
        if now.audioInBytes > before.audioInBytes {
            self.audioIn.increment(by: Double(now.audioInBytes - before.audioInBytes) / Double(AudioFrame.sampleRate))
        }
        if now.audioOutBytes > before.audioOutBytes {
            self.audioOut.increment(by: Double(now.audioOutBytes - before.audioOutBytes) / Double(AudioFrame.sampleRate))
        }
        for latency in now.bargeInLatencies.dropFirst(before.bargeInLatencies.count) {
            self.bargeInLatency.recordNanoseconds(latency.wholeNanoseconds)
        }
        for latency in now.turnLatencies.dropFirst(before.turnLatencies.count) {
            self.turnLatency.recordNanoseconds(latency.wholeNanoseconds)
        }
        if let first = now.firstAudioAt, before.firstAudioAt == nil {
            self.firstAudioLatency.recordNanoseconds(first.wholeNanoseconds)
        }
    }

    /// Error codes come from the peer: keep them to a safe alphabet and a bounded set of label values.
    func errorCodeLabel(_ code: String) -> String {
        let cleaned = String(code.lowercased().unicodeScalars.prefix(64).map { scalar -> Character in
            (scalar >= "a" && scalar <= "z") || (scalar >= "0" && scalar <= "9") ? Character(scalar) : "_"
        })
        return self.errorCodes.withLock { codes in
            if codes.contains(cleaned) { return cleaned }
            guard codes.count < Self.maxErrorCodes else { return "other" }
            codes.insert(cleaned)
            return cleaned
        }
    }
}

extension Duration {
    var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

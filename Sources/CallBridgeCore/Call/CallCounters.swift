/// Numbers every call leaves behind; the shell writes them as the call log line.
public struct CallCounters: Sendable, Equatable {
    /// Size of the first frame sent to Twilio (0 when the AI never spoke).
    public var firstChunkBytes = 0
    public var txFrames = 0
    public var txScheduleResets = 0
    public var txLateFrames = 0
    public var bargeInEvents = 0
    /// Trips of the SAFETY_FUSE watchdog (the watchdogs arrive with the barge-in engine).
    public var safetyFuseTrips = 0
    public var upstreamErrors = 0
    public var badMessages = 0
    public var rxMessages = 0
    /// Caller audio dropped because the Realtime leg was not ready for longer than the hold allows.
    public var rxDroppedBeforeReady = 0
    public var marksSent = 0
    public var marksPlayed = 0
    public var marksCleared = 0
    /// Audio deltas of an interrupted or unknown response, dropped.
    public var staleDeltasDropped = 0
    public var responses = 0
    public var cancelsSent = 0
    public var truncatesSent = 0
    public var dtmfDigits = 0
    /// Local barge-in: tentative pauses, and pauses that turned out to be false alarms (resumed).
    public var bargeInPauses = 0
    public var bargeInFalseAlarms = 0
    /// Pauses the second-stage confirmer judged not to be speech (counted in the false alarms too).
    public var confirmerRejections = 0
    /// Committed local barge-ins after which the caller never took the turn (the AI was asked to go on).
    public var bargeInFalseTriggers = 0
    /// Caller messages replaced by silence toward the service because only the AI's echo was on the line.
    public var echoSilencedMessages = 0
    /// Pending cancels released by their failsafe instead of an answer.
    public var cancelTimeouts = 0
    public var stuckResponses = 0
    /// Stalls flagged: no caller media, or marks not echoed, for the warning time.
    public var stallFlags = 0
    /// Onset-to-pause delay of the last local barge-in (speech onset → Twilio stopped).
    public var lastBargeInPause: Duration?
    /// The echo path the echo guard learned, if it did.
    public var echoDelay: Duration?
    public var echoReturnLossDB: Double?
    public var firstAudioAt: Duration?
    public var realtimeReadyAt: Duration?
    /// Dry spells of the pacer: a frame was due while a response was streaming and the queue was empty.
    public var txUnderruns = 0
    /// Caller speech onset → Twilio told to clear, one per barge-in whose onset is known.
    public var bargeInLatencies: [Duration] = []
    /// Per turn: caller speech end → first reply frame sent, and → that frame's mark echoed as played.
    public var turnLatencies: [Duration] = []
    public var turnPlayedLatencies: [Duration] = []
    /// `audio_end_ms` of every truncation sent, in order.
    public var truncationAudioEndMs: [Int] = []
    /// 20 ms frames of audio deltas dropped because their response was interrupted (an old generation) or unknown.
    public var staleFramesDropped = 0
    /// Holes in Twilio's media chunk numbering, and the chunks missing in them.
    public var inboundGaps = 0
    public var inboundMissingChunks = 0
    public var badMessagesByKind: [String: Int] = [:]
    /// Upstream `error` events by code (`unknown` when the event has none).
    public var upstreamErrorsByCode: [String: Int] = [:]
    /// Reconnections of the Realtime leg during the call.
    public var upstreamReconnects = 0
    /// μ-law bytes received from the caller and sent to Twilio (8000 per second).
    public var audioInBytes = 0
    public var audioOutBytes = 0
    /// AI audio frames dropped because the TX queue was full (`maxQueuedFrames`).
    public var txQueueOverflowFrames = 0
    /// The model's service failed and the caller heard the fallback prompt.
    public var fallbackPlayed = false
    /// Outages of the Realtime leg that ended in a working session again, and their total and longest length
    /// (drop → `session.updated` on the new leg).
    public var upstreamOutages = 0
    public var upstreamGapTotal: Duration = .zero
    public var upstreamGapMax: Duration = .zero
    /// Conversation items replayed into new sessions after reconnects and recycles.
    public var replayedItems = 0
    /// Planned replacements of the model session (`sessionRecycleAfter`).
    public var sessionRecycles = 0

    public init() {}

    /// Watchdog trips by kind, as named in logs and metrics.
    public var watchdogTrips: [(kind: String, count: Int)] {
        [
            ("safety_fuse", self.safetyFuseTrips), ("stuck_response", self.stuckResponses),
            ("cancel_timeout", self.cancelTimeouts), ("twilio_stalled", self.stallFlags),
        ]
    }
}

/// Nearest-rank percentile of durations (nil when there are none).
func percentile(_ values: [Duration], _ fraction: Double) -> Duration? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let rank = Int((fraction * Double(sorted.count)).rounded(.up))
    return sorted[min(max(rank, 1), sorted.count) - 1]
}

/// The call log record written when a call ends: one JSON object on one line.
public struct CallSummary: Sendable, Equatable {
    public var callSid: String
    public var streamSid: String
    public var durationMs: Int
    public var endReason: EndReason
    public var counters: CallCounters
    public var customParameters: [String: String]
    /// Wall-clock start (ISO 8601, UTC), filled in by the shell: the core never reads a clock.
    public var startTime: String?

    public init(
        callSid: String,
        streamSid: String,
        durationMs: Int,
        endReason: EndReason,
        counters: CallCounters,
        customParameters: [String: String] = [:]
    ) {
        self.callSid = callSid
        self.streamSid = streamSid
        self.durationMs = durationMs
        self.endReason = endReason
        self.counters = counters
        self.customParameters = customParameters
    }

    /// Field names are a contract with ops dashboards: add fields, never rename them.
    public var jsonLine: String {
        let c = self.counters
        var fields: [(String, String)] = [
            ("call_sid", JSONText.quoted(self.callSid)),
            ("stream_sid", JSONText.quoted(self.streamSid)),
            ("duration_ms", String(self.durationMs)),
            ("first_chunk_bytes", String(c.firstChunkBytes)),
            ("tx_frames", String(c.txFrames)),
            ("tx_schedule_resets", String(c.txScheduleResets)),
            ("tx_late_frames", String(c.txLateFrames)),
            ("barge_in_events", String(c.bargeInEvents)),
            ("safety_fuse_trips", String(c.safetyFuseTrips)),
            ("upstream_errors", String(c.upstreamErrors)),
            ("bad_messages", String(c.badMessages)),
            ("end_reason", JSONText.quoted(self.endReason.rawValue)),
            ("rx_messages", String(c.rxMessages)),
            ("rx_dropped_before_ready", String(c.rxDroppedBeforeReady)),
            ("marks_sent", String(c.marksSent)),
            ("marks_played", String(c.marksPlayed)),
            ("marks_cleared", String(c.marksCleared)),
            ("stale_deltas_dropped", String(c.staleDeltasDropped)),
            ("responses", String(c.responses)),
            ("cancels_sent", String(c.cancelsSent)),
            ("truncates_sent", String(c.truncatesSent)),
            ("dtmf_digits", String(c.dtmfDigits)),
            ("first_audio_ms", c.firstAudioAt.map { String($0.wholeMilliseconds) } ?? "null"),
            ("realtime_ready_ms", c.realtimeReadyAt.map { String($0.wholeMilliseconds) } ?? "null"),
            ("barge_in_pauses", String(c.bargeInPauses)),
            ("barge_in_false_alarms", String(c.bargeInFalseAlarms)),
            ("confirmer_rejections", String(c.confirmerRejections)),
            ("barge_in_false_triggers", String(c.bargeInFalseTriggers)),
            ("barge_in_pause_ms", c.lastBargeInPause.map { String($0.wholeMilliseconds) } ?? "null"),
            ("echo_silenced_messages", String(c.echoSilencedMessages)),
            ("echo_delay_ms", c.echoDelay.map { String($0.wholeMilliseconds) } ?? "null"),
            ("echo_return_loss_db", c.echoReturnLossDB.map { String(format1: $0) } ?? "null"),
            ("cancel_timeouts", String(c.cancelTimeouts)),
            ("stuck_responses", String(c.stuckResponses)),
            ("stall_flags", String(c.stallFlags)),
            ("from", self.customParameters["From"].map(JSONText.quoted) ?? "null"),
            ("to", self.customParameters["To"].map(JSONText.quoted) ?? "null"),
            ("start_time", self.startTime.map(JSONText.quoted) ?? "null"),
            ("ended_by", JSONText.quoted(self.endReason.endedBy)),
            ("tx_underruns", String(c.txUnderruns)),
            ("barge_in_latency_min_ms", Self.ms(c.bargeInLatencies.min())),
            ("barge_in_latency_p50_ms", Self.ms(percentile(c.bargeInLatencies, 0.5))),
            ("barge_in_latency_max_ms", Self.ms(c.bargeInLatencies.max())),
            ("turns", String(c.turnLatencies.count)),
            ("turn_latency_p50_ms", Self.ms(percentile(c.turnLatencies, 0.5))),
            ("turn_latency_max_ms", Self.ms(c.turnLatencies.max())),
            ("turn_played_latency_p50_ms", Self.ms(percentile(c.turnPlayedLatencies, 0.5))),
            ("turn_played_latency_max_ms", Self.ms(c.turnPlayedLatencies.max())),
            ("truncations", String(c.truncationAudioEndMs.count)),
            ("truncation_audio_end_ms", "[" + c.truncationAudioEndMs.map(String.init).joined(separator: ",") + "]"),
            ("stale_frames_dropped", String(c.staleFramesDropped)),
            ("inbound_gaps", String(c.inboundGaps)),
            ("inbound_missing_chunks", String(c.inboundMissingChunks)),
            ("bad_messages_by_kind", Self.object(c.badMessagesByKind)),
            ("upstream_errors_by_code", Self.object(c.upstreamErrorsByCode)),
            ("upstream_reconnects", String(c.upstreamReconnects)),
            ("audio_in_seconds", String(format2: Double(c.audioInBytes) / 8000)),
            ("audio_out_seconds", String(format2: Double(c.audioOutBytes) / 8000)),
            ("tx_queue_overflow_frames", String(c.txQueueOverflowFrames)),
            ("fallback_played", c.fallbackPlayed ? "true" : "false"),
            ("upstream_outages", String(c.upstreamOutages)),
            ("upstream_gap_total_ms", String(c.upstreamGapTotal.wholeMilliseconds)),
            ("upstream_gap_max_ms", String(c.upstreamGapMax.wholeMilliseconds)),
            ("replayed_items", String(c.replayedItems)),
            ("session_recycles", String(c.sessionRecycles)),
        ]
        if !self.customParameters.isEmpty {
            let params = self.customParameters.sorted { $0.key < $1.key }
                .map { JSONText.quoted($0.key) + ":" + JSONText.quoted($0.value) }
                .joined(separator: ",")
            fields.append(("custom_parameters", "{" + params + "}"))
        }
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    static func ms(_ duration: Duration?) -> String {
        duration.map { String($0.wholeMilliseconds) } ?? "null"
    }

    static func object(_ counts: [String: Int]) -> String {
        "{" + counts.sorted { $0.key < $1.key }.map { JSONText.quoted($0.key) + ":" + String($0.value) }.joined(separator: ",") + "}"
    }
}

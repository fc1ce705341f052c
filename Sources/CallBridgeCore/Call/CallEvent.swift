/// Why a call ended; the raw value is the `end_reason` field of the call log.
public enum EndReason: String, Sendable, Equatable {
    case twilioStop = "twilio_stop"
    case twilioClosed = "twilio_closed"
    case realtimeClosed = "realtime_closed"
    case realtimeConnectFailed = "realtime_connect_failed"
    /// The service answered `session.update` with an error: the call cannot work as configured.
    case realtimeRejected = "realtime_rejected"
    /// The Realtime session was not connected and configured in time.
    case realtimeNotReady = "realtime_not_ready"
    /// No caller media, or no mark echoes, for the watchdog's stall limit.
    case twilioStalled = "twilio_stalled"
    case shutdown = "shutdown"
    /// The stream's `start` did not carry a valid per-call token (or the upgrade was not signed).
    case unauthorized = "unauthorized"
    /// The stream never sent `start` within the start timeout.
    case noStart = "no_start"
    /// The call reached `--max-call-duration`.
    case maxDuration = "max_duration"

    /// Which side ended the call (the `ended_by` field): `twilio` (the caller hung up or Twilio stopped the stream),
    /// `realtime` (the model's service closed, refused or never answered), or `bridge` (a watchdog or a shutdown).
    public var endedBy: String {
        switch self {
        case .twilioStop, .twilioClosed: "twilio"
        case .realtimeClosed, .realtimeConnectFailed, .realtimeRejected: "realtime"
        case .realtimeNotReady, .twilioStalled, .shutdown, .unauthorized, .noStart, .maxDuration: "bridge"
        }
    }
}

/// How the Realtime leg went away.
public enum RealtimeClosure: Sendable, Equatable {
    /// Never connected (DNS, TCP, TLS, HTTP upgrade refused). `retryable`: the failure looks like the network's
    /// (refused, reset, timed out), not the service's answer (an HTTP status instead of the upgrade: key, quota,
    /// URL) or a certificate that will not verify on a second try either.
    case connectFailed(String, retryable: Bool = false)
    /// Was connected; closed by the peer or the network.
    case closed(String)
}

/// A timer the core asked for. A re-armed timer gets a new generation, so a stale firing does nothing.
public struct TimerID: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        /// The Realtime leg must be connected and `session.updated` by then.
        case sessionReady
        /// The pending-cancel lock's failsafe.
        case cancelTimeout
        /// The periodic watchdog check.
        case watchdog
        /// AUDIO_DRAIN's limit on an ending call.
        case audioDrain
        /// After a local barge-in: did the caller really take the turn?
        case falseTriggerCheck
        /// A tentative pause's own deadline.
        case pauseTimeout
        /// The next attempt to reconnect the Realtime leg is due.
        case reconnect
        /// The model session is old enough to be replaced (at the next quiet moment).
        case recycle
    }

    public var kind: Kind
    public var generation: UInt64

    public init(_ kind: Kind, generation: UInt64) {
        self.kind = kind
        self.generation = generation
    }

    public var description: String { "\(self.kind.rawValue)#\(self.generation)" }
}

/// Everything that can happen to a call: past-tense facts fed to the state machine.
public enum CallEvent: Sendable, Equatable {
    case twilioReceived(TwilioInbound)
    case twilioMalformed(TwilioDecodingError)
    case twilioClosed
    case realtimeConnected
    case realtimeReceived(RealtimeServerEvent)
    case realtimeMalformed(RealtimeDecodingError)
    /// A binary frame or anything else the Realtime protocol never sends.
    case realtimeUnexpectedFrame
    case realtimeClosed(RealtimeClosure)
    /// The shared pacing ticker fired (at its scheduled instant: `now`).
    case tick
    /// The shared pacing ticker's tick scheduled for `scheduled`, run at `now` (a busy loop runs a tick a little
    /// late): frames are assigned to ticks by `scheduled`, so a late tick does not shift the pacing phase.
    case scheduledTick(CallInstant)
    /// A timer requested with `scheduleTimer` is due.
    case timerFired(TimerID)
    case shutdownRequested
    /// The shell decided the call must end (authentication, start timeout, maximum duration): end it cleanly.
    case terminate(EndReason)
    /// Bad input the shell detected before the core could see it (e.g. media before an authenticated start).
    case badInput(kind: String, count: Int = 1)
}

/// Commands for the shell; the only way the core acts on the world.
public enum CallAction: Sendable, Equatable {
    case sendTwilio(TwilioOutbound)
    case sendRealtime(RealtimeClientEvent)
    /// The first bad message of its kind on this call (later ones are only counted).
    case logBadMessage(kind: String)
    case logUpstreamError(RealtimeErrorInfo)
    /// Deliver `timerFired(id)` at `at` (a later request with the same kind supersedes it).
    case scheduleTimer(TimerID, at: CallInstant)
    /// A watchdog tripped (logged once per trip).
    case logWatchdog(kind: String)
    /// Open a new Realtime leg (a reconnect after the last one dropped, or a planned session recycle).
    case connectRealtime(attempt: Int)
    /// Close the current Realtime leg with a close frame (a planned session recycle).
    case closeRealtime
    /// Close both legs cleanly and write the call log line.
    case endCall(EndReason)
}

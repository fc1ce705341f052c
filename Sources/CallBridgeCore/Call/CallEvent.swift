/// Why a call ended; the raw value is the `end_reason` field of the call log.
public enum EndReason: String, Sendable, Equatable {
    case twilioStop = "twilio_stop"
    case twilioClosed = "twilio_closed"
    case realtimeClosed = "realtime_closed"
    case realtimeConnectFailed = "realtime_connect_failed"
    case shutdown = "shutdown"
}

/// How the Realtime leg went away.
public enum RealtimeClosure: Sendable, Equatable {
    /// Never connected (DNS, TCP, TLS, HTTP upgrade refused).
    case connectFailed(String)
    /// Was connected; closed by the peer or the network.
    case closed(String)
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
    /// The shared pacing ticker fired.
    case tick
    case shutdownRequested
}

/// Commands for the shell; the only way the core acts on the world.
public enum CallAction: Sendable, Equatable {
    case sendTwilio(TwilioOutbound)
    case sendRealtime(RealtimeClientEvent)
    /// The first bad message of its kind on this call (later ones are only counted).
    case logBadMessage(kind: String)
    case logUpstreamError(RealtimeErrorInfo)
    /// Close both legs cleanly and write the call log line.
    case endCall(EndReason)
}

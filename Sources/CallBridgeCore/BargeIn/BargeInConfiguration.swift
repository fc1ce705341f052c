/// Every threshold of local barge-in, with the defaults the seeds settled on. Each is a flag and an environment
/// variable of `callbridge run` (see the README).
public struct BargeInConfiguration: Sendable, Equatable {
    /// Detect interruptions on the caller's audio here instead of waiting for the service's VAD.
    public var localEnabled: Bool
    public var vad: EnergyVAD.Configuration
    public var echo: EchoGuard.Configuration
    /// Optional extra echo gate: caller energy within this long after audible AI audio counts as echo.
    /// Off by default: on its own it blocks real barge-ins while the AI talks continuously.
    public var echoAgeGate: Duration?
    /// While the AI plays and only its echo comes back, send the service μ-law silence instead.
    public var substituteEchoWithSilence: Bool
    /// Caller audio re-sent when speech is detected during substitution, so no syllable is lost.
    public var preRoll: Duration
    /// Added to the playout estimate: the AI counts as speaking this long after its last confirmed frame.
    public var playoutGrace: Duration
    /// No new barge-in within this long of the last one.
    public var interruptLock: Duration
    /// Speech this long (from the VAD's onset) confirms a tentative barge-in.
    public var minSpeechDuration: Duration
    /// No barge-in during the first part of the call (an uninterruptible greeting); zero is off.
    public var greetingWindow: Duration
    /// After a false alarm, no new tentative pause for this long.
    public var recoveryDelay: Duration
    /// A sent `response.cancel` holds the pending-cancel lock at most this long.
    public var cancelTimeout: Duration
    /// A tentative pause is decided by then even if caller media stop arriving.
    public var maxPause: Duration
    /// After a local barge-in, if the caller has gone quiet and the service never heard a turn within this long,
    /// the barge-in was a false trigger: the bridge asks the service to respond again. Zero is off.
    public var falseTriggerWindow: Duration

    public init(
        localEnabled: Bool = true,
        vad: EnergyVAD.Configuration = .init(),
        echo: EchoGuard.Configuration = .init(),
        echoAgeGate: Duration? = nil,
        substituteEchoWithSilence: Bool = true,
        preRoll: Duration = .milliseconds(300),
        playoutGrace: Duration = .milliseconds(250),
        interruptLock: Duration = .milliseconds(700),
        minSpeechDuration: Duration = .milliseconds(150),
        greetingWindow: Duration = .zero,
        recoveryDelay: Duration = .milliseconds(500),
        cancelTimeout: Duration = .seconds(3),
        falseTriggerWindow: Duration = .milliseconds(1500),
        maxPause: Duration = .seconds(1)
    ) {
        self.maxPause = maxPause
        self.falseTriggerWindow = falseTriggerWindow
        self.localEnabled = localEnabled
        self.vad = vad
        self.echo = echo
        self.echoAgeGate = echoAgeGate
        self.substituteEchoWithSilence = substituteEchoWithSilence
        self.preRoll = preRoll
        self.playoutGrace = playoutGrace
        self.interruptLock = interruptLock
        self.minSpeechDuration = minSpeechDuration
        self.greetingWindow = greetingWindow
        self.recoveryDelay = recoveryDelay
        self.cancelTimeout = cancelTimeout
    }

    /// Local detection off: the service's VAD alone decides, as before.
    public static let serverOnly = BargeInConfiguration(localEnabled: false, substituteEchoWithSilence: false)
}

/// Watchdog limits: each trip is counted in the call log and logged once.
public struct WatchdogConfiguration: Sendable, Equatable {
    /// How often the watchdogs look at the call.
    public var checkInterval: Duration
    /// SAFETY_FUSE: the response still looks active although its audio is over and nothing has played for this long.
    public var safetyFuseAfter: Duration
    /// A response that stays silent, or stops sending without finishing, for this long is cleared.
    public var stuckResponseAfter: Duration
    /// No caller media, or marks never echoed, for this long: flagged.
    public var stallWarningAfter: Duration
    /// … and for this long: the call ends (`twilio_stalled`).
    public var stallLimit: Duration
    /// AUDIO_DRAIN: how long an ending call waits for its last audio to be confirmed played.
    public var audioDrainLimit: Duration

    public init(
        checkInterval: Duration = .seconds(1),
        safetyFuseAfter: Duration = .seconds(2),
        stuckResponseAfter: Duration = .seconds(15),
        stallWarningAfter: Duration = .seconds(5),
        stallLimit: Duration = .seconds(30),
        audioDrainLimit: Duration = .seconds(5)
    ) {
        self.checkInterval = checkInterval
        self.safetyFuseAfter = safetyFuseAfter
        self.stuckResponseAfter = stuckResponseAfter
        self.stallWarningAfter = stallWarningAfter
        self.stallLimit = stallLimit
        self.audioDrainLimit = audioDrainLimit
    }
}

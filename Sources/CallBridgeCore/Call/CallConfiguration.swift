/// Per-call behaviour as plain values with documented defaults.
public struct CallConfiguration: Sendable, Equatable {
    /// TX schedule toward Twilio.
    public var pacer: TxPacer.Configuration
    /// Caller audio held while the Realtime leg connects and applies `session.update`, in Twilio messages
    /// (20 ms each); the oldest is dropped beyond it.
    public var maxHeldInboundMessages: Int
    /// How much caller audio one `input_audio_buffer.append` carries, in whole 20 ms frames. 20 ms forwards every
    /// Twilio message as it comes; 40 ms halves the messages on the Realtime leg (and the TLS records, writes and the
    /// service's reads) for up to 20 ms more before the service hears the caller. The audio is held only while less
    /// than this is pending, never behind another event to the service. `callbridge run` uses 40 ms.
    public var inputAppendDuration: Duration
    /// How much silence the bridge put in place of the caller's line (the AI's echo while it speaks, replaced by
    /// `BargeInConfiguration.substituteEchoWithSilence`) one append may gather. It tells the service nothing it can
    /// act on, so it need not go out every `inputAppendDuration`: 200 ms cuts the Realtime leg's messages for the
    /// whole time the AI talks. Real caller audio, a barge-in's pre-roll, or any other event to the service sends
    /// what is gathered at once. nil: as `inputAppendDuration`. `callbridge run` uses 200 ms.
    public var silenceAppendDuration: Duration?
    /// How much caller audio one append may gather while the local VAD hears the caller speak (from the onset, whose
    /// audio and pre-roll go out at once, to the end of the VAD's hang-over, when what is gathered goes out at once
    /// and `inputAppendDuration` applies again). The service's turn detection waits for silence after the speech
    /// (500 ms by default), which starts after the VAD's 300 ms hang-over: the end of a turn reaches it as soon as
    /// before, and only its view of speech under way lags, by at most this much. 100 ms sends a sentence in less
    /// than half the messages. Needs local barge-in (the VAD); nil: as `inputAppendDuration`. `callbridge run` uses
    /// 100 ms.
    public var speechAppendDuration: Duration?
    /// How much caller audio one append may gather while no turn of the caller's is open: the local VAD does not hear
    /// them, the service does not either (`speech_started` … `speech_stopped`), and since their last turn ended (by
    /// either VAD) a reply's first frame has gone to Twilio, or `quietAppendHold` has passed. Nothing the service decides then waits on this audio: an onset the
    /// VAD hears goes out at once with what was gathered, and any other kind of audio sends it when it reaches its
    /// own, shorter length. Only speech the local VAD misses reaches the service later, by at most this much. Outside a
    /// turn is most of a call's listening time, so 200 ms cuts the Realtime leg's messages there fivefold. Needs
    /// local barge-in (the VAD); nil: as `inputAppendDuration`. `callbridge run` uses 200 ms.
    public var quietAppendDuration: Duration?
    /// How long a turn of the caller's stays open, from the last time either VAD said their speech ended (the local
    /// VAD at the end of its hang-over, the service with `speech_stopped`), when no reply's first frame has gone out: the service may still be deciding
    /// (semantic turn detection waits longer than silence-based). After it, audio is `quiet` again (a local false
    /// alarm, or a turn the service let pass).
    public var quietAppendHold: Duration
    /// One Twilio mark per this many frames sent (and always after a run's last frame, a turn's first, and before a
    /// `clear`). Twilio echoes marks in order, so an echo confirms every frame before it: with 2, the played
    /// position (for truncation, the echo guard and the watchdogs) is known to 40 ms instead of 20, for half the
    /// mark messages each way. `callbridge run` uses 2.
    public var markEveryFrames: Int
    /// Frames of the AI's audio waiting for the pacer (3000: 60 s, 480 KB); more is dropped and counted.
    public var maxQueuedFrames: Int
    /// What `session.update` asks of the service (by default `interrupt_response` is off when local barge-in is on).
    public var session: RealtimeSessionSettings
    /// From the start of the call to `session.updated`; past it the call ends (`realtime_not_ready`).
    public var sessionReadyTimeout: Duration
    /// Local barge-in: detection, gates, echo handling.
    public var bargeIn: BargeInConfiguration
    /// Watchdogs; nil turns them off.
    public var watchdog: WatchdogConfiguration?
    /// Reconnecting a Realtime leg that drops after its session was up; nil: a drop ends the call (with the fallback).
    public var reconnect: ReconnectPolicy?
    /// Replace the model session after this long (providers cap sessions, e.g. at 60 min), at the next moment when
    /// nobody is speaking, the same way as a reconnect (the conversation is replayed); nil: never (`callbridge run`
    /// sets 55 min).
    public var sessionRecycleAfter: Duration?
    /// 8 kHz μ-law the caller hears when the model's service fails for good, before the call ends; nil: end at once.
    public var fallbackPrompt: [UInt8]?

    public init(
        pacer: TxPacer.Configuration = .init(),
        maxHeldInboundMessages: Int = 150,
        inputAppendDuration: Duration = AudioFrame.duration,
        silenceAppendDuration: Duration? = nil,
        speechAppendDuration: Duration? = nil,
        quietAppendDuration: Duration? = nil,
        quietAppendHold: Duration = .seconds(3),
        markEveryFrames: Int = 1,
        maxQueuedFrames: Int = 3000,
        session: RealtimeSessionSettings? = nil,
        sessionReadyTimeout: Duration = .seconds(10),
        bargeIn: BargeInConfiguration = .init(),
        watchdog: WatchdogConfiguration? = .init(),
        fallbackPrompt: [UInt8]? = nil,
        reconnect: ReconnectPolicy? = .init(),
        sessionRecycleAfter: Duration? = nil
    ) {
        self.reconnect = reconnect
        self.sessionRecycleAfter = sessionRecycleAfter
        self.fallbackPrompt = fallbackPrompt
        self.pacer = pacer
        self.maxHeldInboundMessages = maxHeldInboundMessages
        self.inputAppendDuration = inputAppendDuration
        self.silenceAppendDuration = silenceAppendDuration
        self.speechAppendDuration = speechAppendDuration
        self.quietAppendDuration = quietAppendDuration
        self.quietAppendHold = quietAppendHold
        self.markEveryFrames = max(1, markEveryFrames)
        self.maxQueuedFrames = maxQueuedFrames
        // With local barge-in the bridge decides interruptions and cancels itself; the service must not.
        self.session = session ?? RealtimeSessionSettings(turnDetection: .init(interruptResponse: !bargeIn.localEnabled))
        self.sessionReadyTimeout = sessionReadyTimeout
        self.bargeIn = bargeIn
        self.watchdog = watchdog
    }
}

extension CallConfiguration {
    /// `inputAppendDuration` in bytes of 8 kHz μ-law: whole frames, at least one.
    var inputAppendBytes: Int {
        Self.wholeFrameBytes(self.inputAppendDuration)
    }

    /// How long gathered audio of this kind may wait: its own length, never less than `inputAppendDuration`.
    func appendWait(_ kind: PendingAppendKind) -> Duration {
        let own: Duration?
        switch kind {
        case .audio: own = nil
        case .silence: own = self.silenceAppendDuration
        case .speech: own = self.speechAppendDuration
        case .quiet: own = self.quietAppendDuration
        }
        return max(own ?? self.inputAppendDuration, self.inputAppendDuration)
    }

    /// Whether speech may gather longer than ordinary audio (then the onset is sent at once on its own).
    var gathersSpeech: Bool {
        self.appendBytes(.speech) > self.inputAppendBytes
    }

    /// Whether audio outside the caller's turns may gather longer than ordinary audio (then an onset sends what was
    /// gathered at once, with it).
    var gathersQuiet: Bool {
        self.appendBytes(.quiet) > self.inputAppendBytes
    }

    /// `appendWait` in bytes of 8 kHz μ-law: whole frames, at least `inputAppendBytes`.
    func appendBytes(_ kind: PendingAppendKind) -> Int {
        kind == .audio ? self.inputAppendBytes : Self.wholeFrameBytes(self.appendWait(kind))
    }

    private static func wholeFrameBytes(_ duration: Duration) -> Int {
        let frames = Int(TxPacer.nanoseconds(duration) / TxPacer.nanoseconds(AudioFrame.duration))
        return max(1, frames) * AudioFrame.byteCount
    }
}

/// What the caller audio gathered for the next append is; each kind has its own append length.
enum PendingAppendKind: Sendable, Equatable {
    /// Ordinary audio (and any mix of kinds): `inputAppendDuration`.
    case audio
    /// Silence the bridge put in place of echo: `silenceAppendDuration`.
    case silence
    /// The caller's audio while the local VAD hears them speak: `speechAppendDuration`.
    case speech
    /// The caller's audio while none of their turns is open: `quietAppendDuration`.
    case quiet
}

/// Bounded exponential backoff for Realtime reconnects: attempt n waits `initialBackoff` × 2^(n−1), at most
/// `maxBackoff`; after `maxAttempts` failed attempts in a row the outage is final.
public struct ReconnectPolicy: Sendable, Equatable {
    /// What the caller hears while the leg is down: nothing, or two soft beeps once per outage.
    public enum GapSound: String, Sendable, Equatable, CaseIterable {
        case silence
        case tone
    }

    public var gapSound: GapSound
    public var maxAttempts: Int
    public var initialBackoff: Duration
    public var maxBackoff: Duration

    public init(
        maxAttempts: Int = 5,
        initialBackoff: Duration = .milliseconds(200),
        maxBackoff: Duration = .seconds(3),
        gapSound: GapSound = .silence
    ) {
        self.gapSound = gapSound
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
    }

    public func backoff(attempt: Int) -> Duration {
        var delay = self.initialBackoff
        for _ in 1..<max(attempt, 1) where delay < self.maxBackoff { delay = delay * 2 }
        return min(delay, self.maxBackoff)
    }
}

/// Per-call behaviour as plain values with documented defaults.
public struct CallConfiguration: Sendable, Equatable {
    /// TX schedule toward Twilio.
    public var pacer: TxPacer.Configuration
    /// Caller audio held while the Realtime leg connects and applies `session.update`, in Twilio messages
    /// (20 ms each); the oldest is dropped beyond it.
    public var maxHeldInboundMessages: Int
    /// What `session.update` asks of the service.
    public var session: RealtimeSessionSettings

    public init(
        pacer: TxPacer.Configuration = .init(),
        maxHeldInboundMessages: Int = 150,
        session: RealtimeSessionSettings = .init()
    ) {
        self.pacer = pacer
        self.maxHeldInboundMessages = maxHeldInboundMessages
        self.session = session
    }
}

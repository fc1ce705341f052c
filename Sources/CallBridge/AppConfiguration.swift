import CallBridgeCore

/// How the bridge authenticates to the Realtime service.
public enum RealtimeAuth: String, Sendable, CaseIterable {
    /// `Authorization: Bearer <key>` (OpenAI).
    case bearer
    /// `api-key: <key>` (Azure OpenAI).
    case apiKey = "api-key"
}

/// Which Realtime service a call talks to.
public enum AgentMode: String, Sendable, CaseIterable {
    /// The embedded echo agent when no API key is set and the URL is the default; the remote service otherwise.
    case auto
    /// Always the embedded echo agent.
    case echo
    /// Always the configured `--realtime-url`.
    case remote
}

/// The barge-in confirmer (the second stage, consulted only when the energy stage pauses the AI).
public enum ConfirmerMode: String, Sendable, CaseIterable {
    /// Energy alone decides.
    case energy
    /// Silero VAD confirms (the default).
    case silero
}

/// Everything `callbridge run` needs, typed and validated.
public struct AppConfiguration: Sendable {
    public static let defaultRealtimeURL = "wss://api.openai.com/v1/realtime?model=gpt-realtime"

    public var host: String
    public var port: Int
    /// The https base URL Twilio reaches; the `<Stream>` URL is derived from it.
    public var publicURL: String?
    public var realtimeURL: String
    public var apiKey: String?
    public var realtimeAuth: RealtimeAuth
    public var dialect: RealtimeDialect
    public var realtimeCAFile: String?
    public var agent: AgentMode
    public var call: CallConfiguration
    /// nil: standard output.
    public var callLogPath: String?
    /// The embedded echo agent's behaviour (when it answers calls).
    public var echoAgent: EchoAgent.Configuration
    public var confirmer: ConfirmerMode
    /// Silero speech probability at or above which a paused barge-in is confirmed.
    public var sileroThreshold: Float
    /// Concurrent calls admitted; nil: no limit.
    public var maxCalls: Int?
    /// How long a drain (SIGTERM/SIGINT) lets active calls finish before ending them.
    public var drainTimeout: Duration
    /// Strings that must never reach a log line (the API key and the auth token always are; add more here).
    public var extraSecrets: [String]
    /// Twilio's auth token (`TWILIO_AUTH_TOKEN`): checks `X-Twilio-Signature` and keys the per-call tokens.
    public var twilioAuthToken: String?
    /// `--insecure-no-signature`: no signature and no call-token checks (local testing only).
    public var insecureNoSignature: Bool
    /// How long the per-call token in the TwiML stays valid (the stream must start within it).
    public var callTokenLifetime: Duration
    /// A media stream that has not sent `start` after this long is closed.
    public var startTimeout: Duration
    /// Calls are ended (cleanly, as `max_duration`) after this long.
    public var maxCallDuration: Duration
    /// What the caller hears when the model's service fails for good: `nil` the bundled prompt, `"none"` nothing,
    /// else a file (8 kHz μ-law raw, or any common WAV).
    public var fallbackPrompt: String?
    /// The event loops' threads run in `SCHED_RR` at this priority (1…99; `RealtimeScheduling`); nil: normal
    /// scheduling.
    public var realtimePriority: Int?

    public init(
        host: String = "0.0.0.0",
        port: Int = 8080,
        publicURL: String? = nil,
        realtimeURL: String = AppConfiguration.defaultRealtimeURL,
        apiKey: String? = nil,
        realtimeAuth: RealtimeAuth = .bearer,
        dialect: RealtimeDialect = .ga,
        realtimeCAFile: String? = nil,
        agent: AgentMode = .auto,
        call: CallConfiguration = .init(),
        callLogPath: String? = nil,
        echoAgent: EchoAgent.Configuration = .init(),
        confirmer: ConfirmerMode = .silero,
        sileroThreshold: Float = 0.5,
        maxCalls: Int? = nil,
        drainTimeout: Duration = .seconds(300),
        extraSecrets: [String] = [],
        twilioAuthToken: String? = nil,
        insecureNoSignature: Bool = false,
        callTokenLifetime: Duration = .seconds(300),
        startTimeout: Duration = .seconds(10),
        maxCallDuration: Duration = .seconds(4 * 3600),
        fallbackPrompt: String? = nil,
        realtimePriority: Int? = nil
    ) {
        self.fallbackPrompt = fallbackPrompt
        self.realtimePriority = realtimePriority
        self.twilioAuthToken = twilioAuthToken
        self.insecureNoSignature = insecureNoSignature
        self.callTokenLifetime = callTokenLifetime
        self.startTimeout = startTimeout
        self.maxCallDuration = maxCallDuration
        self.maxCalls = maxCalls
        self.drainTimeout = drainTimeout
        self.extraSecrets = extraSecrets
        self.echoAgent = echoAgent
        self.confirmer = confirmer
        self.sileroThreshold = sileroThreshold
        self.host = host
        self.port = port
        self.publicURL = publicURL
        self.realtimeURL = realtimeURL
        self.apiKey = apiKey
        self.realtimeAuth = realtimeAuth
        self.dialect = dialect
        self.realtimeCAFile = realtimeCAFile
        self.agent = agent
        self.call = call
        self.callLogPath = callLogPath
    }

    /// Everything the logs must redact.
    public var secrets: [String] { ([self.apiKey, self.twilioAuthToken].compactMap { $0 } + self.extraSecrets).filter { !$0.isEmpty } }

    /// Whether Twilio's requests are authenticated (signatures and per-call tokens).
    public var checksSignatures: Bool { !self.insecureNoSignature }

    /// The key of the per-call tokens (nil without authentication).
    var callTokenKey: [UInt8]? {
        guard self.checksSignatures, let token = self.twilioAuthToken, !token.isEmpty else { return nil }
        return CallToken.key(authToken: token)
    }

    /// The URL Twilio requested for a request whose target (path and query, as sent) is `target`: the public base
    /// URL's scheme, authority and path prefix, then the target.
    func publicURL(forTarget target: String) -> String? {
        guard let base = self.publicURL else { return nil }
        return (base.hasSuffix("/") ? String(base.dropLast()) : base) + target
    }

    /// Whether calls go to the embedded echo agent.
    public var usesEchoAgent: Bool {
        switch self.agent {
        case .echo: true
        case .remote: false
        case .auto: (self.apiKey ?? "").isEmpty && self.realtimeURL == Self.defaultRealtimeURL
        }
    }

    /// Checks what can be checked before binding a socket.
    public func validate() throws(CallBridgeError) {
        if self.checksSignatures {
            guard let token = self.twilioAuthToken, !token.isEmpty else {
                throw CallBridgeError(
                    .configurationInvalid,
                    "TWILIO_AUTH_TOKEN is not set: Twilio's request signatures cannot be checked. Set it, or pass "
                        + "--insecure-no-signature for local testing only"
                )
            }
            guard self.publicURL != nil else {
                throw CallBridgeError(
                    .configurationInvalid,
                    "--public-url is required to check Twilio's signatures (they cover the public URL Twilio requested)"
                )
            }
        }
        for (name, value) in [("--call-token-lifetime", self.callTokenLifetime), ("--start-timeout", self.startTimeout), ("--max-call-duration", self.maxCallDuration)] {
            guard value > .zero else { throw CallBridgeError(.configurationInvalid, "\(name) must be positive") }
        }
        if let maxCalls, maxCalls < 1 {
            throw CallBridgeError(.configurationInvalid, "--max-calls must be at least 1, got \(maxCalls)")
        }
        if let priority = self.realtimePriority, !RealtimeScheduling.priorities.contains(priority) {
            throw CallBridgeError(.configurationInvalid, "--realtime-priority must be 1…99 (0 or unset: off), got \(priority)")
        }
        guard self.drainTimeout >= .zero else {
            throw CallBridgeError(.configurationInvalid, "--drain-timeout must not be negative")
        }
        guard (1...65535).contains(self.port) || self.port == 0 else {
            throw CallBridgeError(.configurationInvalid, "port \(self.port) is out of range")
        }
        if let publicURL {
            guard let url = URLParts(publicURL), ["https", "http"].contains(url.scheme) else {
                throw CallBridgeError(.configurationInvalid, "--public-url must be an http(s) URL, got '\(publicURL)'")
            }
        }
        if !self.usesEchoAgent {
            guard let url = URLParts(self.realtimeURL), ["wss", "ws"].contains(url.scheme) else {
                throw CallBridgeError(.configurationInvalid, "--realtime-url must be a ws:// or wss:// URL, got '\(self.realtimeURL)'")
            }
            if (self.apiKey ?? "").isEmpty && url.scheme == "wss" {
                throw CallBridgeError(.configurationInvalid, "OPENAI_API_KEY is not set for \(self.realtimeURL)")
            }
        }
        let td = self.call.session.turnDetection
        guard (0...1).contains(td.threshold) else {
            throw CallBridgeError(.configurationInvalid, "--vad-threshold must be between 0 and 1")
        }
        guard td.prefixPaddingMs >= 0, td.silenceDurationMs >= 0 else {
            throw CallBridgeError(.configurationInvalid, "turn-detection durations must not be negative")
        }
    }

    /// The `<Stream url>`: wss://<public host>/twilio/media (ws:// only when the public URL is plain http).
    public var streamURL: String {
        let base = self.publicURL ?? "http://localhost:\(self.port)"
        guard let url = URLParts(base) else { return "wss://localhost/twilio/media" }
        let scheme = url.scheme == "http" ? "ws" : "wss"
        let path = url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path
        return "\(scheme)://\(url.authority)\(path)/twilio/media"
    }
}

/// The parts of an absolute URL the bridge needs (no Foundation URL on the hot path, and no surprises).
public struct URLParts: Sendable, Equatable {
    public var scheme: String
    public var host: String
    public var port: Int?
    /// Path without the query, "" when absent.
    public var path: String
    /// Query without the "?", nil when absent.
    public var query: String?

    public init?(_ text: String) {
        guard let schemeEnd = text.range(of: "://") else { return nil }
        self.scheme = text[..<schemeEnd.lowerBound].lowercased()
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            self.host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            self.port = after.hasPrefix(":") ? Int(after.dropFirst()) : nil
        } else if let colon = authority.lastIndex(of: ":") {
            self.host = String(authority[..<colon])
            guard let port = Int(authority[authority.index(after: colon)...]) else { return nil }
            self.port = port
        } else {
            self.host = String(authority)
            self.port = nil
        }
        let tail = rest[authorityEnd...]
        if let q = tail.firstIndex(of: "?") {
            self.path = String(tail[..<q])
            self.query = String(tail[tail.index(after: q)...])
        } else {
            self.path = String(tail)
            self.query = nil
        }
    }

    public var authority: String {
        let h = self.host.contains(":") ? "[\(self.host)]" : self.host
        return self.port.map { "\(h):\($0)" } ?? h
    }
}

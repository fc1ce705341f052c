import CallBridgeCore
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How `callbridge run` writes its logs: `text` for people, `json` (one object per line) for log shippers.
public enum LogFormat: String, Sendable, CaseIterable {
    case json
    case text

    /// Text when standard error is a terminal, JSON otherwise (a container, a service manager, a pipe).
    public static var automatic: LogFormat { isatty(2) != 0 ? .text : .json }
}

/// One JSON object per line: `timestamp` (UTC, ISO 8601 with milliseconds), `level`, `label`, `message`, then every
/// metadata key (call-scoped lines carry `call_sid` and `stream_sid`). Values are strings; nested metadata is JSON.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let write: @Sendable (String) -> Void

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let provided = self.metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var line = "{\"timestamp\":\"" + Self.timestamp() + "\",\"level\":\"" + event.level.rawValue + "\",\"label\":"
            + Self.quoted(self.label) + ",\"message\":" + Self.quoted("\(event.message)")
        if let error = event.error { line += ",\"error\":" + Self.quoted("\(error)") }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) where !["timestamp", "level", "label", "message"].contains(key) {
            line += "," + Self.quoted(key) + ":" + Self.json(value)
        }
        self.write(line + "}\n")
    }

    /// Whole lines to standard error, one `write(2)` per line where it fits (lines from different threads do not
    /// interleave).
    public static let standardError: @Sendable (String) -> Void = { line in
        var line = line
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(2, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): quoted(s)
        case .stringConvertible(let c): quoted(c.description)
        case .array(let values): "[" + values.map(json).joined(separator: ",") + "]"
        case .dictionary(let entries):
            "{" + entries.sorted { $0.key < $1.key }.map { quoted($0.key) + ":" + json($0.value) }.joined(separator: ",") + "}"
        }
    }

    static func quoted(_ text: String) -> String { JSONText.quoted(text) }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2) + "T"
            + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2) + "."
            + pad(Int32(now.tv_nsec / 1_000_000), 3) + "Z"
    }
}

/// Wraps any handler so that no secret (the API key, Twilio's auth token) reaches a log line: every occurrence in the
/// message, the error and the metadata values is replaced by `[REDACTED]`. Peers do echo keys back: a Realtime
/// service's "incorrect API key" error quotes part or all of it, and connection errors can carry URLs.
public struct RedactingLogHandler: LogHandler {
    public var wrapped: any LogHandler
    let secrets: [String]

    public init(wrapping handler: any LogHandler, secrets: [String]) {
        self.wrapped = handler
        // Short strings would redact ordinary words; a real key or token is long.
        self.secrets = secrets.filter { $0.count >= 8 }
    }

    public var metadata: Logger.Metadata {
        get { self.wrapped.metadata }
        set { self.wrapped.metadata = newValue }
    }

    public var logLevel: Logger.Level {
        get { self.wrapped.logLevel }
        set { self.wrapped.logLevel = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { self.wrapped.metadataProvider }
        set { self.wrapped.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.wrapped[metadataKey: key] }
        set { self.wrapped[metadataKey: key] = newValue.map { self.scrub($0) } }
    }

    public func log(event: LogEvent) {
        guard !self.secrets.isEmpty else {
            self.wrapped.log(event: event)
            return
        }
        var event = event
        event.message = Logger.Message(stringLiteral: self.scrub("\(event.message)"))
        event.metadata = event.metadata?.mapValues { self.scrub($0) }
        if let error = event.error {
            let text = "\(error)"
            let clean = self.scrub(text)
            if clean != text { event.error = RedactedError(description: clean) }
        }
        self.wrapped.log(event: event)
    }

    func scrub(_ text: String) -> String {
        var text = text
        for secret in self.secrets where text.contains(secret) {
            text = text.replacing(secret, with: "[REDACTED]")
        }
        return text
    }

    func scrub(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let s): .string(self.scrub(s))
        case .stringConvertible(let c):
            {
                let text = c.description
                let clean = self.scrub(text)
                return clean == text ? value : .string(clean)
            }()
        case .array(let values): .array(values.map { self.scrub($0) })
        case .dictionary(let entries): .dictionary(entries.mapValues { self.scrub($0) })
        }
    }

    struct RedactedError: Error, CustomStringConvertible {
        var description: String
    }
}

extension Logger {
    /// The same logger (label, level, metadata) with every line passed through `RedactingLogHandler`.
    public func redacting(_ secrets: [String]) -> Logger {
        let secrets = secrets.filter { $0.count >= 8 }
        guard !secrets.isEmpty else { return self }
        let handler = RedactingLogHandler(wrapping: self.handler, secrets: secrets)
        return Logger(label: self.label, factory: { _ in handler })
    }
}

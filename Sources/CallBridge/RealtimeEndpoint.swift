import CallBridgeCore
import HTTPTypes
import HummingbirdWSClient
import NIOSSL

/// Where and how a call's Realtime leg connects: URL, headers, TLS trust.
public struct RealtimeEndpoint: Sendable {
    public var url: String
    public var dialect: RealtimeDialect
    public var headers: HTTPFields
    public var tlsConfiguration: TLSConfiguration?

    public init(url: String, dialect: RealtimeDialect, headers: HTTPFields = [:], tlsConfiguration: TLSConfiguration? = nil) {
        self.url = url
        self.dialect = dialect
        self.headers = headers
        self.tlsConfiguration = tlsConfiguration
    }

    /// The remote service from the configuration. System roots always stay trusted; a CA file is added to them.
    public static func remote(_ config: AppConfiguration) -> RealtimeEndpoint {
        var headers = HTTPFields()
        if let key = config.apiKey, !key.isEmpty {
            switch config.realtimeAuth {
            case .bearer: headers[.authorization] = "Bearer \(key)"
            case .apiKey: headers[HTTPField.Name("api-key")!] = key
            }
        }
        if config.dialect == .beta {
            headers[HTTPField.Name("OpenAI-Beta")!] = "realtime=v1"
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let ca = config.realtimeCAFile {
            tls.additionalTrustRoots = [.file(ca)]
        }
        return RealtimeEndpoint(url: config.realtimeURL, dialect: config.dialect, headers: headers, tlsConfiguration: tls)
    }

    var clientConfiguration: WebSocketClientConfiguration {
        // Realtime events (session.created with instructions, large deltas) exceed the 16 KiB default.
        WebSocketClientConfiguration(
            maxFrameSize: 4 << 20,
            additionalHeaders: self.headers,
            closeTimeout: .seconds(3),
            // A peer that vanishes without a FIN is noticed within a ping period (no pong → close).
            autoPing: .enabled(timePeriod: .seconds(20))
        )
    }
}

extension RealtimeEndpoint {
    /// Whether a failed connection attempt looks like the network's doing (refused, reset, timed out, no route),
    /// which a later attempt may get past, rather than the service's answer or our configuration: the WebSocket
    /// client's own errors (the server answered the upgrade with an HTTP status; a bad URL) and a TLS handshake that
    /// failed (a certificate that does not verify) will fail the same way again.
    public static func isNetworkFailure(_ error: any Error) -> Bool {
        switch error {
        case is WebSocketClientError: false
        case NIOSSLError.handshakeFailed: false
        default: true
        }
    }
}

import CallBridgeCore
import HTTPTypes
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
}

extension RealtimeEndpoint {
    /// Whether a failed connection attempt is worth another one: the network's failures (refused, reset, timed
    /// out, no route, an upgrade nobody answered) and the service's own trouble (5xx, 429, 408) are; its refusals
    /// (401, 403, 404, …), a URL we cannot use and a certificate that does not verify will fail the same way again.
    public static func isRetryable(_ error: any Error) -> Bool {
        switch error {
        case WebSocketConnectError.upgradeRefused(let status): status >= 500 || status == 429 || status == 408
        case WebSocketConnectError.invalidURL: false
        case NIOSSLError.handshakeFailed: false
        default: true
        }
    }
}

/// Errors that reach logs or the process exit, with an extensible code.
public struct CallBridgeError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let configurationInvalid = Code(name: "configurationInvalid")
        public static let realtimeConnectFailed = Code(name: "realtimeConnectFailed")
        public static let dialFailed = Code(name: "dialFailed")
        public var description: String { self.name }
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "\(self.message) (\(underlying))" }
        return self.message
    }
}

/// The per-call token: the voice webhook puts it in the TwiML as a `<Parameter>`, Twilio hands it back in the media
/// stream's `start`, and the bridge lets audio reach the model only when it is valid. It is bound to the CallSid and
/// expires, so a stream cannot be opened with a token from another call or from long ago.
///
/// Format: `v1.<expiry, unix seconds>.<base64url HMAC-SHA256(key, "v1|" + CallSid + "|" + expiry)>`. The key is
/// derived from Twilio's auth token, so every replica behind a load balancer accepts the tokens of the others.
public enum CallToken {
    /// The `<Parameter>` name that carries it.
    public static let parameterName = "callbridge_token"

    public enum Verdict: String, Sendable, Equatable {
        case valid
        case missing
        case malformed
        case expired
        case wrongSignature = "wrong_signature"
    }

    public static func key(authToken: String) -> [UInt8] {
        Digest.hmacSHA256(key: Array(authToken.utf8), message: Array("callbridge call token v1".utf8))
    }

    public static func make(callSid: String, expiresAt: Int64, key: [UInt8]) -> String {
        "v1.\(expiresAt)." + signature(callSid: callSid, expiresAt: expiresAt, key: key)
    }

    public static func verify(_ token: String?, callSid: String, now: Int64, key: [UInt8]) -> Verdict {
        guard let token else { return .missing }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "v1", let expiresAt = Int64(parts[1]), parts[1].allSatisfy(\.isASCII),
            !parts[2].isEmpty, parts[2].count <= 64
        else { return .malformed }
        let expected = signature(callSid: callSid, expiresAt: expiresAt, key: key)
        guard Digest.constantTimeEqual(Array(parts[2].utf8), Array(expected.utf8)) else { return .wrongSignature }
        return now <= expiresAt ? .valid : .expired
    }

    static func signature(callSid: String, expiresAt: Int64, key: [UInt8]) -> String {
        let mac = Digest.hmacSHA256(key: key, message: Array("v1|\(callSid)|\(expiresAt)".utf8))
        // base64url without padding: safe in XML attributes and JSON without escaping.
        return String(Base64.encode(mac).compactMap { c -> Character? in
            switch c {
            case "+": "-"
            case "/": "_"
            case "=": nil
            default: c
            }
        })
    }
}

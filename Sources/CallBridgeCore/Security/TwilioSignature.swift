/// `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + sorted name+value pairs)), checked the way Twilio's
/// reference validator does it (PROTOCOLS.md §A2): the URL is the public one Twilio requested, still URL-encoded as
/// sent; it matches as configured, and also without its port or, when it names none, with the scheme's default port;
/// form parameters are appended in byte-wise name order; a JSON body is instead bound by the URL's `bodySHA256` query
/// parameter.
public enum TwilioSignature {
    /// The signature Twilio computes for `url` and `parameters` (form fields, decoded).
    public static func compute(authToken: String, url: String, parameters: [(name: String, value: String)] = []) -> String {
        var message = Array(url.utf8)
        for (name, value) in sortedPairs(parameters) {
            message += Array(name.utf8)
            message += Array(value.utf8)
        }
        return Base64.encode(Digest.hmacSHA1(key: Array(authToken.utf8), message: message))
    }

    /// A form POST (or a GET, with no parameters): valid when the signature matches any accepted form of the URL.
    /// `trailingSlash` also tries the URL with a `/` appended to its path (Twilio's advice for WebSocket upgrades).
    public static func isValid(
        signature: String,
        authToken: String,
        url: String,
        parameters: [(name: String, value: String)] = [],
        trailingSlash: Bool = false
    ) -> Bool {
        let expected = Array(signature.utf8)
        var valid = false
        // Every candidate is computed and compared, so the time taken does not say which form matched.
        for candidate in candidates(url, trailingSlash: trailingSlash) {
            let computed = Array(compute(authToken: authToken, url: candidate, parameters: parameters).utf8)
            if Digest.constantTimeEqual(computed, expected) { valid = true }
        }
        return valid
    }

    /// A JSON body: the URL carries `bodySHA256`, which must be the hex SHA-256 of the raw body, and the signature
    /// covers the URL alone.
    public static func isValid(signature: String, authToken: String, url: String, jsonBody: [UInt8]) -> Bool {
        guard let claimed = queryValue(url, "bodySHA256") else { return false }
        let actual = Digest.hex(Digest.sha256(jsonBody))
        let bodyMatches = Digest.constantTimeEqual(Array(claimed.lowercased().utf8), Array(actual.utf8))
        let signatureMatches = isValid(signature: signature, authToken: authToken, url: url)
        return bodyMatches && signatureMatches
    }

    /// Names in byte order; a repeated name contributes each of its distinct values, sorted.
    static func sortedPairs(_ parameters: [(name: String, value: String)]) -> [(String, String)] {
        var values: [String: Set<String>] = [:]
        for (name, value) in parameters { values[name, default: []].insert(value) }
        let less: (String, String) -> Bool = { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        return values.keys.sorted(by: less).flatMap { name in values[name]!.sorted(by: less).map { (name, $0) } }
    }

    /// The URL without user info in the forms the reference validator tries: with the port it names (as configured) and
    /// without it; a URL that names no port, as it is and with the scheme's default port added (`:443` for https, `:80`
    /// for anything else). Deduplicated; optionally each also with a `/` appended to the path.
    static func candidates(_ url: String, trailingSlash: Bool) -> [String] {
        guard let colon = url.firstIndex(of: ":"), url[colon...].hasPrefix("://") else { return [url] }
        let scheme = String(url[..<colon])
        let rest: Substring = url[url.index(colon, offsetBy: 3)...]
        let isDelimiter: (Character) -> Bool = { $0 == "/" || $0 == "?" || $0 == "#" }
        let authorityEnd: String.Index = rest.firstIndex(where: isDelimiter) ?? rest.endIndex
        var authority = String(rest[..<authorityEnd])
        let tail = String(rest[authorityEnd...])
        if let at = authority.lastIndex(of: "@") { authority = String(authority[authority.index(after: at)...]) }
        // The host, without a port (an IPv6 literal keeps its brackets), and the port the URL names, if any.
        var host = authority
        var port: String?
        if let colon = authority.lastIndex(of: ":"), !authority[colon...].contains("]") {
            host = String(authority[..<colon])
            port = String(authority[authority.index(after: colon)...])
            if port == "" { port = nil }  // `host:` names no port
        }
        let defaultPort = scheme.lowercased() == "https" ? "443" : "80"
        // An explicit port is kept as configured (https://host:8443/… is not https://host:443/…).
        let withPort = scheme + "://" + host + ":" + (port ?? defaultPort) + tail
        var forms: [String] = []
        for form in [withPort, scheme + "://" + host + tail] where !forms.contains(form) {
            forms.append(form)
        }
        if trailingSlash {
            for form in forms {
                let pathEnd = form.firstIndex { $0 == "?" || $0 == "#" } ?? form.endIndex
                let withSlash = form[..<pathEnd].hasSuffix("/") ? form : String(form[..<pathEnd]) + "/" + String(form[pathEnd...])
                if !forms.contains(withSlash) { forms.append(withSlash) }
            }
        }
        return forms
    }

    /// A query parameter's raw value (not percent-decoded: `bodySHA256` is hex).
    static func queryValue(_ url: String, _ name: String) -> String? {
        guard let question = url.firstIndex(of: "?") else { return nil }
        let query = url[url.index(after: question)...].prefix { $0 != "#" }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.first.map(String.init) == name { return parts.count > 1 ? String(parts[1]) : "" }
        }
        return nil
    }
}

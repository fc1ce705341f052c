/// TwiML for the voice webhook.
public enum TwiML {
    /// `<Connect><Stream>` to the bridge; parameters come back in the `start` message's `customParameters`.
    /// Twilio limits each name + value pair to under 500 characters, so longer values are cut.
    public static func connectStream(url: String, parameters: [(name: String, value: String)]) -> String {
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"" + escape(url) + "\">"
        for (name, value) in parameters {
            let room = max(0, 499 - name.count)
            xml += "<Parameter name=\"" + escape(name) + "\" value=\"" + escape(String(value.prefix(room))) + "\"/>"
        }
        return xml + "</Stream></Connect></Response>"
    }

    /// `<Reject>`: Twilio refuses the call before it is answered (no charge to the caller), with a busy signal.
    public static func reject() -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Reject reason=\"busy\"/></Response>"
    }

    /// What Twilio reads from a `<Connect><Stream>` document: the Stream URL and its `<Parameter>`s (for the load
    /// generator, which plays Twilio). Nil when there is no `<Stream url>`.
    public static func parseStream(_ xml: String) -> (url: String, parameters: [String: String])? {
        guard let stream = xml.firstRange(of: "<Stream "),
            let url = attribute("url", in: xml[stream.upperBound...].prefix { $0 != ">" })
        else { return nil }
        var parameters: [String: String] = [:]
        var rest = xml[stream.upperBound...]
        while let tag = rest.firstRange(of: "<Parameter ") {
            let element = rest[tag.upperBound...].prefix { $0 != ">" }
            if let name = attribute("name", in: element) { parameters[name] = attribute("value", in: element) ?? "" }
            rest = rest[element.endIndex...]
        }
        return (url, parameters)
    }

    /// The unescaped value of `name="…"` in an element's attributes.
    static func attribute(_ name: String, in element: Substring) -> String? {
        var search = element[...]
        while let found = search.firstRange(of: name + "=\"") {
            let before = found.lowerBound == element.startIndex ? " " : element[element.index(before: found.lowerBound)]
            let value = element[found.upperBound...].prefix { $0 != "\"" }
            if before == " " { return unescape(String(value)) }
            search = element[found.upperBound...]
        }
        return nil
    }

    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        return text.replacing("&quot;", with: "\"").replacing("&apos;", with: "'").replacing("&lt;", with: "<")
            .replacing("&gt;", with: ">").replacing("&amp;", with: "&")
    }

    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for ch in text {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(ch)
            }
        }
        return out
    }
}

/// `application/x-www-form-urlencoded` bodies (Twilio webhooks).
public enum FormURLEncoded {
    /// Pairs in order; `+` is a space, `%XX` is a byte; invalid escapes are kept literally.
    public static func parse(_ body: String) -> [(name: String, value: String)] {
        body.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            if let eq = pair.firstIndex(of: "=") {
                return (decode(pair[..<eq]), decode(pair[pair.index(after: eq)...]))
            }
            return (decode(pair[...]), "")
        }
    }

    static func decode(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "+") {
                bytes.append(0x20)
            } else if byte == UInt8(ascii: "%"), iterator.count >= 2,
                let hi = hexValue(iterator[iterator.startIndex]), let lo = hexValue(iterator[iterator.startIndex + 1])
            {
                bytes.append(hi << 4 | lo)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

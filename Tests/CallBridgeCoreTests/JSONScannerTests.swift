import Testing

@testable import CallBridgeCore

/// `JSONScanner`'s searches jump from quote to quote (`memchr`); here they are checked against byte-by-byte
/// references (the way they were written before) on messages built to put quotes, keys, colons, braces, whitespace
/// and backslashes everywhere, and on truncations of real Realtime messages.
@Suite struct JSONScannerTests {
    enum Reference {
        static func isPlainObject(_ bytes: [UInt8]) -> Bool {
            guard bytes.count >= 2, bytes[0] == UInt8(ascii: "{"), bytes[bytes.count - 1] == UInt8(ascii: "}") else {
                return false
            }
            var inString = false
            for byte in bytes {
                if byte == UInt8(ascii: "\\") { return false }
                if byte == UInt8(ascii: "\"") {
                    inString.toggle()
                } else if !inString && JSONScanner.isWhitespace(byte) {
                    return false
                }
            }
            return !inString
        }

        static func matches(_ bytes: [UInt8], _ pattern: [UInt8], at offset: Int) -> Bool {
            offset + pattern.count <= bytes.count && Array(bytes[offset..<(offset + pattern.count)]) == pattern
        }

        static func closingQuote(_ bytes: [UInt8], from start: Int) -> Int? {
            var end = start
            while end < bytes.count && bytes[end] != UInt8(ascii: "\"") { end += 1 }
            return end < bytes.count ? end : nil
        }

        static func stringValueRange(_ bytes: [UInt8], key: String) -> Range<Int>? {
            let pattern = Array("\"\(key)\":\"".utf8)
            var found: Range<Int>?
            var i = 0
            while i + pattern.count <= bytes.count {
                if Self.matches(bytes, pattern, at: i) {
                    let start = i + pattern.count
                    guard let end = Self.closingQuote(bytes, from: start) else { return nil }
                    if found != nil { return nil }
                    found = start..<end
                    i = end + 1
                    continue
                }
                i += 1
            }
            return found
        }

        static func occurrences(_ bytes: [UInt8], key: String) -> Int {
            let pattern = Array("\"\(key)\":".utf8)
            return (0..<max(0, bytes.count - pattern.count + 1)).count { Self.matches(bytes, pattern, at: $0) }
        }
    }

    struct Differences {
        var checked = 0
        var plain = 0
        var failures: [String] = []

        mutating func compare(_ bytes: [UInt8]) {
            self.checked += 1
            let reference = Reference.isPlainObject(bytes)
            let (isPlain, answers) = bytes.withUnsafeBufferPointer { buffer in
                let scanner = JSONScanner(bytes: buffer)
                let answers: [String] = ["type", "audio", "delta"].flatMap { key -> [String] in
                    let range: Range<Int>?
                    let count: Int
                    switch key {
                    case "type": (range, count) = (scanner.stringValueRange(forKey: "type"), scanner.occurrences(ofKey: "type"))
                    case "audio": (range, count) = (scanner.stringValueRange(forKey: "audio"), scanner.occurrences(ofKey: "audio"))
                    default: (range, count) = (scanner.stringValueRange(forKey: "delta"), scanner.occurrences(ofKey: "delta"))
                    }
                    return ["\(String(describing: range))", "\(count)"]
                } + ["\(scanner.count(of: UInt8(ascii: "{")))", "\(scanner.count(of: UInt8(ascii: "\"")))"]
                return (JSONScanner.isPlainObject(buffer), answers)
            }
            let expected: [String] = ["type", "audio", "delta"].flatMap { key in
                ["\(String(describing: Reference.stringValueRange(bytes, key: key)))", "\(Reference.occurrences(bytes, key: key))"]
            } + ["\(bytes.count { $0 == UInt8(ascii: "{") })", "\(bytes.count { $0 == UInt8(ascii: "\"") })"]
            if reference { self.plain += 1 }
            if isPlain != reference || answers != expected {
                self.failures.append("plain \(isPlain) vs \(reference), \(answers) vs \(expected) for \(String(decoding: bytes, as: UTF8.self))")
            }
        }

        func report() {
            for failure in self.failures.prefix(10) { Issue.record(Comment(rawValue: failure)) }
        }
    }

    static let seeds = [
        #"{"type":"input_audio_buffer.append","audio":"QUJDRA=="}"#,
        #"{"type":"response.output_audio.delta","event_id":"ev1","response_id":"r1","item_id":"i1","output_index":0,"content_index":0,"delta":"AAAAgICA/w=="}"#,
        #"{"type":"session.updated","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/pcmu"}}}}}"#,
    ]

    @Test func tokenSoup() {
        let tokens = [
            "\"", "\"", "\"", ":", ":", ",", "{", "}", "type", "audio", "delta", "QUJD", "12",
            "\"type\":\"", "\"audio\":\"", "\"delta\":\"", "\"type\":", "\"audio\":", "\":\"", " ", "\n", "\\",
            String(repeating: "QUJD", count: 5),
        ]
        var differences = Differences()
        var rng = SplitMix64(state: 0x5CA7)
        for _ in 0..<40_000 {
            differences.compare(Array(rng.tokenSoup(tokens, opening: "{", otherwise: "", maxTokens: 16).utf8))
        }
        differences.report()
        #expect(differences.failures.isEmpty)
        #expect(differences.plain > 2_000, "plain objects must be exercised: \(differences.plain)")
    }

    @Test func realMessagesTheirTruncationsAndDeletions() {
        var differences = Differences()
        for seed in Self.seeds {
            let bytes = Array(seed.utf8)
            differences.compare(bytes)
            for cut in 0..<bytes.count {
                differences.compare(Array(bytes[..<cut]) + [UInt8(ascii: "}")])
                var deleted = bytes
                deleted.remove(at: cut)
                differences.compare(deleted)
            }
        }
        differences.report()
        #expect(differences.failures.isEmpty)
        #expect(differences.plain > 100, "plain objects must be exercised: \(differences.plain)")
    }
}

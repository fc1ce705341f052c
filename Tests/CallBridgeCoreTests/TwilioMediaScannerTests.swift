import Foundation
import Testing

@testable import CallBridgeCore

/// The one-pass `media` scanner against the multi-pass one it replaced (kept here as the oracle, on `JSONScanner`):
/// they must answer identically on every input, well-formed or not, with and without an expected stream. The
/// agreement with Codable is `ScannerFuzzTests`' job; this pins the exact set of messages the fast path takes.
@Suite struct TwilioMediaScannerTests {
    /// The previous `TwilioCodec.scanMedia`: one search over the message per question.
    static func multiPassScanMedia(_ text: String, streamSid expected: String?) -> (payload: String, chunk: Int?)? {
        JSONScanner.withScanner(text) { scanner -> (payload: String, chunk: Int?)? in
            guard let event = scanner.stringValueRange(forKey: "event"), scanner.equals(event, "media"),
                let payload = scanner.stringValueRange(forKey: "payload"),
                payload.count <= TwilioCodec.maxPayloadCharacters, scanner.isBase64(payload)
            else { return nil }
            if let expected {
                switch scanner.occurrences(ofKey: "streamSid") {
                case 0: break
                case 1:
                    guard let range = scanner.stringValueRange(forKey: "streamSid"), scanner.equals(range, expected) else {
                        return nil
                    }
                default: return nil
                }
            }
            var chunk: Int?
            switch scanner.occurrences(ofKey: "chunk") {
            case 0: break
            case 1:
                guard let range = scanner.stringValueRange(forKey: "chunk") else { return nil }
                chunk = scanner.integer(range)
            default: return nil
            }
            return (scanner.string(payload), chunk)
        }
    }

    struct Differences {
        var checked = 0
        var answered = 0
        var failures: [String] = []

        mutating func compare(_ text: String) {
            for streamSid in [nil, ScannerFuzzTests.seedStreamSid, "MZ1"] {
                let onePass = TwilioCodec.scanMedia(text, streamSid: streamSid)
                let multiPass = TwilioMediaScannerTests.multiPassScanMedia(text, streamSid: streamSid)
                self.checked += 1
                if onePass != nil { self.answered += 1 }
                if onePass?.payload != multiPass?.payload || onePass?.chunk != multiPass?.chunk {
                    self.failures.append("\(String(describing: onePass)) vs \(String(describing: multiPass)) for \(text)")
                }
            }
        }

        func report() {
            for failure in self.failures.prefix(10) { Issue.record(Comment(rawValue: failure)) }
        }
    }

    @Test func seedsDecoysAndTheirTruncationsAndDeletions() {
        var differences = Differences()
        let texts = ScannerFuzzTests.twilioSeeds + ScannerFuzzTests.nestedDecoys
            + ScannerFuzzTests.whitespaceDuplicates.map(\.text)
        for text in texts {
            differences.compare(text)
            let bytes = Array(text.utf8)
            for cut in 0..<bytes.count {
                differences.compare(String(decoding: bytes[..<cut], as: UTF8.self))
                var deleted = bytes
                deleted.remove(at: cut)
                differences.compare(String(decoding: deleted, as: UTF8.self))
            }
        }
        differences.report()
        #expect(differences.failures.isEmpty)
        #expect(differences.answered > 300, "the fast path must be exercised: \(differences.answered)")
    }

    @Test func mutatedAndGeneratedMessages() {
        var differences = Differences()
        var rng = SplitMix64(state: 0x0E_9A55)
        for _ in 0..<1_000 {
            for seed in ScannerFuzzTests.twilioSeeds {
                var bytes = Array(seed.utf8)
                for _ in 0..<ScannerFuzzTests.mutationCount(&rng) { bytes = ScannerFuzzTests.mutate(bytes, &rng) }
                differences.compare(String(decoding: bytes, as: UTF8.self))
            }
            differences.compare(ScannerFuzzTests.randomTwilioMedia(&rng))
        }
        differences.report()
        #expect(differences.failures.isEmpty)
        #expect(differences.answered > 3_000, "the fast path must be exercised: \(differences.answered)")
    }

    /// Short messages made of the tokens that matter to a key search (quotes, colons, the key names, values), so
    /// that keys run into values, values into keys and patterns overlap: the corners a one-pass search can get wrong
    /// (resuming after a value for one key but not another, values never closed, counts of `"key":`).
    @Test func tokenSoup() {
        let tokens = [
            "\"", "\"", "\"", ":", ":", ",", "{", "}", "event", "media", "payload", "streamSid", "chunk", "QUJD",
            "12", "MZ1", "\"event\":\"media\"", "\"payload\":\"QUJD\"", "\"payload\":\"", "\"chunk\":\"", "\"streamSid\":\"", "\":\"",
            "\"chunk\":", "\"streamSid\":", " ", "\\",
        ]
        var differences = Differences()
        var rng = SplitMix64(state: 0x500F)
        for _ in 0..<60_000 {
            differences.compare(rng.tokenSoup(tokens, opening: "{\"event\":\"media\",", otherwise: "{", maxTokens: 14))
        }
        differences.report()
        #expect(differences.failures.isEmpty)
        #expect(differences.answered > 1_000, "the fast path must be exercised: \(differences.answered)")
    }
}

import Foundation
import Testing

@testable import CallBridgeCore

/// RFC 4648 base64 (standard alphabet, padded), the transport of every audio payload.
struct Base64Tests {
    static let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    @Test("round trip for every length 0...300 of seeded random bytes")
    func roundTripAllLengths() throws {
        var rng = SplitMix64(state: 0x00C0_FFEE)
        for length in 0...300 {
            let bytes = rng.bytes(length)
            let text = Base64.encode(bytes)
            #expect(text.utf8.count == 4 * ((length + 2) / 3), "length \(length)")
            let body = text.utf8.prefix { $0 != UInt8(ascii: "=") }
            #expect(body.allSatisfy { Self.alphabet.contains($0) }, "length \(length)")
            #expect(text.utf8.count - body.count == (3 - length % 3) % 3, "padding for length \(length)")
            // Foundation as an independent reference encoder.
            #expect(text == Data(bytes).base64EncodedString(), "length \(length)")
            let decoded = try #require(Base64.decode(text), "length \(length)")
            #expect(decoded == bytes, "length \(length)")
        }
    }

    @Test("decoding onto the end of an array appends, and invalid base64 leaves the array as it was")
    func decodesOntoTheEnd() {
        var rng = SplitMix64(state: 7)
        let head = rng.bytes(5)
        var output = head
        for length in [0, 1, 2, 3, 160, 161] {
            let bytes = rng.bytes(length)
            let before = output
            let ok = Array(Base64.encode(bytes).utf8).withUnsafeBufferPointer { Base64.decode(bytes: $0, appendingTo: &output) }
            #expect(ok, "length \(length)")
            #expect(output == before + bytes, "length \(length)")
        }
        let kept = output
        for bad in ["QUJD*", "QUJ", "Q===", "QU=D"] {
            let ok = Array(bad.utf8).withUnsafeBufferPointer { Base64.decode(bytes: $0, appendingTo: &output) }
            #expect(!ok, "\(bad)")
            #expect(output == kept, "\(bad)")
        }
    }

    @Test("decodes what Foundation encodes")
    func decodesFoundationOutput() throws {
        var rng = SplitMix64(state: 42)
        for length in [1, 2, 3, 59, 160, 161, 162, 960, 4000] {
            let bytes = rng.bytes(length)
            let decoded = try #require(Base64.decode(Data(bytes).base64EncodedString()))
            #expect(decoded == bytes, "length \(length)")
        }
    }

    @Test(
        "RFC 4648 section 10 vectors",
        arguments: [
            ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy"),
        ]
    )
    func rfcVectors(plain: String, encoded: String) {
        #expect(Base64.encode(Array(plain.utf8)) == encoded)
        #expect(Base64.decode(encoded) == Array(plain.utf8))
    }

    @Test("all 256 byte values, and bytes that use '+' and '/'")
    func fullByteRange() {
        let all = (0...255).map { UInt8($0) }
        #expect(Base64.decode(Base64.encode(all)) == all)
        #expect(Base64.encode([0xFB, 0xFF, 0xBF] as [UInt8]) == "+/+/")
        #expect(Base64.encode([0x00, 0x00, 0x00] as [UInt8]) == "AAAA")
        #expect(Base64.decode("+/+/") == [0xFB, 0xFF, 0xBF])
    }

    @Test("20 ms of μ-law silence is '/' × 213 + 'w==' (216 characters)")
    func silenceFrame() {
        let silence = [UInt8](repeating: 0xFF, count: 160)
        let expected = String(repeating: "/", count: 213) + "w=="
        let text = Base64.encode(silence)
        #expect(text == expected)
        #expect(text.utf8.count == 216)
        #expect(Base64.decode(expected) == silence)
    }

    @Test("encodes any Collection, not only arrays")
    func encodesSlices() {
        let bytes: [UInt8] = Array("xxfoobarxx".utf8)
        #expect(Base64.encode(bytes[2..<8]) == "Zm9vYmFy")
        #expect(Base64.encode(bytes.reversed().prefix(0)) == "")
    }

    @Test(
        "rejects malformed input",
        arguments: [
            // Bad length.
            "Z", "Zg", "Zg=", "Zm9", "Zm9vY", "Zm9vYg=", "Zm9vYg===",
            // Characters outside the alphabet (incl. URL-safe, whitespace, non-ASCII).
            "Zm9v!A==", "Zm-v", "Zm_v", "Zm9 ", " Zm9", "Zm9v\n", "Zm\u{E9}",
            // '=' in the middle.
            "=m9v", "Z=9v", "Zm=v", "Zg==Zm9v", "Zm8=Zm9v",
            // Too much padding or padding in the wrong place.
            "A===", "====", "Zm=8",
        ]
    )
    func rejects(text: String) {
        #expect(Base64.decode(text) == nil)
        var copy = text
        #expect(copy.withUTF8 { Base64.isValid($0) } == false)
        var output: [UInt8] = [1, 2, 3]
        let decoded = Base64.decode(text, into: &output)
        #expect(!decoded)
        #expect(output.isEmpty)
    }

    @Test("decoding into a reused array gives what decode returns, for every length, twice at the same length, and after a failure")
    func decodeIntoReusedArray() {
        var rng = SplitMix64(state: 0xBA5E)
        var output: [UInt8] = []
        for length in 0...300 {
            let bytes = rng.bytes(length)
            let decoded = Base64.decode(Base64.encode(bytes), into: &output)
            #expect(decoded, "length \(length)")
            #expect(output == bytes, "length \(length)")
            // The same length again, other bytes: the array is reused as it is and every byte overwritten.
            let again = rng.bytes(length)
            #expect(Base64.decode(Base64.encode(again), into: &output) && output == again, "length \(length)")
            let refused = !Base64.decode("Zm9v!A==", into: &output)
            #expect(refused)
        }
    }

    @Test("accepts the boundary cases of padding")
    func acceptsPadding() {
        #expect(Base64.decode("AA==") == [0x00])
        #expect(Base64.decode("AAA=") == [0x00, 0x00])
        #expect(Base64.decode("Zm9vZg==") == Array("foof".utf8))
        #expect(Base64.decode("") == [])
    }

    /// The scanner validates with `isValid` and the codecs decode with `decode`: they must agree on what is base64.
    @Test("isValid and decode agree on seeded junk strings")
    func validatorAgreesWithDecoder() {
        let pool: [UInt8] = Array("AZaz09+/=-_ !\u{7F}".utf8) + [0x80, 0xC3]
        var rng = SplitMix64(state: 7)
        var accepted = 0
        for _ in 0..<5000 {
            let length = Int(rng.next() % 3) * 4 + Int(rng.next() % 5 == 0 ? rng.next() % 4 : 0)
            let bytes = (0..<length).map { _ in
                // Mostly alphabet characters so that a good share of the strings are valid.
                rng.next() % 8 == 0 ? pool[Int(rng.next() % UInt64(pool.count))] : pool[Int(rng.next() % 6)]
            }
            let valid = bytes.withUnsafeBufferPointer { Base64.isValid($0) }
            let decoded = bytes.withUnsafeBufferPointer { Base64.decode(bytes: $0) }
            #expect(valid == (decoded != nil), "input \(bytes)")
            if valid { accepted += 1 }
        }
        // The generator must exercise both outcomes.
        #expect(accepted > 500)
        #expect(accepted < 4500)
    }

    /// `isValid` checks the alphabet by byte ranges: every byte value, in every position of valid strings with no,
    /// one and two padding characters, must be judged as the decoder's table judges it.
    @Test("isValid and decode agree on every byte value in every position")
    func validatorAgreesOnEveryByte() {
        var accepted = 0
        for text in ["Zm9vYmFy", "Zm9vYmE=", "Zm9vYg==", "+/09"] {
            for position in 0..<text.utf8.count {
                for byte in 0...255 {
                    var bytes = Array(text.utf8)
                    bytes[position] = UInt8(byte)
                    let valid = bytes.withUnsafeBufferPointer { Base64.isValid($0) }
                    let decoded = bytes.withUnsafeBufferPointer { Base64.decode(bytes: $0) }
                    #expect(valid == (decoded != nil), "\(text) with \(byte) at \(position)")
                    if valid { accepted += 1 }
                }
            }
        }
        // Both outcomes, many times: about a quarter of the byte values are in the alphabet.
        #expect(accepted > 1_000 && accepted < 28 * 128, "\(accepted)")
    }
}

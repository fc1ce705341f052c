import Testing

@testable import CallBridgeCore

/// PROTOCOLS.md §D1: vectors computed with Twilio's own validator, plus the tampering it must reject.
@Suite struct TwilioSignatureTests {
    @Test func digestsMatchTheStandardVectors() {
        #expect(Digest.hex(Digest.sha1(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(Digest.hex(Digest.sha256(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Digest.hex(Digest.sha256([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // Two blocks of padding (56 bytes of input).
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(Digest.hex(Digest.sha256(long)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(Digest.hex(Digest.sha1(long)) == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        // RFC 4231 test case 2 and RFC 2202 test case 2.
        #expect(
            Digest.hex(Digest.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        )
        #expect(
            Digest.hex(Digest.hmacSHA1(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
                == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        )
        // A key longer than the block is hashed first (RFC 4231 test case 6).
        let bigKey = [UInt8](repeating: 0xAA, count: 131)
        #expect(
            Digest.hex(Digest.hmacSHA256(key: bigKey, message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        )
    }

    static let v0Params: [(name: String, value: String)] = [
        ("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675310"), ("Digits", "1234"), ("From", "+14158675310"),
        ("To", "+18005551212"),
    ]

    static let v1Params: [(name: String, value: String)] = [
        ("AccountSid", "AC00000000000000000000000000000001"), ("ApiVersion", "2010-04-01"),
        ("CallSid", "CA00000000000000000000000000000001"), ("CallStatus", "ringing"), ("Called", "+15005550006"),
        ("Caller", "+14155550100"), ("Direction", "inbound"), ("From", "+14155550100"), ("To", "+15005550006"),
    ]

    @Test func theDocsExampleAndAVoiceWebhook() {
        #expect(TwilioSignature.compute(authToken: "12345", url: "https://example.com/myapp.php?foo=1&bar=2", parameters: Self.v0Params) == "L/OH5YylLD5NRKLltdqwSvS0BnU=")
        let token = "0123456789abcdef0123456789abcdef"
        let url = "https://bridge.example.com/twilio/voice"
        #expect(TwilioSignature.compute(authToken: token, url: url, parameters: Self.v1Params) == "2t9fLdZpPkvkc94Qo5MuiSG9VXY=")
        #expect(TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: url, parameters: Self.v1Params))
        // The order the fields arrive in does not matter.
        #expect(TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: url, parameters: Self.v1Params.reversed()))
    }

    @Test func portVariants() {
        let token = "0123456789abcdef0123456789abcdef"
        #expect(TwilioSignature.compute(authToken: token, url: "https://bridge.example.com:443/twilio/voice", parameters: Self.v1Params) == "5Pcu7TCCA/Q7xrhGeuJxJ0GHPAo=")
        // Configured with the port, signed without it, and the other way round: both accepted.
        #expect(TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: "https://bridge.example.com:443/twilio/voice", parameters: Self.v1Params))
        #expect(TwilioSignature.isValid(signature: "5Pcu7TCCA/Q7xrhGeuJxJ0GHPAo=", authToken: token, url: "https://bridge.example.com/twilio/voice", parameters: Self.v1Params))
        // User info never counts.
        #expect(TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: "https://user:pw@bridge.example.com/twilio/voice", parameters: Self.v1Params))
        // Like the reference validator, any port is also tried stripped (the URL is ours, from --public-url)…
        #expect(TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: "https://bridge.example.com:8443/twilio/voice", parameters: Self.v1Params))
        // …but another host, scheme or path is another URL.
        #expect(!TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: "https://bridge2.example.com/twilio/voice", parameters: Self.v1Params))
        #expect(!TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: "http://bridge.example.com/twilio/voice", parameters: Self.v1Params))
        #expect(!TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: "https://bridge.example.com/twilio/voice2", parameters: Self.v1Params))
    }

    /// A `--public-url` with a non-default port: Twilio requests, and signs, the URL with that port.
    ///
    /// The expected signatures were computed independently of this code, with Python's standard library:
    ///   base64.b64encode(hmac.new(token.encode(), (url + "".join(n + v for n, v in sorted(params))).encode(),
    ///                             hashlib.sha1).digest())
    /// (the same expression reproduces V1 `2t9fLdZpPkvkc94Qo5MuiSG9VXY=` and V2 `dBy0LcUrH9PRKmA1lpsC3DTUGgs=`).
    @Test func aNonDefaultPortIsCheckedAsConfigured() {
        let token = "0123456789abcdef0123456789abcdef"
        let url = "https://bridge.example.com:8443/twilio/voice"
        // V1's parameters, signed over the URL with :8443.
        #expect(TwilioSignature.compute(authToken: token, url: url, parameters: Self.v1Params) == "0oA0v/p6y4HvMeaTGWq8IXYsfc0=")
        #expect(TwilioSignature.isValid(signature: "0oA0v/p6y4HvMeaTGWq8IXYsfc0=", authToken: token, url: url, parameters: Self.v1Params))
        // The port-less form is still accepted, as by the reference validator…
        #expect(TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: url, parameters: Self.v1Params))
        // …but a URL that names a port is not also tried with the scheme's default one: :443 is another port.
        #expect(!TwilioSignature.isValid(signature: "5Pcu7TCCA/Q7xrhGeuJxJ0GHPAo=", authToken: token, url: url, parameters: Self.v1Params))
        // Plain http on a development port (the bridge's own default public URL shape).
        let local = "http://127.0.0.1:8080/twilio/voice"
        #expect(TwilioSignature.isValid(signature: "U3R1qOHJAj4flUmur8JmyiILXd8=", authToken: token, url: local, parameters: Self.v1Params))
        // The media upgrade over a `<Stream url>` with the port, with and without the trailing slash (V2's token).
        let streamToken = "fedcba9876543210fedcba9876543210"
        let stream = "wss://bridge.example.com:8443/twilio/media"
        #expect(TwilioSignature.isValid(signature: "qDcwBjZflJxgQ+qBxpDx1SdCq/g=", authToken: streamToken, url: stream, trailingSlash: true))
        #expect(TwilioSignature.isValid(signature: "jwlWJCT164KuYTaUKY6g7WHq1/k=", authToken: streamToken, url: stream, trailingSlash: true))
        #expect(TwilioSignature.candidates(stream, trailingSlash: false) == [stream, "wss://bridge.example.com/twilio/media"])
    }

    @Test func tamperingAndTheWrongTokenAreRejected() {
        let token = "0123456789abcdef0123456789abcdef"
        let url = "https://bridge.example.com/twilio/voice"
        var tampered = Self.v1Params
        tampered[7] = ("From", "+14155550199")
        #expect(!TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: url, parameters: tampered))
        #expect(!TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: url, parameters: Self.v1Params + [("Extra", "1")]))
        #expect(!TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: "fedcba9876543210fedcba9876543210", url: url, parameters: Self.v1Params))
        #expect(!TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY=", authToken: token, url: url + "?x=1", parameters: Self.v1Params))
        #expect(!TwilioSignature.isValid(signature: "", authToken: token, url: url, parameters: Self.v1Params))
        #expect(!TwilioSignature.isValid(signature: "2t9fLdZpPkvkc94Qo5MuiSG9VXY", authToken: token, url: url, parameters: Self.v1Params))
    }

    @Test func aWebSocketHandshakeWithAndWithoutTheTrailingSlash() {
        let token = "fedcba9876543210fedcba9876543210"
        let url = "wss://bridge.example.com/twilio/media"
        #expect(TwilioSignature.compute(authToken: token, url: url) == "dBy0LcUrH9PRKmA1lpsC3DTUGgs=")
        #expect(TwilioSignature.compute(authToken: token, url: url + "/") == "wLX/KX4qROCGpaG0NrsAAAFt6cs=")
        #expect(TwilioSignature.isValid(signature: "dBy0LcUrH9PRKmA1lpsC3DTUGgs=", authToken: token, url: url, trailingSlash: true))
        #expect(TwilioSignature.isValid(signature: "wLX/KX4qROCGpaG0NrsAAAFt6cs=", authToken: token, url: url, trailingSlash: true))
        #expect(!TwilioSignature.isValid(signature: "wLX/KX4qROCGpaG0NrsAAAFt6cs=", authToken: token, url: url, trailingSlash: false))
    }

    @Test func aQueryStringNonASCIIAndCaseSensitiveOrder() {
        let parameters: [(name: String, value: String)] = [
            ("CallSid", "CA00000000000000000000000000000002"), ("From", "+447700900123"), ("To", "+15005550006"),
            ("CallerName", "Zoë O'Brien & Co"), ("callerExtra", "lower-case key sorts after upper"), ("Digits", "12#*"),
        ]
        #expect(TwilioSignature.sortedPairs(parameters).map(\.0) == ["CallSid", "CallerName", "Digits", "From", "To", "callerExtra"])
        #expect(
            TwilioSignature.compute(
                authToken: "AbCdEf0123456789AbCdEf0123456789",
                url: "https://bridge.example.com/twilio/voice?tenant=acme&x=a%20b",
                parameters: parameters
            ) == "U8ug1bKZmeNCE6ntNjifk2jXvtU="
        )
    }

    @Test func aJSONBodyIsBoundByItsHash() {
        let body = Array(#"{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}"#.utf8)
        let hash = "5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9"
        #expect(Digest.hex(Digest.sha256(body)) == hash)
        let url = "https://example.com/myapp?bodySHA256=\(hash)"
        #expect(TwilioSignature.compute(authToken: "12345", url: url) == "hPXmLwIy3Fgqv1i9KPmH/HhQ6zo=")
        #expect(TwilioSignature.isValid(signature: "hPXmLwIy3Fgqv1i9KPmH/HhQ6zo=", authToken: "12345", url: url, jsonBody: body))
        var changed = body
        changed[changed.count - 3] = UInt8(ascii: "1")
        #expect(!TwilioSignature.isValid(signature: "hPXmLwIy3Fgqv1i9KPmH/HhQ6zo=", authToken: "12345", url: url, jsonBody: changed))
        #expect(!TwilioSignature.isValid(signature: "hPXmLwIy3Fgqv1i9KPmH/HhQ6zo=", authToken: "12345", url: "https://example.com/myapp", jsonBody: body))
    }
}

@Suite struct CallTokenTests {
    static let key = CallToken.key(authToken: "0123456789abcdef0123456789abcdef")

    @Test func aTokenIsValidForItsCallUntilItExpires() {
        let token = CallToken.make(callSid: "CA1", expiresAt: 1_000, key: Self.key)
        #expect(token.hasPrefix("v1.1000."))
        #expect(!token.contains("+") && !token.contains("/") && !token.contains("="))
        #expect(CallToken.verify(token, callSid: "CA1", now: 999, key: Self.key) == .valid)
        #expect(CallToken.verify(token, callSid: "CA1", now: 1_000, key: Self.key) == .valid)
        #expect(CallToken.verify(token, callSid: "CA1", now: 1_001, key: Self.key) == .expired)
    }

    @Test func anotherCallAnotherKeyOrAnEditedTokenIsRefused() {
        let token = CallToken.make(callSid: "CA1", expiresAt: 1_000, key: Self.key)
        #expect(CallToken.verify(token, callSid: "CA2", now: 0, key: Self.key) == .wrongSignature)
        #expect(CallToken.verify(token, callSid: "CA1", now: 0, key: CallToken.key(authToken: "another token 0123456789")) == .wrongSignature)
        // Pushing the expiry out breaks the signature.
        #expect(CallToken.verify(token.replacingOccurrences(of: "v1.1000.", with: "v1.9000."), callSid: "CA1", now: 0, key: Self.key) == .wrongSignature)
        #expect(CallToken.verify(nil, callSid: "CA1", now: 0, key: Self.key) == .missing)
        for junk in ["", "v1", "v1..", "v2.1000.abc", "v1.x.abc", "v1.1000.", "v1.1000.a.b", String(repeating: "v", count: 10_000)] {
            #expect(CallToken.verify(junk, callSid: "CA1", now: 0, key: Self.key) == .malformed, "\(junk.prefix(20))")
        }
    }
}

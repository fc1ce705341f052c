import CallBridge
import CallBridgeCore
import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Authentication end to end: signed webhooks and upgrades as Twilio sends them (PROTOCOLS.md §A2), the per-call
/// token from the TwiML back in `start`, and streams that never authenticate.
extension EndToEndTests {
    static let authToken = "0123456789abcdef0123456789abcdef"
    static let voiceURL = "https://bridge.example.com/twilio/voice"
    static let streamURL = "wss://bridge.example.com/twilio/media"

    static func webhook(
        port: Int,
        body: String,
        contentType: String = "application/x-www-form-urlencoded",
        target: String = "/twilio/voice",
        signature: String?
    ) async throws -> (status: Int, body: String) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(target)")!)
        request.httpMethod = "POST"
        request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        if let signature { request.setValue(signature, forHTTPHeaderField: "X-Twilio-Signature") }
        request.httpBody = Data(body.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    static let form: [(name: String, value: String)] = [
        ("AccountSid", "AC00000000000000000000000000000001"), ("CallSid", "CA00000000000000000000000000000001"),
        ("From", "+14155550100"), ("To", "+15005550006"), ("CallerName", "Zoë & Co"),
    ]

    static func encoded(_ form: [(name: String, value: String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return form.map { "\($0.name)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&")
    }

    /// The token the TwiML carries.
    static func token(in twiml: String) throws -> String {
        let marker = "name=\"\(CallToken.parameterName)\" value=\""
        let start = try #require(twiml.range(of: marker)).upperBound
        return String(twiml[start...].prefix { $0 != "\"" })
    }

    @Test func theVoiceWebhookAcceptsOnlyTwiliosSignature() async throws {
        try await Self.withBridge(dialect: .ga, twilioAuthToken: Self.authToken) { call in
            let signature = TwilioSignature.compute(authToken: Self.authToken, url: Self.voiceURL, parameters: Self.form)
            let signed = try await Self.webhook(port: call.port, body: Self.encoded(Self.form), signature: signature)
            #expect(signed.status == 200)
            #expect(signed.body.contains("<Connect><Stream url=\"wss://bridge.example.com/twilio/media\">"))
            #expect(signed.body.contains("name=\"\(CallToken.parameterName)\""))
            // Signed with the default port (Twilio's signing is not consistent about it): accepted too.
            let withPort = TwilioSignature.compute(authToken: Self.authToken, url: "https://bridge.example.com:443/twilio/voice", parameters: Self.form)
            #expect(try await Self.webhook(port: call.port, body: Self.encoded(Self.form), signature: withPort).status == 200)
            // Unsigned, tampered, signed with another token, or for another URL: 403.
            #expect(try await Self.webhook(port: call.port, body: Self.encoded(Self.form), signature: nil).status == 403)
            var tampered = Self.form
            tampered[2] = ("From", "+14155550199")
            #expect(try await Self.webhook(port: call.port, body: Self.encoded(tampered), signature: signature).status == 403)
            let otherToken = TwilioSignature.compute(authToken: "fedcba9876543210fedcba9876543210", url: Self.voiceURL, parameters: Self.form)
            #expect(try await Self.webhook(port: call.port, body: Self.encoded(Self.form), signature: otherToken).status == 403)
            #expect(try await Self.webhook(port: call.port, body: Self.encoded(Self.form), target: "/twilio/voice?x=1", signature: signature).status == 403)
            // The JSON-body variant: bodySHA256 in the URL, the signature over the URL alone.
            let json = #"{"CallSid":"CA00000000000000000000000000000009","From":"+14155550100"}"#
            let hash = Digest.hex(Digest.sha256(Array(json.utf8)))
            let jsonSignature = TwilioSignature.compute(authToken: Self.authToken, url: Self.voiceURL + "?bodySHA256=\(hash)")
            let jsonSigned = try await Self.webhook(port: call.port, body: json, contentType: "application/json", target: "/twilio/voice?bodySHA256=\(hash)", signature: jsonSignature)
            #expect(jsonSigned.status == 200)
            #expect(jsonSigned.body.contains("value=\"CA00000000000000000000000000000009\""))
            let jsonTampered = json.replacingOccurrences(of: "0100", with: "0199")
            #expect(try await Self.webhook(port: call.port, body: jsonTampered, contentType: "application/json", target: "/twilio/voice?bodySHA256=\(hash)", signature: jsonSignature).status == 403)
            let metrics = try await Self.get("http://127.0.0.1:\(call.port)/metrics").body
            #expect(Self.sample(metrics, #"callbridge_auth_failures_total{route="voice"}"#) == 5)
        }
    }

    /// Upgrade refused: the library answers a refused upgrade with a redirect and closes, so the client fails.
    static func connectFails(port: Int, signature: String?) async -> Bool {
        var headers = HTTPFields()
        if let signature { headers[HTTPField.Name("X-Twilio-Signature")!] = signature }
        do {
            try await WebSocketClient.connect(
                url: "ws://127.0.0.1:\(port)/twilio/media",
                configuration: .init(additionalHeaders: headers),
                logger: Self.logger
            ) { _, outbound, _ in try await outbound.close(.normalClosure, reason: nil) }
            return false
        } catch {
            return true
        }
    }

    @Test func theMediaUpgradeMustBeSignedAndStartMustCarryTheCallsToken() async throws {
        try await Self.withBridge(dialect: .ga, twilioAuthToken: Self.authToken) { call in
            #expect(await Self.connectFails(port: call.port, signature: nil))
            #expect(await Self.connectFails(port: call.port, signature: TwilioSignature.compute(authToken: "fedcba9876543210fedcba9876543210", url: Self.streamURL)))
            // The trailing-slash form is accepted (Twilio's advice for upgrades).
            #expect(!(await Self.connectFails(port: call.port, signature: TwilioSignature.compute(authToken: Self.authToken, url: Self.streamURL + "/"))))

            // A signed upgrade whose start carries no token, or the token of another call: closed, and the model's
            // session is never opened.
            for parameters in [[:], [CallToken.parameterName: CallToken.make(callSid: "CAother", expiresAt: Int64(Date().timeIntervalSince1970) + 60, key: CallToken.key(authToken: Self.authToken))]] {
                var options = DialClient.Options(
                    url: "ws://127.0.0.1:\(call.port)/twilio/media",
                    callerAudio: Self.speech(20),
                    duration: .seconds(10),
                    customParameters: parameters
                )
                options.signing = (Self.authToken, Self.streamURL)
                let signed = options
                let result = try await withTimeout(.seconds(20)) { try await DialClient(options: signed, logger: Self.logger).run() }
                #expect(result.closedByBridge)
            }
            // (The trailing-slash connection above was a call too, closed at once by the client.)
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 3 }
            #expect(call.calls.all.filter { $0.endReason == .unauthorized }.count == 2)
            #expect(!call.agentEvents.all.contains { if case .connected = $0 { true } else { false } }, "no model session for an unauthenticated stream")

            // The real flow: the signed webhook's TwiML hands out the token, the stream presents it.
            let callSid = "CA00000000000000000000000000000001"
            let twiml = try await Self.webhook(
                port: call.port,
                body: Self.encoded(Self.form),
                signature: TwilioSignature.compute(authToken: Self.authToken, url: Self.voiceURL, parameters: Self.form)
            ).body
            var options = DialClient.Options(
                url: "ws://127.0.0.1:\(call.port)/twilio/media",
                callerAudio: Self.silence(5) + Self.speech(25),
                duration: .milliseconds(3000),
                customParameters: [CallToken.parameterName: try Self.token(in: twiml), "From": "+14155550100"]
            )
            options.callSid = callSid
            options.signing = (Self.authToken, Self.streamURL)
            let authenticated = options
            let result = try await withTimeout(.seconds(20)) { try await DialClient(options: authenticated, logger: Self.logger).run() }
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 4 }
            let summary = try #require(call.calls.all.last)
            #expect(summary.endReason == .twilioStop)
            #expect(result.report.mediaMessages > 0, "the authenticated call was answered")
            #expect(summary.customParameters[CallToken.parameterName] == nil, "the token is not logged as a parameter")
            #expect(summary.customParameters["From"] == "+14155550100")
            let metrics = try await Self.get("http://127.0.0.1:\(call.port)/metrics").body
            #expect(Self.sample(metrics, #"callbridge_auth_failures_total{route="media"}"#) == 2)
            #expect(Self.sample(metrics, #"callbridge_auth_failures_total{route="start"}"#) == 2)
        }
    }

    @Test func aStreamThatNeverSendsStartIsClosed() async throws {
        try await Self.withBridge(dialect: .ga, startTimeout: .milliseconds(300)) { call in
            let closedAfter = try await withTimeout(.seconds(10)) {
                let begin = ContinuousClock.now
                try await WebSocketClient.connect(url: "ws://127.0.0.1:\(call.port)/twilio/media", logger: Self.logger) { inbound, outbound, _ in
                    try await outbound.write(.text(TwilioSimulatorCodec.connected()))
                    for try await _ in inbound {}
                }
                return ContinuousClock.now - begin
            }
            #expect(closedAfter < .seconds(5))
            try await call.calls.wait(upTo: .seconds(10)) { $0.count == 1 }
            #expect(call.calls.all.first?.endReason == .noStart)
        }
    }
}

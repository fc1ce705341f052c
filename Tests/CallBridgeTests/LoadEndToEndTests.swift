import CallBridgeCore
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Testing

@testable import CallBridge

/// `callbridge load` end to end: the generator (in-process, real sockets) signs its calls, talks to a real bridge on
/// loopback, whose Realtime leg reaches the load double over TLS.
extension EndToEndTests {
    @Test func theLoadGeneratorRunsSignedCallsThroughTheBridgeAndTheLoadDouble() async throws {
        let tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(Self.fixtures.appendingPathComponent("tls/localhost.pem").path).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: Self.fixtures.appendingPathComponent("tls/localhost.key").path, format: .pem))
        )
        // The double and the generator with real-time event loops, as `make loadtest` runs them where it may.
        let agent = try await LoadAgentServer(tlsConfiguration: tls, expectedAPIKey: Self.apiKey, logger: Self.logger, realtimePriority: 2).start()
        let calls = Observations<CallSummary>()
        let bridgePort = AsyncStream.makeStream(of: Int.self)
        let configuration = AppConfiguration(
            host: "127.0.0.1",
            port: 0,
            publicURL: "https://bridge.example.com",
            realtimeURL: "wss://localhost:\(agent.port)/v1/realtime",
            apiKey: Self.apiKey,
            realtimeCAFile: Self.caFile,
            agent: .remote,
            // Synthetic speech: the energy stage alone decides barge-ins (Silero is for real voices).
            confirmer: .energy,
            twilioAuthToken: Self.authToken,
            fallbackPrompt: Self.shortFallbackPrompt
        )
        let logURL = FileManager.default.temporaryDirectory.appendingPathComponent("callbridge-load-\(UUID()).jsonl")
        defer { try? FileManager.default.removeItem(at: logURL) }
        let log = try CallLog(path: logURL.path)
        log.observe { calls.record($0) }
        let bridge = BridgeServer(configuration: configuration, logger: Self.logger, callLog: log)
        let report = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await bridge.run(handleSignals: false) { ready in bridgePort.continuation.yield(ready.port) } }
            var ports = bridgePort.stream.makeAsyncIterator()
            let port = try #require(await ports.next())
            // Each call: 0.1–0.9 s speech; the AI answers (about 1 s of audio, all at once as the double front-loads)
            // and plays from about 1.4 s; the caller talks over it at 1.9 s; the AI answers that too.
            let options = LoadGenerator.Options(
                url: "ws://127.0.0.1:\(port)/twilio/media",
                calls: 3,
                ramp: .milliseconds(300),
                duration: .milliseconds(3600),
                script: LoadScript(
                    callerAudio: Self.silence(5) + Self.speech(40),
                    bargeInAudio: Self.speech(20),
                    bargeInAt: .milliseconds(1900),
                    cycle: .milliseconds(3600)
                ),
                signing: .init(
                    authToken: Self.authToken,
                    webhookURL: "http://127.0.0.1:\(port)/twilio/voice",
                    signedWebhookURL: "https://bridge.example.com/twilio/voice"
                ),
                realtimePriority: 3
            )
            let report = try await withTimeout(.seconds(30)) { try await LoadGenerator(options: options, logger: Self.logger).run() }
            try await calls.wait(upTo: .seconds(10)) { $0.count == 3 }
            bridge.drain()
            try await group.next()
            group.cancelAll()
            return report
        }
        try await agent.shutdown()
        #expect(report.stats.callsConnected == 3 && report.stats.callsCompleted == 3)
        #expect(report.failedCalls == 0 && report.stats.badMessages == 0 && report.stats.failures.isEmpty)
        #expect(report.jitter.count > 50)
        #expect(try #require(report.jitter.max) < 1000)
        #expect(report.firstAudio.count >= 3)
        #expect(try #require(report.firstAudio.p50) > 400 && report.firstAudio.p50! < 1500)  // the double waits out 500 ms of silence
        #expect(report.bargeIn.count == 3)
        #expect(try #require(report.bargeIn.max) < 1000)  // the clear answers the barge-in, not a later turn
        #expect(report.stats.marksEchoed == report.stats.marksReceived)
        // The bridge saw three authenticated calls that the caller ended.
        #expect(calls.all.allSatisfy { $0.endReason == .twilioStop })
        #expect(calls.all.allSatisfy { $0.counters.bargeInEvents >= 1 })
        let json = try #require(try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any])
        #expect(json["errors"] as? Int == 0)
        // Both got what the kernel allows this process: real-time where it may, said as refused where it may not.
        switch agent.scheduling {
        case .applied(let priority)?:
            #expect(priority == 2)
            #expect(report.scheduling == .realtime(priority: 3))
            #expect(json["generator_realtime_priority"] as? Int == 3)
        case .refused(let code)?:
            #expect(code == EPERM)
            #expect(report.scheduling == .refused(priority: 3, reason: RealtimeScheduling.Outcome.refused(errno: EPERM).description))
        case nil:
            Issue.record("the double was asked for real-time scheduling")
        }
    }
}

/// The raw client on real sockets: a server that accepts the connection but never answers the upgrade.
@Suite struct WebSocketClientChannelTests {
    @Test func anUnansweredUpgradeFailsAfterTheConnectTimeout() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let silent = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(silent.localAddress?.port)
        let result = await Result(catching: {
            try await WebSocketClientChannel.connect(
                url: "ws://127.0.0.1:\(port)/twilio/media",
                tlsContext: nil,
                eventLoop: group.next(),
                connectTimeout: .milliseconds(200)
            ) { _ in WebSocketPlumbingTests.Collector() }.get()
        })
        #expect(throws: WebSocketConnectError.upgradeTimedOut) { try result.get() }
        try await silent.close()
        try await group.shutdownGracefully()
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

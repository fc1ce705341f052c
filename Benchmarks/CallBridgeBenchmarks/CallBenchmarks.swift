import Benchmark
import CallBridgeCore

/// The state machine of one call, driven to the steady state the benchmarks measure.
struct BenchmarkCall {
    var machine = CallStateMachine(now: .zero)
    var now = CallInstant.zero
    /// Reused for every event, as the call's driver does.
    var actions: [CallAction] = []

    /// A call with its Realtime session configured (default configuration: local barge-in and watchdogs on).
    init() {
        self.actions.reserveCapacity(8)
        for event: CallEvent in [
            .twilioReceived(.connected),
            .twilioReceived(.start(TwilioStart(streamSid: Inputs.streamSid, callSid: "CA5f8b2c1e0d9a4b7c6e3f2a1b0c9d8e7f"))),
            .realtimeConnected, .realtimeReceived(.sessionUpdated),
        ] {
            _ = self.handle(event)
        }
    }

    mutating func handle(_ event: CallEvent) -> [CallAction] {
        self.machine.handle(event, now: self.now)
    }

    /// As the driver runs the machine: the actions land in the reused array.
    mutating func handleInPlace(_ event: CallEvent) {
        self.actions.removeAll(keepingCapacity: true)
        self.machine.handle(event, now: self.now, into: &self.actions)
    }
}

func callBenchmarks() {
    // The state machine's time varied most between runs on the shared machine (p90 up to twice as slow under load):
    // it may be three times the committed p90 before the check fails.
    let callConfiguration = Benchmark.Configuration.hotPath(scaling: .one, timeTolerance: 200)

    // One caller media message: 20 ms of quiet line noise, nothing playing. Decoded for the VAD, analysed, forwarded.
    let payload = Base64.encode(Inputs.quietFrame)
    var inbound = BenchmarkCall()
    var chunk = 0
    Benchmark("CallStateMachine-inbound-media", configuration: callConfiguration) { _ in
        chunk += 1
        inbound.now = inbound.now + AudioFrame.duration
        inbound.handleInPlace(.twilioReceived(.media(payload: payload, chunk: chunk)))
        blackHole(inbound.actions.count)
    }

    // One tick of the shared ticker while a reply plays: exactly one frame and its mark leave. Between ticks (not
    // measured) Twilio echoes the previous mark and the reply is topped up, as on a call.
    var outbound = BenchmarkCall()
    let replyID = "resp_CGr0uYd3BSYw7Hb2nQe4L"
    let itemID = "item_CGr0u2kXo9bq1UvFcTx8M"
    var queued = 0
    var lastMark: String?
    _ = outbound.handle(.realtimeReceived(.responseCreated(responseID: replyID)))
    _ = outbound.handle(.realtimeReceived(.outputItemAdded(responseID: replyID, itemID: itemID)))
    Benchmark("CallStateMachine-tick-one-frame", configuration: callConfiguration) { benchmark in
        if let mark = lastMark { _ = outbound.handle(.twilioReceived(.mark(name: mark))) }
        if queued < 20 {
            let audio = Inputs.replyAudio
            for action in outbound.handle(.realtimeReceived(.audioDelta(responseID: replyID, itemID: itemID, audio: audio))) {
                if case .sendTwilio(.media) = action { queued -= 1 }
            }
            queued += audio.count / AudioFrame.byteCount
        }
        guard let due = outbound.machine.nextReleaseTime else { return benchmark.error("no frame is queued") }
        outbound.now = max(outbound.now, due)

        benchmark.startMeasurement()
        outbound.handleInPlace(.tick)
        benchmark.stopMeasurement()
        let actions = outbound.actions

        guard actions.count == 2, case .sendTwilio(.media) = actions[0], case .sendTwilio(.mark(let name)) = actions[1]
        else { return benchmark.error("a tick sent \(actions) instead of one frame and its mark") }
        queued -= 1
        lastMark = name
    }
}

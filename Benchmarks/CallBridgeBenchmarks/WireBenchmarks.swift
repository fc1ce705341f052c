import Benchmark
import CallBridgeCore

func wireBenchmarks() {
    let media = Inputs.twilioMedia(payload: Inputs.muLawFrame)
    let delta = Inputs.audioDelta(Inputs.replyAudio)
    let frame = Inputs.muLawFrame
    let payload = Base64.encode(frame)
    let quotedStreamSid = "\"" + Inputs.streamSid + "\""

    // Inbound: every caller frame (50 a second per call) and every reply delta go through the byte scanner.
    Benchmark("Twilio-decode-media", configuration: .hotPath(scaling: .one)) { _ in
        blackHole(try? TwilioCodec.decode(media, streamSid: Inputs.streamSid))
    }

    Benchmark("Realtime-decode-audio-delta", configuration: .hotPath(scaling: .one)) { _ in
        blackHole(try? RealtimeCodec.decode(delta))
    }

    // Outbound: a paced frame to Twilio, and caller audio forwarded to the service.
    Benchmark("Twilio-encode-media", configuration: .hotPath()) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(TwilioCodec.encode(.media(frame), quotedStreamSid: quotedStreamSid))
        }
    }

    // Every outbound frame is followed by a mark named by the bridge ("cb" and a sequence number).
    Benchmark("Twilio-encode-mark", configuration: .hotPath()) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(TwilioCodec.encode(.mark(name: "cb4711"), quotedStreamSid: quotedStreamSid))
        }
    }

    Benchmark("Realtime-encode-input-audio-append", configuration: .hotPath()) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(RealtimeCodec.encode(.inputAudioAppend(base64: payload), dialect: .ga))
        }
    }

    Benchmark("Base64-encode-frame", configuration: .hotPath()) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Base64.encode(frame))
        }
    }

    // WebSocket masking of an append event (about 300 bytes): every frame the bridge sends the service (a client
    // masks) and every frame Twilio sends the bridge (unmasked on arrival). Copying is the form both take in the
    // bridge (WebSocketFrameSerializer, the connection handler's unmasking); in place is the masking alone.
    let append = Array(RealtimeCodec.encode(.inputAudioAppend(base64: payload), dialect: .ga).utf8)
    Benchmark("WebSocket-mask-append", configuration: .hotPath()) { benchmark in
        var bytes = append
        bytes.withUnsafeMutableBytes { _ in }  // its own copy now, not at the first measured mutation
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            bytes.withUnsafeMutableBytes { WebSocketMasking.apply($0, key: 0x37FA_213D &+ UInt32(truncatingIfNeeded: i)) }
        }
        blackHole(bytes)
    }

    Benchmark("WebSocket-mask-copy-append", configuration: .hotPath()) { benchmark in
        var masked = [UInt8](repeating: 0, count: append.count)
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            append.withUnsafeBytes { source in
                masked.withUnsafeMutableBytes { WebSocketMasking.apply(source, into: $0, key: 0x37FA_213D &+ UInt32(truncatingIfNeeded: i)) }
            }
            blackHole(masked)
        }
    }

    // Into a reused array: the form for per-frame decoding (the caller's audio for the VAD).
    Benchmark("Base64-decode-frame", configuration: .hotPath()) { benchmark in
        var decoded = [UInt8]()
        decoded.reserveCapacity(AudioFrame.byteCount)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(Base64.decode(payload, into: &decoded))
        }
    }
}

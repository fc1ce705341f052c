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

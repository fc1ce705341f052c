import Foundation
import Testing

@testable import CallBridgeCore

/// A phone line in virtual time around the call core: Twilio's playout of what the bridge sends (with mark echoes),
/// and the caller's microphone, which hears the caller, the AI's voice coming back as echo, and line noise.
struct LineSimulation {
    struct Echo {
        var lossDB: Double
        var delayMs: Int
    }

    struct Result {
        var pauses: [Int] = []
        var commits: [Int] = []
        var falseAlarms = 0
        var cancels = 0
        var firstClearMs: Int?
    }

    var configuration = CallConfiguration(watchdog: nil)
    /// The AI's reply (μ-law), delivered at 100 ms in one burst, as the service streams ahead of real time.
    var reply: [UInt8]
    /// The caller's own voice, as PCM from the start of the call (silence where they do not talk).
    var caller: [Int16] = []
    var echo: Echo?
    /// Line noise PCM (looped) and the gain applied to it.
    var noise: [Int16] = []
    var noiseGain = 0.0
    var durationMs: Int
    /// The second stage, when testing it.
    var confirmer: (any SpeechConfirmer)?

    func run() -> Result {
        var sm = CallStateMachine(configuration: self.configuration, confirmer: self.confirmer, now: t(0))
        var playout = TwilioPlayout()
        var heard: [Int16] = []
        var result = Result()
        let echoGain = self.echo.map { Level.amplitude(decibels: -$0.lossDB) } ?? 0
        let echoDelay = (self.echo?.delayMs ?? 0) * 8

        func apply(_ actions: [CallAction], at ms: Int, pendingEchoes: inout [String]) {
            for action in actions {
                switch action {
                case .sendTwilio(.media(let bytes)): playout.media(bytes)
                case .sendTwilio(.mark(let name)): pendingEchoes += playout.mark(name)
                case .sendTwilio(.clear):
                    pendingEchoes += playout.clear().echoes
                    if result.firstClearMs == nil { result.firstClearMs = ms }
                case .sendRealtime(.responseCancel): result.cancels += 1
                default: break
                }
            }
        }

        var echoes: [String] = []
        apply(sm.handle(.realtimeConnected, now: t(0)), at: 0, pendingEchoes: &echoes)
        apply(sm.handle(.realtimeReceived(.sessionUpdated), now: t(10)), at: 10, pendingEchoes: &echoes)
        var pauses = 0
        var commits = 0
        for frame in 0..<(self.durationMs / 20) {
            let ms = 20 * (frame + 1)  // frame k is captured during [20k, 20k + 20) and arrives at its end
            if ms == 100 {
                apply(sm.handle(.realtimeReceived(.responseCreated(responseID: "r1")), now: t(ms)), at: ms, pendingEchoes: &echoes)
                apply(
                    sm.handle(.realtimeReceived(.audioDelta(responseID: "r1", itemID: "i1", audio: self.reply)), now: t(ms)),
                    at: ms,
                    pendingEchoes: &echoes
                )
                apply(sm.handle(.realtimeReceived(.audioDone(responseID: "r1", itemID: "i1")), now: t(ms)), at: ms, pendingEchoes: &echoes)
            }
            apply(sm.handle(.tick, now: t(ms)), at: ms, pendingEchoes: &echoes)
            // Twilio plays 20 ms; marks reached come back.
            let played = playout.play(AudioFrame.byteCount)
            heard += played.audio.map { MuLaw.decode($0) }
            echoes += played.echoes
            for name in echoes {
                apply(sm.handle(.twilioReceived(.mark(name: name)), now: t(ms)), at: ms, pendingEchoes: &echoes)
            }
            echoes.removeAll()
            // The microphone: caller + echo of what was heard + noise.
            var mic = [UInt8]()
            mic.reserveCapacity(160)
            for i in 0..<160 {
                let n = frame * 160 + i
                var sample = n < self.caller.count ? Double(self.caller[n]) : 0
                if echoGain > 0, n - echoDelay >= 0, n - echoDelay < heard.count {
                    sample += Double(heard[n - echoDelay]) * echoGain
                }
                if !self.noise.isEmpty { sample += Double(self.noise[n % self.noise.count]) * self.noiseGain }
                mic.append(MuLaw.encode(Int16(clamping: Int(sample.rounded()))))
            }
            apply(sm.handle(.twilioReceived(.media(payload: Base64.encode(mic))), now: t(ms)), at: ms, pendingEchoes: &echoes)
            if sm.counters.bargeInPauses > pauses {
                pauses = sm.counters.bargeInPauses
                result.pauses.append(ms)
            }
            if sm.counters.bargeInEvents > commits {
                commits = sm.counters.bargeInEvents
                result.commits.append(ms)
            }
        }
        result.falseAlarms = sm.counters.bargeInFalseAlarms
        return result
    }
}

/// Detection quality over generated audio (Fixtures/audio, `make fixtures`): the AI's voice fed back as echo at
/// several losses and delays, line noise at several SNRs, a cough, and a caller talking over the AI. Reports
/// detection latency, misses and false barge-ins, and fails above the agreed bounds.
@Suite struct BargeInQualityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/audio")

    static func pcm(_ name: String) throws -> [Int16] {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("\(name).wav"))
        let wav = try WAV.decode(Array(data))
        return Resampler.resample(wav.samples, from: wav.sampleRate, to: 8000)
    }

    /// `audio` placed at `atMs` in an otherwise silent track of `totalMs`.
    static func track(_ audio: [Int16], at atMs: Int, totalMs: Int) -> [Int16] {
        var out = [Int16](repeating: 0, count: totalMs * 8)
        for (i, s) in audio.enumerated() where atMs * 8 + i < out.count { out[atMs * 8 + i] = s }
        return out
    }

    static func rmsDBFS(_ samples: [Int16]) -> Double { Level.dBFS(pcm: samples.filter { $0 != 0 }) }

    static let echoes: [LineSimulation.Echo?] = [nil] + [6.0, 12, 20, 30].flatMap { loss in
        [20, 120, 300].map { LineSimulation.Echo(lossDB: loss, delayMs: $0) }
    }

    @Test func echoAloneNeverBargesIn() throws {
        let reply = MuLaw.encode(try Self.pcm("ai-reply"))
        var report: [String] = []
        var falseBargeIns = 0
        var worstPauses = 0
        for echo in Self.echoes.compactMap({ $0 }) {
            let result = LineSimulation(reply: reply, echo: echo, durationMs: 9000).run()
            falseBargeIns += result.commits.count
            worstPauses = max(worstPauses, result.pauses.count)
            #expect(result.falseAlarms == result.pauses.count, "a pause on echo must resume")
            report.append("echo \(Int(echo.lossDB)) dB / \(echo.delayMs) ms: pauses \(result.pauses.count), barge-ins \(result.commits.count)")
        }
        print("barge-in quality — echo only:\n  " + report.joined(separator: "\n  "))
        #expect(falseBargeIns == 0, "false barge-ins on echo alone: \(falseBargeIns)\n\(report.joined(separator: "\n"))")
        // Before the echo path is learned, a very loud echo (6 dB) can briefly pause the AI: at most once per call.
        #expect(worstPauses <= 1)
    }

    @Test(arguments: [20.0, 10.0])
    func lineNoiseAndEchoNeverBargeIn(snrDB: Double) throws {
        let reply = MuLaw.encode(try Self.pcm("ai-reply"))
        let noise = try Self.pcm("line-noise")
        // Noise `snrDB` below the AI's speech level, as heard on the caller's side.
        let gain = Level.amplitude(decibels: Self.rmsDBFS(try Self.pcm("ai-reply")) - snrDB - Self.rmsDBFS(noise))
        var falseBargeIns = 0
        var report: [String] = []
        for echo in [nil, LineSimulation.Echo(lossDB: 12, delayMs: 120)] {
            var line = LineSimulation(reply: reply, echo: echo, durationMs: 9000)
            line.noise = noise
            line.noiseGain = gain
            let result = line.run()
            falseBargeIns += result.commits.count
            report.append("noise at \(Int(snrDB)) dB SNR, echo \(echo.map { "\(Int($0.lossDB)) dB" } ?? "none"): pauses \(result.pauses.count), barge-ins \(result.commits.count)")
        }
        print("barge-in quality — line noise:\n  " + report.joined(separator: "\n  "))
        #expect(falseBargeIns == 0, "\(report.joined(separator: "\n"))")
    }

    @Test func aCoughPausesAtMostAndNeverBargesIn() throws {
        let reply = MuLaw.encode(try Self.pcm("ai-reply"))
        var line = LineSimulation(reply: reply, echo: .init(lossDB: 20, delayMs: 120), durationMs: 6000)
        line.caller = Self.track(try Self.pcm("cough"), at: 2500, totalMs: 6000)
        let result = line.run()
        print("barge-in quality — cough: pauses \(result.pauses.count), false alarms \(result.falseAlarms), barge-ins \(result.commits.count)")
        #expect(result.commits.isEmpty)
        #expect(result.cancels == 0)
        #expect(result.falseAlarms == result.pauses.count, "every pause resumed")
    }

    @Test func aCallerTalkingOverTheAIIsCaughtFast() throws {
        let reply = MuLaw.encode(try Self.pcm("ai-reply"))
        let noise = try Self.pcm("line-noise")
        var latencies: [String: [Int]] = [:]
        var misses: [String] = []
        var report: [String] = []
        // Two callers: one starting on a voiced sound ("Wait…"), one on a soft fricative ("Sorry…").
        for clip in ["caller-barge-in", "interrupt"] {
            let voice = try Self.pcm(clip)
            let noiseGain20 = Level.amplitude(decibels: Self.rmsDBFS(voice) - 20 - Self.rmsDBFS(noise))
            // Where the caller's voice becomes audible (first 20 ms frame above -40 dBFS).
            let onsetInClip = (DialReport.firstVoicedFrame(in: MuLaw.encode(voice)) ?? 0) * 20
            for echo in Self.echoes {
                for (noiseGain, label) in [(0.0, "quiet"), (noiseGain20, "20 dB SNR")] {
                    let start = 3000
                    var line = LineSimulation(reply: reply, echo: echo, durationMs: 5500)
                    line.caller = Self.track(voice, at: start, totalMs: 5500)
                    line.noise = noise
                    line.noiseGain = noiseGain
                    let result = line.run()
                    let onset = start + onsetInClip
                    let name = "\(clip), echo \(echo.map { "\(Int($0.lossDB)) dB / \($0.delayMs) ms" } ?? "none"), \(label)"
                    guard let pause = result.pauses.first(where: { $0 >= onset }), !result.commits.isEmpty else {
                        misses.append(name)
                        continue
                    }
                    latencies[label, default: []].append(pause - onset)
                    report.append("\(name): onset → pause \(pause - onset) ms, committed at \(result.commits[0] - onset) ms")
                }
            }
        }
        func p95(_ values: [Int]?) -> Int {
            guard let sorted = values?.sorted(), !sorted.isEmpty else { return Int.max }
            return sorted[min(sorted.count - 1, sorted.count * 95 / 100)]
        }
        let quiet = p95(latencies["quiet"])
        let noisy = p95(latencies["20 dB SNR"])
        let all = (latencies["quiet"] ?? []) + (latencies["20 dB SNR"] ?? [])
        let median = all.sorted()[all.count / 2]
        print("barge-in quality — caller over the AI (onset → pause: median \(median) ms, p95 quiet line \(quiet) ms, "
            + "p95 at 20 dB SNR \(noisy) ms; misses \(misses.count)):\n  " + report.joined(separator: "\n  "))
        #expect(misses.isEmpty, "missed: \(misses)")
        // Agreed bounds. The onset is the clip's first frame above -40 dBFS: for "Sorry" that is the soft "s", which
        // is quieter than the AI's echo on most of these lines, so energy alone finds the caller only at the vowel.
        // The slowest cases are that, the loudest echo (6 dB of loss), and noise raising the adaptive threshold.
        #expect(median <= 100, "median onset → pause: \(median) ms")
        #expect(quiet <= 160, "p95 onset → pause on a quiet line: \(quiet) ms")
        #expect(noisy <= 160, "p95 onset → pause at 20 dB SNR: \(noisy) ms")
    }
}

/// The barge-in fixtures again, with Silero as the confirmer: no more false barge-ins and no more misses than the
/// energy stage alone.
@Suite struct SileroConfirmerQualityTests {
    static let model = SileroVADTests.model

    struct Tally: Equatable {
        var falseBargeIns = 0
        var misses = 0
    }

    func tally(confirmer: Bool) throws -> Tally {
        let reply = MuLaw.encode(try BargeInQualityTests.pcm("ai-reply"))
        let noise = try BargeInQualityTests.pcm("line-noise")
        let cough = try BargeInQualityTests.pcm("cough")
        var tally = Tally()
        func line(_ echo: LineSimulation.Echo?, durationMs: Int) -> LineSimulation {
            var l = LineSimulation(reply: reply, echo: echo, durationMs: durationMs)
            if confirmer { l.confirmer = SileroConfirmer(model: Self.model) }
            return l
        }
        // False barge-ins: echo alone, noise, a cough.
        for echo in [LineSimulation.Echo(lossDB: 6, delayMs: 20), .init(lossDB: 12, delayMs: 120), .init(lossDB: 30, delayMs: 300)] {
            tally.falseBargeIns += line(echo, durationMs: 9000).run().commits.count
        }
        for snr in [20.0, 10.0] {
            var l = line(.init(lossDB: 12, delayMs: 120), durationMs: 9000)
            l.noise = noise
            l.noiseGain = Level.amplitude(decibels: BargeInQualityTests.rmsDBFS(try BargeInQualityTests.pcm("ai-reply")) - snr - BargeInQualityTests.rmsDBFS(noise))
            tally.falseBargeIns += l.run().commits.count
        }
        for sound in [cough, try BargeInQualityTests.pcm("door")] {
            var soundLine = line(.init(lossDB: 20, delayMs: 120), durationMs: 6000)
            soundLine.caller = BargeInQualityTests.track(sound, at: 2500, totalMs: 6000)
            tally.falseBargeIns += soundLine.run().commits.count
        }
        // Misses: callers talking over the AI.
        for clip in ["caller-barge-in", "interrupt"] {
            let voice = try BargeInQualityTests.pcm(clip)
            for echo in [nil, LineSimulation.Echo(lossDB: 12, delayMs: 120), .init(lossDB: 20, delayMs: 300)] {
                var l = line(echo, durationMs: 5500)
                l.caller = BargeInQualityTests.track(voice, at: 3000, totalMs: 5500)
                if l.run().commits.isEmpty { tally.misses += 1 }
            }
        }
        return tally
    }

    @Test func sileroAsConfirmerIsNoWorseThanEnergyAlone() throws {
        let energy = try self.tally(confirmer: false)
        let silero = try self.tally(confirmer: true)
        print("barge-in quality — energy alone: \(energy); with the Silero confirmer: \(silero)")
        #expect(silero.falseBargeIns <= energy.falseBargeIns)
        #expect(silero.misses <= energy.misses)
    }
}

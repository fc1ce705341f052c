import Foundation
import Testing

@testable import CallBridgeCore

#if canImport(FoundationXML)
import FoundationXML
#endif

// MARK: - TwiML

struct TwiMLTests {
    /// Element names and attributes, in document order, as an XML parser sees them.
    final class Collector: NSObject, XMLParserDelegate {
        var elements: [(name: String, attributes: [String: String])] = []

        func parser(
            _ parser: XMLParser,
            didStartElement elementName: String,
            namespaceURI: String?,
            qualifiedName qName: String?,
            attributes attributeDict: [String: String] = [:]
        ) {
            self.elements.append((elementName, attributeDict))
        }
    }

    static func parse(_ xml: String) throws -> [(name: String, attributes: [String: String])] {
        let parser = XMLParser(data: Data(xml.utf8))
        let collector = Collector()
        parser.delegate = collector
        try #require(parser.parse(), "not well-formed XML: \(xml)")
        return collector.elements
    }

    @Test("connectStream produces the documented <Connect><Stream> document")
    func exactDocument() {
        let xml = TwiML.connectStream(
            url: "wss://bridge.example.com/twilio/media",
            parameters: [(name: "tenant", value: "acme"), (name: "callToken", value: "opaque-per-call-token")]
        )
        #expect(
            xml == #"<?xml version="1.0" encoding="UTF-8"?><Response><Connect>"#
                + #"<Stream url="wss://bridge.example.com/twilio/media">"#
                + #"<Parameter name="tenant" value="acme"/>"#
                + #"<Parameter name="callToken" value="opaque-per-call-token"/>"#
                + "</Stream></Connect></Response>"
        )
    }

    @Test("no parameters")
    func noParameters() throws {
        let xml = TwiML.connectStream(url: "wss://h/x", parameters: [])
        let elements = try Self.parse(xml)
        #expect(elements.map(\.name) == ["Response", "Connect", "Stream"])
        #expect(elements[2].attributes == ["url": "wss://h/x"])
    }

    @Test("& < > \" ' are escaped in the url, names and values")
    func escaping() throws {
        let nasty = #"a&b<c>d"e'f"#
        let xml = TwiML.connectStream(url: "wss://h/media?" + nasty, parameters: [(name: nasty, value: nasty)])
        #expect(xml.contains(#"a&amp;b&lt;c&gt;d&quot;e&apos;f"#))
        #expect(!xml.contains(nasty))
        let elements = try Self.parse(xml)
        #expect(elements.map(\.name) == ["Response", "Connect", "Stream", "Parameter"])
        #expect(elements[2].attributes["url"] == "wss://h/media?" + nasty)
        #expect(elements[3].attributes == ["name": nasty, "value": nasty])
    }

    @Test("escape maps each special character exactly once")
    func escapeFunction() {
        #expect(TwiML.escape("&amp;") == "&amp;amp;")
        #expect(TwiML.escape("<>\"'&") == "&lt;&gt;&quot;&apos;&amp;")
        #expect(TwiML.escape("plain Zoë 🎧") == "plain Zoë 🎧")
    }

    @Test("parameters keep their order, duplicates included")
    func parameterOrder() throws {
        let parameters: [(name: String, value: String)] = [
            ("z", "1"), ("a", "2"), ("m", "3"), ("a", "4"), ("callToken", "t"),
        ]
        let elements = try Self.parse(TwiML.connectStream(url: "wss://h/m", parameters: parameters))
        let parsed = elements.filter { $0.name == "Parameter" }
        #expect(parsed.map { $0.attributes["name"] ?? "?" } == ["z", "a", "m", "a", "callToken"])
        #expect(parsed.map { $0.attributes["value"] ?? "?" } == ["1", "2", "3", "4", "t"])
    }

    @Test(
        "a name + value pair is cut to under 500 characters",
        arguments: [
            ("tenant", 10, 10), ("tenant", 493, 493), ("tenant", 494, 493), ("tenant", 2000, 493),
            ("n", 1000, 498), (String(repeating: "k", count: 499), 5, 0),
        ]
    )
    func lengthLimit(name: String, valueLength: Int, expectedLength: Int) throws {
        let value = String(repeating: "v", count: valueLength)
        let elements = try Self.parse(TwiML.connectStream(url: "wss://h/m", parameters: [(name, value)]))
        let parameter = try #require(elements.last)
        let kept = try #require(parameter.attributes["value"])
        #expect(kept.count == expectedLength)
        #expect(value.hasPrefix(kept))
        #expect(name.count + kept.count < 500 || kept.isEmpty)
    }

    @Test("the cut happens before escaping, so no entity is split")
    func cutBeforeEscaping() throws {
        let value = String(repeating: "&", count: 600)
        let xml = TwiML.connectStream(url: "wss://h/m", parameters: [(name: "n", value: value)])
        let elements = try Self.parse(xml)
        #expect(elements.last?.attributes["value"] == String(repeating: "&", count: 498))
    }

}

// MARK: - Form bodies

struct FormURLEncodedTests {
    static func pairs(_ body: String) -> [[String]] {
        FormURLEncoded.parse(body).map { [$0.name, $0.value] }
    }

    @Test(
        "decoding of values",
        arguments: [
            ("a=b+c", "b c"),
            ("From=%2B14155550100", "+14155550100"),
            ("From=+14155550100", " 14155550100"),
            ("CallerName=Zo%C3%AB", "Zoë"),
            ("CallerName=zo%c3%ab", "zoë"),
            ("CallerName=Zo%C3%AB+O%27Brien+%26+Co", "Zoë O'Brien & Co"),
            ("Digits=12%23*", "12#*"),
            ("x=%F0%9F%8E%A7", "🎧"),
            ("x=100%25", "100%"),
            ("x=%zz", "%zz"),
            ("x=%4", "%4"),
            ("x=%", "%"),
            ("x=%G1", "%G1"),
            ("x=%%41", "%A"),
            ("x=a%2", "a%2"),
            ("x=", ""),
            ("x=a=b", "a=b"),
            ("x=%3D", "="),
            ("x=%26", "&"),
        ]
    )
    func values(body: String, value: String) {
        let parsed = FormURLEncoded.parse(body)
        #expect(parsed.count == 1)
        #expect(parsed.first?.value == value)
    }

    @Test("names are decoded too; a key without '=' has an empty value")
    func names() {
        #expect(Self.pairs("Caller%20Name=x&a+b=y") == [["Caller Name", "x"], ["a b", "y"]])
        #expect(Self.pairs("flag") == [["flag", ""]])
        #expect(Self.pairs("flag&x=1") == [["flag", ""], ["x", "1"]])
        #expect(Self.pairs("=v") == [["", "v"]])
    }

    @Test("pairs keep their order; repeated names are kept; empty pairs are skipped")
    func order() {
        #expect(Self.pairs("b=1&a=2&b=3") == [["b", "1"], ["a", "2"], ["b", "3"]])
        #expect(Self.pairs("&a=1&&b=2&") == [["a", "1"], ["b", "2"]])
        #expect(Self.pairs("") == [])
    }

    @Test("a webhook body like Twilio's")
    func webhookBody() {
        let body = "AccountSid=AC00000000000000000000000000000001&ApiVersion=2010-04-01"
            + "&CallSid=CA00000000000000000000000000000001&CallStatus=ringing&Called=%2B15005550006"
            + "&Caller=%2B14155550100&Direction=inbound&From=%2B14155550100&To=%2B15005550006"
        let parsed = Dictionary(FormURLEncoded.parse(body).map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(parsed.count == 9)
        #expect(parsed["From"] == "+14155550100")
        #expect(parsed["Called"] == "+15005550006")
        #expect(parsed["CallStatus"] == "ringing")
    }

    @Test("a lone invalid UTF-8 byte becomes U+FFFD instead of failing")
    func invalidUTF8() {
        #expect(FormURLEncoded.parse("x=Zo%E9").first?.value == "Zo\u{FFFD}")
    }
}

// MARK: - JSON strings

struct JSONTextTests {
    @Test(
        "quoted",
        arguments: [
            ("", #""""#),
            ("abc", #""abc""#),
            (#"a"b"#, #""a\"b""#),
            (#"a\b"#, #""a\\b""#),
            (#"\""#, #""\\\"""#),
            ("line\nbreak", #""line\nbreak""#),
            ("tab\there", #""tab\there""#),
            ("cr\r", #""cr\r""#),
            ("crlf\r\n", #""crlf\r\n""#),
            ("\u{0}", #""\u0000""#),
            ("\u{1}x", #""\u0001x""#),
            ("\u{8}", #""\u0008""#),
            ("\u{C}", #""\u000c""#),
            ("\u{1F}", #""\u001f""#),
            ("\u{7F}", "\"\u{7F}\""),
            ("a/b", #""a/b""#),
            ("Zoë 🎧", #""Zoë 🎧""#),
        ]
    )
    func quoted(raw: String, literal: String) {
        #expect(JSONText.quoted(raw) == literal)
    }

    @Test("every ASCII character and some non-ASCII text round-trip through a JSON parser")
    func roundTrip() throws {
        var samples = (0..<128).map { String(UnicodeScalar(UInt8($0))) }
        samples += ["Zoë O'Brien & Co", "🎧\u{2028}\u{200B}", "\"\\\"\\\\"]
        samples.append(String((0..<128).map { Character(UnicodeScalar(UInt8($0))) }))
        for sample in samples {
            let text = "[" + JSONText.quoted(sample) + "]"
            let parsed = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String]
            #expect(parsed == [sample], "scalar values \(sample.unicodeScalars.map(\.value))")
        }
    }
}

// MARK: - WAV

struct WAVTests {
    static func le(_ value: Int, _ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    static func chunk(_ id: String, _ body: [UInt8], declaredSize: Int? = nil) -> [UInt8] {
        var out = Array(id.utf8) + Self.le(declaredSize ?? body.count, 4) + body
        if body.count % 2 == 1 { out.append(0) }
        return out
    }

    static func fmt(tag: Int, channels: Int, rate: Int, bits: Int) -> [UInt8] {
        let blockAlign = channels * max(1, bits / 8)
        return Self.le(tag, 2) + Self.le(channels, 2) + Self.le(rate, 4) + Self.le(rate * blockAlign, 4)
            + Self.le(blockAlign, 2) + Self.le(bits, 2)
    }

    static func riff(_ chunks: [[UInt8]]) -> [UInt8] {
        let body = chunks.flatMap { $0 }
        return Array("RIFF".utf8) + Self.le(4 + body.count, 4) + Array("WAVE".utf8) + body
    }

    static func file(tag: Int = 1, channels: Int = 1, rate: Int = 8000, bits: Int, data: [UInt8]) -> [UInt8] {
        let format = Self.fmt(tag: tag, channels: channels, rate: rate, bits: bits)
        return Self.riff([Self.chunk("fmt ", format), Self.chunk("data", data)])
    }

    @Test("16-bit mono round trip, header fields as written")
    func roundTrip() throws {
        let samples: [Int16] = [0, 1, -1, 1000, -1000, Int16.max, Int16.min, 12345, -23456]
        let bytes = WAV.encode(samples: samples, sampleRate: 16000)
        #expect(bytes.count == 44 + 2 * samples.count)
        #expect(Array(bytes[0..<4]) == Array("RIFF".utf8))
        #expect(Array(bytes[4..<8]) == Self.le(36 + 2 * samples.count, 4))
        #expect(Array(bytes[8..<16]) == Array("WAVEfmt ".utf8))
        #expect(Array(bytes[16..<36]) == Self.le(16, 4) + Self.fmt(tag: 1, channels: 1, rate: 16000, bits: 16))
        #expect(Array(bytes[36..<44]) == Array("data".utf8) + Self.le(2 * samples.count, 4))
        #expect(Array(bytes[44..<48]) == [0x00, 0x00, 0x01, 0x00])
        let decoded = try WAV.decode(bytes)
        #expect(decoded == WAVAudio(sampleRate: 16000, samples: samples))
    }

    @Test("empty and long round trips")
    func roundTripSizes() throws {
        #expect(try WAV.decode(WAV.encode(samples: [], sampleRate: 8000)) == WAVAudio(sampleRate: 8000, samples: []))
        let long = (0..<5000).map { Int16(truncatingIfNeeded: $0 &* 7919) }
        #expect(try WAV.decode(WAV.encode(samples: long, sampleRate: 44100)).samples == long)
    }

    @Test("8-bit unsigned PCM")
    func eightBit() throws {
        let audio = try WAV.decode(Self.file(bits: 8, data: [0, 128, 255, 64, 192]))
        #expect(audio == WAVAudio(sampleRate: 8000, samples: [-32768, 0, 32512, -16384, 16384]))
    }

    @Test("24-bit PCM")
    func twentyFourBit() throws {
        let raw = [0, 0x7F_FFFF, -0x80_0000, 256, -256, 0x12_3456, -0x12_3456]
        let audio = try WAV.decode(Self.file(rate: 48000, bits: 24, data: raw.flatMap { Self.le($0, 3) }))
        #expect(audio.sampleRate == 48000)
        #expect(audio.samples == [0, 32767, -32768, 1, -1, 4660, -4660])
    }

    @Test("32-bit integer PCM")
    func thirtyTwoBitInteger() throws {
        let raw = [0, 100 << 16, -(100 << 16), Int(Int32.max), Int(Int32.min)]
        let audio = try WAV.decode(Self.file(bits: 32, data: raw.flatMap { Self.le($0, 4) }))
        #expect(audio.samples == [0, 100, -100, 32767, -32768])
    }

    @Test("32-bit IEEE float")
    func float32() throws {
        let values: [Float] = [0, 0.5, -0.5, 1, -1, 2, -2, 0.25]
        let data = values.flatMap { Self.le(Int($0.bitPattern), 4) }
        let audio = try WAV.decode(Self.file(tag: 3, rate: 24000, bits: 32, data: data))
        #expect(audio == WAVAudio(sampleRate: 24000, samples: [0, 16384, -16384, 32767, -32767, 32767, -32768, 8192]))
    }

    @Test("stereo channels are averaged")
    func stereo() throws {
        let frames: [(Int16, Int16)] = [(1000, 3000), (-32768, -32768), (32767, -32767), (1, 2), (-1, -2), (0, 0)]
        let data = frames.flatMap { Self.le(Int($0.0), 2) + Self.le(Int($0.1), 2) }
        let audio = try WAV.decode(Self.file(channels: 2, rate: 22050, bits: 16, data: data))
        #expect(audio == WAVAudio(sampleRate: 22050, samples: [2000, -32768, 0, 2, -2, 0]))
    }

    @Test("μ-law WAV")
    func muLaw() throws {
        let audio = try WAV.decode(Self.file(tag: 7, bits: 8, data: [0xFF, 0xCE, 0x00, 0x80]))
        #expect(audio.samples == [0, 988, -32124, 32124])
    }

    @Test("unknown chunks, including odd-sized ones with a pad byte, are skipped; a trailing partial frame is dropped")
    func otherChunks() throws {
        let bytes = Self.riff([
            Self.chunk("LIST", [1, 2, 3]),
            Self.chunk("fmt ", Self.fmt(tag: 1, channels: 1, rate: 8000, bits: 16)),
            Self.chunk("fact", [9, 9, 9, 9]),
            Self.chunk("data", Self.le(1234, 2) + Self.le(-1234, 2) + [0x7F]),
        ])
        #expect(try WAV.decode(bytes) == WAVAudio(sampleRate: 8000, samples: [1234, -1234]))
    }

    @Test("WAVE_FORMAT_EXTENSIBLE takes the sub-format tag")
    func extensible() throws {
        var fmt = Self.fmt(tag: 0xFFFE, channels: 1, rate: 16000, bits: 16)
        fmt += Self.le(22, 2) + Self.le(16, 2) + Self.le(4, 4)  // cbSize, valid bits, channel mask
        fmt += Self.le(1, 2) + [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71]
        let bytes = Self.riff([Self.chunk("fmt ", fmt), Self.chunk("data", Self.le(-5, 2) + Self.le(7, 2))])
        #expect(try WAV.decode(bytes) == WAVAudio(sampleRate: 16000, samples: [-5, 7]))
    }

    @Test(
        "not RIFF/WAVE",
        arguments: [
            [UInt8](),
            Array("RIFF".utf8),
            Array("RIFF\u{0}\u{0}\u{0}\u{0}WAV".utf8),
            Array("RIFX\u{24}\u{0}\u{0}\u{0}WAVEfmt ".utf8),
            Array("RIFF\u{24}\u{0}\u{0}\u{0}AVI fmt ".utf8),
            Array("ID3\u{3}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}".utf8),
            Array("hello, this is not audio".utf8),
        ]
    )
    func notRIFF(bytes: [UInt8]) {
        #expect(throws: WAVError.notRIFFWave) { try WAV.decode(bytes) }
    }

    @Test("missing chunks")
    func missingChunks() {
        let fmt = Self.chunk("fmt ", Self.fmt(tag: 1, channels: 1, rate: 8000, bits: 16))
        #expect(throws: WAVError.missingChunk("data")) { try WAV.decode(Self.riff([fmt])) }
        #expect(throws: WAVError.missingChunk("data")) { try WAV.decode(Self.riff([fmt, Self.chunk("LIST", [0, 0])])) }
        #expect(throws: WAVError.missingChunk("fmt ")) { try WAV.decode(Self.riff([Self.chunk("data", [0, 0])])) }
        #expect(throws: WAVError.missingChunk("fmt ")) { try WAV.decode(Self.riff([])) }
    }

    @Test("unsupported and malformed formats")
    func badFormats() {
        #expect(throws: WAVError.unsupportedFormat(tag: 1, bitsPerSample: 12)) {
            try WAV.decode(Self.file(bits: 12, data: [0, 0, 0, 0]))
        }
        #expect(throws: WAVError.unsupportedFormat(tag: 2, bitsPerSample: 4)) {
            try WAV.decode(Self.file(tag: 2, bits: 4, data: [0, 0]))
        }
        #expect(throws: WAVError.malformed("short fmt chunk")) {
            try WAV.decode(Self.riff([Self.chunk("fmt ", Array(repeating: 0, count: 14)), Self.chunk("data", [0, 0])]))
        }
        #expect(throws: WAVError.malformed("zero channels or rate")) {
            try WAV.decode(Self.file(channels: 0, bits: 16, data: [0, 0]))
        }
        #expect(throws: WAVError.malformed("zero channels or rate")) {
            try WAV.decode(Self.file(rate: 0, bits: 16, data: [0, 0]))
        }
    }

    /// The file ends inside the `fmt ` chunk, whose declared size (40) announces the extensible sub-format.
    /// The sub-format tag at offset 24 is missing: the format tag stays 0xFFFE, which is refused, not a trap.
    @Test
    func truncatedExtensibleFormat() {
        let fmt = Self.fmt(tag: 0xFFFE, channels: 1, rate: 8000, bits: 16)
        let bytes = Self.riff([Self.chunk("fmt ", fmt, declaredSize: 40)])
        #expect(throws: WAVError.self) { try WAV.decode(bytes) }
    }
}

// MARK: - Resampling

struct ResamplerTests {
    static func sine(frequency: Double, rate: Int, amplitude: Double, count: Int) -> [Int16] {
        (0..<count).map { Int16((amplitude * sin(2 * Double.pi * frequency * Double($0) / Double(rate))).rounded()) }
    }

    /// Amplitude of the `frequency` component (projection on sin and cos), over whole periods.
    static func amplitude(_ samples: ArraySlice<Int16>, frequency: Double, rate: Int, startIndex: Int) -> Double {
        var s = 0.0
        var c = 0.0
        for (offset, sample) in samples.enumerated() {
            let phase = 2 * Double.pi * frequency * Double(startIndex + offset) / Double(rate)
            s += Double(sample) * sin(phase)
            c += Double(sample) * cos(phase)
        }
        return 2 * (s * s + c * c).squareRoot() / Double(samples.count)
    }

    static func rms<C: Collection>(_ samples: C) -> Double where C.Element == Int16 {
        (samples.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(samples.count)).squareRoot()
    }

    @Test(
        "output length is floor(count × out / in)",
        arguments: [
            (16000, 8000, 1600, 800), (16000, 8000, 1601, 800), (16000, 8000, 1, 0), (24000, 8000, 960, 320),
            (44100, 8000, 44100, 8000), (48000, 8000, 1000, 166), (8000, 16000, 160, 320), (11025, 8000, 11025, 8000),
        ]
    )
    func lengths(inputRate: Int, outputRate: Int, count: Int, expected: Int) {
        let input = [Int16](repeating: 100, count: count)
        #expect(Resampler.resample(input, from: inputRate, to: outputRate).count == expected)
    }

    @Test("16 kHz → 8 kHz halves the sample count")
    func halves() {
        let input = Self.sine(frequency: 440, rate: 16000, amplitude: 3000, count: 3200)
        #expect(Resampler.resample(input, from: 16000, to: 8000).count == 1600)
    }

    @Test("a 1 kHz sine keeps its amplitude (within 5%) and its phase")
    func passBand() {
        let input = Self.sine(frequency: 1000, rate: 16000, amplitude: 10000, count: 1600)
        let output = Resampler.resample(input, from: 16000, to: 8000)
        // Whole 1 kHz periods (8 samples each) away from the edges, where the window is complete.
        let middle = output[40..<760]
        let amplitude = Self.amplitude(middle, frequency: 1000, rate: 8000, startIndex: 40)
        #expect(abs(amplitude - 10000) < 500, "amplitude \(amplitude)")
        // Sample n of the output is time n / 8000: it must follow the same sine, not a shifted one.
        let expected = Self.sine(frequency: 1000, rate: 8000, amplitude: 10000, count: 800)
        let maxError = zip(middle, expected[40..<760]).map { abs(Int($0) - Int($1)) }.max() ?? .max
        #expect(maxError < 500)
    }

    @Test("a 6 kHz sine at 16 kHz is attenuated by more than 30 dB on the way to 8 kHz")
    func antiAliasing() {
        let amplitude = 10000.0
        let input = Self.sine(frequency: 6000, rate: 16000, amplitude: amplitude, count: 1600)
        let output = Resampler.resample(input, from: 16000, to: 8000)
        #expect(output.count == 800)
        // The whole output, edges (partial filter windows) included.
        let attenuation = 20 * log10(Self.rms(output) / (amplitude / 2.squareRoot()))
        #expect(attenuation < -30, "attenuation \(attenuation) dB")
        // 6 kHz folds to 2 kHz at an 8 kHz rate: in the steady state that alias must be gone.
        let middle = output[40..<760]
        let alias = Self.amplitude(middle, frequency: 2000, rate: 8000, startIndex: 40)
        #expect(alias < amplitude * 0.0316, "alias amplitude \(alias)")
    }

    @Test("naive decimation would alias: the check above can fail")
    func naiveDecimationAliases() {
        let input = Self.sine(frequency: 6000, rate: 16000, amplitude: 10000, count: 1600)
        let naive = stride(from: 0, to: input.count, by: 2).map { input[$0] }
        #expect(20 * log10(Self.rms(naive[40..<760]) / (10000 / 2.squareRoot())) > -3)
    }

    @Test("identity when the rates are equal")
    func identity() {
        let input = Self.sine(frequency: 6000, rate: 16000, amplitude: 10000, count: 321)
        #expect(Resampler.resample(input, from: 16000, to: 16000) == input)
        #expect(Resampler.resample(input, from: 8000, to: 8000) == input)
        #expect(Resampler.resample([], from: 16000, to: 8000) == [])
    }

    @Test("DC passes unchanged, edges included")
    func dcGain() {
        let input = [Int16](repeating: 1000, count: 480)
        for rate in [16000, 24000, 44100, 48000] {
            let output = Resampler.resample(input, from: rate, to: 8000)
            #expect(output.allSatisfy { abs(Int($0) - 1000) <= 1 }, "from \(rate)")
        }
    }

    @Test("full-scale input stays in range")
    func clipping() {
        let square = (0..<1600).map { $0 / 4 % 2 == 0 ? Int16.max : Int16.min }
        let output = Resampler.resample(square, from: 16000, to: 8000)
        #expect(output.count == 800)
        #expect(output.contains(Int16.max) || output.contains(Int16.min))
    }
}

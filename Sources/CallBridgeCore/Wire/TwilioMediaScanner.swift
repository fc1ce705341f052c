#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The fast path for Twilio `media` messages (`TwilioCodec.scanMedia`), in one pass over the message.
///
/// It answers exactly as `JSONScanner` would if asked in turn whether the message is a plain object, for the string
/// values of `event` and `payload`, and for how often `streamSid` and `chunk` occur and their string values; but where
/// those are a pass over the message each (about seven in all), this reads it once, and only looks closer at quotes:
/// every key pattern (`"key":` or `"key":"`) starts at one. For each key it keeps what the separate search would
/// have found, including that search's one subtlety: after a match it resumes after the value's closing quote, so a
/// pattern starting inside that stretch does not count for the same key (it still counts for the others, and for the
/// occurrence count). The payload's base64 is then checked over the payload alone.
///
/// The walk goes from quote to quote: outside strings it looks at every byte (structure, and no whitespace), inside a
/// string it jumps to the closing quote with `memchr` (most of a message is its payload). A backslash anywhere is
/// looked for once, with `memchr` too, before the walk.
struct TwilioMediaScanner {
    /// The search for one key.
    struct KeySearch {
        /// Its `"key":"` value, once found (and closed) exactly once.
        var value: Range<Int>?
        /// A `"key":"` match whose closing quote has not been reached yet: the value starts here.
        var openValue: Int?
        /// Quotes up to here cannot start a new match (the separate search resumes after the value it found).
        var resumeAfter = -1
        /// Two matches, or a value never closed: the separate search declines.
        var declined = false
        /// `"key":` anywhere, counted at every position.
        var occurrences = 0

        /// The quote at `quote` closes the value opened before it, if any.
        @inline(__always)
        mutating func close(at quote: Int) {
            guard let start = self.openValue, start <= quote else { return }
            self.value = start..<quote
            self.resumeAfter = quote
            self.openValue = nil
        }

        /// The quote at `quote` is followed by the key's name and `":`, and by a third quote when `opensValue`.
        @inline(__always)
        mutating func matched(at quote: Int, opensValue: Bool, valueStart: Int) {
            self.occurrences += 1
            guard opensValue, quote > self.resumeAfter, self.openValue == nil, !self.declined else { return }
            if self.value != nil {
                self.declined = true
            } else {
                self.openValue = valueStart
            }
        }

        /// The value, unless the separate search would have declined.
        var result: Range<Int>? { self.declined || self.openValue != nil ? nil : self.value }
    }

    let bytes: UnsafeBufferPointer<UInt8>
    var event = KeySearch()
    var payload = KeySearch()
    var streamSid = KeySearch()
    var chunk = KeySearch()

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    /// Reads the whole message. False when it is not a plain object (`JSONScanner.isPlainObject`): a backslash
    /// anywhere, whitespace outside a string, an open string at the end, or not `{…}`.
    mutating func scan() -> Bool {
        let bytes = self.bytes
        let n = bytes.count
        guard n >= 2, bytes[0] == UInt8(ascii: "{"), bytes[n - 1] == UInt8(ascii: "}"),
            JSONScanner.index(of: UInt8(ascii: "\\"), in: bytes, from: 0) == nil
        else { return false }
        var i = 1
        while i < n {
            let byte = bytes[i]
            if byte == UInt8(ascii: "\"") {
                // A string: its opening quote, then straight to its closing one (none: the string is still open).
                // Keys and most values are short: a few bytes are looked at here before `memchr` takes over.
                self.quote(at: i)
                var end = i + 1
                let near = min(n, i + 17)
                while end < near && bytes[end] != UInt8(ascii: "\"") { end += 1 }
                if end == near {
                    guard let closing = JSONScanner.index(of: UInt8(ascii: "\""), in: bytes, from: end) else { return false }
                    end = closing
                }
                self.quote(at: end)
                i = end + 1
            } else if JSONScanner.isWhitespace(byte) {
                return false
            } else {
                i += 1
            }
        }
        return true
    }

    @inline(__always)
    mutating func quote(at q: Int) {
        self.event.close(at: q)
        self.payload.close(at: q)
        self.streamSid.close(at: q)
        self.chunk.close(at: q)
        let bytes = self.bytes
        guard q + 1 < bytes.count else { return }
        switch bytes[q + 1] {
        case UInt8(ascii: "e"): Self.match("event", at: q, in: bytes, into: &self.event)
        case UInt8(ascii: "p"): Self.match("payload", at: q, in: bytes, into: &self.payload)
        case UInt8(ascii: "s"): Self.match("streamSid", at: q, in: bytes, into: &self.streamSid)
        case UInt8(ascii: "c"): Self.match("chunk", at: q, in: bytes, into: &self.chunk)
        default: break
        }
    }

    /// Whether `"name":` starts at the quote `q` (and `"name":"`), as `JSONScanner` matches keys.
    @inline(__always)
    static func match(_ name: StaticString, at q: Int, in bytes: UnsafeBufferPointer<UInt8>, into search: inout KeySearch) {
        let length = name.utf8CodeUnitCount
        let n = bytes.count
        guard q + length + 3 <= n, bytes[q + length + 1] == UInt8(ascii: "\""), bytes[q + length + 2] == UInt8(ascii: ":")
        else { return }
        let start = name.utf8Start
        for j in 0..<length where bytes[q + 1 + j] != start[j] { return }
        let opensValue = q + length + 4 <= n && bytes[q + length + 3] == UInt8(ascii: "\"")
        search.matched(at: q, opensValue: opensValue, valueStart: q + length + 4)
    }

    func equals(_ range: Range<Int>, _ other: UnsafeBufferPointer<UInt8>) -> Bool {
        guard range.count == other.count else { return false }
        guard let base = self.bytes.baseAddress, let otherBase = other.baseAddress else { return range.isEmpty }
        return memcmp(base + range.lowerBound, otherBase, other.count) == 0
    }

    func equals(_ range: Range<Int>, _ value: StaticString) -> Bool {
        self.equals(range, UnsafeBufferPointer(start: value.utf8Start, count: value.utf8CodeUnitCount))
    }

    /// The decimal digits in `range` as an Int (nil if empty, not all digits, or too long).
    func integer(_ range: Range<Int>) -> Int? { JSONScanner.integer(in: self.bytes, range) }
}

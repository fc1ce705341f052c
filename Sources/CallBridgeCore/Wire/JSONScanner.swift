#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A byte scanner for the two hot-path message shapes (Twilio `media`, Realtime audio deltas).
///
/// It only answers when the answer is certain: the message starts with `{`, ends with `}`, contains no
/// backslash (so no string value can hide a quote), has no whitespace outside strings, and has the key once.
/// Without a backslash a quote always ends a string, so the pattern `"key":"` can only be a real key.
/// Anything else returns nil and the caller falls back to Codable.
struct JSONScanner {
    let bytes: UnsafeBufferPointer<UInt8>

    /// Runs `body` over the UTF-8 bytes of `text` when they pass the structural pre-checks.
    static func withScanner<R>(_ text: String, _ body: (JSONScanner) -> R?) -> R? {
        text.withUTF8Bytes { buffer -> R? in
            guard Self.isPlainObject(buffer) else { return nil }
            return body(JSONScanner(bytes: buffer))
        }
    }

    /// The same over bytes already in memory (a network buffer).
    static func withScanner<R>(bytes buffer: UnsafeBufferPointer<UInt8>, _ body: (JSONScanner) -> R?) -> R? {
        guard Self.isPlainObject(buffer) else { return nil }
        return body(JSONScanner(bytes: buffer))
    }

    /// `{…}` with no backslash anywhere and no whitespace outside strings (compact JSON, as both peers send).
    /// Without escapes a quote always toggles "inside a string", so a string ends at the next quote; whitespace could
    /// otherwise hide a second copy of a key from the duplicate check (`"type" : …` next to `"type":…`).
    static func isPlainObject(_ buffer: UnsafeBufferPointer<UInt8>) -> Bool {
        guard buffer.count >= 2, buffer[0] == UInt8(ascii: "{"), buffer[buffer.count - 1] == UInt8(ascii: "}") else {
            return false
        }
        guard Self.index(of: UInt8(ascii: "\\"), in: buffer, from: 0) == nil else { return false }
        // Outside strings every byte is looked at; a string is jumped over to its closing quote (most of a message
        // is a base64 value).
        var i = 0
        while i < buffer.count {
            let byte = buffer[i]
            if byte == UInt8(ascii: "\"") {
                guard let closing = Self.index(of: UInt8(ascii: "\""), in: buffer, from: i + 1) else { return false }
                i = closing + 1
                continue
            }
            if Self.isWhitespace(byte) { return false }
            i += 1
        }
        return true
    }

    /// The index of the first `byte` at or after `start` (`memchr`: many bytes a step), if any.
    static func index(of byte: UInt8, in buffer: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        guard start < buffer.count, let base = buffer.baseAddress,
            let found = memchr(base + start, Int32(byte), buffer.count - start)
        else { return nil }
        return UnsafeRawPointer(base).distance(to: UnsafeRawPointer(found))
    }

    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }

    /// Number of occurrences of `byte` (used to require a flat object: exactly one `{`).
    func count(of byte: UInt8) -> Int {
        var n = 0
        var next = Self.index(of: byte, in: self.bytes, from: 0)
        while let found = next {
            n += 1
            next = Self.index(of: byte, in: self.bytes, from: found + 1)
        }
        return n
    }

    /// The byte range of the string value of `key`, if `"key":"` occurs exactly once.
    func stringValueRange(forKey key: StaticString) -> Range<Int>? {
        let pattern = UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        var found: Range<Int>?
        var i = 0
        let n = self.bytes.count
        let needed = pattern.count + 4  // quote key quote colon quote
        // Only a quote can start the pattern: from quote to quote.
        while i + needed <= n, let quote = Self.index(of: UInt8(ascii: "\""), in: self.bytes, from: i), quote + needed <= n {
            i = quote
            if self.matches(pattern, at: i + 1)
                && self.bytes[i + 1 + pattern.count] == UInt8(ascii: "\"")
                && self.bytes[i + 2 + pattern.count] == UInt8(ascii: ":")
                && self.bytes[i + 3 + pattern.count] == UInt8(ascii: "\"")
            {
                let start = i + needed
                guard let end = self.closingQuote(from: start) else { return nil }
                if found != nil { return nil }  // duplicate key: let Codable decide
                found = start..<end
                i = end + 1
                continue
            }
            i += 1
        }
        return found
    }

    /// The byte range of the string value of `key` in the top-level object, if it occurs there exactly once (the
    /// same key in nested objects does not count). One pass, tracking depth: without escapes a quote always
    /// toggles "inside a string".
    func topLevelStringValueRange(forKey key: StaticString) -> Range<Int>? {
        let pattern = UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        let needed = pattern.count + 4  // quote key quote colon quote
        let n = self.bytes.count
        var found: Range<Int>?
        var depth = 0
        var i = 0
        while i < n {
            switch self.bytes[i] {
            case UInt8(ascii: "{"): depth += 1
            case UInt8(ascii: "}"): depth -= 1
            case UInt8(ascii: "\""):
                // A string starts here (outside strings, which are skipped whole below): a key or a value.
                guard let end = self.closingQuote(from: i + 1) else { return nil }
                if depth == 1, end - i - 1 == pattern.count, i + needed <= n, self.matches(pattern, at: i + 1),
                    self.bytes[end + 1] == UInt8(ascii: ":"), self.bytes[end + 2] == UInt8(ascii: "\"")
                {
                    guard let close = self.closingQuote(from: end + 3) else { return nil }
                    let start = end + 3
                    if found != nil { return nil }  // duplicate key: let Codable decide
                    found = start..<close
                    i = close + 1
                    continue
                }
                i = end + 1
                continue
            default: break
            }
            i += 1
        }
        return found
    }

    /// The index of the first quote at or after `start` (the end of a string: there are no escapes), if any.
    private func closingQuote(from start: Int) -> Int? {
        Self.index(of: UInt8(ascii: "\""), in: self.bytes, from: start)
    }

    /// How many times `"key":` occurs (in any object, at any depth).
    func occurrences(ofKey key: StaticString) -> Int {
        let pattern = UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        var found = 0
        var i = 0
        let n = self.bytes.count
        while i + pattern.count + 3 <= n, let quote = Self.index(of: UInt8(ascii: "\""), in: self.bytes, from: i),
            quote + pattern.count + 3 <= n
        {
            i = quote
            if self.matches(pattern, at: i + 1)
                && self.bytes[i + 1 + pattern.count] == UInt8(ascii: "\"")
                && self.bytes[i + 2 + pattern.count] == UInt8(ascii: ":")
            {
                found += 1
            }
            i += 1
        }
        return found
    }

    /// The decimal digits in `range` as an Int (nil if empty, not all digits, or too long).
    func integer(_ range: Range<Int>) -> Int? { Self.integer(in: self.bytes, range) }

    /// The decimal digits of `bytes[range]` as an Int (nil if empty, not all digits, or more than 18 of them).
    static func integer(in bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty, range.count <= 18 else { return nil }
        var value = 0
        for i in range {
            let b = bytes[i]
            guard b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(b - UInt8(ascii: "0"))
        }
        return value
    }

    /// How many objects are open at byte `index` (outside strings; 1 is the top level). Without escapes a quote
    /// always toggles "inside a string".
    func depth(at index: Int) -> Int {
        var depth = 0
        var inString = false
        for i in 0..<min(index, self.bytes.count) {
            switch self.bytes[i] {
            case UInt8(ascii: "\""): inString.toggle()
            case UInt8(ascii: "{") where !inString: depth += 1
            case UInt8(ascii: "}") where !inString: depth -= 1
            default: break
            }
        }
        return depth
    }

    func string(_ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: self.bytes[range]), as: UTF8.self)
    }

    func equals(_ range: Range<Int>, _ value: StaticString) -> Bool {
        guard range.count == value.utf8CodeUnitCount else { return false }
        let pattern = UnsafeBufferPointer(start: value.utf8Start, count: value.utf8CodeUnitCount)
        return self.matches(pattern, at: range.lowerBound)
    }

    func equals(_ range: Range<Int>, _ value: String) -> Bool {
        value.withUTF8Bytes { pattern in
            range.count == pattern.count && self.matches(pattern, at: range.lowerBound)
        }
    }

    /// True when every byte in `range` is in the standard base64 alphabet (with `=` padding only at the end).
    func isBase64(_ range: Range<Int>) -> Bool {
        Base64.isValid(UnsafeBufferPointer(rebasing: self.bytes[range]))
    }

    private func matches(_ pattern: UnsafeBufferPointer<UInt8>, at offset: Int) -> Bool {
        guard offset + pattern.count <= self.bytes.count else { return false }
        for j in 0..<pattern.count where self.bytes[offset + j] != pattern[j] {
            return false
        }
        return true
    }
}

/// String building for outbound JSON: the hot-path messages are assembled by hand, so every value that
/// comes from a peer goes through `quoted` exactly once.
public enum JSONText {
    /// `value` as a JSON string literal, quotes included.
    public static func quoted(_ value: String) -> String {
        var out = "\""
        out.reserveCapacity(value.utf8.count + 2)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
        return out
    }
}

extension JSONText {
    /// Builds one hot-path message in a single allocation: the caller states the exact length first, then writes the
    /// pieces in order. (Concatenating with `+` allocated up to five times for a Twilio `media` message.)
    static func build(count: Int, _ write: (inout Writer) -> Void) -> String {
        String(unsafeUninitializedCapacity: count) { buffer in
            var writer = Writer(buffer: buffer)
            write(&writer)
            precondition(writer.count == count, "message length miscounted")
            return writer.count
        }
    }

    /// True when `quoted` would escape something in `value`.
    static func needsEscaping(_ value: String) -> Bool {
        value.utf8.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }
    }

    struct Writer {
        let buffer: UnsafeMutableBufferPointer<UInt8>
        private(set) var count = 0

        init(buffer: UnsafeMutableBufferPointer<UInt8>) {
            self.buffer = buffer
        }

        mutating func append(_ text: StaticString) {
            text.withUTF8Buffer { self.append($0) }
        }

        mutating func append(_ text: String) {
            text.withUTF8Bytes { self.append($0) }
        }

        mutating func appendBase64(_ bytes: [UInt8]) {
            self.appendBase64(bytes[...])
        }

        mutating func appendBase64(_ bytes: ArraySlice<UInt8>) {
            bytes.withUnsafeBufferPointer { input in
                let out = UnsafeMutableBufferPointer(rebasing: self.buffer[self.count...])
                self.count += Base64.encode(input, into: out)
            }
        }

        private mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
            precondition(self.count + bytes.count <= self.buffer.count, "message longer than counted")
            _ = UnsafeMutableBufferPointer(rebasing: self.buffer[self.count...]).initialize(fromContentsOf: bytes)
            self.count += bytes.count
        }
    }
}

extension String {
    /// Runs `body` over the string's UTF-8 bytes: in place when the string is native and contiguous (no copy of it,
    /// and none of the retain and uniqueness check `withUTF8` needs, being mutating), else on a contiguous copy.
    func withUTF8Bytes<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        if let result = try self.utf8.withContiguousStorageIfAvailable(body) { return result }
        var copy = self
        return try copy.withUTF8(body)
    }
}

/// Standard base64 (RFC 4648, with padding). Allocation-light, no Foundation, so the core stays pure.
public enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let input = Array(bytes)
        return input.withUnsafeBufferPointer { input in
            String(unsafeUninitializedCapacity: self.encodedCount(input.count)) { self.encode(input, into: $0) }
        }
    }

    /// The length of the base64 text of `byteCount` bytes, padding included.
    static func encodedCount(_ byteCount: Int) -> Int {
        (byteCount + 2) / 3 * 4
    }

    /// Writes the base64 of `input` at the start of `out`, which must hold `encodedCount(input.count)` bytes;
    /// returns that count.
    static func encode(_ input: UnsafeBufferPointer<UInt8>, into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        precondition(out.count >= self.encodedCount(input.count), "base64 output buffer too small")
        var o = 0
        var i = 0
        while i + 3 <= input.count {
            let v = (UInt32(input[i]) << 16) | (UInt32(input[i + 1]) << 8) | UInt32(input[i + 2])
            out[o] = alphabet[Int((v >> 18) & 63)]
            out[o + 1] = alphabet[Int((v >> 12) & 63)]
            out[o + 2] = alphabet[Int((v >> 6) & 63)]
            out[o + 3] = alphabet[Int(v & 63)]
            o += 4
            i += 3
        }
        let rest = input.count - i
        if rest > 0 {
            var v = UInt32(input[i]) << 16
            if rest == 2 { v |= UInt32(input[i + 1]) << 8 }
            out[o] = alphabet[Int((v >> 18) & 63)]
            out[o + 1] = alphabet[Int((v >> 12) & 63)]
            out[o + 2] = rest == 2 ? alphabet[Int((v >> 6) & 63)] : UInt8(ascii: "=")
            out[o + 3] = UInt8(ascii: "=")
            o += 4
        }
        return o
    }

    /// The byte count `text` decodes to, from its length and padding alone (no validation).
    public static func decodedLength(_ text: String) -> Int {
        let utf8 = text.utf8
        let count = utf8.count
        guard count >= 2 else { return 0 }
        var padding = 0
        var index = utf8.index(before: utf8.endIndex)
        if utf8[index] == UInt8(ascii: "=") {
            padding += 1
            index = utf8.index(before: index)
            if utf8[index] == UInt8(ascii: "=") { padding += 1 }
        }
        return count / 4 * 3 - padding
    }

    /// Decodes standard base64; nil on any character outside the alphabet or a bad length/padding.
    public static func decode(_ text: String) -> [UInt8]? {
        text.withUTF8Bytes { decode(bytes: $0) }
    }

    public static func decode(bytes input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard let outputLength = self.decodedCount(input) else { return nil }
        var failed = false
        let output = [UInt8](unsafeUninitializedCapacity: outputLength) { out, count in
            failed = !self.decode(input, into: out)
            count = failed ? 0 : outputLength
        }
        return failed ? nil : output
    }

    /// Decodes base64 `input` onto the end of `output` and returns true; on invalid base64 returns false and leaves
    /// `output` as it was (for a buffer that gathers decoded audio, without an array per message).
    public static func decode(bytes input: UnsafeBufferPointer<UInt8>, appendingTo output: inout [UInt8]) -> Bool {
        guard let length = self.decodedCount(input) else { return false }
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: length))
        let valid = output.withUnsafeMutableBufferPointer { whole in
            self.decode(input, into: UnsafeMutableBufferPointer(rebasing: whole[start...]))
        }
        if !valid { output.removeSubrange(start...) }
        return valid
    }

    /// Decodes `text` into `output`, replacing its contents, and returns true; on invalid base64 returns false and
    /// leaves `output` empty. An array reused from call to call is not reallocated (the per-frame form of `decode`).
    public static func decode(_ text: String, into output: inout [UInt8]) -> Bool {
        text.withUTF8Bytes { Self.decode($0, into: &output) }
    }

    private static func decode(_ input: UnsafeBufferPointer<UInt8>, into output: inout [UInt8]) -> Bool {
        guard let length = self.decodedCount(input) else {
            output.removeAll(keepingCapacity: true)
            return false
        }
        // Every byte is overwritten: an array already this long (the same frame size, message after message) is
        // neither cleared nor refilled.
        if output.count != length {
            output.removeAll(keepingCapacity: true)
            output.append(contentsOf: repeatElement(0, count: length))
        }
        let valid = output.withUnsafeMutableBufferPointer { self.decode(input, into: $0) }
        if !valid { output.removeAll(keepingCapacity: true) }
        return valid
    }

    /// The decoded length of well-formed base64 `input` (length a multiple of 4), or nil.
    private static func decodedCount(_ input: UnsafeBufferPointer<UInt8>) -> Int? {
        guard input.count % 4 == 0 else { return nil }
        if input.isEmpty { return 0 }
        var padding = 0
        if input[input.count - 1] == UInt8(ascii: "=") { padding += 1 }
        if input[input.count - 2] == UInt8(ascii: "=") { padding += 1 }
        return input.count / 4 * 3 - padding
    }

    /// Decodes `input` into `out`, which holds exactly `decodedCount(input)` bytes; false on a character outside the
    /// alphabet or misplaced padding.
    private static func decode(_ input: UnsafeBufferPointer<UInt8>, into out: UnsafeMutableBufferPointer<UInt8>) -> Bool {
        let outputLength = out.count
        let padding = input.count / 4 * 3 - outputLength
        var o = 0
        var i = 0
        while i < input.count {
            let isLast = i + 4 == input.count
            let a = reverse[Int(input[i])]
            let b = reverse[Int(input[i + 1])]
            let cRaw = input[i + 2]
            let dRaw = input[i + 3]
            let c = (isLast && cRaw == UInt8(ascii: "=") && padding == 2) ? 0 : reverse[Int(cRaw)]
            let d = (isLast && dRaw == UInt8(ascii: "=") && padding >= 1) ? 0 : reverse[Int(dRaw)]
            if (a | b | c | d) & 0xC0 != 0 { return false }
            let v = (UInt32(a) << 18) | (UInt32(b) << 12) | (UInt32(c) << 6) | UInt32(d)
            if o < outputLength { out[o] = UInt8((v >> 16) & 0xFF); o += 1 }
            if o < outputLength { out[o] = UInt8((v >> 8) & 0xFF); o += 1 }
            if o < outputLength { out[o] = UInt8(v & 0xFF); o += 1 }
            i += 4
        }
        return true
    }

    static func isValid(_ input: UnsafeBufferPointer<UInt8>) -> Bool {
        guard input.count % 4 == 0 else { return false }
        guard input.count >= 4 else { return true }
        // Everything but the last two characters is in the alphabet. Plain arithmetic with no branch and no table, so
        // the compiler checks many bytes per instruction (this runs over every caller frame's payload).
        let body = input.count - 2
        var outside: Int16 = 0
        for index in 0..<body {
            outside |= ~self.alphabetMask(input[index])
        }
        // '=' only in the last two positions, and the second-to-last only if the last is too.
        let penultimate = input[body]
        let last = input[body + 1]
        let equals = UInt8(ascii: "=")
        let tail = self.alphabetMask(penultimate) != 0
            ? self.alphabetMask(last) != 0 || last == equals
            : penultimate == equals && last == equals
        return outside == 0 && tail
    }

    /// All ones for `A`–`Z`, `a`–`z`, `0`–`9`, `+` and `/`; zero for any other byte. Each test is a subtraction whose
    /// sign says "in range": setting 0x20 folds upper case onto lower case (and nothing else onto a letter), and 43 and
    /// 47 are the only bytes that are 47 with bit 2 set.
    @inline(__always)
    static func alphabetMask(_ byte: UInt8) -> Int16 {
        let letter = (Int16((byte | 0x20) &- UInt8(ascii: "a")) &- 26) >> 15
        let digit = (Int16(byte &- UInt8(ascii: "0")) &- 10) >> 15
        let sign = (Int16((byte | 4) ^ UInt8(ascii: "/")) &- 1) >> 15
        return letter | digit | sign
    }
}

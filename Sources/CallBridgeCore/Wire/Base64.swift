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
        let outputLength = ((input.count + 2) / 3) * 4
        return String(unsafeUninitializedCapacity: outputLength) { out in
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
        var text = text
        return text.withUTF8 { decode(bytes: $0) }
    }

    public static func decode(bytes input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard input.count % 4 == 0 else { return nil }
        if input.isEmpty { return [] }
        var padding = 0
        if input[input.count - 1] == UInt8(ascii: "=") { padding += 1 }
        if input[input.count - 2] == UInt8(ascii: "=") { padding += 1 }
        let outputLength = input.count / 4 * 3 - padding
        var failed = false
        let output = [UInt8](unsafeUninitializedCapacity: outputLength) { out, count in
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
                if (a | b | c | d) & 0xC0 != 0 {
                    failed = true
                    break
                }
                let v = (UInt32(a) << 18) | (UInt32(b) << 12) | (UInt32(c) << 6) | UInt32(d)
                if o < outputLength { out[o] = UInt8((v >> 16) & 0xFF); o += 1 }
                if o < outputLength { out[o] = UInt8((v >> 8) & 0xFF); o += 1 }
                if o < outputLength { out[o] = UInt8(v & 0xFF); o += 1 }
                i += 4
            }
            count = failed ? 0 : o
        }
        return failed ? nil : output
    }

    static func isValid(_ input: UnsafeBufferPointer<UInt8>) -> Bool {
        guard input.count % 4 == 0 else { return false }
        for (index, byte) in input.enumerated() {
            if reverse[Int(byte)] != 0xFF { continue }
            // '=' only in the last two positions, and the second-to-last only if the last is too.
            guard byte == UInt8(ascii: "="), index >= input.count - 2 else { return false }
            if index == input.count - 2 && input[input.count - 1] != UInt8(ascii: "=") { return false }
        }
        return true
    }
}

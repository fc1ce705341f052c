/// The conversation so far, as text, kept to replay into a new Realtime session after a reconnect: the caller's
/// turns as the service transcribed them, the AI's turns cut to what the caller heard of them. Bounded: the
/// newest turns that fit `maxTurns` and `maxCharacters`.
public struct ConversationLog: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        var itemID: String
        var role: ConversationTurn.Role
        var text: String
    }

    public var maxTurns = 24
    public var maxCharacters = 8000
    var entries: [Entry] = []
    /// Of interrupted AI items: the fraction of their audio the caller heard.
    var heardFraction: [String: Double] = [:]

    public init() {}

    mutating func record(itemID: String, role: ConversationTurn.Role, text: String) {
        let text = text.trimmingSpaces
        guard !text.isEmpty else { return }
        self.entries.append(Entry(itemID: itemID, role: role, text: text))
        while self.entries.count > self.maxTurns || self.entries.reduce(0, { $0 + $1.text.count }) > self.maxCharacters {
            let dropped = self.entries.removeFirst()
            self.heardFraction[dropped.itemID] = nil
        }
    }

    /// The caller heard `played` of `produced` bytes of an AI item before a barge-in.
    mutating func heard(itemID: String, played: Int, produced: Int) {
        guard produced > 0 else { return }
        self.heardFraction[itemID] = min(1, Double(played) / Double(produced))
    }

    /// The turns to replay, oldest first; an interrupted AI turn is cut at a word boundary in proportion to what was
    /// heard of its audio (text and audio run at roughly even pace).
    public var turns: [ConversationTurn] {
        self.entries.compactMap { entry in
            guard entry.role == .assistant, let fraction = self.heardFraction[entry.itemID] else {
                return ConversationTurn(role: entry.role, text: entry.text)
            }
            let words = entry.text.split(separator: " ")
            let kept = Int((Double(words.count) * fraction).rounded(.down))
            guard kept > 0 else { return nil }
            return ConversationTurn(role: .assistant, text: words.prefix(kept).joined(separator: " ") + (kept < words.count ? "…" : ""))
        }
    }
}

extension String {
    var trimmingSpaces: String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}

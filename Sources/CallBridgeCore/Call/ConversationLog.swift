/// The conversation so far, as text, kept to replay into a new Realtime session after a reconnect: the caller's
/// turns as the service transcribed them, the AI's turns cut to what the caller heard of them. Bounded: the
/// newest turns that fit `maxTurns` and `maxCharacters`.
///
/// Turns are kept in conversation order, not in the order their transcripts arrive: a caller's transcript usually
/// comes after the AI has begun its answer. An item takes its place when it is first seen (the service VAD's
/// `speech_started`/`speech_stopped` name the caller's item, `response.output_item.added` the AI's), and its text
/// fills in when the transcript arrives; an item first seen through its transcript goes last.
public struct ConversationLog: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        var itemID: String
        var role: ConversationTurn.Role
        /// Empty until the transcript arrives.
        var text: String
    }

    public var maxTurns = 24
    public var maxCharacters = 8000
    var entries: [Entry] = []
    /// Of interrupted AI items: the fraction of their audio the caller heard.
    var heardFraction: [String: Double] = [:]

    public init() {}

    /// An item of the conversation exists, in this place; its transcript may follow.
    mutating func noteItem(itemID: String, role: ConversationTurn.Role) {
        guard !self.entries.contains(where: { $0.itemID == itemID }) else { return }
        self.entries.append(Entry(itemID: itemID, role: role, text: ""))
        self.trim()
    }

    mutating func record(itemID: String, role: ConversationTurn.Role, text: String) {
        let text = text.trimmingSpaces
        guard !text.isEmpty else { return }
        if let index = self.entries.firstIndex(where: { $0.itemID == itemID }) {
            self.entries[index].text = text
        } else {
            self.entries.append(Entry(itemID: itemID, role: role, text: text))
        }
        self.trim()
    }

    /// Drops the oldest entries beyond the bounds; items still waiting for a transcript count double the turn bound
    /// (a transcript that never comes must not hold memory).
    private mutating func trim() {
        func over() -> Bool {
            var turns = 0
            var characters = 0
            for entry in self.entries where !entry.text.isEmpty {
                turns += 1
                characters += entry.text.count
            }
            return turns > self.maxTurns || characters > self.maxCharacters || self.entries.count > 2 * self.maxTurns
        }
        while !self.entries.isEmpty, over() {
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
            guard !entry.text.isEmpty else { return nil }
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

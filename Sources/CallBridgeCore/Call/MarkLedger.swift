/// What Twilio confirmed as played, from the echoes of the marks the bridge sends after its frames.
///
/// Marks are echoed in the order they were sent, either when the audio before them has played or when a
/// `clear` dropped it. The ledger remembers the last mark sent before each `clear`: an echo at or before that point
/// counts as *cleared*, unless the frame's playout deadline had already passed when the `clear` went out (it was
/// playing, its mark just had not come back yet), in which case it counts as *played*. It keeps each outstanding frame, so a paused reply can be resumed
/// exactly where Twilio dropped it, and its level, so the echo guard knows what was played when.
public struct MarkLedger: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var sequence: UInt64
        public var frame: FrameQueue.Frame
        public var levelDBFS: Double
        public var sentAt: CallInstant
        /// When the pacer scheduled it to play.
        public var deadline: CallInstant
    }

    public enum Echo: Sendable, Equatable {
        case played(Entry)
        case cleared(Entry)
        /// A name the bridge never sent, or one already echoed.
        case unknown
    }

    private var outstanding: [Entry] = []
    private var outstandingHead = 0
    private var nextSequence: UInt64 = 1
    /// Marks with a sequence at or below this were outstanding when a `clear` was sent…
    private var clearedThrough: UInt64 = 0
    /// …at this time.
    private var clearedAt: CallInstant?
    private var playedBytes: [String: Int] = [:]

    public init() {}

    /// Records a frame about to be sent and returns the name of the mark to send after it.
    public mutating func recordSent(
        _ frame: FrameQueue.Frame,
        levelDBFS: Double,
        at now: CallInstant,
        deadline: CallInstant
    ) -> String {
        let sequence = self.nextSequence
        self.nextSequence += 1
        self.outstanding.append(
            Entry(sequence: sequence, frame: frame, levelDBFS: levelDBFS, sentAt: now, deadline: deadline)
        )
        return Self.name(for: sequence)
    }

    /// Frames sent and not yet echoed.
    public var outstandingCount: Int { self.outstanding.count - self.outstandingHead }
    /// Entries held, echoed ones not yet dropped included.
    var storedCount: Int { self.outstanding.count }

    /// Frames sent, not yet echoed, and not dropped by a `clear`: what Twilio may still play (oldest first).
    /// Sequences are contiguous, so this is a slice computed without scanning.
    public var playable: ArraySlice<Entry> {
        self.outstanding[self.firstPlayable...]
    }

    /// Where `playable` starts in `outstanding` (its end when nothing is playable).
    private var firstPlayable: Int {
        guard self.outstandingHead < self.outstanding.count else { return self.outstanding.count }
        let firstSequence = self.outstanding[self.outstandingHead].sequence
        let skip = Int(min(UInt64(self.outstandingCount), self.clearedThrough >= firstSequence ? self.clearedThrough - firstSequence + 1 : 0))
        return self.outstandingHead + skip
    }

    public var playableCount: Int { self.outstanding.count - self.firstPlayable }

    /// The level of the oldest playable frame (what may be playing now), read in place (no slice, no entry copy: the
    /// caller's path asks for it on every frame).
    public var firstPlayableLevelDBFS: Double? {
        let index = self.firstPlayable
        return index < self.outstanding.count ? self.outstanding[index].levelDBFS : nil
    }

    /// Bytes of `itemID` that Twilio confirmed as played.
    public func playedBytes(of itemID: String) -> Int { self.playedBytes[itemID, default: 0] }

    /// A `clear` goes out at `now`: frames not yet due to play will come back as cleared; returns them, oldest first
    /// (frames already past their deadline were playing and count as played).
    @discardableResult
    public mutating func clearSent(at now: CallInstant) -> [FrameQueue.Frame] {
        let dropped = self.playable.filter { $0.deadline >= now }.map(\.frame)
        self.clearedThrough = self.nextSequence - 1
        self.clearedAt = now
        return dropped
    }

    public mutating func echoReceived(name: String) -> Echo {
        guard let sequence = Self.sequence(of: name), self.outstandingHead < self.outstanding.count,
            sequence >= self.outstanding[self.outstandingHead].sequence, sequence < self.nextSequence
        else { return .unknown }
        // Echoes arrive in send order; anything before this one was echoed without its own message.
        var result = Echo.unknown
        while self.outstandingHead < self.outstanding.count {
            let entry = self.outstanding[self.outstandingHead]
            self.outstandingHead += 1
            let echo = self.account(entry)
            if entry.sequence == sequence {
                result = echo
                break
            }
        }
        self.compact()
        return result
    }

    private mutating func account(_ entry: Entry) -> Echo {
        if entry.sequence <= self.clearedThrough, let clearedAt = self.clearedAt, entry.deadline >= clearedAt {
            return .cleared(entry)
        }
        self.playedBytes[entry.frame.itemID, default: 0] += entry.frame.bytes.count
        return .played(entry)
    }

    /// Drops echoed entries once they are at least half the list (Twilio echoes within a few frames, so the list
    /// stays a few dozen entries long); a list emptied after a long outage gives its storage back.
    private mutating func compact() {
        if self.outstandingHead == self.outstanding.count {
            self.outstanding.removeAll(keepingCapacity: self.outstanding.capacity <= 64)
            self.outstandingHead = 0
        } else if self.outstandingHead >= 16 && self.outstandingHead * 2 >= self.outstanding.count {
            self.outstanding.removeSubrange(0..<self.outstandingHead)
            self.outstandingHead = 0
        }
    }

    static func name(for sequence: UInt64) -> String { "cb\(sequence)" }

    static func sequence(of name: String) -> UInt64? {
        guard name.hasPrefix("cb") else { return nil }
        return UInt64(name.dropFirst(2))
    }
}

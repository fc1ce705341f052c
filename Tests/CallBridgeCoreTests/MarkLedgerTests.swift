import Testing

@testable import CallBridgeCore

@Suite struct MarkLedgerTests {
    func frame(_ item: String, _ first: Int = 0) -> FrameQueue.Frame { .init(bytes: ramp(160, from: first), itemID: item) }

    func playedItem(_ echo: MarkLedger.Echo) -> String? {
        if case .played(let entry) = echo { return entry.frame.itemID }
        return nil
    }

    func clearedItem(_ echo: MarkLedger.Echo) -> String? {
        if case .cleared(let entry) = echo { return entry.frame.itemID }
        return nil
    }

    @Test func echoesCountPlayedBytesPerItem() {
        var ledger = MarkLedger()
        let a = ledger.recordSent(self.frame("item_a"), levelDBFS: -20, at: t(0), deadline: t(100))
        _ = ledger.recordSent(self.frame("item_a"), levelDBFS: -20, at: t(0), deadline: t(100))
        let c = ledger.recordSent(self.frame("item_b"), levelDBFS: -20, at: t(0), deadline: t(100))
        #expect(ledger.outstandingCount == 3)
        #expect(self.playedItem(ledger.echoReceived(name: a)) == "item_a")
        #expect(ledger.playedBytes(of: "item_a") == 160)
        // An echo that overtakes: the one before it is implied played too (Twilio echoes in order).
        #expect(self.playedItem(ledger.echoReceived(name: c)) == "item_b")
        #expect(ledger.playedBytes(of: "item_a") == 320)
        #expect(ledger.playedBytes(of: "item_b") == 160)
        #expect(ledger.outstandingCount == 0)
    }

    @Test func echoesAfterAClearAreClearedNotPlayedAndTheClearReturnsWhatWasDropped() {
        var ledger = MarkLedger()
        let first = ledger.recordSent(self.frame("i", 0), levelDBFS: -20, at: t(0), deadline: t(100))
        let second = ledger.recordSent(self.frame("i", 1), levelDBFS: -20, at: t(0), deadline: t(100))
        let third = ledger.recordSent(self.frame("i", 2), levelDBFS: -20, at: t(0), deadline: t(100))
        #expect(self.playedItem(ledger.echoReceived(name: first)) == "i")
        #expect(ledger.playableCount == 2)
        #expect(ledger.clearSent(at: t(50)) == [self.frame("i", 1), self.frame("i", 2)])
        #expect(ledger.playableCount == 0)
        #expect(ledger.outstandingCount == 2)
        #expect(self.clearedItem(ledger.echoReceived(name: second)) == "i")
        #expect(self.clearedItem(ledger.echoReceived(name: third)) == "i")
        #expect(ledger.playedBytes(of: "i") == 160)
        // Marks sent after the clear count as played again.
        let fourth = ledger.recordSent(self.frame("j"), levelDBFS: -20, at: t(0), deadline: t(100))
        #expect(ledger.playableCount == 1)
        #expect(self.playedItem(ledger.echoReceived(name: fourth)) == "j")
    }

    /// The level of the oldest playable frame, read in place, is the first of `playable` through sends, echoes and a
    /// clear.
    @Test func theFirstPlayableLevelIsTheFirstOfPlayable() {
        var ledger = MarkLedger()
        var names: [String] = []
        var seen: [Double?] = []
        func check() {
            #expect(ledger.firstPlayableLevelDBFS == ledger.playable.first?.levelDBFS)
            #expect(ledger.playableCount == ledger.playable.count)
            seen.append(ledger.firstPlayableLevelDBFS)
        }
        check()
        for index in 0..<4 {
            names.append(ledger.recordSent(self.frame("i", index), levelDBFS: -10 - Double(index), at: t(0), deadline: t(100)))
            check()
        }
        _ = ledger.echoReceived(name: names[0])
        check()
        _ = ledger.clearSent(at: t(50))
        check()
        _ = ledger.echoReceived(name: names[1])
        check()
        names.append(ledger.recordSent(self.frame("j"), levelDBFS: -30, at: t(60), deadline: t(160)))
        check()
        #expect(seen == [nil, -10, -10, -10, -10, -11, nil, nil, -30])
    }

    @Test func framesAlreadyPlayingWhenTheClearWentOutCountAsPlayed() {
        var ledger = MarkLedger()
        let early = ledger.recordSent(self.frame("i", 0), levelDBFS: -20, at: t(0), deadline: t(0))
        let late = ledger.recordSent(self.frame("i", 1), levelDBFS: -20, at: t(0), deadline: t(40))
        // The clear goes out at 20 ms: the first frame was due at 0 (playing), the second at 40 (not yet).
        #expect(ledger.clearSent(at: t(20)) == [self.frame("i", 1)])
        #expect(self.playedItem(ledger.echoReceived(name: early)) == "i")
        #expect(self.clearedItem(ledger.echoReceived(name: late)) == "i")
        #expect(ledger.playedBytes(of: "i") == 160)
    }

    @Test func unknownAndRepeatedNamesAreIgnored() {
        var ledger = MarkLedger()
        let name = ledger.recordSent(self.frame("i"), levelDBFS: -20, at: t(0), deadline: t(100))
        #expect(ledger.echoReceived(name: "somebody else's mark") == .unknown)
        #expect(ledger.echoReceived(name: "cb999") == .unknown)
        #expect(self.playedItem(ledger.echoReceived(name: name)) == "i")
        #expect(ledger.echoReceived(name: name) == .unknown)
        #expect(ledger.playedBytes(of: "i") == 160)
    }

    /// A steady stream with a few frames in flight keeps a short list: echoed entries are dropped as it goes.
    @Test func echoedEntriesAreDroppedAsTheStreamGoes() {
        var ledger = MarkLedger()
        var names: [String] = []
        for index in 0..<1000 {
            names.append(ledger.recordSent(self.frame("item", index), levelDBFS: -20, at: t(index * 20), deadline: t(index * 20 + 60)))
            if names.count > 3 {
                let echo = ledger.echoReceived(name: names.removeFirst())
                #expect(self.playedItem(echo) == "item")
            }
            #expect(ledger.storedCount <= 40)
        }
        #expect(ledger.outstandingCount == 3)
        #expect(ledger.playedBytes(of: "item") == 997 * 160)
    }
}

import Testing

@testable import CallBridgeCore

@Suite struct MarkLedgerTests {
    @Test func echoesCountPlayedBytesPerItem() {
        var ledger = MarkLedger()
        let a = ledger.recordSent(itemID: "item_a", byteCount: 160)
        let b = ledger.recordSent(itemID: "item_a", byteCount: 160)
        let c = ledger.recordSent(itemID: "item_b", byteCount: 160)
        #expect(ledger.outstandingCount == 3)
        #expect(ledger.echoReceived(name: a) == .played(itemID: "item_a", byteCount: 160))
        #expect(ledger.playedBytes(of: "item_a") == 160)
        // An echo that overtakes: b is implied played too (Twilio echoes in order).
        #expect(ledger.echoReceived(name: c) == .played(itemID: "item_b", byteCount: 160))
        #expect(ledger.playedBytes(of: "item_a") == 320)
        #expect(ledger.playedBytes(of: "item_b") == 160)
        #expect(ledger.outstandingCount == 0)
        _ = b
    }

    @Test func echoesAfterAClearAreClearedNotPlayed() {
        var ledger = MarkLedger()
        let first = ledger.recordSent(itemID: "i", byteCount: 160)
        let second = ledger.recordSent(itemID: "i", byteCount: 160)
        #expect(ledger.echoReceived(name: first) == .played(itemID: "i", byteCount: 160))
        ledger.clearSent()
        #expect(ledger.echoReceived(name: second) == .cleared(itemID: "i", byteCount: 160))
        #expect(ledger.playedBytes(of: "i") == 160)
        // Marks sent after the clear count as played again.
        let third = ledger.recordSent(itemID: "j", byteCount: 160)
        #expect(ledger.echoReceived(name: third) == .played(itemID: "j", byteCount: 160))
    }

    @Test func unknownAndRepeatedNamesAreIgnored() {
        var ledger = MarkLedger()
        let name = ledger.recordSent(itemID: "i", byteCount: 160)
        #expect(ledger.echoReceived(name: "somebody else's mark") == .unknown)
        #expect(ledger.echoReceived(name: "cb999") == .unknown)
        #expect(ledger.echoReceived(name: name) == .played(itemID: "i", byteCount: 160))
        #expect(ledger.echoReceived(name: name) == .unknown)
        #expect(ledger.playedBytes(of: "i") == 160)
    }
}

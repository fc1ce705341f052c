import CallBridgeCore
import Foundation
import Synchronization

/// Where call log lines go: one JSON object per line, standard output or an append-only file.
public final class CallLog: Sendable {
    private let handle: Mutex<FileHandle>
    private let observers = Mutex<[@Sendable (CallSummary) -> Void]>([])

    /// `path` nil or `-`: standard output.
    public init(path: String?) throws {
        if let path, path != "-" {
            if !FileManager.default.fileExists(atPath: path) {
                guard FileManager.default.createFile(atPath: path, contents: nil) else {
                    throw CallBridgeError(.configurationInvalid, "cannot create call log '\(path)'")
                }
            }
            guard let handle = FileHandle(forWritingAtPath: path) else {
                throw CallBridgeError(.configurationInvalid, "cannot open call log '\(path)' for writing")
            }
            handle.seekToEndOfFile()
            self.handle = Mutex(handle)
        } else {
            self.handle = Mutex(FileHandle.standardOutput)
        }
    }

    public func write(_ summary: CallSummary) {
        let line = Data((summary.jsonLine + "\n").utf8)
        self.handle.withLock { $0.write(line) }
        for observer in self.observers.withLock({ $0 }) { observer(summary) }
    }

    /// Called with every summary written (tests, metrics).
    public func observe(_ observer: @escaping @Sendable (CallSummary) -> Void) {
        self.observers.withLock { $0.append(observer) }
    }
}

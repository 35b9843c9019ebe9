import Foundation

/// A value behind a lock. NSLock rather than `Synchronization.Mutex` so the module still
/// builds for the package's macOS 14 floor (Mutex needs macOS 15).
final class ProbeLockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

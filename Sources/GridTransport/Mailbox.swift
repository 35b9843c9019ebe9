import CZeroMQ
import Foundation
import Synchronization

/// Thread-safe queue that wakes a poll loop: other threads post events, the loop polls the
/// mailbox's pipe alongside its sockets and drains it. Keeps every socket on one thread.
public final class Mailbox<Event: Sendable>: Sendable {
    private let queue = Mutex<[Event]>([])
    private let readFD: Int32
    private let writeFD: Int32

    public init() throws(ZMQError) {
        var fds: [Int32] = [0, 0]
        if pipe(&fds) != 0 { throw ZMQError("pipe", errno: errno) }
        readFD = fds[0]
        writeFD = fds[1]
        for fd in fds {
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
    }

    deinit {
        Glibc.close(readFD)
        Glibc.close(writeFD)
    }

    /// Queues an event and wakes the loop. Never blocks.
    public func post(_ event: Event) {
        queue.withLock { $0.append(event) }
        var byte: UInt8 = 1
        _ = write(writeFD, &byte, 1)  // EAGAIN means a wake-up is already pending
    }

    /// Takes every queued event, oldest first.
    public func drain() -> [Event] {
        var buffer = [UInt8](repeating: 0, count: 256)
        while read(readFD, &buffer, buffer.count) > 0 {}
        return queue.withLock { q in
            let out = q
            q.removeAll(keepingCapacity: true)
            return out
        }
    }

    public var pollItem: PollItem { .fileDescriptor(readFD) }
}

/// Runs `body` on a dedicated thread and resumes when it returns: poll loops block in
/// zmq_poll and must not sit on the cooperative pool.
public func runOnDedicatedThread(name: String, _ body: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let thread = Thread {
            body()
            continuation.resume()
        }
        thread.name = name
        thread.stackSize = 4 << 20
        thread.start()
    }
}

/// A value given once (the first giver wins) and awaited by one reader.
public final class OnceAnswer<Value: Sendable>: Sendable {
    private let state = Mutex<(value: Value?, given: Bool, waiter: CheckedContinuation<Value, Never>?)>((nil, false, nil))

    public init() {}

    public func give(_ value: Value) {
        let waiter: CheckedContinuation<Value, Never>? = state.withLock { s in
            guard !s.given else { return nil }
            s.given = true
            s.value = value
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: value)
    }

    public func value() async -> Value {
        await withCheckedContinuation { (c: CheckedContinuation<Value, Never>) in
            let ready: Value? = state.withLock { s in
                if s.given { return s.value }
                s.waiter = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }
}

extension OnceAnswer {
    /// Posts a request whose answer comes through `give` (from another thread) and waits for
    /// it, or for `timeout`, whichever is first: then `fallback` is the answer.
    public static func awaiting(timeout: Duration, fallback: @escaping @Sendable () -> Value,
                                post: @escaping @Sendable (@escaping @Sendable (Value) -> Void) -> Void) async -> Value {
        let once = OnceAnswer<Value>()
        return await withTaskGroup(of: Void.self) { group in
            group.addTask { post { once.give($0) } }
            group.addTask {
                try? await Task.sleep(for: timeout)
                once.give(fallback())
            }
            let value = await once.value()
            group.cancelAll()
            return value
        }
    }
}

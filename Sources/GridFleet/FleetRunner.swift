import Foundation

/// Runs a fleet on its own thread until `stop`, and waits on its counters.
public final class FleetRunner: @unchecked Sendable {
    public let fleet: Fleet
    let done = DispatchSemaphore(value: 0)

    public init(_ options: FleetOptions) throws {
        let fleet = try Fleet(options: options)
        self.fleet = fleet
        let done = self.done
        let thread = Thread {
            fleet.run()
            done.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    public func stop() {
        fleet.stop()
        done.wait()
    }

    /// Blocks until `condition` holds on the fleet's counters or `seconds` pass.
    @discardableResult
    public func wait(seconds: Double, _ condition: (FleetStats) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition(fleet.snapshot) { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition(fleet.snapshot)
    }

    /// The same without holding a thread of the cooperative pool (for async callers).
    public func wait(seconds: Double, _ condition: (FleetStats) -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition(fleet.snapshot) { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return condition(fleet.snapshot)
    }
}

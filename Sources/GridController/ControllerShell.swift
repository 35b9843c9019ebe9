import Foundation
import GridCore
import GridProtocol
import GridStore
import GridTransport
import Logging

/// The clock a shell reads: monotonic milliseconds for timers and liveness, wall time for records.
public struct MomentClock: Sendable {
    public let now: @Sendable () -> Moment
    public init(now: @escaping @Sendable () -> Moment) { self.now = now }

    public static let system = MomentClock {
        Moment(monotonicMs: Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000), wall: Date())
    }
}

/// A controller's logic as a value: decoded messages and turns in, directives out.
public protocol ControllerInstance: Sendable {
    associatedtype Settings: Sendable
    /// Rebuilds the instance from the durable log.
    static func recover(settings: Settings, store: GridStore, now: Moment) throws -> Self
    static func name(_ settings: Settings) -> String
    mutating func receive(_ message: Message, origin: Origin, now: Moment) -> [ControllerDirective]
    mutating func onTick(now: Moment, backlog: Bool) -> [ControllerDirective]
    /// When the instance wants its next turn (monotonic ms); nil = no hurry.
    var nextDueMs: Int64? { get }
}

/// Performs what a controller instance decides, one batch at a time:
/// decode every frame of the batch and apply it to the instance, let the instance's timers run,
/// commit every `.persist` of the batch in one transaction (one fsync), and only then hand back
/// the frames to send. If the commit fails (disk full, I/O error) nothing of the batch is sent —
/// no acknowledgement of an unstored change leaves — and the instance is rebuilt from the store,
/// so memory never runs ahead of the log; peers retry what went unanswered.
public final class ControllerShell<Instance: ControllerInstance> {
    public private(set) var instance: Instance
    let settings: Instance.Settings
    let store: GridStore
    let logger: Logger
    let clock: MomentClock
    var messenger: Messenger
    public private(set) var commits = 0
    public private(set) var failedCommits = 0

    public init(settings: Instance.Settings, store: GridStore, maxFrameBytes: Int, logger: Logger, clock: MomentClock) throws {
        self.settings = settings
        self.store = store
        self.logger = logger
        self.clock = clock
        self.messenger = Messenger(sender: Instance.name(settings), maxFrameBytes: maxFrameBytes, logger: logger)
        instance = try Instance.recover(settings: settings, store: store, now: clock.now())
    }

    /// Rejected inbound frames by reason, for logs and tests.
    public var rejectedFrames: [String: Int] { messenger.rejected }

    /// One batch in, the frames to send out. Runs on the socket loop's thread.
    public func handle(_ inputs: [LoopInput<Never>], backlog: Bool) -> [LoopOutput] {
        let now = clock.now()
        var directives: [ControllerDirective] = []
        var errors: [LoopOutput] = []
        for input in inputs {
            switch input {
            case .tick: continue
            case .badShape(let peer, let frames): messenger.countBadShape(from: peer, frames: frames)
            case .frame(let peer, let payload, let delimited):
                guard let message = messenger.decode(payload, from: peer, delimited: delimited, nowMs: now.monotonicMs, reply: &errors) else { continue }
                let origin = Origin(peer: peer, sequence: message.sequence, delimited: delimited)
                directives += instance.receive(message, origin: origin, now: now)
            }
        }
        directives += instance.onTick(now: now, backlog: backlog)
        // Error replies change nothing stored: they need not wait for the batch's commit.
        let out = errors + perform(directives)
        returnFreedMemory(now)
        return out
    }

    var lastTrimMs: Int64 = 0

    /// Bursts (100,000 registrations, a large submit) leave freed memory in glibc's arenas;
    /// hand it back to the system every 10 s so the resident size follows the live state.
    func returnFreedMemory(_ now: Moment) {
        #if os(Linux)
        guard now.monotonicMs - lastTrimMs >= 10_000 else { return }
        lastTrimMs = now.monotonicMs
        _ = glibcMallocTrim(0)
        #endif
    }

    /// Commits, logs, then encodes the sends.
    public func perform(_ directives: [ControllerDirective]) -> [LoopOutput] {
        var batch: [StoreMutation] = []
        for d in directives { if case .persist(let m) = d { batch.append(m) } }
        if !batch.isEmpty {
            do {
                try store.commit(batch)
                commits += 1
            } catch {
                failedCommits += 1
                logger.error("could not store a batch of \(batch.count) change(s); nothing of it is acknowledged, state is reloaded from \(store.path): \(error)")
                reload()
                return []
            }
        }
        var out: [LoopOutput] = []
        out.reserveCapacity(directives.count)
        for d in directives {
            switch d {
            case .send(let body, let peer, let replyTo, let delimited):
                out.append(messenger.output(body, to: peer, replyTo: replyTo, delimited: delimited))
            case .log(let e):
                logger.log(level: e.level, "\(e.message)", metadata: e.metadata.mapValues { .string($0) })
            case .persist:
                continue
            }
        }
        return out
    }

    /// Rebuilds the instance from the store (after a failed commit).
    func reload() {
        do {
            instance = try Instance.recover(settings: settings, store: store, now: clock.now())
        } catch {
            logger.critical("could not reload state from \(store.path): \(error); keeping the in-memory state")
        }
    }

    /// When the instance wants its next turn (monotonic ns), for the loop's poll timeout.
    public var nextWakeNanoseconds: UInt64? {
        guard let ms = instance.nextDueMs else { return nil }
        return UInt64(max(0, ms)) * 1_000_000
    }
}

public typealias RegionShell = ControllerShell<RegionInstance>

extension RegionInstance: ControllerInstance {
    public static func recover(settings: Settings, store: GridStore, now: Moment) throws -> RegionInstance {
        let recovered = try RegionRecovery.load(from: store, region: settings.region,
                                                retention: Double(settings.historyRetentionMs) / 1000, now: now.wall)
        return RegionInstance(settings: settings, recovered: recovered, now: now)
    }

    public static func name(_ settings: Settings) -> String { settings.region.rawValue }
}

extension RegionInstance.Settings {
    public init(config: ControllerConfig) {
        self.init(region: RegionID(config.id))
        heartbeatIntervalMs = Int64(config.heartbeatIntervalMs)
        nodeLostAfterMs = Int64(config.nodeLostAfterMs)
        leaseMs = Int64(config.effectiveLeaseMs)
        leaseMarginMs = Int64(config.effectiveLeaseMarginMs)
        summaryIntervalMs = Int64(config.summaryIntervalMs)
        retryIntervalMs = Int64(config.retryIntervalMs)
        placementBudget = config.placementBudget
        historyRetentionMs = Int64(config.historyRetentionHours * 3_600_000)
        placement = .init(allowDegraded: config.placement.allowDegraded)
        frontier = config.placement.frontier
        confirmStarts = config.confirmStarts
        draining = config.drain
        preemption = config.preemption
        accounts = config.accounts
        reservations = config.reservations
    }
}

#if os(Linux)
/// glibc's `int malloc_trim(size_t pad)`, which the Glibc module does not export.
@_silgen_name("malloc_trim")
func glibcMallocTrim(_ pad: Int) -> Int32
#endif

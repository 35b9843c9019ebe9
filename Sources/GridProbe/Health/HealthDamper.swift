import GridCore

/// Flap damping for published device health: worse is published at once, better only after
/// `cleanProbesToRecover` consecutive observations at least that good.
///
/// Recovery is graded: from `unhealthy`, three probes of `degraded`-or-better publish
/// `degraded`; `healthy` is published once the last three probes were all healthy. The
/// published reasons are those of the observation that set the published state.
///
/// Value type: the owner decides where the state lives (the `Prober` keeps one behind a
/// mutex for `probe()`).
public struct HealthDamper: Sendable, Hashable {
    public struct Result: Sendable, Hashable {
        /// What to publish for the device.
        public var health: DeviceHealth
        /// What this probe alone said.
        public var observed: DeviceHealth
        /// True when the published state or the set of reason kinds changed with this probe
        /// (always true for a device's first observation). Detail text changing (a
        /// temperature moving) is not a change, so this can drive prompt health messages
        /// without chatter.
        public var changed: Bool
        /// Consecutive probes so far better than the published state (0 when not recovering).
        public var recoveryProgress: Int
    }

    struct Entry: Sendable, Hashable {
        var published: DeviceHealth
        /// trailing[s] = how many of the latest observations in a row had state <= s.
        var trailing: [HealthState: Int] = [:]
        /// The latest observation of each exact state.
        var lastOf: [HealthState: DeviceHealth] = [:]
    }

    public var cleanProbesToRecover: Int
    private var entries: [String: Entry] = [:]

    public init(cleanProbesToRecover: Int = 3) {
        self.cleanProbesToRecover = max(1, cleanProbesToRecover)
    }

    /// The published health of a device, nil if never observed.
    public func published(deviceID: String) -> DeviceHealth? { entries[deviceID]?.published }

    /// Devices the damper remembers.
    public var deviceIDs: [String] { entries.keys.sorted() }

    /// Forgets devices not in `deviceIDs` (removed hardware), so a returning device starts fresh.
    public mutating func retain(deviceIDs keep: Set<String>) {
        entries = entries.filter { keep.contains($0.key) }
    }

    public mutating func observe(deviceID: String, health: DeviceHealth) -> Result {
        guard var entry = entries[deviceID] else {
            var e = Entry(published: health)
            Self.record(&e, health)
            entries[deviceID] = e
            return Result(health: health, observed: health, changed: true, recoveryProgress: 0)
        }
        let before = entry.published
        Self.record(&entry, health)
        var progress = 0
        if health.state >= before.state {
            // Worse or the same: publish at once (same state refreshes the reasons).
            entry.published = health
        } else {
            // Better: the best state that the last N probes all reached.
            let n = cleanProbesToRecover
            let target = HealthState.allCases.sorted().first { s in
                s < before.state && (entry.trailing[s] ?? 0) >= n
            }
            if let target, let latest = entry.lastOf[target] {
                entry.published = latest
            } else {
                progress = Self.betterStreak(entry, than: before.state)
            }
        }
        entries[deviceID] = entry
        let changed = before.state != entry.published.state
            || Set(before.reasons.map(\.kind)) != Set(entry.published.reasons.map(\.kind))
        return Result(health: entry.published, observed: health, changed: changed, recoveryProgress: progress)
    }

    private static func record(_ e: inout Entry, _ h: DeviceHealth) {
        for s in HealthState.allCases {
            e.trailing[s] = h.state <= s ? (e.trailing[s] ?? 0) + 1 : 0
        }
        e.lastOf[h.state] = h
    }

    /// Consecutive latest probes strictly better than `state`.
    private static func betterStreak(_ e: Entry, than state: HealthState) -> Int {
        guard let below = HealthState.allCases.filter({ $0 < state }).max() else { return 0 }
        return e.trailing[below] ?? 0
    }
}

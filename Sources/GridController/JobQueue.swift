import DequeModule
import GridCore

/// The region's jobs waiting for placement, in the order placement examines them: higher
/// priority first; within a priority, the order they were put in (a new job at the back, one
/// taken back from a node at the front), which the fair-share pass re-sorts every few seconds.
///
/// Every change costs O(1) (amortised), whatever the queue's depth: a job put in, taken out
/// (placed, held, cancelled) or looked up. The sorted array it replaces moved on average half
/// the queue for each job put in and scanned all of it for each one taken out, so a burst of
/// 100,000 forwarded jobs spent more time being queued than being placed, and a cancel of
/// thousands of queued jobs was quadratic.
///
/// Each priority is a deque of entries; taking a job out only forgets its stamp, and the dead
/// entry is skipped until its priority's deque is compacted (when dead entries outnumber the
/// live ones). A job put in again gets a new stamp, so an old entry of it never counts.
///
/// Placement examines the queue a turn at a time (`nextTurn(budget:)`); the cursor says where
/// the next turn starts. A job put in ahead of the cursor moves the cursor back to it, so a
/// pass never leaves a higher-priority job unexamined behind it.
struct JobQueue: Sequence {
    private struct Entry {
        var id: JobID
        var stamp: UInt64
    }

    private struct Level {
        let priority: Int
        var entries: Deque<Entry> = []
        var dead = 0
    }

    /// A place in the order: a priority and an offset into its deque (dead entries included).
    private struct Position: Comparable {
        var priority: Int
        var offset: Int
        static let start = Position(priority: .max, offset: 0)
        static func < (a: Position, b: Position) -> Bool {
            a.priority != b.priority ? a.priority > b.priority : a.offset < b.offset
        }
    }

    /// Highest priority first; a priority with no entries is dropped when it is compacted.
    private var levels: [Level] = []
    /// The live members: their current stamp and priority.
    private var members: [JobID: (stamp: UInt64, priority: Int)] = [:]
    private var lastStamp: UInt64 = 0
    private var cursor = Position.start

    init() {}

    var count: Int { members.count }
    var isEmpty: Bool { members.isEmpty }
    func contains(_ id: JobID) -> Bool { members[id] != nil }

    /// The job placement would examine first.
    var first: JobID? {
        var it = makeIterator()
        return it.next()
    }

    /// Puts `id` at the back of its priority, or at the front (`front`: work taken back from a
    /// node goes ahead of the others of its priority). A job already queued moves.
    mutating func insert(_ id: JobID, priority: Int, front: Bool) {
        remove(id)
        lastStamp &+= 1
        members[id] = (lastStamp, priority)
        let l = level(priority)
        let entry = Entry(id: id, stamp: lastStamp)
        let at: Position
        if front {
            levels[l].entries.prepend(entry)
            at = Position(priority: priority, offset: 0)
            // The entries of this priority moved one place down: so does a cursor among them.
            if cursor.priority == priority { cursor.offset += 1 }
        } else {
            levels[l].entries.append(entry)
            at = Position(priority: priority, offset: levels[l].entries.count - 1)
        }
        if at < cursor { cursor = at }
    }

    /// Takes `id` out (placed, held, cancelled, gone); nothing when it is not queued.
    mutating func remove(_ id: JobID) {
        guard let m = members.removeValue(forKey: id), let l = levels.firstIndex(where: { $0.priority == m.priority }) else { return }
        levels[l].dead += 1
        if levels[l].dead > 32 && levels[l].dead * 2 > levels[l].entries.count { compact(l) }
    }

    /// The next turn's jobs: up to `budget` of them from the cursor on. The cursor moves past
    /// them; `more` says whether queued jobs follow them (when not, the next turn starts a new
    /// pass at the top).
    mutating func nextTurn(budget: Int) -> (ids: [JobID], more: Bool) {
        let turn = jobsFromCursor(budget: budget)
        // Nothing left after the cursor (its jobs were taken out since): a new pass.
        if turn.ids.isEmpty && !isEmpty { return jobsFromCursor(budget: budget) }
        return turn
    }

    private mutating func jobsFromCursor(budget: Int) -> (ids: [JobID], more: Bool) {
        var ids: [JobID] = []
        ids.reserveCapacity(Swift.min(budget, members.count))
        var l = levels.firstIndex { $0.priority <= cursor.priority } ?? levels.count
        var offset = l < levels.count && levels[l].priority == cursor.priority ? cursor.offset : 0
        while l < levels.count {
            let entries = levels[l].entries
            while offset < entries.count {
                let e = entries[offset]
                if members[e.id]?.stamp == e.stamp {
                    if ids.count == budget {
                        cursor = Position(priority: levels[l].priority, offset: offset)
                        return (ids, true)
                    }
                    ids.append(e.id)
                }
                offset += 1
            }
            l += 1
            offset = 0
        }
        cursor = .start
        return (ids, false)
    }

    /// Starts the next turn at the top.
    mutating func rewind() { cursor = .start }

    /// Re-sorts each priority's jobs by a key worked out once per job (the fair-share order);
    /// jobs with equal keys keep the order they were put in. The next turn starts at the top.
    mutating func sortWithinPriorities<Key>(key: (JobID) -> Key, by areInIncreasingOrder: (Key, Key) -> Bool) {
        for l in levels.indices {
            var keyed = levels[l].entries.enumerated().compactMap { i, e in members[e.id]?.stamp == e.stamp ? (e, key(e.id), i) : nil }
            keyed.sort { a, b in
                areInIncreasingOrder(a.1, b.1) || (!areInIncreasingOrder(b.1, a.1) && a.2 < b.2)
            }
            levels[l].entries = Deque(keyed.map(\.0))
            levels[l].dead = 0
        }
        levels.removeAll { $0.entries.isEmpty }
        cursor = .start
    }

    private mutating func level(_ priority: Int) -> Int {
        // Few distinct priorities: a linear search of a short array.
        if let l = levels.firstIndex(where: { $0.priority <= priority }) {
            if levels[l].priority == priority { return l }
            levels.insert(Level(priority: priority), at: l)
            return l
        }
        levels.append(Level(priority: priority))
        return levels.count - 1
    }

    private mutating func compact(_ l: Int) {
        let priority = levels[l].priority
        var kept = Deque<Entry>()
        kept.reserveCapacity(levels[l].entries.count - levels[l].dead)
        var cursorOffset = cursor.offset
        for (i, e) in levels[l].entries.enumerated() {
            if members[e.id]?.stamp == e.stamp {
                kept.append(e)
            } else if cursor.priority == priority && i < cursor.offset {
                cursorOffset -= 1
            }
        }
        if cursor.priority == priority { cursor.offset = cursorOffset }
        if kept.isEmpty {
            levels.remove(at: l)
        } else {
            levels[l].entries = kept
            levels[l].dead = 0
        }
    }

    struct Iterator: IteratorProtocol {
        fileprivate let queue: JobQueue
        fileprivate var level = 0
        fileprivate var offset = 0
        mutating func next() -> JobID? {
            while level < queue.levels.count {
                let entries = queue.levels[level].entries
                while offset < entries.count {
                    let e = entries[offset]
                    offset += 1
                    if queue.members[e.id]?.stamp == e.stamp { return e.id }
                }
                level += 1
                offset = 0
            }
            return nil
        }
    }

    func makeIterator() -> Iterator { Iterator(queue: self) }
}

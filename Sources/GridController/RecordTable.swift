/// Records by key, each behind one reference, with a dictionary's value semantics.
///
/// A controller holds every job's record (about 600 bytes each) by id. In a plain dictionary
/// the records sit inline in its storage, so each time it grows (100,000 jobs arriving in a
/// burst) every record is moved into newly faulted-in memory: 4–5 % of a region's time in the
/// end-to-end benchmark went to that alone. Here the storage holds pointers; a record is never
/// changed in place — storing one makes a new box — so a copy of the table (`let byID = jobs`)
/// never sees later changes.
struct RecordTable<Key: Hashable & Sendable, Value: Sendable>: Sendable, Sequence {
    final class Box: Sendable {
        let value: Value
        init(_ value: Value) { self.value = value }
    }

    private var storage: [Key: Box] = [:]

    init() {}

    subscript(key: Key) -> Value? {
        get { storage[key]?.value }
        set { storage[key] = newValue.map(Box.init) }
    }

    var count: Int { storage.count }
    var isEmpty: Bool { storage.isEmpty }
    var keys: Dictionary<Key, Box>.Keys { storage.keys }
    var values: LazyMapSequence<Dictionary<Key, Box>.Values, Value> { storage.values.lazy.map(\.value) }

    @discardableResult
    mutating func removeValue(forKey key: Key) -> Value? { storage.removeValue(forKey: key)?.value }

    func makeIterator() -> LazyMapSequence<[Key: Box], (key: Key, value: Value)>.Iterator {
        storage.lazy.map { (key: $0.key, value: $0.value.value) }.makeIterator()
    }
}

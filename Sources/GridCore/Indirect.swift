/// A value kept behind one reference: copying what holds it copies a pointer, not the value.
/// For the large parts of a job spec that most jobs leave empty or at their defaults (routing,
/// model, replica): a region copies a job's record on each change of it and keeps one per
/// queued job, and these three were 394 of a spec's 640 bytes. Immutable: setting a part
/// makes a new box. Equal and hashed by value.
public struct Indirect<Value: Hashable & Sendable>: Hashable, Sendable {
    final class Box: Sendable {
        let value: Value
        init(_ value: Value) { self.value = value }
    }

    private let box: Box

    public init(_ value: Value) { box = Box(value) }

    public var value: Value { box.value }

    public static func == (a: Self, b: Self) -> Bool { a.box === b.box || a.box.value == b.box.value }

    public func hash(into hasher: inout Hasher) { hasher.combine(box.value) }
}

import Foundation
import SwiftProtobuf

/// Bounds every decoded message must keep, whatever its type (PROTOCOL.md, "Bounds"): a peer
/// may send any legal protobuf value, and a 4 MiB string or a million-element list must cost
/// the controller nothing but a rejection. Checked right after decoding, before any handler
/// sees the message; a message that breaks one is refused naming the field
/// (`Register.devices[2].model: 70000 bytes, at most 65536`).
public enum FieldBounds {
    /// Bytes of one string or bytes field.
    public static let maxFieldBytes = 65_536
    /// Elements of one repeated field.
    public static let maxRepeated = 100_000
    /// Entries of one map field.
    public static let maxMapEntries = 10_000
    /// Messages nested in messages.
    public static let maxDepth = 16

    /// Throws the first bound `message` breaks, naming the message type and the field's path.
    static func check<M: SwiftProtobuf.Message>(_ message: M) throws(ProtocolError) {
        let name = M.protoMessageName
        var v = BoundsVisitor(trail: BoundsVisitor.Trail(), messageName: name, depth: 0)
        do { try message.traverse(visitor: &v) } catch {
            // Names are worked out only for a refusal: the common case allocates nothing.
            let type = String(name.split(separator: ".").last ?? "?")
            if let e = error as? BoundsVisitor.Broken { throw .invalidField(type: type, field: e.field, reason: e.reason) }
            throw .invalidField(type: type, field: "?", reason: "\(error)")
        }
    }
}

struct BoundsVisitor: SwiftProtobuf.Visitor {
    struct Broken: Error {
        var field: String
        var reason: String
    }

    /// The fields down to the message being visited, kept as numbers (one shared stack, pushed
    /// and popped around each nested message) and turned into names only for a refusal.
    final class Trail {
        var steps: [(message: String, number: Int, index: Int?)] = []
        init() { steps.reserveCapacity(FieldBounds.maxDepth) }
    }

    let trail: Trail
    let messageName: String
    let depth: Int

    static func name(_ message: String, _ number: Int) -> String { FieldNames.byMessage[message]?[number] ?? "field \(number)" }
    func field(_ number: Int, index: Int? = nil) -> String {
        let steps = trail.steps.map { Self.name($0.message, $0.number) + ($0.index.map { "[\($0)]" } ?? "") }
        return (steps + [Self.name(messageName, number) + (index.map { "[\($0)]" } ?? "")]).joined(separator: ".")
    }

    func bytes(_ count: Int, _ number: Int, index: Int? = nil) throws {
        if count > FieldBounds.maxFieldBytes {
            throw Broken(field: field(number, index: index), reason: "\(count) bytes, at most \(FieldBounds.maxFieldBytes)")
        }
    }

    func elements(_ count: Int, _ number: Int) throws {
        if count > FieldBounds.maxRepeated {
            throw Broken(field: field(number), reason: "\(count) elements, at most \(FieldBounds.maxRepeated)")
        }
    }

    mutating func nested<M: SwiftProtobuf.Message>(_ value: M, _ number: Int, index: Int? = nil) throws {
        guard depth < FieldBounds.maxDepth else {
            throw Broken(field: field(number, index: index), reason: "messages nested deeper than \(FieldBounds.maxDepth)")
        }
        trail.steps.append((messageName, number, index))
        defer { trail.steps.removeLast() }
        var inner = BoundsVisitor(trail: trail, messageName: M.protoMessageName, depth: depth + 1)
        try value.traverse(visitor: &inner)
    }

    // Scalars need no check.
    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {}
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {}
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {}
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {}
    mutating func visitSingularEnumField<E: SwiftProtobuf.Enum>(value: E, fieldNumber: Int) throws {}

    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws { try bytes(value.utf8.count, fieldNumber) }
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws { try bytes(value.count, fieldNumber) }
    mutating func visitSingularMessageField<M: SwiftProtobuf.Message>(value: M, fieldNumber: Int) throws { try nested(value, fieldNumber) }
    mutating func visitSingularGroupField<G: SwiftProtobuf.Message>(value: G, fieldNumber: Int) throws { try nested(value, fieldNumber) }

    mutating func visitRepeatedStringField(value: [String], fieldNumber: Int) throws {
        try elements(value.count, fieldNumber)
        for (i, s) in value.enumerated() { try bytes(s.utf8.count, fieldNumber, index: i) }
    }
    mutating func visitRepeatedBytesField(value: [Data], fieldNumber: Int) throws {
        try elements(value.count, fieldNumber)
        for (i, d) in value.enumerated() { try bytes(d.count, fieldNumber, index: i) }
    }
    mutating func visitRepeatedMessageField<M: SwiftProtobuf.Message>(value: [M], fieldNumber: Int) throws {
        try elements(value.count, fieldNumber)
        for (i, m) in value.enumerated() { try nested(m, fieldNumber, index: i) }
    }
    mutating func visitRepeatedEnumField<E: SwiftProtobuf.Enum>(value: [E], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitPackedEnumField<E: SwiftProtobuf.Enum>(value: [E], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitRepeatedDoubleField(value: [Double], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitPackedDoubleField(value: [Double], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitRepeatedUInt64Field(value: [UInt64], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitPackedUInt64Field(value: [UInt64], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitRepeatedInt64Field(value: [Int64], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitPackedInt64Field(value: [Int64], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitRepeatedUInt32Field(value: [UInt32], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitPackedUInt32Field(value: [UInt32], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitRepeatedInt32Field(value: [Int32], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitPackedInt32Field(value: [Int32], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitRepeatedBoolField(value: [Bool], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }
    mutating func visitPackedBoolField(value: [Bool], fieldNumber: Int) throws { try elements(value.count, fieldNumber) }

    func entries(_ count: Int, _ number: Int) throws {
        if count > FieldBounds.maxMapEntries {
            throw Broken(field: field(number), reason: "\(count) entries, at most \(FieldBounds.maxMapEntries)")
        }
    }

    mutating func visitMapField<KeyType, ValueType: MapValueType>(
        fieldType: _ProtobufMap<KeyType, ValueType>.Type, value: _ProtobufMap<KeyType, ValueType>.BaseType, fieldNumber: Int
    ) throws {
        try entries(value.count, fieldNumber)
        for (k, v) in value {
            if let s = k as? String { try bytes(s.utf8.count, fieldNumber, index: nil) }
            if let s = v as? String {
                if s.utf8.count > FieldBounds.maxFieldBytes {
                    throw Broken(field: field(fieldNumber) + "[\"\(String(describing: k).prefix(64))\"]",
                                 reason: "\(s.utf8.count) bytes, at most \(FieldBounds.maxFieldBytes)")
                }
            }
        }
    }

    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type, value: _ProtobufEnumMap<KeyType, ValueType>.BaseType, fieldNumber: Int
    ) throws where ValueType.RawValue == Int {
        try entries(value.count, fieldNumber)
    }

    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type, value: _ProtobufMessageMap<KeyType, ValueType>.BaseType, fieldNumber: Int
    ) throws {
        try entries(value.count, fieldNumber)
        for (_, m) in value { try nested(m, fieldNumber) }
    }

    mutating func visitExtensionFields(fields: ExtensionFieldValueSet, start: Int, end: Int) throws {}
    mutating func visitExtensionFieldsAsMessageSet(fields: ExtensionFieldValueSet, start: Int, end: Int) throws {}
    // Unknown fields (a newer peer's) are kept and passed on; the frame bound covers their size.
    mutating func visitUnknown(bytes: Data) throws {}
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Trimming and searching of untrusted text without a detour through NSString.
///
/// On Linux, Foundation's `trimmingCharacters(in:)` and `contains(_:)` bridge every call to an
/// `NSString`, copy the text to UTF-16 and back, and search with locale-aware comparison: that
/// made the vendor-output parsers spend most of their time converting (about 10 ms for an 8 KiB
/// nvidia-smi CSV; docs/security.md, "Fuzzing"). These work on Unicode scalars and UTF-8 bytes,
/// with the same character sets as Foundation's.
extension Unicode.Scalar {
    /// Foundation's `CharacterSet.whitespaces`: TAB, the space separators (general category Zs)
    /// and, as swift-corelibs-foundation's tables have it, ZERO WIDTH SPACE (U+200B).
    @inlinable public var isSpaceOrTab: Bool {
        if value < 0x80 { return value == 0x20 || value == 0x09 }
        return value == 0x200B || properties.generalCategory == .spaceSeparator
    }

    /// Unicode's White_Space property (`Character.isWhitespace` of a one-scalar character),
    /// answered for ASCII without the property tables.
    @inlinable public var isWhiteSpace: Bool {
        if value < 0x80 { return value == 0x20 || (0x09...0x0D).contains(value) }
        return properties.isWhitespace
    }

    /// Foundation's `CharacterSet.whitespacesAndNewlines`: the above, U+000A–U+000D, U+0085 and
    /// the line and paragraph separators.
    @inlinable public var isSpaceTabOrNewline: Bool {
        if value < 0x80 { return value == 0x20 || (0x09...0x0D).contains(value) }
        if value == 0x85 || value == 0x200B { return true }
        switch properties.generalCategory {
        case .spaceSeparator, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs, as `trimmingCharacters(in: .whitespaces)`.
    @inlinable public func trimmingSpaces() -> String { trimming(\.isSpaceOrTab) }

    /// Without leading and trailing white space and line breaks, as
    /// `trimmingCharacters(in: .whitespacesAndNewlines)`.
    @inlinable public func trimmingSpacesAndNewlines() -> String { trimming(\.isSpaceTabOrNewline) }

    @inlinable func trimming(_ drop: (Unicode.Scalar) -> Bool) -> String {
        let scalars = unicodeScalars
        var lo = scalars.startIndex
        var hi = scalars.endIndex
        while lo < hi, drop(scalars[lo]) { scalars.formIndex(after: &lo) }
        while lo < hi {
            let before = scalars.index(before: hi)
            guard drop(scalars[before]) else { break }
            hi = before
        }
        if lo == startIndex, hi == endIndex, let whole = self as? String { return whole }
        return String(self[lo..<hi])
    }

    /// Whether `needle`'s UTF-8 occurs in this text (a literal byte search; "" always occurs).
    @inlinable public func containsLiteral(_ needle: String) -> Bool {
        var needle = needle
        return needle.withUTF8 { n in
            if let found = utf8.withContiguousStorageIfAvailable({ TextSearch.occurs(n, in: $0) }) { return found }
            return Array(utf8).withUnsafeBufferPointer { TextSearch.occurs(n, in: $0) }
        }
    }

    /// Whether the byte `byte` occurs in this text's UTF-8.
    @inlinable public func containsByte(_ byte: UInt8) -> Bool {
        if let found = utf8.withContiguousStorageIfAvailable({ TextSearch.occurs(byte, in: $0) }) { return found }
        return utf8.contains(byte)
    }
}

/// Byte searches with the C library's `memchr` and `memcmp` (vectorised, and outside the
/// coverage instrumentation of a fuzzing build: detection scans up to 16 KiB a dozen times).
public enum TextSearch {
    /// Whether `needle` occurs in `hay`, byte for byte.
    public static func occurs(_ needle: UnsafeBufferPointer<UInt8>, in hay: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !needle.isEmpty else { return true }
        guard hay.count >= needle.count, let hayBase = hay.baseAddress, let needleBase = needle.baseAddress else { return false }
        #if canImport(Glibc) || canImport(Musl)
        // memchr for the first byte, memcmp for the rest (memmem is a GNU extension the Glibc
        // module does not export).
        var at = UnsafeRawPointer(hayBase)
        var left = hay.count
        while left >= needle.count {
            guard let hit = memchr(at, Int32(needle[0]), left - needle.count + 1) else { return false }
            if memcmp(hit, needleBase, needle.count) == 0 { return true }
            let skipped = UnsafeRawPointer(hit) - at + 1
            at += skipped
            left -= skipped
        }
        return false
        #else
        let first = needle[0]
        var i = 0
        let last = hay.count - needle.count
        while i <= last {
            if hay[i] == first {
                var j = 1
                while j < needle.count, hay[i + j] == needle[j] { j += 1 }
                if j == needle.count { return true }
            }
            i += 1
        }
        return false
        #endif
    }

    /// Whether `byte` occurs in `hay`.
    public static func occurs(_ byte: UInt8, in hay: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = hay.baseAddress, !hay.isEmpty else { return false }
        #if canImport(Glibc) || canImport(Musl)
        return memchr(base, Int32(byte), hay.count) != nil
        #else
        return hay.contains(byte)
        #endif
    }
}

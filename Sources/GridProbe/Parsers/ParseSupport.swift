import Foundation
import GridCore

/// Total helpers shared by the vendor parsers. Every function accepts any input and answers
/// nil instead of trapping, because vendor output is untrusted text.
enum ParseSupport {
    /// Health left for the health component to decide; parsers only report signals.
    static let notEvaluated = DeviceHealth(
        state: .unknown, reasons: [HealthReason(.notReported, "not evaluated")])

    /// Spellings vendor tools use for "no value" (compared lowercased, brackets removed).
    private static let missingSpellings: Set<String> = [
        "n/a", "na", "-", "--", "not supported", "not available", "unknown",
        "requested functionality has been deprecated", "",
    ]

    /// Trims, and maps every "not available" spelling (`N/A`, `[N/A]`, `[Not Supported]`, `-`,
    /// `NA`, the v13 deprecation sentence...) to nil.
    static func clean(_ raw: String?) -> String? {
        guard let raw else { return nil }
        let trimmed = raw.trimmingSpacesAndNewlines()
        var inner = trimmed
        if inner.count >= 2, inner.hasPrefix("["), inner.hasSuffix("]") {
            inner = String(inner.dropFirst().dropLast()).trimmingSpaces()
        }
        if missingSpellings.contains(inner.lowercased()) { return nil }
        return trimmed
    }

    /// A serial made only of zeros is a placeholder (masked captures, rocm-smi "0"), not an identity.
    static func serial(_ raw: String?) -> String? {
        guard let value = clean(raw) else { return nil }
        return value.allSatisfy({ $0 == "0" }) ? nil : value
    }

    /// The leading decimal number of a value that may carry a unit or decoration:
    /// "67.03 W" → 67.03, "16x" → 16, "(1402Mhz)" → 1402, "35C" → 35. Non-finite → nil.
    static func double(_ raw: String?) -> Double? {
        guard let token = leadingNumber(raw) else { return nil }
        guard let value = Double(token), value.isFinite else { return nil }
        return value
    }

    /// Like `double` but integral; values that do not fit an `Int` answer nil instead of trapping.
    static func int(_ raw: String?) -> Int? {
        guard let token = leadingNumber(raw) else { return nil }
        if !token.contains("."), let exact = Int(token) { return exact }
        guard let value = Double(token), value.isFinite, abs(value) < 9.0e15 else { return nil }
        return Int(exactly: value.rounded())
    }

    /// A non-negative integer (indices, counts).
    static func count(_ raw: String?) -> Int? {
        guard let value = int(raw), value >= 0 else { return nil }
        return value
    }

    private static func leadingNumber(_ raw: String?) -> String? {
        guard let text = clean(raw) else { return nil }
        var scalars = Substring(text).unicodeScalars.drop(while: { $0 == "(" || $0 == " " })
        var token = ""
        if let first = scalars.first, first == "-" || first == "+" {
            token.unicodeScalars.append(first)
            scalars = scalars.dropFirst()
        }
        var sawDigit = false
        var sawDot = false
        for scalar in scalars {
            if scalar.properties.numericType != nil, scalar.isASCII {
                sawDigit = true
                token.unicodeScalars.append(scalar)
            } else if scalar == ".", !sawDot {
                sawDot = true
                token.unicodeScalars.append(scalar)
            } else {
                break
            }
            if token.utf8.count > 40 { return nil }
        }
        guard sawDigit else { return nil }
        if token.hasSuffix(".") { token.removeLast() }
        return token
    }

    /// Memory in MiB from a value whose unit may be in the text ("81920 MiB", "32768.00 MiB",
    /// "64289 MB", "98304 MB") or given by the caller. "MB" is read as MiB: every tool in the
    /// fixture set (nvidia-smi, hl-smi, npu-smi, amd-smi) prints binary megabytes labelled MB.
    static func mebibytes(_ raw: String?, defaultUnit: String = "MiB") -> Int? {
        guard let text = clean(raw), let value = double(text), value >= 0 else { return nil }
        let unit = text.drop(while: { $0.isNumber || $0 == "." || $0 == " " || $0 == "(" })
            .trimmingSpaces().lowercased()
        let factor: Double
        switch unit.isEmpty ? defaultUnit.lowercased() : unit {
        case let u where u.hasPrefix("kib") || u.hasPrefix("kb"): factor = 1.0 / 1024
        case let u where u.hasPrefix("mib") || u.hasPrefix("mb"): factor = 1
        case let u where u.hasPrefix("gib") || u.hasPrefix("gb"): factor = 1024
        case let u where u.hasPrefix("tib") || u.hasPrefix("tb"): factor = 1024 * 1024
        case let u where u.hasPrefix("b"): factor = 1.0 / (1024 * 1024)
        default: return nil  // "1e400", "12 furlongs": not a size this parser understands
        }
        let mib = value * factor
        guard mib.isFinite, mib < 9.0e15 else { return nil }
        return Int(exactly: mib.rounded(.down))
    }

    /// Bytes (as a decimal string) to MiB, rounding down.
    static func mebibytes(fromBytes raw: String?) -> Int? {
        guard let text = clean(raw) else { return nil }
        if let bytes = UInt64(text) { return Int(exactly: bytes / (1024 * 1024)) }
        return mebibytes(text, defaultUnit: "B")
    }

    /// "Active" → true, "Not Active" → false (clock event / throttle reasons).
    static func active(_ raw: String?) -> Bool? {
        guard let text = clean(raw)?.lowercased() else { return nil }
        if text == "active" { return true }
        if text == "not active" || text == "inactive" { return false }
        return nil
    }

    /// "Yes"/"No" style flags.
    static func yesNo(_ raw: String?) -> Bool? {
        guard let text = clean(raw)?.lowercased() else { return nil }
        switch text {
        case "yes", "true", "enabled", "1": return true
        case "no", "false", "disabled", "0": return false
        default: return nil
        }
    }

    /// Canonical PCI address `dddd:bb:dd.f`, lowercase. Accepts nvidia-smi's 8-digit domain
    /// (`00000000:01:00.0`), upper-case hex and a missing domain (`01:00.0`). Nil when `raw`
    /// is not a PCI address (e.g. npu-smi's `NA`).
    static func pciBusID(_ raw: String?) -> String? {
        guard let text = clean(raw)?.lowercased() else { return nil }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let domainText: Substring
        let busText: Substring
        let rest: Substring
        switch parts.count {
        case 3: (domainText, busText, rest) = (parts[0], parts[1], parts[2])
        case 2: (domainText, busText, rest) = ("0", parts[0], parts[1])
        default: return nil
        }
        let devFn = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard devFn.count == 2,
            domainText.count <= 8, busText.count <= 2, devFn[0].count <= 2, devFn[1].count == 1,
            let domain = UInt32(domainText, radix: 16), let bus = UInt8(busText, radix: 16),
            let device = UInt8(devFn[0], radix: 16), let function = UInt8(devFn[1], radix: 16),
            device < 32, function < 8
        else { return nil }
        return hex(UInt64(domain), width: 4) + ":" + hex(UInt64(bus), width: 2) + ":"
            + hex(UInt64(device), width: 2) + "." + String(function)
    }

    /// A PCI device id as `0x` + 4 lowercase hex digits. `packed` says where the device half
    /// sits when the tool packs vendor and device in one 32-bit number: nvidia-smi prints
    /// `device<<16 | vendor` (`20B210DE`), hl-smi prints `vendor<<16 | device` (`0x1da31020`).
    enum Packing { case plain, deviceHigh, deviceLow }
    static func pciDeviceID(_ raw: String?, packing: Packing = .plain) -> String? {
        guard var text = clean(raw)?.lowercased() else { return nil }
        if text.hasPrefix("0x") { text.removeFirst(2) }
        guard !text.isEmpty, text.count <= 8, let value = UInt32(text, radix: 16) else { return nil }
        let device: UInt32
        switch packing {
        case .plain: device = text.count > 4 ? value >> 16 : value
        case .deviceHigh: device = value >> 16
        case .deviceLow: device = value & 0xffff
        }
        guard device != 0 else { return nil }
        return "0x" + hex(UInt64(device), width: 4)
    }

    static func hex(_ value: UInt64, width: Int) -> String {
        let digits = String(value, radix: 16)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    /// The text without terminal control sequences (ESC [ … final byte, and a lone ESC): some
    /// tools underline or colour their output even when it goes to a pipe (`nvidia-smi topo -m`
    /// on driver 580 underlines its header row). Text without ESC is returned as it is.
    static func withoutTerminalEscapes(_ text: String) -> String {
        guard text.containsByte(0x1B) else { return text }
        var out = String.UnicodeScalarView()
        var scalars = text.unicodeScalars.makeIterator()
        while let c = scalars.next() {
            guard c == "\u{1B}" else { out.append(c); continue }
            guard let next = scalars.next() else { break }
            guard next == "[" else { continue }  // a two-byte escape: drop both
            // CSI: parameter and intermediate bytes (0x20–0x3F), then one final byte (0x40–0x7E).
            while let b = scalars.next(), (0x20...0x3F).contains(b.value) {}
        }
        return String(out)
    }

    /// Lines without their terminators; CRLF, LF and CR all end a line. Line numbers used in
    /// errors are positions in this array plus one.
    /// (The breaks of `Character.isNewline`: LF, VT, FF, CR, CR LF, NEL, LS, PS; found in the
    /// UTF-8 bytes, not by walking grapheme clusters.)
    static func lines(_ text: String) -> [Substring] {
        var out: [Substring] = []
        forEachLine(text) { out.append($0); return true }
        return out
    }

    /// Calls `body` with each line of `text` (the breaks of `lines`) until it answers false.
    static func forEachLine(_ text: String, _ body: (Substring) -> Bool) {
        var bytesOf = text
        let utf8 = text.utf8
        bytesOf.withUTF8 { bytes in
            var start = 0
            var i = 0
            let n = bytes.count
            func emit(_ from: Int, _ to: Int) -> Bool {
                let lo = utf8.index(utf8.startIndex, offsetBy: from)
                return body(text[lo..<utf8.index(lo, offsetBy: to - from)])
            }
            while i < n {
                let b = bytes[i]
                var width = 0
                if b >= 0x0A && b <= 0x0D {
                    width = (b == 0x0D && i + 1 < n && bytes[i + 1] == 0x0A) ? 2 : 1
                } else if b == 0xC2, i + 1 < n, bytes[i + 1] == 0x85 {
                    width = 2
                } else if b == 0xE2, i + 2 < n, bytes[i + 1] == 0x80, bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9 {
                    width = 3
                }
                if width > 0 {
                    guard emit(start, i) else { return }
                    i += width
                    start = i
                } else {
                    i += 1
                }
            }
            _ = emit(start, n)
        }
    }

    /// Whitespace-separated tokens.
    static func tokens<S: StringProtocol>(_ text: S) -> [Substring] {
        Substring(text).split(whereSeparator: { $0 == " " || $0 == "\t" })
    }

    /// Rewrites "a / b", "a/ b", "a    / b" as "a/b" so usage pairs survive tokenising.
    static func joinSlashPairs<S: StringProtocol>(_ text: S) -> String {
        text.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.trimmingSpaces() }
            .joined(separator: "/")
    }

    /// "used/total" → (used, total) in MiB; units such as "MiB" may be glued to the numbers.
    static func usagePair<S: StringProtocol>(_ token: S) -> (used: Int?, total: Int?) {
        let halves = token.split(separator: "/", omittingEmptySubsequences: false)
        guard halves.count == 2 else { return (nil, nil) }
        return (mebibytes(String(halves[0])), mebibytes(String(halves[1])))
    }

    /// Lower snake case of a label: "FB Memory Usage" → "fb_memory_usage",
    /// "SRAM Uncorrectable SEC-DED" → "sram_uncorrectable_sec_ded".
    static func snakeCase<S: StringProtocol>(_ label: S) -> String {
        var out = ""
        var pendingUnderscore = false
        for scalar in label.unicodeScalars {
            if scalar.isASCII, scalar.properties.isAlphabetic || scalar.properties.numericType != nil {
                if pendingUnderscore, !out.isEmpty { out.append("_") }
                pendingUnderscore = false
                out.unicodeScalars.append(contentsOf: String(scalar).lowercased().unicodeScalars)
            } else {
                pendingUnderscore = true
            }
        }
        return out
    }

    /// Sum of the values that are present; nil when none is.
    static func sum(_ values: [Int?]) -> Int? {
        let present = values.compactMap { $0 }
        guard !present.isEmpty else { return nil }
        var total = 0
        for value in present {
            let (next, overflow) = total.addingReportingOverflow(value)
            total = overflow ? Int.max : next
        }
        return total
    }

    /// True when any flag is true, false when all present flags are false, nil when none is.
    static func any(_ flags: [Bool?]) -> Bool? {
        let present = flags.compactMap { $0 }
        guard !present.isEmpty else { return nil }
        return present.contains(true)
    }

    /// First non-empty lines, for sniffing formats without scanning whole captures.
    static func head(_ text: String, lines count: Int) -> [Substring] {
        var out: [Substring] = []
        guard count > 0 else { return out }
        forEachLine(text) { line in
            if !line.unicodeScalars.allSatisfy(\.isWhiteSpace) { out.append(line) }
            return out.count < count
        }
        return out
    }
}

extension VendorParseResult {
    /// Keeps the device list in index order so equal inputs compare equal however a tool orders rows.
    mutating func sortDevicesByIndex() {
        devices.sort { ($0.index, $0.id) < ($1.index, $1.id) }
    }
}

extension ParseSupport {
    /// A UUID made only of zero digits is a masked placeholder (exporter captures), not an
    /// identity; using it as an id would merge distinct devices.
    static func uuid(_ raw: String?) -> String? {
        guard let value = clean(raw) else { return nil }
        let digits = value.unicodeScalars.filter { $0.properties.isASCIIHexDigit }
        return digits.allSatisfy({ $0 == "0" }) ? nil : value
    }
}

extension ParseSupport {
    // Substring conveniences for table tokens.
    static func double(_ raw: Substring) -> Double? { double(String(raw)) }
    static func int(_ raw: Substring) -> Int? { int(String(raw)) }
    static func count(_ raw: Substring) -> Int? { count(String(raw)) }
}

import Foundation
import GridCore

/// What NVIDIA Xid fault codes mean, for operators reading `grid-agent probe` and job messages.
/// Source: NVIDIA "XID Errors" (docs.nvidia.com/deploy/xid-errors), the codes data-centre GPUs
/// report most; others are shown by number.
public enum XidCatalog {
    static let meanings: [Int: String] = [
        8: "GPU stopped responding (driver timeout)",
        13: "graphics engine exception (usually an application error)",
        31: "GPU memory page fault (usually an application error)",
        32: "invalid or corrupted push buffer stream",
        38: "driver firmware error",
        43: "GPU stopped processing (application reset)",
        45: "preemptive cleanup after an earlier error",
        48: "double-bit ECC error (uncorrectable)",
        61: "internal micro-controller breakpoint/warning",
        62: "internal micro-controller halt",
        63: "ECC page retirement or row remapping recorded",
        64: "ECC page retirement or row remapping failed",
        68: "video processor exception",
        69: "graphics engine class error",
        74: "NVLink error",
        79: "GPU has fallen off the bus",
        92: "high single-bit ECC error rate",
        94: "contained ECC error (reset the GPU when convenient)",
        95: "uncontained ECC error (reset the GPU now)",
        109: "context switch timeout",
        119: "GSP RPC timeout",
        120: "GSP error",
        121: "C2C link error",
        140: "unrecovered ECC error",
    ]

    public static func meaning(_ code: Int) -> String { meanings[code] ?? "see NVIDIA's Xid table" }

    /// Xid events in kernel log text ("NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen
    /// off the bus."): the PCI address as the kernel wrote it (lowercased), the code, and when
    /// (seconds since boot, from a `/dev/kmsg` record "prio,seq,usec,flags;…" or a `dmesg`
    /// line "[ 1234.5] …"; nil when the line has no time), in order.
    public static func events(inKernelLog text: String) -> [(pciBusID: String, code: Int, secondsSinceBoot: Double?)] {
        var out: [(String, Int, Double?)] = []
        for line in text.split(whereSeparator: \.isNewline) {
            guard let xid = line.range(of: "NVRM: Xid (") else { continue }
            let rest = line[xid.upperBound...]
            guard let close = rest.firstIndex(of: ")") else { continue }
            var bus = String(rest[..<close])
            if bus.hasPrefix("PCI:") { bus.removeFirst(4) }
            let after = rest[rest.index(after: close)...].drop { $0 == ":" || $0 == " " }
            let digits = after.prefix { $0.isNumber }
            guard let code = Int(digits) else { continue }
            out.append((bus.lowercased(), code, time(of: line)))
        }
        return out
    }

    static func time(of line: Substring) -> Double? {
        if line.hasPrefix("["), let close = line.firstIndex(of: "]") {
            return Double(line[line.index(after: line.startIndex)..<close].trimmingSpaces())
        }
        if let semi = line.firstIndex(of: ";") {
            let fields = line[..<semi].split(separator: ",")
            if fields.count >= 3, let usec = Double(fields[2]) { return usec / 1_000_000 }
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Hands back the pages of code and read-only data that only the agent's start touched.
///
/// An agent maps about 30 MiB of code (its own binary, the Swift runtime, Foundation, ICU,
/// libzmq ...). Starting up (argument parsing, YAML, the first probe, the first registration,
/// TLS set-up) touches far more of it than the steady loop of heartbeats and probes does, and the
/// kernel maps 64 KiB around every page touched; those clean pages stay in the agent's resident
/// set (and in its cgroup's page cache) until memory runs short. Once the agent has settled it
/// advises the kernel (`MADV_PAGEOUT`, Linux 5.4+) to reclaim its read-only, file-backed
/// mappings, and marks them `MADV_RANDOM` so that what faults back in comes one page at a time,
/// not with the 64 KiB around it. Nothing is lost: what the steady loop needs faults back in from
/// the page cache at its next use, so the resident set that remains is the loop's working set
/// (BENCHMARKS.md, #7).
/// Writable and anonymous memory is never touched; pages another process also maps are left
/// to the kernel (it pages out only pages this process alone maps).
public enum StartupPages {
    /// One mapping of `/proc/self/maps` that may be handed back.
    public struct Mapping: Equatable, Sendable {
        public var start: UInt
        public var end: UInt
        public var path: String
        public var bytes: UInt { end - start }
        public init(start: UInt, end: UInt, path: String) {
            self.start = start
            self.end = end
            self.path = path
        }
    }

    /// The mappings of a `/proc/<pid>/maps` text worth handing back: backed by a file (a path
    /// beginning `/`), readable, not writable (code and read-only data: clean, so reclaiming them
    /// writes nothing). Lines that do not parse are skipped.
    public static func releasable(maps: String) -> [Mapping] {
        var out: [Mapping] = []
        for line in maps.split(separator: "\n") {
            // start-end perms offset dev inode [path]
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6 else { continue }
            let perms = Array(fields[1].utf8)
            guard perms.count == 4, perms[0] == UInt8(ascii: "r"), perms[1] == UInt8(ascii: "-") else { continue }
            let path = fields[5].drop(while: { $0 == " " })
            guard path.first == "/", !path.hasSuffix(" (deleted)") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16), start < end
            else { continue }
            out.append(Mapping(start: start, end: end, path: String(path)))
        }
        return out
    }

    /// What one hand-back did.
    public struct Outcome: Sendable, Equatable {
        /// Mappings advised, and of those the ones the kernel refused (an older kernel answers
        /// EINVAL for MADV_PAGEOUT: then nothing is handed back and nothing else changes).
        public var advised = 0
        public var refused = 0
        public var firstError: Int32 = 0
        /// The process's resident set (`VmRSS`, KiB) before and after.
        public var residentKiBBefore = 0
        public var residentKiBAfter = 0
    }

    /// `MADV_PAGEOUT` (Linux 5.4+); not every libc's headers name it.
    static let adviseReclaim: Int32 = 21

    /// Advises the kernel to reclaim this process's releasable mappings now.
    public static func release() -> Outcome {
        var outcome = Outcome()
        outcome.residentKiBBefore = residentKiB()
        let maps = readSmallProcFile("/proc/self/maps") ?? ""
        for m in releasable(maps: maps) {
            outcome.advised += 1
            // Code is touched sparsely: without this, every fault maps the 64 KiB around it
            // (fault-around) and the working set comes back about 40 % larger.
            _ = madvise(UnsafeMutableRawPointer(bitPattern: m.start), Int(m.bytes), MADV_RANDOM)
            if madvise(UnsafeMutableRawPointer(bitPattern: m.start), Int(m.bytes), adviseReclaim) != 0 {
                outcome.refused += 1
                if outcome.firstError == 0 { outcome.firstError = errno }
            }
        }
        outcome.residentKiBAfter = residentKiB()
        return outcome
    }

    /// `VmRSS` of this process in KiB (0 when /proc is not there).
    public static func residentKiB() -> Int {
        guard let status = readSmallProcFile("/proc/self/status") else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? 0
        }
        return 0
    }

    /// Reads a /proc file (whose size `stat` reports as 0) to its end.
    static func readSmallProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

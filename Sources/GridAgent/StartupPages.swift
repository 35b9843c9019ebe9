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
        mapsLines(maps).compactMap { line in
            guard line.perms.count == 4, line.perms.hasPrefix("r-"), line.path.first == "/",
                  !line.path.hasSuffix(" (deleted)") else { return nil }
            return Mapping(start: line.start, end: line.end, path: line.path)
        }
    }

    /// The lines of a `/proc/<pid>/maps` text (`start-end perms offset dev inode [path]`) that
    /// parse, with a path (possibly holding spaces) or "".
    static func mapsLines(_ maps: String) -> [(start: UInt, end: UInt, perms: Substring, offset: UInt, path: String)] {
        maps.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5, let offset = UInt(fields[2], radix: 16) else { return nil }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16), start < end
            else { return nil }
            let path = fields.count == 6 ? String(fields[5].drop(while: { $0 == " " })) : ""
            return (start, end, fields[1], offset, path)
        }
    }

    /// The page-aligned inside of this executable's `.rodata` section, as it lies in memory.
    /// Swift's Linux toolchains link `.rodata` into the writable segment (after `.data.rel.ro`,
    /// with `.data`), so `releasable(maps:)` skips that mapping; the section itself is never
    /// written, so its pages are clean and can be handed back without touching `.data` or `.bss`.
    /// In a statically linked agent it holds ICU's data (38 MB). Empty when the file cannot be
    /// read as ELF64 or has no such section.
    public static func executableReadOnlyData(maps: String, executable: String, headers: ELFHeaders) -> [Mapping] {
        guard let section = headers.section(".rodata") else { return [] }
        // The load base: the executable's mapping at file offset 0.
        guard let base = mapsLines(maps).first(where: { $0.path == executable && $0.offset == 0 })?.start else { return [] }
        let page: UInt = 4096
        let (lo, loOverflow) = (base &+ section.address).addingReportingOverflow(page - 1)
        let (hi, hiOverflow) = (base &+ section.address).addingReportingOverflow(section.size)
        guard !loOverflow, !hiOverflow else { return [] }
        let start = lo & ~(page - 1), end = hi & ~(page - 1)
        guard start < end else { return [] }
        return [Mapping(start: start, end: end, path: executable + " .rodata")]
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
        var mappings = releasable(maps: maps)
        if let exe = executablePath(), let headers = ELFHeaders.read(exe) {
            mappings += executableReadOnlyData(maps: maps, executable: exe, headers: headers)
        }
        for m in mappings {
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

    /// This process's executable (`/proc/self/exe`), as the maps name it.
    public static func executablePath() -> String? {
        var link = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &link, link.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: link[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
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

/// Just enough of an ELF64 (little-endian) file to find a section's address and size: its
/// header, its section headers and their name table, read from the file (a few KiB, never the
/// whole binary).
public struct ELFHeaders: Sendable {
    public var header: [UInt8]
    public var sections: [UInt8]
    public var names: [UInt8]

    public init?(header: [UInt8], sections: [UInt8], names: [UInt8]) {
        guard Self.sectionTable(header) != nil else { return nil }
        self.header = header
        self.sections = sections
        self.names = names
    }

    /// Reads them from `path`; nil when it is not an ELF64 little-endian file or a read fails.
    public static func read(_ path: String) -> ELFHeaders? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        func read(at offset: Int, count: Int) -> [UInt8]? {
            guard offset >= 0, count >= 0, count <= 1 << 20 else { return nil }
            var out = [UInt8](repeating: 0, count: count)
            let got = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
            return got == count ? out : nil
        }
        guard let header = read(at: 0, count: 64), let table = sectionTable(header),
              let sections = read(at: table.offset, count: table.count * 64),
              let names = nameTable(header: header, sections: sections),
              let nameBytes = read(at: names.offset, count: names.size) else { return nil }
        return ELFHeaders(header: header, sections: sections, names: nameBytes)
    }

    static func u16(_ b: [UInt8], _ at: Int) -> Int? {
        guard at >= 0, at + 2 <= b.count else { return nil }
        return Int(b[at]) | Int(b[at + 1]) << 8
    }
    static func u32(_ b: [UInt8], _ at: Int) -> Int? {
        guard let lo = u16(b, at), let hi = u16(b, at + 2) else { return nil }
        return lo | hi << 16
    }
    static func u64(_ b: [UInt8], _ at: Int) -> UInt64? {
        guard let lo = u32(b, at), let hi = u32(b, at + 4) else { return nil }
        return UInt64(lo) | UInt64(hi) << 32
    }
    /// A file offset or size as an Int; nil past 1 TiB (no real binary is that large).
    static func int(_ v: UInt64?) -> Int? { v.flatMap { $0 < 1 << 40 ? Int($0) : nil } }

    /// Where the section headers are (file offset, count), from the ELF header.
    static func sectionTable(_ header: [UInt8]) -> (offset: Int, count: Int)? {
        guard header.count >= 64, header[0] == 0x7F, header[1] == 0x45, header[2] == 0x4C, header[3] == 0x46,
              header[4] == 2, header[5] == 1,  // ELFCLASS64, little-endian
              let offset = int(u64(header, 0x28)), u16(header, 0x3A) == 64,
              let count = u16(header, 0x3C), count > 0 else { return nil }
        return (offset, count)
    }

    /// The section-name table's file offset and size.
    static func nameTable(header: [UInt8], sections: [UInt8]) -> (offset: Int, size: Int)? {
        guard let index = u16(header, 0x3E), let offset = int(u64(sections, index * 64 + 0x18)),
              let size = int(u64(sections, index * 64 + 0x20)) else { return nil }
        return (offset, size)
    }

    /// The named section's virtual address and size; nil when there is none (or it is empty).
    public func section(_ name: String) -> (address: UInt, size: UInt)? {
        let wanted = Array(name.utf8)
        for i in 0..<(sections.count / 64) {
            guard let at = Self.u32(sections, i * 64), at >= 0, at + wanted.count < names.count,
                  names[at..<(at + wanted.count)].elementsEqual(wanted), names[at + wanted.count] == 0 else { continue }
            guard let address = Self.u64(sections, i * 64 + 0x10), let size = Self.u64(sections, i * 64 + 0x20),
                  address > 0, size > 0, address < 1 << 47, size < 1 << 40 else { return nil }
            return (UInt(address), UInt(size))
        }
        return nil
    }
}

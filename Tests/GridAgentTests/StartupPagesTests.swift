import Foundation
import GridAgent
import Testing

/// The agent hands back the pages only its start touched (`release_startup_pages_s`).
@Suite struct StartupPagesTests {
    /// A `/proc/self/maps` of a running agent, cut down: only clean, file-backed mappings
    /// (code and read-only data) are handed back; writable, anonymous, special and deleted ones
    /// are not, and lines that do not parse are skipped.
    @Test func onlyReadOnlyFileMappingsAreHandedBack() {
        let maps = """
        5628533fc000-562854bce000 r-xp 00000000 fe:00 5317901                    /opt/grid/bin/grid-agent
        562854bce000-562854c83000 r--p 017d1000 fe:00 5317901                    /opt/grid/bin/grid-agent
        562854c83000-562854e3b000 rw-p 01886000 fe:00 5317901                    /opt/grid/bin/grid-agent
        562855000000-562855100000 rw-p 00000000 00:00 0                          [heap]
        7f2734000000-7f2736571000 r-xp 00000000 fe:00 2257                       /opt/swift/usr/lib/swift/linux/lib_FoundationICU.so
        7f2736571000-7f2736572000 ---p 02571000 fe:00 2257                       /opt/swift/usr/lib/swift/linux/lib_FoundationICU.so
        7f2736600000-7f2736700000 rw-p 00000000 00:00 0
        7f2736800000-7f2736801000 r--s 00000000 00:05 99                         /dev/zero (deleted)
        7f2736900000-7f2736a00000 r--p 00000000 fe:00 77                         /usr/lib/locale/C.utf8/LC_CTYPE
        7ffd1a3c4000-7ffd1a3c8000 r--p 00000000 00:00 0                          [vvar]
        7ffd1a3c8000-7ffd1a3ca000 r-xp 00000000 00:00 0                          [vdso]
        zzzz-7f2736a00000 r--p 00000000 fe:00 77                                 /broken/start
        7f2736a00000-7f2736900000 r--p 00000000 fe:00 77                         /end/before/start
        7f2736b00000-7f2736c00000 r--p 00000000 fe:00 78                         /opt/data/a file with spaces
        """
        let got = StartupPages.releasable(maps: maps)
        #expect(got.map(\.path) == [
            "/opt/grid/bin/grid-agent", "/opt/grid/bin/grid-agent",
            "/opt/swift/usr/lib/swift/linux/lib_FoundationICU.so",
            "/usr/lib/locale/C.utf8/LC_CTYPE", "/opt/data/a file with spaces",
        ])
        #expect(got.first == StartupPages.Mapping(start: 0x5628533fc000, end: 0x562854bce000, path: "/opt/grid/bin/grid-agent"))
        let expected: [UInt] = [0x17d2000, 0xb5000, 0x2571000, 0x100000, 0x100000]
        #expect(got.map(\.bytes) == expected)
    }

    /// On this very process: the kernel takes the pages back and the resident set shrinks; a
    /// kernel without MADV_PAGEOUT (before 5.4) refuses with EINVAL and nothing else happens.
    /// Afterwards the process runs on (what it needs faults back in).
    @Test func theKernelTakesThePagesBackAndTheProcessRunsOn() throws {
        // Touch a good deal of code and read-only data first (Foundation formatting, JSON).
        let json = try JSONSerialization.data(withJSONObject: ["a": [1, 2, 3], "b": "x"], options: [.sortedKeys])
        #expect(!json.isEmpty)
        let outcome = StartupPages.release()
        #expect(outcome.advised > 0, "this process maps its own executable at least")
        #expect(outcome.residentKiBBefore > 0)
        if outcome.refused > 0 {
            // Before Linux 5.4 the advice is unknown (EINVAL); a sandboxed kernel (gVisor, a
            // seccomp filter) may refuse it outright. Nothing else may go wrong.
            #expect([EINVAL, ENOSYS, EPERM, EOPNOTSUPP].contains(outcome.firstError),
                    "only a kernel's refusal of the advice is expected, got errno \(outcome.firstError)")
        }
        // No assertion on VmRSS here: tests running alongside allocate and fault code in
        // meanwhile (a clean-clone CI run saw 99,788 -> 111,968 KiB across the call); the drop
        // is measured by `grid-bench agent` (BENCHMARKS.md, #7).
        // The code handed back runs again.
        let again = try JSONSerialization.data(withJSONObject: ["a": [1, 2, 3], "b": "x"], options: [.sortedKeys])
        #expect(again == json)
        #expect(StartupPages.residentKiB() > 0)
    }

    /// The executable's `.rodata` sits in the writable segment, so it is found through the ELF
    /// section headers (read, not mapped: a few KiB) and handed back on its own, page-aligned
    /// inward, at the load base the maps give.
    @Test func theExecutablesReadOnlyDataIsFoundFromItsSectionHeaders() throws {
        let exe = try #require(StartupPages.executablePath())
        let headers = try #require(ELFHeaders.read(exe), "this test binary is ELF64")
        let rodata = try #require(headers.section(".rodata"))
        let text = try #require(headers.section(".text"))
        #expect(rodata.size > 0 && text.size > 0 && rodata.address != text.address)
        #expect(headers.section(".no-such-section") == nil)
        #expect(headers.section(".rodat") == nil, "a prefix of a name is not the name")

        let maps = """
        555555554000-555555600000 r--p 00000000 fe:00 42                         \(exe)
        555555600000-555555700000 r-xp 000ac000 fe:00 42                         \(exe)
        """
        let base: UInt = 0x555555554000
        let got = StartupPages.executableReadOnlyData(maps: maps, executable: exe, headers: headers)
        let lo = (base + rodata.address + 4095) & ~4095, hi = (base + rodata.address + rodata.size) & ~4095
        if lo < hi {
            #expect(got == [StartupPages.Mapping(start: lo, end: hi, path: exe + " .rodata")])
        } else {
            #expect(got.isEmpty, "a section inside one page has no whole page to hand back")
        }
        #expect(StartupPages.executableReadOnlyData(maps: "", executable: exe, headers: headers).isEmpty,
                "without the executable's mapping there is no base")

        // Not ELF, or cut short: nothing, and no trap.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("startup-pages-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let text1 = dir.appendingPathComponent("not-elf")
        try Data("#!/bin/sh\necho hello\n".utf8).write(to: text1)
        #expect(ELFHeaders.read(text1.path) == nil)
        let cut = dir.appendingPathComponent("cut")
        let whole = try Data(contentsOf: URL(fileURLWithPath: exe), options: .mappedIfSafe)
        try whole.prefix(100).write(to: cut)
        #expect(ELFHeaders.read(cut.path) == nil, "section headers past the end of the file")
        #expect(ELFHeaders.read("/nonexistent/grid-agent") == nil)
    }
}

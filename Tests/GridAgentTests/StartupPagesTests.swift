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
            #expect(outcome.firstError == EINVAL, "only an older kernel's refusal is expected, got errno \(outcome.firstError)")
        } else {
            #expect(outcome.residentKiBAfter < outcome.residentKiBBefore,
                    "RSS \(outcome.residentKiBBefore) KiB before, \(outcome.residentKiBAfter) KiB after")
        }
        // The code handed back runs again.
        let again = try JSONSerialization.data(withJSONObject: ["a": [1, 2, 3], "b": "x"], options: [.sortedKeys])
        #expect(again == json)
        #expect(StartupPages.residentKiB() > 0)
    }
}

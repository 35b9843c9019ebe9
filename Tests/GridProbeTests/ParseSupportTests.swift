import Foundation
import GridCore
import Testing
@testable import GridProbe

@Suite struct ParseSupportTests {
    @Test(arguments: ["N/A", "[N/A]", "[Not Supported]", "-", "NA", "Requested functionality has been deprecated", "  ", "unknown"])
    func missingSpellingsAreNil(_ raw: String) {
        #expect(ParseSupport.clean(raw) == nil)
    }

    /// Lines are found in the bytes, with the breaks `Character.isNewline` knows (CR LF as one).
    @Test func linesSplitAsCharacterNewlinesDo() {
        let alphabet: [Unicode.Scalar] = ["a", " ", "\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}",
                                          "\u{301}", "é", "🙂", "\u{A0}", "\u{1C}", "\u{0}"]
        var rng = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            var s = String.UnicodeScalarView()
            for _ in 0..<Int(rng.next() % 14) { s.append(alphabet[Int(rng.next() % UInt64(alphabet.count))]) }
            let text = String(s)
            let expected = text.split(omittingEmptySubsequences: false, whereSeparator: { $0.isNewline })
            let got = ParseSupport.lines(text)
            #expect(got == expected, "\(text.unicodeScalars.map { String($0.value, radix: 16) })")
            if got != expected { break }
            // head stops after `count` non-blank lines and gives the same ones as the full split.
            let count = Int(rng.next() % 4)
            let nonBlank = expected.filter { !$0.unicodeScalars.allSatisfy(\.properties.isWhitespace) }
            #expect(ParseSupport.head(text, lines: count) == Array(nonBlank.prefix(count)))
        }
        #expect(ParseSupport.lines("a\r\nb\rc\n\nd") == ["a", "b", "c", "", "d"])
    }

    @Test func terminalEscapesAreDropped() {
        #expect(ParseSupport.withoutTerminalEscapes("\u{1B}[4mGPU0\tCPU Affinity\u{1B}[0m\nGPU0\t X ") == "GPU0\tCPU Affinity\nGPU0\t X ")
        #expect(ParseSupport.withoutTerminalEscapes("a\u{1B}[1;31mred\u{1B}[m b") == "ared b")
        #expect(ParseSupport.withoutTerminalEscapes("plain ü text") == "plain ü text")
        #expect(ParseSupport.withoutTerminalEscapes("cut\u{1B}") == "cut")
        #expect(ParseSupport.withoutTerminalEscapes("cut\u{1B}[12") == "cut")
        #expect(ParseSupport.withoutTerminalEscapes("x\u{1B}cy") == "xy")
    }

    @Test func numbersWithUnits() {
        #expect(ParseSupport.double("67.03 W") == 67.03)
        #expect(ParseSupport.double("(1402Mhz)") == 1402)
        #expect(ParseSupport.double("35C") == 35)
        #expect(ParseSupport.int("16x") == 16)
        #expect(ParseSupport.int("99999999999999999999999") == nil)
        #expect(ParseSupport.count("-3") == nil)
        #expect(ParseSupport.mebibytes("32768.00 MiB") == 32768)
        #expect(ParseSupport.mebibytes("98304 MB") == 98304)
        #expect(ParseSupport.mebibytes("2 GiB") == 2048)
        #expect(ParseSupport.mebibytes("12 parsecs") == nil)
        #expect(ParseSupport.mebibytes(fromBytes: "34342961152") == 32752)
    }

    @Test func pciAddresses() {
        #expect(ParseSupport.pciBusID("00000000:0A:00.0") == "0000:0a:00.0")
        #expect(ParseSupport.pciBusID("0001:6c:00.0") == "0001:6c:00.0")
        #expect(ParseSupport.pciBusID("65:00.0") == "0000:65:00.0")
        #expect(ParseSupport.pciBusID("NA") == nil)
        #expect(ParseSupport.pciBusID("0000:zz:00.0") == nil)
        #expect(ParseSupport.pciDeviceID("20B210DE", packing: .deviceHigh) == "0x20b2")
        #expect(ParseSupport.pciDeviceID("0x1da31020", packing: .deviceLow) == "0x1020")
        #expect(ParseSupport.pciDeviceID("0x20a") == "0x020a")
    }

    @Test func placeholders() {
        #expect(ParseSupport.serial("0000000000000") == nil)
        #expect(ParseSupport.serial("0") == nil)
        #expect(ParseSupport.uuid("GPU-00000000-0000-0000-0000-000000000000") == nil)
        #expect(ParseSupport.uuid("GPU-27b94a00-ed54-5c24-b1fd-1054085de32a") != nil)
    }
}

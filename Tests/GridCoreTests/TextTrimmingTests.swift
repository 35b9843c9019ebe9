import Foundation
import GridCore
import Testing

/// The trimming and search used on vendor output answer as Foundation's NSString-based ones do,
/// on the awkward characters vendor tools and fuzzers produce.
@Suite struct TextTrimmingTests {
    /// Scalars that sit at the edges of the character sets: ASCII white space and controls,
    /// NEL, NBSP, the Zs spaces, LS/PS, a BOM (not white space), combining marks, CR LF, emoji.
    static let alphabet: [Unicode.Scalar] = [
        " ", "\t", "\n", "\r", "\u{0B}", "\u{0C}", "\u{1C}", "\u{85}", "\u{A0}", "\u{1680}", "\u{2003}",
        "\u{200B}", "\u{2028}", "\u{2029}", "\u{202F}", "\u{3000}", "\u{FEFF}", "\u{301}", "a", "Z", "0",
        ",", "[", "]", "é", "🙂", "\u{0}",
    ]

    static func randomText(_ rng: inout SplitMix64, maxLength: Int = 12) -> String {
        var s = String.UnicodeScalarView()
        for _ in 0..<Int(rng.next() % UInt64(maxLength + 1)) {
            s.append(alphabet[Int(rng.next() % UInt64(alphabet.count))])
        }
        return String(s)
    }

    @Test(arguments: ["", " ", "  a b  ", "\t[N/A]\t", "\u{A0}x\u{3000}", "\r\n x \r\n", "\u{2028}y\u{85}",
                      "\u{FEFF} z", " \u{301}a", "a\u{301} ", "🙂 ", "\u{1C}q\u{1C}"])
    func trimmingAgreesWithFoundation(_ text: String) {
        #expect(text.trimmingSpaces() == text.trimmingCharacters(in: .whitespaces))
        #expect(text.trimmingSpacesAndNewlines() == text.trimmingCharacters(in: .whitespacesAndNewlines))
        let sub = Substring("<" + text + ">").dropFirst().dropLast()
        #expect(sub.trimmingSpaces() == sub.trimmingCharacters(in: .whitespaces))
    }

    /// 20,000 random strings over the awkward alphabet; each must trim as Foundation trims it.
    @Test func trimmingAgreesWithFoundationOnRandomText() {
        var rng = SplitMix64(seed: 0x7E57)
        var disagreements: [String] = []
        for _ in 0..<20_000 {
            let text = Self.randomText(&rng)
            if text.trimmingSpaces() != text.trimmingCharacters(in: .whitespaces)
                || text.trimmingSpacesAndNewlines() != text.trimmingCharacters(in: .whitespacesAndNewlines) {
                disagreements.append(text.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: " "))
            }
        }
        #expect(disagreements.count == 0, "first: \(disagreements.prefix(5))")
    }

    @Test func literalSearchFindsExactlyTheBytes() {
        #expect("nvidia-smi LOG".containsLiteral("smi L"))
        #expect("abc".containsLiteral(""))
        #expect(!"".containsLiteral("a"))
        #expect(!"ab".containsLiteral("abc"))
        #expect("aab".containsLiteral("ab"), "a partial match restarts one byte later")
        #expect(Substring("xx| Device IDyy").dropFirst(2).dropLast(2).containsLiteral("| Device ID"))
        #expect(!Substring("| Device ID").dropFirst().containsLiteral("| Device"), "a substring is searched only within its bounds")
        var rng = SplitMix64(seed: 42)
        for _ in 0..<5_000 {
            let hay = Self.randomText(&rng, maxLength: 16)
            let needle = Self.randomText(&rng, maxLength: 3)
            let expected = needle.isEmpty || hay.utf8.count >= needle.utf8.count
                && (0...(hay.utf8.count - needle.utf8.count)).contains { Array(hay.utf8).dropFirst($0).starts(with: needle.utf8) }
            #expect(hay.containsLiteral(needle) == expected, "\(hay.debugDescription) / \(needle.debugDescription)")
            let byte = needle.utf8.first ?? 0
            #expect(hay.containsByte(byte) == hay.utf8.contains(byte), "\(hay.debugDescription) / \(byte)")
        }
    }

    /// The memchr/memcmp search at the edges: the needle last, after many false starts, and
    /// cut by a substring's end.
    @Test func literalSearchAtTheEdges() {
        let hay = String(repeating: "a", count: 4_000) + "ab"
        #expect(hay.containsLiteral("aab"))
        #expect(hay.containsLiteral("b"))
        #expect(!hay.containsLiteral("ba"))
        #expect(!Substring(hay).dropLast().containsLiteral("ab"))
        #expect(Substring(hay).dropLast().containsLiteral("aaaa"))
        #expect(!"\u{1B}".dropFirst().containsByte(0x1B))
        #expect("x\u{1B}[0m".containsByte(0x1B))
    }
}

import ArgumentParser
import Foundation
import GridTransport

/// `gridctl keys generate NAME`: a CURVE key pair for an agent, a controller or an operator
/// (docs/security.md, "Keys").
struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "CURVE keys for agents, controllers and operators.",
        subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new key pair: NAME.key (secret, mode 0600) and NAME.pub (public).",
            discussion: """
                Give NAME.pub to the controller that must let the key in (a line of its \
                authorized_keys: '<key> agent <node id>', '<key> region <region id>' or \
                '<key> operator <name> submit|operate|admin'); keep NAME.key on the host that \
                uses it. An existing key is never overwritten.
                """)
        @Argument(help: "The key's name (node id, region id or operator name): files NAME.key and NAME.pub.") var name: String
        @Option(help: "Directory to write into.") var dir = "."

        func validate() throws {
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }), !name.hasPrefix(".") else {
                throw ValidationError("NAME: letters, digits, '-', '_', '.' (not first), got '\(name)'")
            }
        }

        func run() throws {
            do {
                let made = try CurveKeyFile.generate(name: name, directory: dir)
                print("secret: \(made.secretPath) (mode 0600: keep it on this host)")
                print("public: \(made.publicPath)")
                print(made.pair.publicKey)
            } catch {
                throw fail("\(error)")
            }
        }
    }
}

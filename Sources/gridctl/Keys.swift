import ArgumentParser
import Foundation
import GridCLI
import GridProtocol
import GridTransport

/// `gridctl keys generate NAME`: a CURVE key pair for an agent, a controller or an operator
/// (docs/security.md, "Keys").
struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "CURVE keys for agents, controllers and operators: make them, enrol and revoke them at a controller.",
        subcommands: [Generate.self, Enroll.self, Revoke.self, KeyList.self])

    /// Sends a KEY_CONTROL (admin right) and prints the keys in force.
    static func control(_ options: ControllerOptions, _ k: Wire.KeyControl) throws {
        do {
            let r = try options.queryReply(.keyControl(k))
            print(try options.printer.list(r.keys.map(Row.init), Row.columns))
        } catch let e as ClientError { throw fail(e.message) }
    }

    struct Row: Encodable {
        var key: String, role: String, name: String, right: String, tenant: String, source: String, enrolledBy: String
        init(_ e: Wire.KeyEntry) {
            key = e.publicKey; role = e.role; name = e.name; right = e.right; tenant = e.tenant; source = e.source; enrolledBy = e.enrolledBy
        }
        static let columns: [Column<Row>] = [
            Column("KEY") { r, wide in wide ? r.key : String(r.key.prefix(8)) + "…" }, Column("ROLE") { r, _ in r.role },
            Column("NAME") { r, _ in r.name }, Column("RIGHT") { r, _ in r.right.isEmpty ? "-" : r.right },
            Column("TENANT") { r, _ in r.tenant.isEmpty ? "-" : r.tenant },
            Column("SOURCE") { r, _ in r.source }, Column("ENROLLED BY", wide: true) { r, _ in r.enrolledBy.isEmpty ? "-" : r.enrolledBy },
        ]
    }

    struct Enroll: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Let a key in at a running controller (needs an admin key), stored in its SQLite.",
            discussion: "gridctl keys enroll node-17.pub --role agent --name node-17 --controller tcp://region:7710 --key admin.key --server-key region.pub")
        @OptionGroup var options: ControllerOptions
        @Argument(help: "The public key: 40 Z85 characters or a .pub file.") var publicKey: String
        @Option(help: "agent, region or operator.") var role: String
        @Option(help: "agent: node ids (comma-separated); region: its id; operator: a name.") var name: String
        @Option(help: "operator: read, submit, operate or admin.") var right: String?
        @Option(help: "operator (submit or operate): the account the key acts for only; it sees and controls that account's jobs and services alone.") var tenant: String?

        func run() throws {
            var k = Wire.KeyControl()
            k.action = .enroll
            do { k.publicKey = try CurveKeyFile.readPublic(publicKey) } catch { throw fail("\(error)") }
            k.role = role
            k.name = name
            k.right = right ?? ""
            k.tenant = tenant ?? ""
            try Keys.control(options, k)
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an enrolled key at a running controller (needs an admin key): refused from its next message on.")
        @OptionGroup var options: ControllerOptions
        @Argument(help: "The public key: 40 Z85 characters or a .pub file.") var publicKey: String

        func run() throws {
            var k = Wire.KeyControl()
            k.action = .revoke
            do { k.publicKey = try CurveKeyFile.readPublic(publicKey) } catch { throw fail("\(error)") }
            try Keys.control(options, k)
        }
    }

    struct KeyList: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "The keys a controller lets in: from authorized_keys and enrolled.")
        @OptionGroup var options: ControllerOptions
        func run() throws {
            var k = Wire.KeyControl()
            k.action = .list
            try Keys.control(options, k)
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new key pair: NAME.key (secret, mode 0600) and NAME.pub (public).",
            discussion: """
                Give NAME.pub to the controller that must let the key in (a line of its \
                authorized_keys: '<key> agent <node id>', '<key> region <region id>' or \
                '<key> operator <name> read|submit|operate|admin [tenant=<account>]'); keep NAME.key on the host that \
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

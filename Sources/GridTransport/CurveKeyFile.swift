import Crypto
import Foundation

/// A key file that cannot be used: which file and why, and what to do.
public struct KeyFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var problem: String
    public init(_ path: String, _ problem: String) {
        self.path = path
        self.problem = problem
    }
    public var description: String { "\(path): \(problem)" }
}

/// CURVE key files as `gridctl keys generate` writes them (docs/security.md):
///
/// - `NAME.key`, mode 0600: the CURVE pair, `public-key = "<Z85>"` and `secret-key = "<Z85>"`
///   lines, and `signing-key = "<base64>"`, the 32-byte secret of an Ed25519 key a region
///   signs its assignments with;
/// - `NAME.pub`: the CURVE public key alone on a line, for authorized_keys and for clients that
///   pin a server, and `signing: <base64>`, the Ed25519 public key agents verify with.
///
/// `#` lines are comments. A secret file is refused when others may read it, or when its group
/// may and root does not own it (PostgreSQL's rule for its key: 0600, or 0640 owned by root —
/// a Kubernetes Secret mounted with `defaultMode: 0440` and the pod's `fsGroup`).
public enum CurveKeyFile {
    /// Writes both files of a new pair into `directory`; refuses to overwrite a key.
    @discardableResult
    public static func generate(name: String, directory: String) throws(KeyFileError) -> (pair: CurveKeyPair, secretPath: String, publicPath: String) {
        let pair: CurveKeyPair
        do { pair = try CurveKeyPair.generate() } catch { throw KeyFileError(directory, "cannot generate a key pair: \(error)") }
        let dir = URL(fileURLWithPath: directory)
        let secretPath = dir.appendingPathComponent("\(name).key").path
        let publicPath = dir.appendingPathComponent("\(name).pub").path
        for p in [secretPath, publicPath] where FileManager.default.fileExists(atPath: p) {
            throw KeyFileError(p, "exists; remove it first if you mean to replace the key (and re-enrol the new one)")
        }
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw KeyFileError(directory, "cannot create the directory: \(error.localizedDescription)")
        }
        let signing = Curve25519.Signing.PrivateKey()
        let secret = """
            # ComputeGrid keys '\(name)' (gridctl keys generate). Secret: keep it mode 0600,
            # never copy it off this host. Give others \(name).pub.
            public-key = "\(pair.publicKey)"
            secret-key = "\(pair.secretKey)"
            signing-key = "\(signing.rawRepresentation.base64EncodedString())"

            """
        try write(secret, to: secretPath, mode: 0o600)
        try write("# ComputeGrid public keys '\(name)': CURVE (authorized_keys, pinning), then Ed25519 (signatures)\n"
                  + "\(pair.publicKey)\nsigning: \(signing.publicKey.rawRepresentation.base64EncodedString())\n",
                  to: publicPath, mode: 0o644)
        return (pair, secretPath, publicPath)
    }

    static func write(_ text: String, to path: String, mode: mode_t) throws(KeyFileError) {
        // Created with its final mode (O_EXCL): the secret is never readable by others, not even briefly.
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw KeyFileError(path, "cannot create: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ Foundation.write(fd, $0.baseAddress, $0.count) }) == bytes.count, fsync(fd) == 0 else {
            throw KeyFileError(path, "cannot write: \(String(cString: strerror(errno)))")
        }
    }

    /// The pair in a `.key` file.
    public static func readPair(_ path: String) throws(KeyFileError) -> CurveKeyPair {
        try read(path).pair
    }

    /// The Ed25519 signing secret (32 bytes) of a `.key` file; nil when it has none.
    public static func readSigningSeed(_ path: String) throws(KeyFileError) -> [UInt8]? {
        try read(path).signingSeed
    }

    static func read(_ path: String) throws(KeyFileError) -> (pair: CurveKeyPair, signingSeed: [UInt8]?) {
        var st = stat()
        guard stat(path, &st) == 0 else { throw KeyFileError(path, "cannot read: \(String(cString: strerror(errno))) (create one with gridctl keys generate)") }
        if st.st_mode & 0o037 != 0 || (st.st_mode & 0o040 != 0 && st.st_uid != 0) {
            throw KeyFileError(path, "a secret key readable by group or others (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 it (0640 only when root owns it)")
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch { throw KeyFileError(path, "cannot read: \(error.localizedDescription)") }
        var values: [String: String] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, ["public-key", "secret-key", "signing-key"].contains(parts[0]) else {
                throw KeyFileError(path, "line \(n + 1): want 'public-key = \"…\"', 'secret-key = \"…\"' or 'signing-key = \"…\"'")
            }
            values[parts[0]] = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        guard let secret = values["secret-key"], let pair = CurveKeyPair(secretKey: secret) else {
            throw KeyFileError(path, "no valid secret-key (40 Z85 characters)")
        }
        if let pub = values["public-key"], pub != pair.publicKey {
            throw KeyFileError(path, "public-key does not belong to secret-key (the file was edited?)")
        }
        var seed: [UInt8]?
        if let text = values["signing-key"] {
            guard let d = Data(base64Encoded: text), d.count == 32 else { throw KeyFileError(path, "signing-key: want 32 bytes in base64") }
            seed = Array(d)
        }
        return (pair, seed)
    }

    /// A public key given as itself (40 Z85 characters) or as the path of a `.pub` file.
    public static func readPublic(_ keyOrPath: String) throws(KeyFileError) -> String {
        try readPublicKeys(keyOrPath).curve
    }

    /// Both keys of a `.pub` file (or a CURVE key given as itself, which has no signing key),
    /// read once.
    public static func readPublicKeys(_ keyOrPath: String) throws(KeyFileError) -> (curve: String, signing: [UInt8]?) {
        if Z85.isCurveKey(keyOrPath) { return (keyOrPath, nil) }
        let text: String
        do { text = try String(contentsOfFile: keyOrPath, encoding: .utf8) } catch {
            throw KeyFileError(keyOrPath, "neither a public key (40 Z85 characters) nor a readable .pub file: \(error.localizedDescription)")
        }
        let lines = keyLines(text)
        let curve = lines.filter { !$0.hasPrefix("signing:") }
        guard curve.count == 1, Z85.isCurveKey(curve[0]) else {
            throw KeyFileError(keyOrPath, "want one public key (40 Z85 characters) on a line")
        }
        guard let line = lines.first(where: { $0.hasPrefix("signing:") }) else { return (curve[0], nil) }
        guard let d = Data(base64Encoded: line.dropFirst("signing:".count).trimmingCharacters(in: .whitespaces)), d.count == 32 else {
            throw KeyFileError(keyOrPath, "signing: want 32 bytes in base64")
        }
        return (curve[0], Array(d))
    }

    /// Non-empty lines that are not comments (no CURVE key starts with '#': `Z85.isCurveKey`).
    static func keyLines(_ text: String) -> [String] {
        text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }
}

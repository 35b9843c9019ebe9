#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import GridCore

/// Reads small text attributes from sysfs/procfs and turns every failure into a warning that
/// names the path, so one bad file never stops a scan.
///
/// A file that does not exist is *not* a warning: sysfs attributes come and go with kernel
/// version, config and driver (no `numa_node` without CONFIG_NUMA, no hwmon on NVIDIA), so
/// absence is normal. Everything else that stops us from getting a value is: a dangling
/// symlink, a directory or FIFO where a file should be, permission denied, bytes that are not
/// text, or text we cannot parse.
struct SysfsAttributeReader {
    /// Attributes are at most a page; procfs `information` is a few hundred bytes. Anything
    /// bigger is not what we expect and is cut here.
    static let maxAttributeBytes = 64 * 1024

    enum Read {
        case value(String)
        case missing
        case failed
    }

    private(set) var warnings: [String] = []

    mutating func warn(_ message: String) {
        warnings.append(message)
    }

    /// The trimmed text of `path`, or nil (with a warning unless the file is simply absent).
    mutating func string(_ path: String) -> String? {
        if case .value(let s) = readAttribute(path) { return s }
        return nil
    }

    mutating func readAttribute(_ path: String) -> Read {
        var st = stat()
        if stat(path, &st) != 0 {
            let err = errno
            var lst = stat()
            if lstat(path, &lst) == 0, (lst.st_mode & S_IFMT) == S_IFLNK {
                warn("\(path): dangling symlink (\(Self.describe(err)))")
                return .failed
            }
            if err == ENOENT || err == ENOTDIR { return .missing }
            warn("\(path): cannot stat: \(Self.describe(err))")
            return .failed
        }
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR:
            warn("\(path): expected a file, found a directory")
            return .failed
        default:
            warn("\(path): expected a regular file, found a special file (mode \(String(st.st_mode & S_IFMT, radix: 8)))")
            return .failed
        }
        // O_NONBLOCK: if something swapped in a FIFO between stat and open, do not hang on it.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            warn("\(path): cannot open: \(Self.describe(errno))")
            return .failed
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < Self.maxAttributeBytes {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                // Some sysfs attributes fail on read (e.g. EIO/ENODEV when the device is gone).
                warn("\(path): read failed: \(Self.describe(errno))")
                return .failed
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        if bytes.count > Self.maxAttributeBytes { bytes.removeLast(bytes.count - Self.maxAttributeBytes) }
        guard let text = String(validating: bytes, as: UTF8.self), !bytes.contains(0) else {
            warn("\(path): contents are not text (\(bytes.count) bytes)")
            return .failed
        }
        return .value(text.trimmingSpacesAndNewlines())
    }

    /// Parses `0x10de` (or bare hex). Warns and returns nil on garbage.
    mutating func hex(_ path: String) -> UInt32? {
        guard let s = string(path) else { return nil }
        var digits = Substring(s)
        if digits.hasPrefix("0x") || digits.hasPrefix("0X") { digits = digits.dropFirst(2) }
        guard !digits.isEmpty, digits.count <= 8, let v = UInt32(digits, radix: 16) else {
            warn("\(path): expected a hex number like 0x10de, got '\(Self.clip(s))'")
            return nil
        }
        return v
    }

    /// Parses a decimal integer (optionally signed). Warns and returns nil on garbage.
    mutating func integer(_ path: String) -> Int64? {
        guard let s = string(path) else { return nil }
        guard let v = Int64(s) else {
            warn("\(path): expected an integer, got '\(Self.clip(s))'")
            return nil
        }
        return v
    }

    /// Entries of a directory, sorted; nil when it does not exist (silently) or cannot be
    /// listed (with a warning).
    mutating func list(_ path: String) -> [String]? {
        var st = stat()
        if stat(path, &st) != 0 {
            let err = errno
            if err == ENOENT || err == ENOTDIR {
                var lst = stat()
                if lstat(path, &lst) == 0, (lst.st_mode & S_IFMT) == S_IFLNK {
                    warn("\(path): dangling symlink (\(Self.describe(err)))")
                }
                return nil
            }
            warn("\(path): cannot stat: \(Self.describe(err))")
            return nil
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            warn("\(path): expected a directory, found a file")
            return nil
        }
        guard let dir = opendir(path) else {
            warn("\(path): cannot list: \(Self.describe(errno))")
            return nil
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// The final path component of a symlink's target (e.g. the driver name), nil if absent.
    mutating func linkBasename(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buf, buf.count - 1)
        if n < 0 {
            let err = errno
            if err == ENOENT { return nil }
            if err == EINVAL {
                warn("\(path): expected a symlink, found a regular file or directory")
            } else {
                warn("\(path): cannot read link: \(Self.describe(err))")
            }
            return nil
        }
        let bytes = buf[0..<n].map { UInt8(bitPattern: $0) }
        let target = String(decoding: bytes, as: UTF8.self)
        let base = target.split(separator: "/").last.map(String.init) ?? ""
        return base.isEmpty ? nil : base
    }

    /// The canonical absolute path of `path` with all symlinks followed; nil (with a warning
    /// for dangling links) when it cannot be resolved.
    mutating func resolve(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else {
            let err = errno
            if err == ENOENT {
                var lst = stat()
                if lstat(path, &lst) == 0, (lst.st_mode & S_IFMT) == S_IFLNK {
                    warn("\(path): dangling symlink (\(Self.describe(err)))")
                }
            } else {
                warn("\(path): cannot resolve: \(Self.describe(err))")
            }
            return nil
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func describe(_ err: Int32) -> String {
        "\(String(cString: strerror(err))) (errno \(err))"
    }

    /// Keeps garbage short in warnings.
    static func clip(_ s: String, _ limit: Int = 40) -> String {
        let flat = s.replacingOccurrences(of: "\n", with: "\\n")
        return flat.count <= limit ? flat : String(flat.prefix(limit)) + "…"
    }
}

extension URL {
    /// The file-system path of a file URL, without percent-encoding.
    var discoveryFileSystemPath: String {
        withUnsafeFileSystemRepresentation { $0.map { String(cString: $0) } } ?? path
    }
}

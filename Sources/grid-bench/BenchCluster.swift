import Foundation
import GridCLI
import GridFleet
import GridProtocol

/// Real controller and agent processes for the scale benchmarks, in a scratch directory, with a
/// YAML config each; all are killed when the benchmark ends.
final class BenchCluster {
    let dir: URL
    var processes: [String: Process] = [:]
    let binDir: URL

    init(name: String) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("grid-bench-\(name)-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        binDir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    deinit {
        for p in processes.values where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: dir)
    }

    /// Starts a controller with `settings` as YAML lines; returns its bound endpoint.
    @discardableResult
    func controller(_ name: String, role: String, bind: String = "tcp://127.0.0.1:*", national: String? = nil,
                    settings: [String: String] = [:]) throws -> String {
        var yaml = "role: \(role)\nid: \(name)\nbind: \"\(bind)\"\ndata_dir: \(dir.appendingPathComponent(name).path)\nlog_level: warning\n"
        if let national { yaml += "national: \"\(national)\"\n" }
        var settings = settings
        if settings["http"] == nil { settings["http"] = "\"127.0.0.1:0\"" }  // many controllers on one host
        for (k, v) in settings.sorted(by: { $0.key < $1.key }) { yaml += "\(k): \(v)\n" }
        let config = dir.appendingPathComponent("\(name).yaml")
        try yaml.write(to: config, atomically: true, encoding: .utf8)
        let out = try start(name, "grid-controller", ["--config", config.path])
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let text = try? String(contentsOf: out, encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.contains("listening on") }) {
                return String(line.split(separator: " ").last ?? "")
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw BenchError("\(name) did not start; see \(dir.path)/\(name).err")
    }

    /// The HTTP base address a controller printed ("http on http://HOST:PORT/").
    func httpBase(_ name: String, within seconds: Double = 20) throws -> String {
        try printedURL(name, marker: " http on ", within: seconds)
    }

    /// The URL a daemon printed after `marker` (" gateway on http://HOST:PORT/").
    func printedURL(_ name: String, marker: String, within seconds: Double = 20) throws -> String {
        let out = dir.appendingPathComponent("\(name).out")
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let text = try? String(contentsOf: out, encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.contains(marker) }),
               let url = line.split(separator: " ").first(where: { $0.hasPrefix("http://") }) {
                return String(url.dropLast(url.hasSuffix("/") ? 1 : 0))
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw BenchError("\(name) printed no '\(marker.trimmingCharacters(in: .whitespaces))' line; see \(dir.path)/\(name).err")
    }

    @discardableResult
    func start(_ name: String, _ executable: String, _ args: [String]) throws -> URL {
        let p = Process()
        p.executableURL = executable.hasPrefix("/") ? URL(fileURLWithPath: executable) : binDir.appendingPathComponent(executable)
        p.arguments = args
        let out = dir.appendingPathComponent("\(name).out")
        let err = dir.appendingPathComponent("\(name).err")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        processes[name] = p
        return out
    }

    func kill9(_ name: String) {
        guard let p = processes[name] else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    func pid(_ name: String) -> Int32 { processes[name]?.processIdentifier ?? 0 }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// CPU time and resident memory of a process, from /proc.
struct ProcessUsage {
    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// utime + stime in seconds.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / ticksPerSecond
    }

    static func rssMiB(_ pid: Int32) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb / 1024
    }

    /// What the resident set is made of: anonymous and file-backed pages (`/proc/PID/status`),
    /// and the proportional set size, which splits pages shared with other processes
    /// (`/proc/PID/smaps_rollup`). MiB.
    static func residentBreakdown(_ pid: Int32) -> String {
        func kib(_ file: String, _ key: String) -> Double {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/\(file)", encoding: .utf8),
                  let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return 0 }
            return Double(line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? 0
        }
        return String(format: "anonymous %.1f MiB, file-backed %.1f MiB, Pss %.1f MiB",
                      kib("status", "RssAnon") / 1024, kib("status", "RssFile") / 1024, kib("smaps_rollup", "Pss") / 1024)
    }
}

enum Machine {
    static var description: String {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let mem = ProcessInfo.processInfo.physicalMemory / (1 << 30)
        return "\(ProcessInfo.processInfo.processorCount) cores (\(cpu)), \(mem) GiB RAM"
    }

    static func header(_ name: String, _ params: String) {
        let date = ISO8601DateFormatter().string(from: Date())
        print("grid-bench \(name): \(params)")
        print("machine: \(Machine.description); \(date)")
    }
}

func percentile(_ sorted: [Int64], _ p: Double) -> Int64 {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p / 100))]
}

func ms(_ ns: Int64) -> String { String(format: "%.1f ms", Double(ns) / 1e6) }

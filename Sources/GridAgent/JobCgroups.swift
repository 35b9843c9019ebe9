import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where job cgroups go, when the host gives the agent a delegated cgroup v2 subtree (the
/// systemd unit's `Delegate=yes`). The agent moves itself into a leaf `agent` of its own cgroup
/// (cgroup v2 lets processes live only in leaves once there are children) and each job gets a
/// sibling `job-<assignment>`, created and joined by its shim before the job starts. Without
/// a usable subtree jobs are tracked by process group (and the shim as subreaper) only.
public enum JobCgroups {
    public struct Decision: Sendable, Equatable {
        /// The directory job cgroups are created in; nil = process groups only.
        public var parent: String?
        /// What was decided and why, for the log.
        public var note: String
    }

    /// `setting`: "off", "auto", or a directory. `procSelfCgroup`: the content of
    /// /proc/self/cgroup. `mountRoot`: where cgroup2 is mounted.
    public static func decide(setting: String, procSelfCgroup: String, mountRoot: String = "/sys/fs/cgroup",
                              pid: Int32 = getpid()) -> Decision {
        switch setting {
        case "off", "":
            return Decision(parent: nil, note: "cgroups off: jobs are tracked by process group")
        case "auto":
            guard FileManager.default.fileExists(atPath: mountRoot + "/cgroup.controllers") else {
                return Decision(parent: nil, note: "no cgroup v2 at \(mountRoot): jobs are tracked by process group")
            }
            guard let line = procSelfCgroup.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) else {
                return Decision(parent: nil, note: "not in a cgroup v2 hierarchy: jobs are tracked by process group")
            }
            var own = String(line.dropFirst(3))
            if own.hasSuffix("/agent") { own.removeLast(6) }  // placed there by an earlier start
            let dir = mountRoot + (own == "/" ? "" : own)
            return adopt(dir, pid: pid)
        default:
            return adopt(setting, pid: pid)
        }
    }

    /// Moves the agent into `<dir>/agent` and returns `dir` as the parent of job cgroups, or
    /// nil with the reason when the subtree is not ours to write.
    static func adopt(_ dir: String, pid: Int32) -> Decision {
        guard access(dir, W_OK) == 0 else {
            return Decision(parent: nil, note: "cgroup \(dir) is not writable (no Delegate=yes?): jobs are tracked by process group")
        }
        let leaf = dir + "/agent"
        if mkdir(leaf, 0o755) != 0 && errno != EEXIST {
            return Decision(parent: nil, note: "cannot create \(leaf): \(String(cString: strerror(errno))): jobs are tracked by process group")
        }
        let fd = open(leaf + "/cgroup.procs", O_WRONLY | O_CLOEXEC | O_CREAT, 0o644)
        let line = Array("\(pid)\n".utf8)
        let ok = fd >= 0 && line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == line.count
        if fd >= 0 { close(fd) }
        guard ok else {
            return Decision(parent: nil, note: "cannot move the agent into \(leaf): \(String(cString: strerror(errno))): jobs are tracked by process group")
        }
        return Decision(parent: dir, note: "each job runs in its own cgroup under \(dir)")
    }

    /// The cgroup of one assignment's run.
    public static func path(parent: String, assignment: String) -> String {
        parent + "/job-" + assignment.replacingOccurrences(of: "/", with: "_")
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Keeps the agent's descriptors out of the programs it starts (vendor tools, job shims).
///
/// Descriptors the agent opens itself are close-on-exec, but not those it inherited without
/// it: a supervisor's socket, or the exit-watch socket a parent using Foundation's `Process`
/// hands every child. A tool that outlives a killed agent (a hung `nvidia-smi`) would hold them
/// and make the parent think the agent still runs. glibc 2.34 and later can close everything
/// above stderr as the child starts (`posix_spawn_file_actions_addclosefrom_np`); it is looked
/// up at run time, so the agent still starts on an older libc, where the job shim closes them
/// itself and tools keep them.
public enum InheritedDescriptors {
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    private static let addCloseFrom: AddCloseFrom? = {
        // A null handle is RTLD_DEFAULT: every object loaded, libc among them.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    /// Whether this libc can do it.
    public static var supported: Bool { addCloseFrom != nil }

    /// Adds "close every descriptor from `fd` up" to `actions` (after any dup2 onto 0–2, which
    /// runs first). True when added.
    @discardableResult
    public static func closeInChild(_ actions: inout posix_spawn_file_actions_t, from fd: Int32 = 3) -> Bool {
        guard let add = addCloseFrom else { return false }
        return add(&actions, fd) == 0
    }
}

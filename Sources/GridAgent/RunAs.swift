import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The Unix user a job's process runs as (agent config `run_as`; docs/security.md, "Tenants").
public struct RunIdentity: Sendable, Hashable {
    public var uid: UInt32
    public var gid: UInt32
    /// As written in the config (a user name, or "UID:GID").
    public var name: String
    public init(uid: UInt32, gid: UInt32, name: String) {
        self.uid = uid
        self.gid = gid
        self.name = name
    }
    /// The shim's `--user` argument.
    public var shimArgument: String { "\(uid):\(gid)" }
}

/// Which user runs each account's jobs. Empty: every job runs as the agent (one trust domain,
/// the demo's case). Otherwise an account runs as its own entry, or as `*`'s; an account with
/// neither is refused on this node (fail closed), and no entry may be root.
public struct RunAsTable: Sendable, Equatable {
    public var byAccount: [String: RunIdentity]
    public var fallback: RunIdentity?

    public init(byAccount: [String: RunIdentity] = [:], fallback: RunIdentity? = nil) {
        self.byAccount = byAccount
        self.fallback = fallback
    }

    public var isEmpty: Bool { byAccount.isEmpty && fallback == nil }

    /// The accounts this node is dedicated to (told to the region in Register, so it places
    /// no other account's job here): the listed ones when there is no `*`; empty = any.
    public var dedicatedTo: [String] { fallback == nil ? byAccount.keys.sorted() : [] }

    /// The identity for `account` ("" is the `default` account).
    public func identity(for account: String) -> RunIdentity? {
        byAccount[account.isEmpty ? "default" : account] ?? fallback
    }

    /// Resolves the config's map (account → user name or "UID:GID"; key `*` for every other
    /// account) against the user database. Problems name the key and say what is wrong.
    public static func resolve(_ map: [String: String], lookup: (String) -> (uid: UInt32, gid: UInt32)? = RunAsTable.userDatabase) -> (table: RunAsTable, problems: [String]) {
        var table = RunAsTable()
        var problems: [String] = []
        for (account, user) in map.sorted(by: { $0.key < $1.key }) {
            let at = "run_as.\(account)"
            let identity: RunIdentity
            let parts = user.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count == 2, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]), uid <= Int32.max, gid <= Int32.max {
                identity = RunIdentity(uid: uid, gid: gid, name: user)
            } else if parts.count == 1, !user.isEmpty, let found = lookup(user) {
                identity = RunIdentity(uid: found.uid, gid: found.gid, name: user)
            } else {
                problems.append("\(at): '\(user)' is neither a user on this host nor UID:GID")
                continue
            }
            if identity.uid == 0 || identity.gid == 0 {
                problems.append("\(at): '\(user)' is root (uid or gid 0); a tenant's jobs never run as root")
                continue
            }
            if account == "*" { table.fallback = identity } else { table.byAccount[account] = identity }
        }
        return (table, problems)
    }

    /// The user database's uid and primary gid of `name`.
    public static func userDatabase(_ name: String) -> (uid: UInt32, gid: UInt32)? {
        var pw = Glibc.passwd()
        var result: UnsafeMutablePointer<Glibc.passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwnam_r(name, &pw, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return (pw.pw_uid, pw.pw_gid)
    }
}

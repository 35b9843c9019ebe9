import Foundation
import GridAgent
import GridCore
import GridProtocol
import Testing

/// Jobs run as their account's user (agent config `run_as`; docs/security.md, "Tenants").
@Suite struct RunAsTests {
    static let users: [String: (uid: UInt32, gid: UInt32)] = ["svc-a": (2001, 2001), "svc-b": (2002, 2002), "root": (0, 0)]

    @Test func theTableResolvesNamesAndIDsAndRefusesRootAndUnknownUsersByKey() {
        let ok = RunAsTable.resolve(["team-a": "svc-a", "team-b": "3000:3001", "*": "svc-b"], lookup: { Self.users[$0] })
        #expect(ok.problems.isEmpty)
        #expect(ok.table.identity(for: "team-a") == RunIdentity(uid: 2001, gid: 2001, name: "svc-a"))
        #expect(ok.table.identity(for: "team-b")?.shimArgument == "3000:3001")
        #expect(ok.table.identity(for: "someone-else")?.name == "svc-b", "`*` covers every other account")
        #expect(ok.table.dedicatedTo.isEmpty, "with `*` the node takes any account")
        let bad = RunAsTable.resolve(["a": "root", "b": "0:5", "c": "nobody-here", "d": "1:2:3"], lookup: { Self.users[$0] })
        #expect(bad.problems == [
            "run_as.a: 'root' is root (uid or gid 0); a tenant's jobs never run as root",
            "run_as.b: '0:5' is root (uid or gid 0); a tenant's jobs never run as root",
            "run_as.c: 'nobody-here' is neither a user on this host nor UID:GID",
            "run_as.d: '1:2:3' is neither a user on this host nor UID:GID",
        ])
        let dedicated = RunAsTable.resolve(["team-b": "svc-b", "team-a": "svc-a"], lookup: { Self.users[$0] }).table
        #expect(dedicated.dedicatedTo == ["team-a", "team-b"])
        #expect(dedicated.identity(for: "team-c") == nil)
    }

    static func harness(_ table: RunAsTable) -> AgentHarness {
        var h = AgentHarness()
        var s = h.instance.settings
        s.runAs = table
        h.instance = AgentInstance(settings: s, devices: h.instance.currentDevices)
        return h
    }

    @Test func aNodeDedicatedToAccountsSaysSoAndRefusesOtherAccountsJobs() {
        var h = Self.harness(RunAsTable(byAccount: ["team-a": RunIdentity(uid: 2001, gid: 2001, name: "svc-a")]))
        guard case .register(let r) = h.tick().sent.first else { Issue.record("no Register"); return }
        #expect(r.accounts == ["team-a"])
        h.registered()
        var other = AgentHarness.assignment("j-b.1")
        other.account = "team-b"
        let refused = h.receive(.assignment(other))
        #expect(refused.acks.map(\.accepted) == [false])
        #expect(refused.acks.first?.reason.contains("account 'team-b' has no run_as user on node n1") == true)
        #expect(refused.starts.isEmpty)
        var mine = AgentHarness.assignment("j-a.1")
        mine.account = "team-a"
        let out = h.receive(.assignment(mine))
        let start = out.compactMap { d -> (RunIdentity?, [String: String])? in
            if case .start(_, _, _, let env, _, _, let runAs) = d { return (runAs, env) } else { return nil }
        }
        #expect(start.count == 1)
        #expect(start.first?.0 == RunIdentity(uid: 2001, gid: 2001, name: "svc-a"))
        let env = start.first?.1 ?? [:]
        #expect(env["HOME"] == "/data/jobs/work/j-a.1" && env["TMPDIR"] == env["HOME"] && env["GRID_WORK_DIR"] == env["HOME"])
        #expect(env["USER"] == "svc-a")
    }

    @Test func withoutRunAsJobsRunAsTheAgentAndAnyAccountIsTaken() {
        var h = AgentHarness()
        guard case .register(let r) = h.tick().sent.first else { Issue.record("no Register"); return }
        #expect(r.accounts.isEmpty)
        h.registered()
        var a = AgentHarness.assignment("j-x.1")
        a.account = "anyone"
        let out = h.receive(.assignment(a))
        #expect(out.acks.map(\.accepted) == [true])
        #expect(out.contains { if case .start(_, _, _, _, _, _, nil) = $0 { return true } else { return false } })
    }
}

import Foundation
import GridController
import GridCore
import GridProtocol
import GridScheduler
import PropertyBased
import Testing

/// Jobs cannot escape their tenant (issue 11, item 7; docs/security.md, "Tenants"): a key bound
/// to an account submits, sees and controls that account's work only; a node dedicated to
/// accounts takes no other account's job.
@Suite struct TenancyTests {
    static func tenant(_ account: String, right: OperatorRight = .operate) -> Origin {
        Origin(peer: .downstream(identity: Array("gridctl-\(account)".utf8)), sequence: 7, delimited: true,
               principal: .operator(name: "\(account)-user", right: right, tenant: account))
    }

    static func submit(_ h: inout NationalHarness, _ spec: JobSpec, from origin: Origin, id: String = "") -> Wire.SubmitReply? {
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(spec)
        s.jobID = id
        guard case .submitReply(let r) = h.send(.submit(s), from: origin).bodies.last else { return nil }
        return r
    }

    static func error(_ out: [ControllerDirective]) -> Wire.ErrorReply? {
        for b in out.bodies { if case .errorReply(let e) = b { return e } }
        return nil
    }

    @Test func aTenantsKeySubmitsForItsAccountAndSeesAndControlsNothingElse() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 8, total: 8)
        let a = Self.tenant("team-a"), b = Self.tenant("team-b")
        let one = JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1))

        // Unnamed, the job is charged to the key's account; another account is refused.
        let mine = try #require(Self.submit(&h, one, from: a))
        #expect(mine.accepted)
        #expect(h.instance.job(JobID(mine.jobID))?.spec.account == "team-a")
        var other = one
        other.account = "team-b"
        let refused = try #require(Self.submit(&h, other, from: a))
        #expect(!refused.accepted && refused.reason.contains("account 'team-b': this key submits for tenant 'team-a' only"))
        let theirs = try #require(Self.submit(&h, one, from: b, id: "j-b-1"))
        #expect(theirs.accepted)
        // Reusing another tenant's job id does not answer with their job.
        let taken = try #require(Self.submit(&h, one, from: a, id: "j-b-1"))
        #expect(!taken.accepted && taken.reason.contains("job id j-b-1 is taken"))

        // Lists and lookups show the tenant's own jobs; another's is not found, as if absent.
        var q = Wire.Query()
        q.kind = .jobs
        guard case .queryReply(let listA) = h.send(.query(q), from: a).bodies.last else { Issue.record("no reply"); return }
        #expect(listA.jobs.map(\.jobID) == [mine.jobID])
        guard case .queryReply(let listAll) = h.send(.query(q), from: h.client).bodies.last else { Issue.record("no reply"); return }
        #expect(Set(listAll.jobs.map(\.jobID)) == [mine.jobID, "j-b-1"], "an unbound operator sees every job")
        q.kind = .job
        q.jobID = "j-b-1"
        #expect(Self.error(h.send(.query(q), from: a))?.code == "not_found")

        // Cancel and hold of another tenant's job: not found, and the job is untouched.
        var c = Wire.Cancel()
        c.jobID = "j-b-1"
        #expect(Self.error(h.send(.cancel(c), from: a))?.code == "not_found")
        var hold = Wire.JobControl()
        hold.jobID = "j-b-1"
        hold.action = .hold
        hold.reason = "mine now"
        #expect(Self.error(h.send(.jobControl(hold), from: a))?.code == "not_found")
        let b1 = try #require(h.instance.job("j-b-1"))
        #expect(!b1.state.isTerminal && b1.hold == nil && !b1.message.contains("cancel"))
        // Its own job it may cancel.
        c.jobID = mine.jobID
        #expect(Self.error(h.send(.cancel(c), from: a)) == nil)
    }

    @Test func aTenantsServicesAreItsOwnAndANameTakenByAnotherIsRefused() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 8, total: 8)
        let a = Self.tenant("team-a"), b = Self.tenant("team-b")
        func deploy(_ name: String, from origin: Origin) -> [ControllerDirective] {
            var spec = ServiceHarness.spec()
            spec.name = name
            var d = Wire.Deploy()
            d.spec = Wire.ServiceSpec(spec)
            return h.send(.deploy(d), from: origin)
        }
        #expect(Self.error(deploy("chat", from: a)) == nil)
        let taken = try #require(Self.error(deploy("chat", from: b)))
        #expect(taken.code == "forbidden" && taken.message.contains("the name is taken by another account"))
        var q = Wire.Query()
        q.kind = .services
        guard case .queryReply(let seenByB) = h.send(.query(q), from: b).bodies.last else { Issue.record("no reply"); return }
        #expect(seenByB.services.isEmpty)
        guard case .queryReply(let seenByA) = h.send(.query(q), from: a).bodies.last else { Issue.record("no reply"); return }
        #expect(seenByA.services.map(\.spec.name) == ["chat"])
        var scale = Wire.ServiceControl()
        scale.name = "chat"
        scale.action = .scale
        scale.replicas = 0
        #expect(Self.error(h.send(.serviceControl(scale), from: b))?.code == "not_found")
    }

    @Test func aRegionRefusesTenantKeysOutright() {
        var h = RegionHarness()
        var q = Wire.Query()
        q.kind = .jobs
        let e = Self.error(h.send(.query(q), from: Self.tenant("team-a")))
        #expect(e?.code == "forbidden" && e?.message.contains("speaks to the national scheduler only") == true)
    }

    @Test func aDedicatedNodeTakesOnlyItsAccountsJobsAndOthersGoElsewhereOrWait() throws {
        var h = RegionHarness()
        var r = Wire.Register()
        r.nodeID = "gpu-a"
        r.hostname = "gpu-a"
        r.devices = [device("g0", 0)].map(Wire.Device.init)
        r.accounts = ["team-a"]
        let reg = h.send(.register(r))
        #expect(reg.persistedNodes.first?.accounts == ["team-a"], "the dedication is stored with the node")
        var nq = Wire.Query()
        nq.kind = .nodes
        guard case .queryReply(let listed) = h.send(.query(nq), from: Origin(peer: .downstream(identity: Array("ops".utf8)))).bodies.last else {
            Issue.record("no node list"); return
        }
        #expect(listed.nodes.first?.accounts == ["team-a"], "operators see it in gridctl nodes")

        // team-b's job does not go to team-a's node: it waits, and says why.
        var bSpec = JobSpec(name: "b", command: "true", accelerators: AcceleratorRequest(count: 1))
        bSpec.account = "team-b"
        let b = h.forward("j-b", bSpec) + h.tick(advanceMs: 100)
        #expect(b.assignments.isEmpty)
        #expect(h.instance.job("j-b")?.message.contains("dedicated to other accounts") == true, "\(h.instance.job("j-b")?.message ?? "")")
        // team-a's job goes there.
        var aSpec = bSpec
        aSpec.account = "team-a"
        let a = h.forward("j-a", aSpec) + h.tick(advanceMs: 100)
        #expect(a.assignments.map(\.nodeID) == ["gpu-a"])
        #expect(a.assignments.first?.account == "team-a")
        // A shared node comes: team-b's job runs there.
        let shared = h.register("shared", devices: [device("s0", 0)]) + h.tick(advanceMs: 100)
        #expect(shared.assignments.map { "\($0.jobID)@\($0.nodeID)" } == ["j-b@shared"])
    }

    /// Property: whatever the mix of dedicated and shared nodes and accounts, no job is ever
    /// placed on a node dedicated to other accounts, and a job that fits a node it may use is placed.
    @Test func noChoiceEverLandsOnAnotherAccountsNode() async {
        await propertyCheck(count: 60, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SplitMix64(seed: UInt64(seed))
            var index = PlacementIndex()
            let accounts = ["a", "b", "c"]
            var dedication: [NodeID: [String]] = [:]
            var free: [NodeID: Int] = [:]
            for n in 0..<(1 + rng.int(12)) {
                let id = NodeID("n\(n)")
                let only = rng.int(2) == 0 ? [] : [accounts[rng.int(3)]]
                index.setAccounts(node: id, only)
                if !only.isEmpty { dedication[id] = only }
                let count = 1 + rng.int(4)
                free[id] = count
                index.upsert(node: id, devices: (0..<count).map { device("\(id)-\($0)", $0) }, busy: [], schedulable: true)
            }
            for _ in 0..<30 {
                let account = accounts[rng.int(3)]
                let want = AcceleratorRequest(count: rng.int(3))
                let usable = free.filter { dedication[$0.key].map { $0.contains(account) } ?? true }
                switch index.choose(want, account: account) {
                case .placed(let node, let ids):
                    #expect(dedication[node].map { $0.contains(account) } ?? true, "\(account) placed on \(node), dedicated to \(dedication[node] ?? [])")
                    if !ids.isEmpty {
                        index.allocate(node: node, deviceIDs: ids)
                        free[node, default: 0] -= ids.count
                    }
                default:
                    // Waiting while a node it may use has room would be a lost placement.
                    #expect(!usable.contains { $0.value >= want.count }, "\(account) wants \(want.count), waits although \(usable) has room")
                }
            }
        }
    }
}

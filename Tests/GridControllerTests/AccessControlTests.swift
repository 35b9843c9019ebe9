import Foundation
import GridController
import GridCore
import GridProtocol
import GridTransport
import Logging
import Testing

/// The rules of who may say what (docs/security.md), pure, and the authorized_keys file.
@Suite struct AccessControlTests {
    @Test func theFileReadsKeysRolesAndCommentsAndNamesEveryMistakeWithItsLine() throws {
        let a = try CurveKeyPair.generate().publicKey, r = try CurveKeyPair.generate().publicKey
        // '#' is a Z85 character: a key holding one must not be cut at it as if a comment began.
        var hashKey = try CurveKeyPair.generate().publicKey
        while !hashKey.contains("#") { hashKey = try CurveKeyPair.generate().publicKey }
        let list = try AccessList.parse("""
            # who may connect
            \(a)  agent  node-1,node-2   # two nodes on one host
            \(r)\tregion\teast
            \(hashKey) operator alice operate
            """, source: "keys")
        #expect(list.keys[a] == .agent(nodes: ["node-1", "node-2"]))
        #expect(list.keys[r] == .region("east"))
        #expect(list.keys[hashKey] == .operator(name: "alice", right: .operate))
        #expect {
            _ = try AccessList.parse("""
                \(a) agent
                short agent n
                \(a) agent n1
                \(a) agent n2
                \(r) operator bob root
                \(hashKey) region has space?
                """, source: "keys")
        } throws: { error in
            let m = "\(error)"
            return m.contains("line 1: want '<key> agent|region|operator <name> [right]', got 2 field(s)")
                && m.contains("line 2: 'short' is not a CURVE public key") && m.contains("line 4: key \(a.prefix(8))… is listed twice")
                && m.contains("line 5: an operator line is '<key> operator <name> read|submit|operate|admin [tenant=<account>]'")
                && m.contains("line 6: a region line is '<key> region <region id>'")
        }
    }

    static func query(_ kind: Wire.Query.Kind) -> Body { var q = Wire.Query(); q.kind = kind; return .query(q) }
    static func heartbeat(_ node: String) -> Body { var h = Wire.Heartbeat(); h.nodeID = node; return .heartbeat(h) }
    static func summary(_ region: String) -> Body { var s = Wire.RegionSummary(); s.regionID = region; return .regionSummary(s) }
    static func batch(_ regions: String...) -> Body {
        var b = Wire.StatusBatch()
        b.updates = regions.map { var u = Wire.StatusUpdate(); u.regionID = $0; return u }
        return .statusBatch(b)
    }

    @Test(arguments: [
        (Principal.agent(nodes: ["n1"]), heartbeat("n1"), nil),
        (Principal.agent(nodes: ["n1"]), heartbeat("n2"), "may not speak for node 'n2' (Heartbeat.node_id)"),
        (Principal.agent(nodes: ["n1"]), Body.submit(Wire.Submit()), "an agent key may not send submit"),
        (Principal.region("east"), summary("east"), nil),
        (Principal.region("east"), summary("west"), "may not speak for region 'west' (RegionSummary.region_id)"),
        (Principal.region("east"), Body.jobControl(Wire.JobControl()), "a region key may not send jobControl"),
        (Principal.region("east"), batch("east", "east"), nil),
        (Principal.region("east"), batch("east", "west"), "may not speak for region 'west' (StatusBatch.updates[1].region_id)"),
        (Principal.agent(nodes: ["n1"]), batch(), "an agent key may not send statusBatch"),
        (Principal.operator(name: "bob", right: .submit), Body.submit(Wire.Submit()), nil),
        (Principal.operator(name: "bob", right: .submit), Body.query(Wire.Query()), nil),
        (Principal.operator(name: "bob", right: .submit), Body.nodeCommand(Wire.NodeCommand()), "nodeCommand needs the 'operate' right (this key has 'submit')"),
        (Principal.operator(name: "ops", right: .operate), Body.deploy(Wire.Deploy()), nil),
        (Principal.operator(name: "root", right: .admin), Body.serviceControl(Wire.ServiceControl()), nil),
        (Principal.operator(name: "root", right: .admin), heartbeat("n1"), "an operator key may not send heartbeat"),
        // A tenant's key: its own work through the national scheduler, nothing of the fleet.
        (Principal.operator(name: "ana", right: .operate, tenant: "team-a"), Body.submit(Wire.Submit()), nil),
        (Principal.operator(name: "ana", right: .operate, tenant: "team-a"), Body.cancel(Wire.Cancel()), nil),
        (Principal.operator(name: "ana", right: .operate, tenant: "team-a"), query(.jobs), nil),
        (Principal.operator(name: "ana", right: .operate, tenant: "team-a"), query(.services), nil),
        (Principal.operator(name: "ana", right: .operate, tenant: "team-a"), query(.nodes),
         "a key bound to tenant 'team-a' may query jobs, job, regions and services only, not nodes"),
        (Principal.operator(name: "ana", right: .operate, tenant: "team-a"), query(.audit),
         "a key bound to tenant 'team-a' may query jobs, job, regions and services only, not audit"),
        (Principal.operator(name: "ana", right: .operate, tenant: "team-a"), Body.nodeCommand(Wire.NodeCommand()),
         "a key bound to tenant 'team-a' may not send nodeCommand (the fleet is the operators' business)"),
        (Principal.operator(name: "ana", right: .operate, tenant: "team-a"), Body.regionControl(Wire.RegionControl()),
         "a key bound to tenant 'team-a' may not send regionControl (the fleet is the operators' business)"),
        (Principal.operator(name: "ana", right: .submit, tenant: "team-a"), Body.jobControl(Wire.JobControl()),
         "jobControl needs the 'operate' right (this key has 'submit')"),
    ] as [(Principal, Body, String?)])
    func eachKeyMaySayOnlyWhatItsRoleAllows(_ who: Principal, _ body: Body, _ refusal: String?) {
        #expect(AccessControl.check(body, who) == refusal)
    }

    @Test func anOperatorLineMayBindTheKeyToATenantAndEveryMistakeInItIsNamed() throws {
        let a = try CurveKeyPair.generate().publicKey, b = try CurveKeyPair.generate().publicKey
        let list = try AccessList.parse("\(a) operator ana operate tenant=team-a\n\(b) operator bob submit\n", source: "keys")
        #expect(list.keys[a] == .operator(name: "ana", right: .operate, tenant: "team-a"))
        #expect(list.keys[a]?.tenant == "team-a" && list.keys[b]?.tenant == nil)
        #expect(list.keys[a]?.label == "operator ana (operate, tenant team-a)")
        #expect {
            _ = try AccessList.parse("""
                \(a) operator root admin tenant=team-a
                \(b) agent n1 tenant=team-a
                """, source: "keys")
        } throws: { error in
            let m = "\(error)"
            return m.contains("line 1: tenant=team-a: an admin key acts for the whole controller")
                && m.contains("line 2: tenant=team-a: only an operator key is bound to a tenant")
        }
        #expect(throws: ConfigError.self) { _ = try AccessList.parse("\(a) operator ana submit tenant=bad/name\n", source: "keys") }
        #expect(throws: ConfigError.self) { _ = try AccessList.parse("\(a) operator ana submit tenant=x extra\n", source: "keys") }
    }

    @Test func aRevokedKeyIsRefusedFromItsNextMessageAndOnlyCURVEKeysThatAreListedGetIn() throws {
        let k = try CurveKeyPair.generate().publicKey
        let access = AccessControl(AccessList(keys: [k: .agent(nodes: ["n1"])]), logger: Logger(label: "test"))
        #expect(access.authenticate(ZAPRequest(domain: "computegrid", address: "10.0.0.1", mechanism: "CURVE", clientKey: k)) == .allow(userID: k))
        guard case .deny(let why) = access.authenticate(ZAPRequest(domain: "computegrid", address: "10.0.0.9", mechanism: "NULL")) else {
            Issue.record("NULL let in"); return
        }
        #expect(why.contains("NULL connection from 10.0.0.9 refused: this controller accepts CURVE only"))
        #expect(access.authorize(Self.heartbeat("n1"), user: k) == nil)
        access.replace(AccessList())
        #expect(access.authorize(Self.heartbeat("n1"), user: k)?.contains("is no longer authorized") == true)
        #expect(access.refused["revoked"] == 1 && access.refused["mechanism"] == 1)
        #expect(access.authorize(Self.heartbeat("n1"), user: nil) == nil, "no authentication on the socket: nothing to check")
    }
}

import Foundation
import GridCLI
import GridCore
import GridProtocol
import GridTransport
import Synchronization
import Testing

extension EndToEnd {
/// CURVE and ZAP through the real executables (issue 11, items 2 and 3; docs/security.md): keys
/// from `gridctl keys generate`, controllers that let in only their authorized_keys, agents
/// and gridctl that pin the controller's key. Refused: NULL and PLAIN clients, an unknown key,
/// node A's key speaking for node B, an operator without the right; revoked on SIGHUP.
@Suite(.serialized) struct SecurityEndToEndTests {
    @Test func onlyAuthorizedKeysGetInAndEachSpeaksOnlyForItself() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let gridctl = Cluster.binDir.appendingPathComponent("gridctl").path
        let pub = try c.generateKeys(["national", "r1", "node-a", "node-b", "node-c", "rogue", "alice", "bob"])
        let again = try Cluster.run(gridctl, ["keys", "generate", "alice", "--dir", c.keysDir.path])
        #expect(again.status != 0 && again.output.contains("exists"), "a key is never overwritten: \(again.output)")
        func file(_ name: String, _ lines: [String]) throws -> String { try c.writeFile(name, lines) }
        func key(_ name: String) -> String { c.keyFile(name) }
        func pubFile(_ name: String) -> String { c.pubFile(name) }
        let nationalKeys = try file("national-keys", ["# who may connect to the national scheduler",
                                                      "\(pub["r1"]!) region r1", "\(pub["alice"]!) operator alice admin",
                                                      "\(pub["bob"]!) operator bob submit"])
        let regionLines = ["\(pub["node-a"]!) agent node-a", "\(pub["node-b"]!) agent node-b", "\(pub["alice"]!) operator alice admin"]
        let regionKeys = try file("r1-keys", regionLines)
        let regionConfig = try file("r1.yaml", ["node_lost_after_ms: 3000", "heartbeat_interval_ms: 500", "summary_interval_ms: 300"])

        c.environment = ["GRID_CONTROLLER_KEY_FILE": key("national"), "GRID_CONTROLLER_AUTHORIZED_KEYS": nationalKeys]
        try c.startNational()
        c.environment = ["GRID_CONTROLLER_KEY_FILE": key("r1"), "GRID_CONTROLLER_AUTHORIZED_KEYS": regionKeys,
                         "GRID_CONTROLLER_NATIONAL_KEY": pubFile("national")]
        try c.startRegion("r1", extra: ["--config", regionConfig])
        for node in ["node-a", "node-b", "node-c", "rogue"] {
            c.environment = ["GRID_AGENT_KEY_FILE": key(node), "GRID_AGENT_REGION_KEY": pubFile("r1")]
            try c.startAgent(node, region: "r1", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        }
        c.environment = [:]

        let alice = try GridClient(endpoint: c.nationalEndpoint, curve: (pub["national"]!, try CurveKeyFile.readPair(key("alice"))))
        // The region reaches the national scheduler over CURVE; both enrolled agents register; the rogue never does.
        let nodes = try c.eventually(30, "node-a and node-b ready at the national scheduler") { () -> [Wire.NodeBrief]? in
            let all = try alice.allNodes()
            return all.filter { $0.state == "ready" }.count == 2 ? all : nil
        }
        #expect(Set(nodes.map(\.nodeID)) == ["node-a", "node-b"], "the rogue agent's key is not listed: \(nodes.map(\.nodeID))")
        try await Task.sleep(for: .seconds(1))
        #expect(!(try alice.allNodes()).contains { $0.nodeID == "rogue" })
        #expect(c.log("r1").contains("unknown key \(pub["rogue"]!.prefix(8))"), "the refusal is logged with its reason")

        // Work runs end to end through authenticated links, submitted by gridctl with a key.
        let submitted = try Cluster.run(gridctl, ["submit", "--key", key("alice"), "--server-key", pubFile("national"),
                                                  "--controller", c.nationalEndpoint, try file("job.yaml", ["name: hello", "command: /bin/echo", "args: [hi]"])])
        #expect(submitted.status == 0, "\(submitted.output)")
        _ = try c.eventually(60, "hello ran") { try alice.jobs().first { $0.spec.name == "hello" && $0.state == .succeeded } }

        // No key (NULL) and PLAIN get nothing: no answer, nothing reaches the scheduler.
        #expect(throws: ClientError.self) { _ = try GridClient(endpoint: c.nationalEndpoint).query(.regions, timeout: 1) }
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let plain = try ZMQSocket(ctx, .dealer)
        defer { plain.close() }
        try plain.setPlainClient(username: "admin", password: "admin")
        try plain.connect(c.nationalEndpoint)
        var q = Wire.Query()
        q.kind = .regions
        _ = try plain.send([EnvelopeCodec().encode(Message(sender: "plain", sequence: 1, body: .query(q)))], dontWait: true)
        #expect(try poll([plain.pollItem], timeoutMs: 1000) == [false])
        // A client that pins the wrong server key gets nothing either (it cannot be fooled by an impostor).
        #expect(throws: ClientError.self) {
            _ = try GridClient(endpoint: c.nationalEndpoint, curve: (pub["r1"]!, try CurveKeyFile.readPair(key("alice")))).query(.regions, timeout: 1)
        }

        // Rights: bob may submit and read, not operate.
        let bob = try GridClient(endpoint: c.nationalEndpoint, curve: (pub["national"]!, try CurveKeyFile.readPair(key("bob"))))
        #expect(try bob.query(.regions).regions.count == 1)
        #expect {
            _ = try bob.nodeCommand(.cordon, node: "node-a", region: "r1", reason: "bob tries")
        } throws: { "\($0)".contains("forbidden") && "\($0)".contains("needs the 'operate' right") }

        // Node A's key cannot speak for node B, neither by node id nor by node B's assignment.
        let asA = try GridClient(endpoint: try #require(c.regionEndpoints["r1"]), curve: (pub["r1"]!, try CurveKeyFile.readPair(key("node-a"))))
        var hb = Wire.Heartbeat()
        hb.nodeID = "node-b"
        #expect {
            _ = try asA.request(.heartbeat(hb))
        } throws: { "\($0)".contains("forbidden") && "\($0)".contains("may not speak for node 'node-b'") }
        #expect(try alice.allNodes().first { $0.nodeID == "node-b" }?.state == "ready", "node B is unaffected")

        // Revoked: node-b's line taken out and SIGHUP — its next heartbeats are refused, and it is lost.
        try (regionLines.filter { !$0.contains("node-b") }.joined(separator: "\n") + "\n").write(toFile: regionKeys, atomically: true, encoding: .utf8)
        kill(try #require(c.daemon("r1")).process.processIdentifier, SIGHUP)
        _ = try c.eventually(30, "node-b lost after its key was revoked") {
            try alice.allNodes().first { $0.nodeID == "node-b" && $0.state == "lost" }
        }
        #expect(c.log("r1").contains("is no longer authorized"))
        #expect(try alice.allNodes().first { $0.nodeID == "node-a" }?.state == "ready", "the others keep going")

        // Every refusal is counted by reason, and gridctl reads the counts.
        func counters(_ endpoint: String, _ server: String) throws -> [String: UInt64] {
            let out = try Cluster.run(gridctl, ["counters", "-o", "json", "--key", key("alice"), "--server-key", pubFile(server), "--controller", endpoint])
            #expect(out.status == 0, "\(out.output)")
            let rows = try JSONSerialization.jsonObject(with: Data(out.output.utf8)) as? [[String: Any]] ?? []
            return Dictionary(uniqueKeysWithValues: rows.compactMap { r in (r["counter"] as? String).map { ($0, (r["value"] as? NSNumber)?.uint64Value ?? 0) } })
        }
        let atNational = try counters(c.nationalEndpoint, "national")
        // NULL and PLAIN fail at the ZMTP greeting (the mechanisms differ) before any ZAP
        // request; the socket's monitor sees them.
        #expect((atNational["refused.forbidden"] ?? 0) >= 1, "bob's cordon: \(atNational)")
        #expect((atNational["refused.mechanism"] ?? 0) + (atNational["refused.handshake"] ?? 0) >= 2,
                "the NULL and PLAIN clients: \(atNational)")
        let atRegion = try counters(try #require(c.regionEndpoints["r1"]), "r1")
        #expect((atRegion["refused.unknown_key"] ?? 0) >= 1 && (atRegion["refused.forbidden"] ?? 0) >= 1 && (atRegion["refused.revoked"] ?? 0) >= 1,
                "the rogue agent, node A for node B, the revoked key: \(atRegion)")
        #expect((atRegion["received.heartbeat"] ?? 0) > 0)

        // Enrolment at the running region by an admin key: node-c gets in; revoked, it is lost again.
        let regionEndpoint = try #require(c.regionEndpoints["r1"])
        func gridctlAt(_ endpoint: String, _ server: String, as who: String, _ args: [String]) throws -> (status: Int32, output: String) {
            try Cluster.run(gridctl, args + ["--key", key(who), "--server-key", pubFile(server), "--controller", endpoint])
        }
        #expect(!(try alice.allNodes()).contains { $0.nodeID == "node-c" }, "node-c's key is not listed yet")
        let enrolled = try gridctlAt(regionEndpoint, "r1", as: "alice", ["keys", "enroll", pubFile("node-c"), "--role", "agent", "--name", "node-c"])
        #expect(enrolled.status == 0 && enrolled.output.contains("enrolled"), "\(enrolled.output)")
        _ = try c.eventually(30, "node-c ready once enrolled") { try alice.allNodes().first { $0.nodeID == "node-c" && $0.state == "ready" } }
        let byBob = try gridctlAt(c.nationalEndpoint, "national", as: "bob", ["keys", "enroll", pubFile("rogue"), "--role", "agent", "--name", "rogue"])
        #expect(byBob.status != 0 && byBob.output.contains("needs the 'admin' right"), "\(byBob.output)")
        let fileKey = try gridctlAt(regionEndpoint, "r1", as: "alice", ["keys", "revoke", pubFile("node-a")])
        #expect(fileKey.status != 0 && fileKey.output.contains("listed in authorized_keys"), "\(fileKey.output)")
        let revoked = try gridctlAt(regionEndpoint, "r1", as: "alice", ["keys", "revoke", pubFile("node-c")])
        #expect(revoked.status == 0 && !revoked.output.contains("node-c"), "\(revoked.output)")
        _ = try c.eventually(30, "node-c lost once revoked") { try alice.allNodes().first { $0.nodeID == "node-c" && $0.state == "lost" } }

        // The audit log says who did what, at each controller.
        func audit(_ endpoint: String, _ server: String) throws -> [[String: Any]] {
            let out = try gridctlAt(endpoint, server, as: "alice", ["audit", "-o", "json"])
            #expect(out.status == 0, "\(out.output)")
            return try JSONSerialization.jsonObject(with: Data(out.output.utf8)) as? [[String: Any]] ?? []
        }
        let nationalAudit = try audit(c.nationalEndpoint, "national")
        #expect(nationalAudit.contains { $0["who"] as? String == "operator alice (admin)" && $0["action"] as? String == "submit" }, "\(nationalAudit)")
        let regionAudit = try audit(regionEndpoint, "r1")
        #expect(regionAudit.contains { ($0["detail"] as? String)?.hasPrefix("enroll agent node-c") == true && $0["who"] as? String == "operator alice (admin)" }, "\(regionAudit)")
        #expect(regionAudit.contains { $0["detail"] as? String == "revoke agent node-c" }, "\(regionAudit)")
    }

    @Test func aControllerWithAKeyButNoListOrABadListDoesNotStart() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let gridctl = Cluster.binDir.appendingPathComponent("gridctl").path
        _ = try Cluster.run(gridctl, ["keys", "generate", "n", "--dir", c.dir.path])
        let key = c.dir.appendingPathComponent("n.key").path
        let controller = Cluster.binDir.appendingPathComponent("grid-controller").path
        let noList = try Cluster.run(controller, ["--role", "national", "--bind", "tcp://127.0.0.1:*", "--data-dir", c.dir.path],
                                     environment: ["GRID_CONTROLLER_KEY_FILE": key, "GRID_CONTROLLER_HTTP": "off"])
        #expect(noList.status == 2 && noList.output.contains("authorized_keys: required with key_file"), "\(noList.output)")
        let bad = c.dir.appendingPathComponent("bad-keys")
        try "not-a-key operator x admin\n\(String(repeating: "a", count: 40)) wizard x\n".write(to: bad, atomically: true, encoding: .utf8)
        let badList = try Cluster.run(controller, ["--role", "national", "--bind", "tcp://127.0.0.1:*", "--data-dir", c.dir.path],
                                      environment: ["GRID_CONTROLLER_KEY_FILE": key, "GRID_CONTROLLER_AUTHORIZED_KEYS": bad.path,
                                                    "GRID_CONTROLLER_HTTP": "off"])
        #expect(badList.status != 0 && badList.output.contains("line 1: 'not-a-key' is not a CURVE public key")
                && badList.output.contains("line 2: role 'wizard' is not one of agent, region, operator"), "\(badList.output)")
        chmod(key, 0o644)
        let open = try Cluster.run(controller, ["--role", "national", "--bind", "tcp://127.0.0.1:*", "--data-dir", c.dir.path],
                                   environment: ["GRID_CONTROLLER_KEY_FILE": key, "GRID_CONTROLLER_AUTHORIZED_KEYS": bad.path,
                                                 "GRID_CONTROLLER_HTTP": "off"])
        #expect(open.status != 0 && open.output.contains("chmod 600"), "\(open.output)")
    }
}

/// Issue 11, item 5: a submit gridctl has to send again (the scheduler was stopped while it
/// waited) makes one job, not two.
@Suite(.serialized) struct IdempotentSubmitEndToEndTests {
    @Test func gridctlsResendsOfASubmitMakeOneJob() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        let job = c.dir.appendingPathComponent("once.yaml")
        try "name: once\ncommand: /bin/true\naccelerators: {count: 0}\n".write(to: job, atomically: true, encoding: .utf8)
        let national = try #require(c.daemon("national")).process.processIdentifier
        _ = try c.client().query(.regions)
        kill(national, SIGSTOP)
        let result = Mutex<(status: Int32, output: String)?>(nil)
        let done = DispatchSemaphore(value: 0)
        let endpoint = c.nationalEndpoint
        DispatchQueue.global().async {
            let r = try? Cluster.run(Cluster.binDir.appendingPathComponent("gridctl").path,
                                     ["submit", job.path, "--timeout", "20", "--controller", endpoint])
            result.withLock { $0 = r }
            done.signal()
        }
        Thread.sleep(forTimeInterval: 3.5)  // gridctl sends again every second meanwhile
        kill(national, SIGCONT)
        #expect(done.wait(timeout: .now() + 30) == .success)
        let r = try #require(result.withLock { $0 })
        #expect(r.status == 0, "\(r.output)")
        let jobs = try c.client().jobs().filter { $0.spec.name == "once" }
        #expect(jobs.count == 1, "one job for one submit, however often it was sent: \(jobs.map(\.id))")
        #expect(jobs.first.map { r.output.contains($0.id.rawValue) } == true, "gridctl printed the id it made: \(r.output)")
        var q = Wire.Query()
        q.kind = .counters
        guard case .queryReply(let counts) = try c.client().request(.query(q)) else { Issue.record("no counters"); return }
        #expect((counts.counters["received.submit"] ?? 0) >= 2, "the submit was sent more than once: \(counts.counters)")
    }
}

/// Issue 11, item 4: an agent with CURVE on runs only assignments its region signed, unexpired,
/// and each once. The test plays the region (it holds the region's keys) so it can send what a
/// real region never would: forged, unsigned, expired, altered and replayed assignments.
@Suite(.serialized) struct SignedAssignmentEndToEndTests {
    @Test func onlyValidSignedUnexpiredAssignmentsRunAndEachOnce() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let keys = c.dir.appendingPathComponent("keys").path
        let gridctl = Cluster.binDir.appendingPathComponent("gridctl").path
        for name in ["r1", "node-a", "other"] { _ = try Cluster.run(gridctl, ["keys", "generate", name, "--dir", keys]) }
        let r1 = try CurveKeyFile.readPair(keys + "/r1.key")
        let signer = try AssignmentSigner(seed: try #require(try CurveKeyFile.readSigningSeed(keys + "/r1.key")))
        let impostor = try AssignmentSigner(seed: try #require(try CurveKeyFile.readSigningSeed(keys + "/other.key")))

        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let region = try ZMQSocket(ctx, .router)
        defer { region.close() }
        try region.setCurveServer(secretKey: r1.secretKey)
        try region.bind("tcp://127.0.0.1:*")
        let endpoint = try region.lastEndpoint()
        c.environment = ["GRID_AGENT_KEY_FILE": keys + "/node-a.key", "GRID_AGENT_REGION_KEY": keys + "/r1.pub"]
        try c.start("node-a", "grid-agent", ["run", "--node-id", "node-a", "--region", endpoint, "--data-dir", c.dir.appendingPathComponent("node-a").path,
                                             "--simulate", Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_tesla-t4_v11.xml").path])
        let codec = EnvelopeCodec()
        var agent: [UInt8]?
        var acks: [String: Wire.AssignmentAck] = [:]
        var finished: Set<String> = []
        var seq: UInt64 = 0
        /// Reads what the agent sends for up to `seconds` or until `done`; acknowledges its statuses.
        func pump(_ seconds: Double, until done: () -> Bool = { false }) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline && !done() {
                guard try poll([region.pollItem], timeoutMs: 50)[0], let frames = try region.receive(dontWait: true), frames.count == 2 else { continue }
                agent = frames[0]
                guard let m = try? codec.decode(frames[1]) else { continue }
                switch m.body {
                case .assignmentAck(let a): acks[a.assignmentID] = a
                case .statusUpdate(let u):
                    if ["succeeded", "failed"].contains(u.state) { finished.insert(u.assignmentID) }
                    var ack = Wire.StatusAck()
                    ack.updateID = u.updateID
                    ack.applied = true
                    seq += 1
                    _ = try region.send([frames[0], codec.encode(Message(sender: "r1", sequence: seq, replyTo: m.sequence, body: .statusAck(ack)))])
                default: break
                }
            }
        }
        try pump(30) { agent != nil }
        let peer = try #require(agent, "the agent connected over CURVE to the key it pins")
        let marker = c.dir.appendingPathComponent("ran").path
        func assignment(_ id: String) -> Wire.Assignment {
            var a = Wire.Assignment()
            a.assignmentID = "\(id).1"
            a.epoch = 1
            a.jobID = id
            a.nodeID = "node-a"
            a.command = "/bin/sh"
            a.args = ["-c", "echo \(id) >> \(marker)"]
            a.attempt = 1
            return a
        }
        func send(_ a: Wire.Assignment) throws {
            seq += 1
            _ = try region.send([peer, codec.encode(Message(sender: "r1", sequence: seq, body: .assignment(a)))])
        }
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        var altered = try signer.signed(assignment("altered"), nowMs: now)
        altered.args = ["-c", "echo altered >> \(marker); echo pwned"]
        let refused: [(String, Wire.Assignment, String)] = [
            ("forged", try impostor.signed(assignment("forged"), nowMs: now), "does not verify"),
            ("unsigned", assignment("unsigned"), "unsigned"),
            ("expired", try signer.signed(assignment("expired"), nowMs: now - 600_000), "expired"),
            ("altered", altered, "does not verify"),
        ]
        for (_, a, _) in refused { try send(a) }
        let good = try signer.signed(assignment("good"), nowMs: now)
        try send(good)
        try pump(30) { acks.count == 5 && finished.contains("good.1") }
        for (name, _, why) in refused {
            let ack = try #require(acks["\(name).1"], "\(name) answered")
            #expect(!ack.accepted && ack.reason.contains(why), "\(name): \(ack.reason)")
        }
        #expect(acks["good.1"]?.accepted == true && finished.contains("good.1"))
        // Replayed (the same signed message again, still unexpired): acknowledged, not run again.
        acks["good.1"] = nil
        try send(good)
        try pump(10) { acks["good.1"] != nil }
        #expect(acks["good.1"]?.accepted == true)
        try pump(1)
        let ran = try String(contentsOfFile: marker, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(ran == ["good"], "only the valid assignment ran, once: \(ran)")
        #expect(c.log("node-a").contains("refused assignment forged.1: signature does not verify"))

        // Fail closed: an agent with CURVE on but no way to verify signatures does not start.
        let blind = try Cluster.run(Cluster.binDir.appendingPathComponent("grid-agent").path,
                                    ["run", "--node-id", "node-b", "--region", endpoint, "--data-dir", c.dir.appendingPathComponent("node-b").path,
                                     "--simulate", Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_tesla-t4_v11.xml").path],
                                    environment: ["GRID_AGENT_KEY_FILE": keys + "/node-a.key", "GRID_AGENT_REGION_KEY": r1.publicKey, "GRID_AGENT_HTTP": "off"])
        #expect(blind.status != 0 && blind.output.contains("no 'signing:' line"), "\(blind.output)")
    }
}
}

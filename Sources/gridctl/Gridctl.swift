import ArgumentParser
import Foundation
import GridCLI
import GridCore
import GridDaemon
import GridProtocol
import GridTransport
import SwiftProtobuf

@main
struct Gridctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gridctl",
        abstract: "Submit work to a ComputeGrid network and see where it ran.",
        version: BuildInfo.line,
        subcommands: [Submit.self, Jobs.self, Job.self, Explain.self, Cancel.self, Hold.self, Release.self, Requeue.self, Nodes.self, Node.self, Accounts.self, Cordon.self, Uncordon.self, Drain.self, Regions.self, Wait.self, Deploy.self, Services.self, ServiceShow.self, Scale.self, Rollout.self, Undeploy.self,
                      Counters.self, Audit.self, Keys.self, Completion.self])
}

/// `gridctl completion bash|zsh|fish`: the shell completion script, to install where the shell
/// looks (bash: /usr/share/bash-completion/completions/gridctl; zsh: a directory on $fpath as
/// _gridctl; fish: ~/.config/fish/completions/gridctl.fish). `make install` installs all three.
struct Completion: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the shell completion script for bash, zsh or fish.",
        discussion: "bash: gridctl completion bash > /usr/share/bash-completion/completions/gridctl")
    @Argument(help: "bash, zsh or fish") var shell: String

    func run() throws {
        guard let kind = CompletionShell(rawValue: shell) else {
            throw ValidationError("'\(shell)' is not a shell gridctl completes: use bash, zsh or fish")
        }
        print(Gridctl.completionScript(for: kind))
    }
}

struct ControllerOptions: ParsableArguments {
    @Option(name: .long, help: "Controller endpoint (default: $GRID_CONTROLLER or tcp://127.0.0.1:7700, the national scheduler).")
    var controller: String?
    @Option(help: "Seconds to wait for an answer.")
    var timeout: Double = 5
    @Flag(help: "Print JSON for scripts instead of a table (same as -o json).")
    var json = false
    @Option(name: [.short, .customLong("output")], help: "table, wide (every column, nothing cut), json or yaml.")
    var output: OutputFormat?
    @Option(help: "Columns to show, comma-separated (e.g. job,state,node); names as in the header.")
    var columns: String?
    @Option(help: ArgumentHelp("Your CURVE key pair (a .key file from gridctl keys generate), for a controller with CURVE on (default: $GRID_KEY_FILE).", valueName: "file"))
    var key: String?
    @Option(name: .customLong("server-key"), help: ArgumentHelp("The controller's public key: 40 Z85 characters or its .pub file (default: $GRID_SERVER_KEY).", valueName: "key"))
    var serverKey: String?

    /// How to print: -o, else --json, else a table; colours only on a terminal without NO_COLOR.
    var printer: Printer {
        Printer(format: output ?? (json ? .json : .table),
                columns: columns.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } },
                colour: Printer.colourWanted())
    }

    func validate() throws {
        guard timeout.isFinite, (0.01...3600).contains(timeout) else {
            throw ValidationError("--timeout: seconds, 0.01…3600, got \(timeout)")
        }
    }

    var endpoint: String {
        controller ?? ProcessInfo.processInfo.environment["GRID_CONTROLLER"].flatMap { $0.isEmpty ? nil : $0 } ?? "tcp://127.0.0.1:7700"
    }

    func client() throws -> GridClient {
        let env = ProcessInfo.processInfo.environment
        let keyFile = key ?? env["GRID_KEY_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        let server = serverKey ?? env["GRID_SERVER_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        guard let keyFile else {
            if server != nil { throw fail("--server-key needs --key (your own key pair) as well") }
            return try GridClient(endpoint: endpoint)
        }
        guard let server else { throw fail("--key needs --server-key (the controller's public key) as well") }
        do {
            return try GridClient(endpoint: endpoint, curve: (try CurveKeyFile.readPublic(server), try CurveKeyFile.readPair(keyFile)))
        } catch let e as KeyFileError {
            throw fail("\(e)")
        }
    }

    /// Sends `body` and returns the QUERY_REPLY that answers it (anything else is an error).
    func queryReply(_ body: Body) throws -> Wire.QueryReply {
        guard case .queryReply(let r) = try client().request(body, timeout: timeout) else {
            throw ClientError("\(endpoint) answered with something else")
        }
        return r
    }

    /// One job as the controller knows it; exits 1 when it does not.
    func job(_ id: String) throws -> JobRecord {
        guard let job = try client().query(.job, job: id, timeout: timeout).jobs.first?.record() else { throw fail("job \(id) not found") }
        return job
    }
}

func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("gridctl: \(message)\n".utf8))
    return ExitCode(1)
}

func printJSON<T: Encodable>(_ value: T) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    e.dateEncodingStrategy = .iso8601
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit job files (YAML) to the national scheduler.",
        discussion: """
            All files go in one request, accepted in one transaction. A file with `count: N`, or \
            --array N, submits a job array of N jobs with ids <id>-0 ... <id>-(N-1). For many jobs, \
            use one gridctl call with many files or an array rather than a shell loop: each gridctl \
            process costs ~40 ms to start.
            """)
    @OptionGroup var options: ControllerOptions
    @Option(help: "Job id to use (retrying a submit with the same id never creates a second job). With an array: the ids' prefix. Without it gridctl makes one per file (j-<time>-<random>), so its own resends never create a second job.")
    var id: String?
    @Option(help: "Submit each file as an array of this many jobs (overrides the file's count).")
    var array: Int?
    @Argument(help: "Job files.") var files: [String]

    func run() throws {
        if id != nil && files.count > 1 { throw fail("--id applies to one job file, got \(files.count)") }
        if let array, !(1...JobFile.maxArray).contains(array) { throw fail("--array must be 1...\(JobFile.maxArray), got \(array)") }
        var items: [(spec: JobSpec, count: Int, id: JobID?)] = []
        var failed = false
        for file in files {
            do {
                let text: String
                do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                    throw ClientError("cannot read \(file): \(error.localizedDescription)")
                }
                let entry = try JobFile.parseEntry(text, source: file)
                // Always a job id: the request can then be sent again without making a second job.
                items.append((entry.spec, array ?? entry.count, id.map(JobID.init) ?? GridClient.newJobID()))
            } catch {
                failed = true
                FileHandle.standardError.write(Data("gridctl: \(error)\n".utf8))
            }
        }
        if failed { throw ExitCode(1) }
        let reply: Wire.SubmitReply
        do {
            let total = items.reduce(0) { $0 + $1.count }
            reply = try options.client().submitBatch(items, timeout: max(options.timeout, Double(total) / 2000))
        } catch { throw fail("\(error)") }
        if options.json {
            try printJSON(reply.results.map { ["job_id": $0.jobID, "accepted": String($0.accepted), "region": $0.regionID, "reason": $0.reason] })
        } else if reply.results.count > 50 {
            let ok = reply.results.filter(\.accepted)
            print("\(ok.count) of \(reply.results.count) jobs accepted (\(ok.first?.jobID ?? "-") ... \(ok.last?.jobID ?? "-"))")
            for r in reply.results where !r.accepted { print("\(r.jobID.isEmpty ? "-" : r.jobID): rejected: \(r.reason)") }
        } else {
            for r in reply.results { print(r.accepted ? "\(r.jobID)  \(r.reason)" : "\(r.jobID.isEmpty ? "-" : r.jobID): rejected: \(r.reason)") }
        }
        if !reply.accepted || reply.results.contains(where: { !$0.accepted }) { throw ExitCode(1) }
    }
}

struct Jobs: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs: state, region, node, devices and how they ended.")
    @OptionGroup var options: ControllerOptions
    func run() throws {
        do {
            let jobs = try options.client().jobs(timeout: options.timeout)
            print(try options.printer.list(jobs, Columns.jobs))
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Job: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one job: its state, every attempt to run it, and its output tail.")
    @OptionGroup var options: ControllerOptions
    @Argument var id: String
    func run() throws {
        do {
            let job = try options.job(id)
            if let text = try options.printer.record(job) { print(text); return }
            print(Table.detail(job))
            if !job.attempts.isEmpty { print("\n" + Table.attempts(job)) }
            if !job.outputTail.isEmpty { print("--- output (tail) ---\n\(job.outputTail)") }
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show why the national scheduler put a job where (and when) it did.",
        discussion: "One row per region: feasible or why not, each cost term (energy, carbon, transfer, waiting), the total, the carbon, the RTT from the job's origin and the start hour. * marks the region chosen.")
    @OptionGroup var options: ControllerOptions
    @Argument var id: String
    func run() throws {
        do {
            let job = try options.job(id)
            if let text = try options.printer.record(job.route) { print(text); return }
            print(Table.explain(job))
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel jobs: a waiting job ends at once; a running one is stopped on its node (TERM, then KILL after the agent's kill_grace_s).",
        discussion: "Exit 0 when every job is cancelled or had already ended; with --wait, waits until the running ones have stopped.")
    @OptionGroup var options: ControllerOptions
    @Flag(help: "Wait until every job has ended.") var wait = false
    @Option(help: "Seconds to wait with --wait (exit 2 if not ended by then).") var within: Double = 60
    @Argument var ids: [String]

    func run() throws {
        let client: GridClient
        do { client = try options.client() } catch { throw fail("\(error)") }
        let result = eachJob(ids) { try client.cancel($0, timeout: options.timeout) }
        var jobs = result.jobs
        let failed = result.failed
        if wait {
            let deadline = Date().addingTimeInterval(within)
            while !jobs.allSatisfy(\.state.isTerminal) && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.2)
                jobs = jobs.map { j in j.state.isTerminal ? j : (try? options.job(j.id.rawValue)) ?? j }
            }
        }
        print(try options.printer.list(jobs, Columns.jobs))
        if failed { throw ExitCode(1) }
        if wait && !jobs.allSatisfy(\.state.isTerminal) { throw ExitCode(2) }
    }
}

struct Accounts: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a region's accounts: quota, devices held (and borrowed), usage in device- and GCU-hours, fair-share factor.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "The region (needed at the national scheduler when there are several).") var region: String?
    func run() throws {
        do {
            let rows = try options.client().accounts(region: region, timeout: options.timeout)
            if options.json { try printJSON(rows.map { try $0.jsonString() }) } else { print(Table.accounts(rows)) }
        } catch let e as ClientError { throw fail(e.message) }
    }
}

/// Applies `action` to each job in turn: one that fails is reported on standard error and the
/// others go on. Returns the jobs as they now stand, and whether any failed.
func eachJob(_ ids: [String], _ action: (String) throws -> JobRecord) -> (jobs: [JobRecord], failed: Bool) {
    var jobs: [JobRecord] = []
    var failed = false
    for id in ids {
        do { jobs.append(try action(id)) } catch {
            failed = true
            FileHandle.standardError.write(Data("gridctl: \(id): \(error)\n".utf8))
        }
    }
    return (jobs, failed)
}

/// What hold, release and requeue share: the jobs and a reason.
struct JobControlOptions: ParsableArguments {
    @OptionGroup var options: ControllerOptions
    @Option(help: "Why (shown with the job).") var reason = ""
    @Argument var ids: [String]

    func run(_ action: Wire.JobControl.Action) throws {
        let client: GridClient
        do { client = try options.client() } catch { throw fail("\(error)") }
        let (jobs, failed) = eachJob(ids) { try client.jobControl(action, job: $0, reason: reason, timeout: options.timeout) }
        if !jobs.isEmpty || options.printer.format == .json || options.printer.format == .yaml { print(try options.printer.list(jobs, Columns.jobs)) }
        if failed { throw ExitCode(1) }
    }
}

struct Hold: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold jobs: a waiting job starts nowhere until released; a running one runs on (requeue stops it). Kept across restarts.")
    @OptionGroup var command: JobControlOptions
    func run() throws { try command.run(.hold) }
}

struct Release: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Release held jobs: they wait for devices again in their place by priority.")
    @OptionGroup var command: JobControlOptions
    func run() throws { try command.run(.release) }
}

struct Requeue: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop running jobs (TERM, then KILL after the agent's kill_grace_s) and queue them again; the run ends `requeued` and uses up no attempt.")
    @OptionGroup var command: JobControlOptions
    func run() throws { try command.run(.requeue) }
}

struct Nodes: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List nodes as their regions last reported them.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "Wait until at least this many nodes are ready (exit 2 if not within --within seconds).")
    var expect: Int?
    @Option(help: "Seconds to wait for --expect.")
    var within: Double = 60
    @Option(help: "Only this region's nodes (default: every region, asked in turn and paged through).")
    var region: String?

    func run() throws {
        do {
            let client = try options.client()
            var nodes = try client.allNodes(region: region, timeout: options.timeout).map(\.brief)
            if let expect {
                let deadline = Date().addingTimeInterval(within)
                // Without --region, also wait until the national scheduler's view (the region
                // summaries it routes by) counts them: it trails the regions by one summary.
                func nationalReady() -> Int {
                    guard region == nil else { return Int.max }
                    return ((try? client.query(.regions, timeout: options.timeout).regions) ?? []).reduce(0) { $0 + Int($1.nodesReady) }
                }
                while nodes.filter({ $0.state == .ready }).count < expect || nationalReady() < expect {
                    if Date() >= deadline {
                        print(Table.nodes(nodes))
                        _ = fail("only \(nodes.filter { $0.state == .ready }.count) of \(expect) nodes ready after \(Int(within))s")
                        throw ExitCode(2)
                    }
                    Thread.sleep(forTimeInterval: 0.25)
                    nodes = (try? client.allNodes(region: region, timeout: options.timeout).map(\.brief)) ?? nodes
                }
            }
            print(try options.printer.list(nodes, Columns.nodes))
        } catch let e as ClientError { throw fail(e.message) }
    }
}

/// `gridctl node ID`: one node with every unit — model, memory, grade, health, whether busy and
/// with which job.
struct Node: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one node: its state and every device (or slice) with grade, health and the job holding it.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "The node's region (needed at the national scheduler when there are several).") var region: String?
    @Argument(help: "A node id, or a resource name cg://REGION/NODE[/DEVICE[/PARTITION]] (a device's or partition's name shows only that unit).")
    var node: String

    func run() throws {
        var q = Wire.Query()
        q.kind = .nodes
        do {
            let ref = try ResourceName.nodeReference(node)
            if node.hasPrefix(ResourceName.scheme) { q.resource = node } else { q.nodeID = ref.node.rawValue }
            if let region, let r = ref.region, r.rawValue != region { throw fail("\(node) is in region \(r), not --region \(region)") }
        } catch let e as ResourceNameError { throw fail(e.description) }
        q.regionID = region ?? ""
        do {
            guard case .queryReply(let r) = try options.client().request(.query(q), timeout: options.timeout), let w = r.nodes.first else {
                throw fail("node \(node) not found")
            }
            var json = JSONEncodingOptions()
            json.preserveProtoFieldNames = true
            json.alwaysPrintInt64sAsNumbers = true
            switch options.printer.format {
            case .json: print(try w.jsonString(options: json))
            case .yaml: print(try Printer.yaml(json: try w.jsonString(options: json)))
            case .table, .wide:
                print(try options.printer.list([w.brief], Columns.nodes))
                print()
                print(try Printer(format: options.printer.format, colour: options.printer.colour).table(w.units, Columns.units))
            }
        } catch let e as ClientError { throw fail(e.message) }
    }
}

/// What cordon, uncordon and drain share: the node, its region, a reason.
struct NodeCommandOptions: ParsableArguments {
    @OptionGroup var options: ControllerOptions
    @Option(help: "The node's region (needed at the national scheduler when there are several).") var region: String?
    @Option(help: "Why (shown with the node).") var reason = ""
    @Argument(help: "A node id, or its resource name cg://REGION/NODE.") var node: String

    func run(_ action: Wire.NodeCommand.Action) throws {
        let ref: (region: RegionID?, node: NodeID, unit: String?)
        do { ref = try ResourceName.nodeReference(node) } catch { throw fail(error.description) }
        if ref.unit != nil { throw fail("\(node) names a device; cordon, uncordon and drain act on a whole node (cg://REGION/NODE)") }
        if let region, let r = ref.region, r.rawValue != region { throw fail("\(node) is in region \(r), not --region \(region)") }
        do {
            let b = try options.client().nodeCommand(action, node: ref.node.rawValue, region: region ?? ref.region?.rawValue,
                                                     reason: reason, timeout: options.timeout)
            print(try options.printer.list([b], Columns.nodes))
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Cordon: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Take no new work on a node (what runs there runs on); kept across restarts.")
    @OptionGroup var command: NodeCommandOptions
    func run() throws { try command.run(.cordon) }
}

struct Uncordon: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Let a cordoned or drained node take work again.")
    @OptionGroup var command: NodeCommandOptions
    func run() throws { try command.run(.uncordon) }
}

struct Drain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Empty a node for maintenance: no new work; its running jobs finish (shown draining, then drained).",
        discussion: "To move running work off at once, cancel it (gridctl cancel) or stop the agent with `grid-agent drain`.")
    @OptionGroup var command: NodeCommandOptions
    func run() throws { try command.run(.drain) }
}

struct Regions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List regions with their capacity and queues; remove a stale one.",
        discussion: "A region silent past its lease shows as stale (SEEN). `gridctl regions remove R` makes the national scheduler forget it once it holds no live job.",
        subcommands: [RegionList.self, RegionRemove.self], defaultSubcommand: RegionList.self)
}

struct RegionList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List regions with their capacity and queues (default).")
    @OptionGroup var options: ControllerOptions
    func run() throws {
        do {
            let regions = try options.client().query(.regions, timeout: options.timeout).regions.map(\.summary)
            print(try options.printer.list(regions, Columns.regions))
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct RegionRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Forget a region that is stale (silent past its lease) and holds no live job.",
        discussion: "A live region is refused (it would come back with its next summary); so is one that still holds jobs (cancel them or let them move first).")
    @OptionGroup var options: ControllerOptions
    @Argument(help: "The region to forget.") var region: String
    func run() throws {
        var m = Wire.RegionControl()
        m.regionID = region
        m.action = .remove
        do {
            switch try options.client().request(.regionControl(m), timeout: options.timeout) {
            case .queryReply(let r):
                print("region \(region) removed; regions now: \(r.regions.map(\.regionID).joined(separator: ", "))")
            case .errorReply(let e):
                throw fail("\(e.code): \(e.message)")
            default:
                throw fail("unexpected answer")
            }
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Wait: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait until jobs end; exit 0 only if all of them succeeded.",
        discussion: "With no job ids, waits for every job the controller knows.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "Give up after this many seconds (exit 2).")
    var within: Double = 300
    @Argument var ids: [String] = []

    func run() throws {
        let client: GridClient
        do { client = try options.client() } catch { throw fail("\(error)") }
        let deadline = Date().addingTimeInterval(within)
        var jobs: [JobRecord] = []
        // On a terminal, a line per state change as it happens; in a pipe only the end.
        let progress = isatty(1) == 1
        let colour = Printer.colourWanted()
        var seen: [JobID: JobState] = [:]
        let clock = DateFormatter()
        clock.dateFormat = "HH:mm:ss"
        while true {
            do {
                jobs = try client.jobs(timeout: options.timeout)
                if !ids.isEmpty { jobs = jobs.filter { ids.contains($0.id.rawValue) } }
            } catch {
                FileHandle.standardError.write(Data("gridctl: \(error); retrying\n".utf8))
            }
            if progress {
                for j in jobs where seen[j.id] != j.state {
                    let from = seen[j.id].map { "\($0.rawValue) → " } ?? ""
                    let to = colour ? Printer.painted(j.state.rawValue) : j.state.rawValue
                    let place = [j.region?.rawValue, j.node?.rawValue].compactMap { $0 }.joined(separator: "/")
                    print("\(clock.string(from: Date()))  \(j.id)  \(from)\(to)\(place.isEmpty ? "" : "  (\(place))")"
                          + (j.state.isTerminal && j.state != .succeeded ? ": \(Printer.clip(j.message, 100))" : ""))
                    seen[j.id] = j.state
                }
            }
            let done = !jobs.isEmpty && jobs.allSatisfy(\.state.isTerminal) && (ids.isEmpty || jobs.count == ids.count)
            if done || Date() >= deadline { break }
            Thread.sleep(forTimeInterval: 0.25)
        }
        if progress && options.printer.format == .table { print() }
        print(try options.printer.list(jobs, Columns.jobs))
        if !jobs.allSatisfy(\.state.isTerminal) || jobs.isEmpty {
            _ = fail("timed out after \(Int(within))s waiting for jobs to end")
            throw ExitCode(2)
        }
        if !jobs.allSatisfy({ $0.state == .succeeded }) { throw ExitCode(1) }
    }
}

extension OutputFormat: ExpressibleByArgument {}

/// `gridctl counters`: what a controller received, rejected and refused (issue 11, item 6).
struct Counters: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a controller's counters: messages received by type, frames rejected and keys refused by reason.",
        discussion: """
            Asks the controller named by --controller (the national scheduler by default; a region \
            answers for itself). rejected.<reason>: frames that did not decode or broke a bound \
            (PROTOCOL.md, "Errors"); refused.<reason>: CURVE handshakes and messages a key may not \
            send (docs/security.md). Totals since the controller started; /metrics has the same.
            """)
    @OptionGroup var options: ControllerOptions

    struct Row: Encodable { var counter: String; var value: UInt64 }

    func run() throws {
        do {
            var q = Wire.Query()
            q.kind = .counters
            let r = try options.queryReply(.query(q))
            let rows = r.counters.sorted { $0.key < $1.key }.map { Row(counter: $0.key, value: $0.value) }
            print(try options.printer.list(rows, [Column("COUNTER") { r, _ in r.counter }, Column("VALUE") { r, _ in "\(r.value)" }]))
        } catch let e as ClientError { throw fail(e.message) }
    }
}

/// `gridctl audit`: who submitted, cancelled, drained, deployed or enrolled what (issue 11, item 4).
struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a controller's audit log: operator actions with who did them, newest first.",
        discussion: "Each action is stored with its effects, in the same transaction (docs/security.md, \"What is logged\").")
    @OptionGroup var options: ControllerOptions
    @Option(help: "At most this many entries (1…10000).") var limit = 100

    struct Row: Encodable { var at: String; var who: String; var action: String; var target: String; var detail: String }

    func run() throws {
        guard (1...10_000).contains(limit) else { throw fail("--limit must be 1…10000, got \(limit)") }
        do {
            var q = Wire.Query()
            q.kind = .audit
            q.limit = UInt32(limit)
            let r = try options.queryReply(.query(q))
            let f = ISO8601DateFormatter()
            let rows = r.audit.map { Row(at: f.string(from: Date(timeIntervalSince1970: Double($0.atMs) / 1000)), who: $0.who, action: $0.action,
                                        target: $0.target, detail: $0.detail) }
            print(try options.printer.list(rows, [Column("AT") { r, _ in r.at }, Column("WHO") { r, _ in r.who }, Column("ACTION") { r, _ in r.action },
                                                 Column("TARGET") { r, _ in r.target }, Column("DETAIL") { r, _ in r.detail }]))
        } catch let e as ClientError { throw fail(e.message) }
    }
}

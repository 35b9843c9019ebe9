import ArgumentParser
import Foundation
import GridCLI
import GridCore
import GridProtocol

@main
struct Gridctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gridctl",
        abstract: "Submit work to a ComputeGrid network and see where it ran.",
        subcommands: [Submit.self, Jobs.self, Job.self, Nodes.self, Regions.self, Wait.self])
}

struct ControllerOptions: ParsableArguments {
    @Option(name: .long, help: "Controller endpoint (default: $GRID_CONTROLLER or tcp://127.0.0.1:7700, the national scheduler).")
    var controller: String?
    @Option(help: "Seconds to wait for an answer.")
    var timeout: Double = 5
    @Flag(help: "Print JSON for scripts instead of a table.")
    var json = false

    var endpoint: String {
        controller ?? ProcessInfo.processInfo.environment["GRID_CONTROLLER"].flatMap { $0.isEmpty ? nil : $0 } ?? "tcp://127.0.0.1:7700"
    }

    func client() throws -> GridClient { try GridClient(endpoint: endpoint) }
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
    static let configuration = CommandConfiguration(abstract: "Submit job files (YAML) to the national scheduler.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "Job id to use (retrying a submit with the same id never creates a second job).")
    var id: String?
    @Argument(help: "Job files.") var files: [String]

    func run() throws {
        if id != nil && files.count > 1 { throw fail("--id applies to one job file, got \(files.count)") }
        let client: GridClient
        do { client = try options.client() } catch { throw fail("\(error)") }
        var failed = false
        var replies: [[String: String]] = []
        for file in files {
            do {
                let text: String
                do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                    throw ClientError("cannot read \(file): \(error.localizedDescription)")
                }
                let spec = try JobFile.parse(text, source: file)
                let reply = try client.submit(spec, id: id.map(JobID.init), timeout: options.timeout)
                if !reply.accepted { failed = true }
                replies.append(["file": file, "job_id": reply.jobID, "accepted": String(reply.accepted), "region": reply.regionID, "reason": reply.reason])
                if !options.json {
                    print(reply.accepted ? "\(reply.jobID)  \(spec.name)  \(reply.reason)" : "\(file): rejected: \(reply.reason)")
                }
            } catch {
                failed = true
                FileHandle.standardError.write(Data("gridctl: \(error)\n".utf8))
            }
        }
        if options.json { try printJSON(replies) }
        if failed { throw ExitCode(1) }
    }
}

struct Jobs: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs: state, region, node, devices and how they ended.")
    @OptionGroup var options: ControllerOptions
    func run() throws {
        do {
            let jobs = try options.client().jobs(timeout: options.timeout)
            if options.json { try printJSON(jobs) } else { print(Table.jobs(jobs)) }
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Job: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one job, with its output tail.")
    @OptionGroup var options: ControllerOptions
    @Argument var id: String
    func run() throws {
        do {
            guard let job = try options.client().query(.job, job: id, timeout: options.timeout).jobs.first?.record() else {
                throw fail("job \(id) not found")
            }
            if options.json { try printJSON(job); return }
            print(Table.jobs([job]))
            if !job.outputTail.isEmpty { print("--- output (tail) ---\n\(job.outputTail)") }
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Nodes: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List nodes as their regions last reported them.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "Wait until at least this many nodes are ready (exit 2 if not within --within seconds).")
    var expect: Int?
    @Option(help: "Seconds to wait for --expect.")
    var within: Double = 60

    func run() throws {
        do {
            let client = try options.client()
            var nodes = try client.query(.nodes, timeout: options.timeout).nodes.map(\.brief)
            if let expect {
                let deadline = Date().addingTimeInterval(within)
                while nodes.filter({ $0.state == .ready }).count < expect {
                    if Date() >= deadline {
                        print(Table.nodes(nodes))
                        _ = fail("only \(nodes.filter { $0.state == .ready }.count) of \(expect) nodes ready after \(Int(within))s")
                        throw ExitCode(2)
                    }
                    Thread.sleep(forTimeInterval: 0.25)
                    nodes = (try? client.query(.nodes, timeout: options.timeout).nodes.map(\.brief)) ?? nodes
                }
            }
            if options.json { try printJSON(nodes) } else { print(Table.nodes(nodes)) }
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Regions: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List regions with their capacity and queues.")
    @OptionGroup var options: ControllerOptions
    func run() throws {
        do {
            let regions = try options.client().query(.regions, timeout: options.timeout).regions.map(\.summary)
            if options.json { try printJSON(regions) } else { print(Table.regions(regions)) }
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
        while true {
            do {
                jobs = try client.jobs(timeout: options.timeout)
                if !ids.isEmpty { jobs = jobs.filter { ids.contains($0.id.rawValue) } }
            } catch {
                FileHandle.standardError.write(Data("gridctl: \(error); retrying\n".utf8))
            }
            let done = !jobs.isEmpty && jobs.allSatisfy(\.state.isTerminal) && (ids.isEmpty || jobs.count == ids.count)
            if done || Date() >= deadline { break }
            Thread.sleep(forTimeInterval: 0.25)
        }
        if options.json { try printJSON(jobs) } else { print(Table.jobs(jobs)) }
        if !jobs.allSatisfy(\.state.isTerminal) || jobs.isEmpty {
            _ = fail("timed out after \(Int(within))s waiting for jobs to end")
            throw ExitCode(2)
        }
        if !jobs.allSatisfy({ $0.state == .succeeded }) { throw ExitCode(1) }
    }
}

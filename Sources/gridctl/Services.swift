import ArgumentParser
import Foundation
import GridCLI
import GridCore
import GridProtocol
import SwiftProtobuf

// Services (SERVICES.md): deploy a model, see it, scale it, roll out a version, undeploy it.

/// Prints one service as a table, or as JSON/YAML for scripts.
func show(_ s: Wire.ServiceStatus, _ options: ControllerOptions) throws {
    switch options.printer.format {
    case .json, .yaml: print(try s.jsonString())
    default: print(Table.service(s))
    }
}

struct Deploy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deploy a service file (a model, its replicas, probes, SLO): a new service, or a changed one (rolled out).",
        discussion: "With --wait, waits until as many replicas as wanted are ready, and prints the endpoint. Exit 2 if not ready within --within.")
    @OptionGroup var options: ControllerOptions
    @Flag(help: "Wait until the service is ready.") var wait = false
    @Option(help: "Seconds to wait with --wait.") var within: Double = 120
    @Argument(help: "A service file (YAML).") var file: String

    func run() throws {
        let spec: ServiceSpec
        do {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw ClientError("cannot read \(file): \(error.localizedDescription)")
            }
            spec = try ServiceFile.parse(text, source: file)
        } catch { throw fail("\(error)") }
        var status: Wire.ServiceStatus
        do { status = try options.client().deploy(spec, timeout: options.timeout) } catch { throw fail("\(error)") }
        if wait { status = try waitReady(spec.name, options: options, within: within) ?? status }
        try show(status, options)
        if wait && status.state != "ready" { throw ExitCode(2) }
    }
}

/// Polls until the service is ready (or `within` seconds pass); the last status seen.
func waitReady(_ name: String, options: ControllerOptions, within: Double) throws -> Wire.ServiceStatus? {
    let deadline = Date().addingTimeInterval(within)
    var last: Wire.ServiceStatus?
    while Date() < deadline {
        last = (try? options.client().services(name, timeout: options.timeout))?.first ?? last
        if last?.state == "ready" { return last }
        Thread.sleep(forTimeInterval: 0.2)
    }
    return last
}

struct Services: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List services: state, version, ready replicas, load and endpoint.")
    @OptionGroup var options: ControllerOptions
    func run() throws {
        do {
            let list = try options.client().services(timeout: options.timeout)
            switch options.printer.format {
            case .json, .yaml: print("[" + (try list.map { try $0.jsonString() }).joined(separator: ",") + "]")
            default: print(Table.services(list))
            }
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct ServiceShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service",
        abstract: "Show a service: its replicas (region, node, devices, precision, readiness, runs), endpoint and measured latency.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "The region you call from: endpoints nearest it first (by the national scheduler's RTT table).") var origin: String?
    @Argument var name: String
    func run() throws {
        do {
            guard let s = try options.client().services(name, origin: origin, timeout: options.timeout).first else { throw fail("service \(name) not found") }
            try show(s, options)
        } catch let e as ClientError { throw fail(e.message) }
    }
}

struct Scale: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Set how many replicas a service runs (within its replicas.min…max).")
    @OptionGroup var options: ControllerOptions
    @Argument var name: String
    @Argument var replicas: Int
    func run() throws {
        do { try show(try options.client().serviceControl(.scale, name: name, replicas: replicas, timeout: options.timeout), options) }
        catch let e as ClientError { throw fail(e.message) }
    }
}

struct Rollout: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Roll a service out to another model version, replica by replica (its update strategy).",
        discussion: "New replicas start; an old one is drained and stopped only when a new one is ready. If new replicas keep failing before they are ready, the rollout is rolled back. With --wait, waits for the end and exits 2 when it was rolled back or did not finish.")
    @OptionGroup var options: ControllerOptions
    @Option(help: "The model version to roll out.") var version: String
    @Flag(help: "Wait until the rollout has finished (or was rolled back).") var wait = false
    @Option(help: "Seconds to wait with --wait.") var within: Double = 300
    @Argument var name: String
    func run() throws {
        var status: Wire.ServiceStatus
        do { status = try options.client().serviceControl(.rollout, name: name, version: version, timeout: options.timeout) }
        catch let e as ClientError { throw fail(e.message) }
        if wait {
            Thread.sleep(forTimeInterval: 0.3)
            status = try waitReady(name, options: options, within: within) ?? status
        }
        try show(status, options)
        if wait && (status.state != "ready" || status.spec.model.version != version) { throw ExitCode(2) }
    }
}

struct Undeploy: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Undeploy a service: every replica is drained from the gateway, stopped, and the service forgotten.")
    @OptionGroup var options: ControllerOptions
    @Argument var name: String
    func run() throws {
        do { try show(try options.client().serviceControl(.undeploy, name: name, timeout: options.timeout), options) }
        catch let e as ClientError { throw fail(e.message) }
    }
}

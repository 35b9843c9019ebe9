import Foundation
import GridAgent
import GridController
import GridCore
import Testing
import Yams

extension EndToEnd {
/// deploy/ as an operator uses it: `make install` lays out binaries, units, configs, docs, man
/// pages and completions; the Kubernetes manifests pass Kubernetes' own schemas and the configs
/// inside them load; the Grafana dashboard asks only for metrics the daemons export.
@Suite(.serialized) struct DeploymentTests {
    static let root = Cluster.repoRoot

    func shell(_ command: String, in dir: URL = root, environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try Cluster.run("/bin/sh", ["-c", command], environment: environment, in: dir)
    }

    @Test func makeInstallLaysOutEverythingAndKeepsAnOperatorsConfig() throws {
        let dest = FileManager.default.temporaryDirectory.appendingPathComponent("grid-install-\(UUID().uuidString.prefix(6))")
        defer { try? FileManager.default.removeItem(at: dest) }
        let make = "make -s install-files BIN=\(Cluster.binDir.path) DESTDIR=\(dest.path) PREFIX=/opt/grid"
        let first = try shell(make)
        #expect(first.status == 0, "\(first.output)")
        let fm = FileManager.default
        for b in ["grid-controller", "grid-agent", "grid-job-shim", "gridctl"] {
            #expect(fm.isExecutableFile(atPath: dest.path + "/opt/grid/bin/" + b), "\(b)")
        }
        #expect(fm.fileExists(atPath: dest.path + "/opt/grid/bin/ComputeGrid_GridHTTP.resources"))
        let unit = try String(contentsOfFile: dest.path + "/etc/systemd/system/grid-national.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/opt/grid/bin/grid-controller") && !unit.contains("/usr/local/"))
        for f in ["/etc/computegrid/national.yaml", "/etc/computegrid/agent.yaml", "/opt/grid/share/doc/computegrid/README.md",
                  "/opt/grid/share/man/man1/gridctl.1", "/opt/grid/share/bash-completion/completions/gridctl",
                  "/opt/grid/share/zsh/site-functions/_gridctl", "/opt/grid/share/fish/vendor_completions.d/gridctl.fish"] {
            #expect(fm.fileExists(atPath: dest.path + f), "\(f) not installed")
        }
        // The installed gridctl runs and names its commit.
        let version = try shell("\(dest.path)/opt/grid/bin/gridctl --version")
        #expect(version.status == 0 && version.output.contains("commit"))
        // An operator's edits survive a second install.
        try "role: national\nid: ours\n".write(toFile: dest.path + "/etc/computegrid/national.yaml", atomically: true, encoding: .utf8)
        #expect(try shell(make).status == 0)
        #expect(try String(contentsOfFile: dest.path + "/etc/computegrid/national.yaml", encoding: .utf8).contains("id: ours"))
    }

    /// `make deb`: a Debian package with the binaries, units under /lib/systemd/system, configs
    /// as conffiles, the dependencies named; what it unpacks runs.
    @Test func makeDebBuildsAPackageThatUnpacksAndRuns() throws {
        let r = try shell("make -s deb DEB_COMPRESS=none BIN=\(Cluster.binDir.path)")
        #expect(r.status == 0, "\(r.output)")
        let debs = try FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent(".build").path).filter { $0.hasSuffix(".deb") }
        let deb = try #require(debs.first.map { Self.root.appendingPathComponent(".build/\($0)").path })
        let info = try shell("dpkg-deb --info \(deb)")
        #expect(info.output.contains("Package: computegrid") && info.output.contains("Depends: libzmq5, libsqlite3-0"), "\(info.output)")
        let contents = try shell("dpkg-deb --contents \(deb)").output
        for path in ["./usr/bin/grid-agent", "./usr/bin/grid-job-shim", "./lib/systemd/system/grid-national.service", "./etc/computegrid/agent.yaml",
                     "./usr/share/man/man1/gridctl.1"] {
            #expect(contents.contains(path), "\(path) not in the package")
        }
        #expect(try shell("dpkg-deb -f \(deb) Version").output.trimmingCharacters(in: .whitespacesAndNewlines).range(of: #"^\d+\.\d+\.\d+$"#, options: .regularExpression) != nil)
        let conffiles = try shell("dpkg-deb --ctrl-tarfile \(deb) | tar -xO ./conffiles").output
        #expect(conffiles.contains("/etc/computegrid/national.yaml"), "\(conffiles)")
        let unpacked = FileManager.default.temporaryDirectory.appendingPathComponent("grid-deb-\(UUID().uuidString.prefix(6))")
        defer { try? FileManager.default.removeItem(at: unpacked) }
        #expect(try shell("dpkg-deb -x \(deb) \(unpacked.path)").status == 0)
        let version = try shell("\(unpacked.path)/usr/bin/gridctl --version")
        #expect(version.status == 0 && version.output.contains("commit"))
        let unit = try String(contentsOfFile: unpacked.path + "/lib/systemd/system/grid-agent.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/bin/grid-agent run"))
    }

    @Test func kubernetesManifestsPassTheKubernetesSchemas() throws {
        let tools = Self.root.appendingPathComponent(".build/pytools")
        try #require(FileManager.default.fileExists(atPath: tools.appendingPathComponent("kubernetes_validate").path),
                     "kubernetes-validate is not installed: run scripts/deps.sh --test")
        let r = try shell("python3 -m kubernetes_validate -k 1.31.0 --strict deploy/kubernetes/*.yaml", environment: ["PYTHONPATH": tools.path])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("statefulset/grid-national") && r.output.contains("daemonset/grid-agent")
                && r.output.contains("networkpolicy/grid-controllers"), "\(r.output)")
        // The validator is not a rubber stamp: a wrong type is refused.
        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString.prefix(6)).yaml")
        try String(contentsOfFile: Self.root.appendingPathComponent("deploy/kubernetes/national.yaml").path, encoding: .utf8)
            .replacingOccurrences(of: "replicas: 1", with: "replicas: one").write(to: bad, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: bad) }
        let refused = try shell("python3 -m kubernetes_validate -k 1.31.0 --strict \(bad.path)", environment: ["PYTHONPATH": tools.path])
        #expect(refused.status != 0 && refused.output.contains("replicas"))
    }

    /// The configuration files inside the ConfigMaps are valid ComputeGrid configurations.
    @Test func configsInTheConfigMapsLoad() throws {
        let dir = Self.root.appendingPathComponent("deploy/kubernetes")
        var checked = 0
        for file in try FileManager.default.contentsOfDirectory(atPath: dir.path) where file.hasSuffix(".yaml") {
            let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            for doc in try Yams.load_all(yaml: text) {
                guard let d = doc as? [String: Any], d["kind"] as? String == "ConfigMap", let data = d["data"] as? [String: String] else { continue }
                for (name, yaml) in data {
                    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID().uuidString.prefix(6))-\(name)")
                    try yaml.write(to: path, atomically: true, encoding: .utf8)
                    defer { try? FileManager.default.removeItem(at: path) }
                    if name == "agent.yaml" {
                        let cfg = try AgentConfig.load(path: path.path, environment: ["GRID_AGENT_NODE_ID": "n1"], validate: false)
                        #expect(cfg.problems().isEmpty, "\(file) \(name): \(cfg.problems())")
                    } else {
                        _ = try ControllerConfig.load(path: path.path, role: nil, environment: [:])
                    }
                    checked += 1
                }
            }
        }
        #expect(checked == 3)
    }

    @Test func theDockerfileBuildsWhatTheManifestsRun() throws {
        let docker = try String(contentsOfFile: Self.root.appendingPathComponent("deploy/Dockerfile").path, encoding: .utf8)
        for target in ["AS controller", "AS agent"] { #expect(docker.contains(target)) }
        // Every binary the images copy is built by a --product line.
        for product in ["grid-controller", "grid-agent", "gridctl", "grid-job-shim"] { #expect(docker.contains("--product \(product)"), "\(product)") }
        let copied = docker.split(separator: "\n").first { $0.contains("cp grid-controller") } ?? ""
        for binary in copied.split(separator: " ") where binary.hasPrefix("grid") {
            #expect(docker.contains("--product \(binary)"), "the Dockerfile copies \(binary) but builds no such product")
        }
        #expect(docker.contains("USER 10001"))
        let national = try String(contentsOfFile: Self.root.appendingPathComponent("deploy/kubernetes/national.yaml").path, encoding: .utf8)
        #expect(national.contains("runAsUser: 10001") && national.contains("image: computegrid/controller:"))
    }
}
}

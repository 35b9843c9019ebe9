import Foundation
import GridCLI
import GridCore
import Testing

/// A real headless Chromium (Debian's `chromium`), driven by Tests/Browser/cdp-driver.mjs over
/// the DevTools protocol: one command line in, one answer line out.
final class Browser {
    let process = Process()
    let input = Pipe()
    let output = Pipe()
    var pending = Data()

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["node", Cluster.repoRoot.appendingPathComponent("Tests/Browser/cdp-driver.mjs").path, "/usr/bin/chromium"]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
    }

    deinit {
        if process.isRunning {
            try? input.fileHandleForWriting.close()
            kill(process.processIdentifier, SIGKILL)
        }
    }

    /// Ends the driver and its browser.
    func close() {
        input.fileHandleForWriting.write(Data("quit\n".utf8))
        if !process.waitForExit(within: 20) { kill(process.processIdentifier, SIGKILL) }
    }

    /// Sends one command; returns its answer line.
    @discardableResult
    func command(_ line: String) throws -> String {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
        while true {
            if let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let answer = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                return answer
            }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw ClientError("the browser driver ended while answering '\(line)'") }
            pending.append(chunk)
        }
    }

    /// Polls `expression` in the page until it is truthy; records an issue with the last value if not.
    @discardableResult
    func wait(_ seconds: Int, _ expression: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let answer = try command("wait \(seconds) \(expression)")
        #expect(answer.hasPrefix("ok"), "waited \(seconds) s for \(expression): \(answer)", sourceLocation: sourceLocation)
        return answer
    }

    func screenshot(_ name: String) throws -> URL {
        let dir = Cluster.repoRoot.appendingPathComponent(".build/screenshots")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        #expect(try command("shot \(url.path)") == "ok")
        print("screenshot: \(url.path)")
        return url
    }
}

extension EndToEnd {
/// The dashboard in a real browser: it loads, shows the network's regions, nodes and jobs, and
/// changes by itself (server-sent events, no reload) when a job finishes. Screenshots are left
/// in .build/screenshots for a person to look at.
@Suite(.serialized) struct DashboardBrowserTests {
    @Test func dashboardShowsTheNetworkAndFollowsAJobToItsEnd() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational(profiles: ["r-gz", "r-nx"])
        try c.startRegion("r-gz")
        try c.startRegion("r-nx")
        try c.startAgent("a10g-node", region: "r-gz", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        try c.startAgent("v100-node", region: "r-nx", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        let client = try c.client()
        _ = try c.eventually(30, "both regions to report a ready node") { () -> Bool? in
            let regions = try client.query(.regions).regions
            return regions.count == 2 && regions.allSatisfy { $0.nodesReady == 1 } ? true : nil
        }
        // A job that runs until the test lets it finish.
        let gate = c.dir.appendingPathComponent("go")
        let reply = try client.submit(JobSpec(name: "dash", command: "/bin/sh",
                                              args: ["-c", "while [ ! -f \(gate.path) ]; do sleep 0.1; done; echo finished"],
                                              accelerators: AcceleratorRequest(count: 1, model: "A10G")), id: JobID("dash-1"))
        #expect(reply.accepted, "\(reply.reason)")
        let base = try c.httpBase(of: "national")

        let browser = try Browser()
        #expect(try browser.command("open \(base)/") == "ok")
        try browser.wait(20, #"document.querySelector('#regions tr[data-region="r-gz"]')?.dataset.state === "live""#)
        try browser.wait(20, #"document.querySelector('#regions tr[data-region="r-nx"]')?.dataset.state === "live""#)
        try browser.wait(20, #"!!document.querySelector('[data-node="a10g-node"]') && !!document.querySelector('[data-node="v100-node"]')"#)
        try browser.wait(20, #"document.querySelector('#jobs tr[data-job="dash-1"]')?.dataset.state === "running""#)
        try browser.wait(10, #"document.querySelector('#capacity tr[data-vendor="nvidia"]') !== null"#)
        let price = try browser.command(#"eval document.querySelector('#regions tr[data-region="r-nx"]').textContent"#)
        #expect(price.contains("0.360") && price.contains("642"), "\(price)")
        try browser.wait(10, #"document.querySelector('#live').textContent === "live""#)
        // The decision and attempts of a job, on a click.
        try browser.command(#"eval document.querySelector('#jobs tr[data-job="dash-1"]').click()"#)
        try browser.wait(10, #"document.querySelector('#job-detail')?.dataset.job === "dash-1" && !!document.querySelector('#job-detail tr[data-candidate="r-gz"]')"#)
        // regions → nodes → devices: opening a node lists its devices, the job on the busy one.
        try browser.command(#"eval document.querySelectorAll('#hierarchy details').forEach((d) => { if (d.dataset.region === "r-gz") d.open = true })"#)
        try browser.wait(15, #"[...document.querySelectorAll('details[data-node-id="a10g-node"] tr[data-unit]')].some((r) => r.dataset.busy === "yes" && r.textContent.includes("dash-1") && r.textContent.includes("NVIDIA A10G"))"#)
        _ = try browser.screenshot("dashboard-national-running.png")

        // The job ends; the page follows without being reloaded.
        try browser.command("eval window.__sameDocument = true")
        try "".write(to: gate, atomically: true, encoding: .utf8)
        try browser.wait(30, #"document.querySelector('#jobs tr[data-job="dash-1"]')?.dataset.state === "succeeded""#)
        #expect(try browser.command("eval window.__sameDocument === true") == #"ok {"value":true}"#)
        _ = try browser.screenshot("dashboard-national-finished.png")

        // A region's own dashboard shows its own node.
        #expect(try browser.command("open \(try c.httpBase(of: "r-gz"))/") == "ok")
        try browser.wait(20, #"document.body.dataset.role === "region" && !!document.querySelector('[data-node="a10g-node"]')"#)
        _ = try browser.screenshot("dashboard-region.png")
        #expect(try browser.command("errors") == "ok []", "the page threw or logged errors")
        browser.close()
    }

    /// With `http_read: token` the page asks for a token, and with it shows the network and
    /// follows it live (the event stream takes the token as access_token).
    @Test func dashboardAsksForATokenWhenReadsNeedOne() throws {
        let c = try Cluster()
        defer { c.stopAll() }
        let token = "dashboard-token-0123456789abcdef"
        c.environment = ["GRID_HTTP_TOKEN_FILE": try c.writeFile("tokens", ["viewer \(token) read"]), "GRID_HTTP_READ": "token"]
        try c.startNational()
        c.environment = [:]
        try c.startRegion("r1")
        try c.startAgent("a10g-node", region: "r1", simulate: ["nvidia-smi-q-x_a10g_v11.xml"])
        let base = try c.httpBase(of: "national")
        let browser = try Browser()
        #expect(try browser.command("open \(base)/") == "ok")
        try browser.wait(20, #"!document.querySelector('#login').hidden && document.querySelector('#tiles').children.length === 0"#)
        _ = try browser.screenshot("dashboard-token.png")
        // A wrong token is refused and asked again; the right one opens the page.
        try browser.command(#"eval document.querySelector('#token').value = "wrong-token-00000000000"; document.querySelector('#login').requestSubmit()"#)
        try browser.wait(20, #"!document.querySelector('#login').hidden && document.querySelector('#ready').textContent === "the token was refused""#)
        try browser.command(#"eval document.querySelector('#token').value = "\#(token)"; document.querySelector('#login').requestSubmit()"#)
        try browser.wait(30, #"document.querySelector('#login').hidden && !!document.querySelector('[data-node="a10g-node"]')"#)
        try browser.wait(20, #"document.querySelector('#live').textContent === "live""#)
        #expect(try browser.command("errors") == "ok []", "the page threw or logged errors")
        browser.close()
    }
}
}

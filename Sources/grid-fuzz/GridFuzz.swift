import Foundation
import GridAgent
import GridCLI
import GridController
import GridProbe
import GridProtocol

/// Fuzz targets (issue 11, item 8; docs/security.md, "Fuzzing"): what a peer, a vendor tool or
/// an operator's file can feed the decoders. Built normally, `grid-fuzz TARGET FILE...` replays
/// inputs (a crash found by the fuzzer, kept as a regression case); built by scripts/fuzz.sh
/// with `-sanitize=fuzzer,address -DFUZZING`, libFuzzer drives `LLVMFuzzerTestOneInput` with
/// the target named by GRID_FUZZ_TARGET.
enum FuzzTarget: String, CaseIterable {
    /// Envelope and payload decoding, field validation and bounds (every message type).
    case envelope
    /// Vendor-tool output: format detection and every parser (the first byte picks the parser).
    case vendor
    /// Job files (YAML).
    case jobFile = "job-file"
    /// Service files (YAML).
    case serviceFile = "service-file"
    /// A controller's configuration (YAML, decoded and validated as `grid-controller --config`).
    case controllerConfig = "controller-config"
    /// An agent's configuration (YAML, decoded and validated as `grid-agent --config`).
    case agentConfig = "agent-config"
    /// A controller's authorized_keys file (role, key, scope per line).
    case authorizedKeys = "authorized-keys"

    static let codec = EnvelopeCodec()

    func run(_ bytes: UnsafeRawBufferPointer) {
        var text: String { String(decoding: bytes, as: UTF8.self) }
        switch self {
        case .envelope:
            _ = try? Self.codec.decode(Array(bytes))
        case .vendor:
            guard let first = bytes.first else { return }
            let output = String(decoding: bytes.dropFirst(), as: UTF8.self)
            let tools = VendorTool.allCases
            if Int(first) < tools.count {
                _ = VendorOutputParser.detect(output)
                _ = try? VendorOutputParser.parse(output, as: tools[Int(first)])
            } else {
                _ = try? VendorOutputParser.parse(output)  // detects, once
            }
        case .jobFile:
            _ = try? JobFile.parseEntry(text, source: "fuzz.yaml")
        case .serviceFile:
            _ = try? ServiceFile.parse(text, source: "fuzz.yaml")
        case .controllerConfig:
            _ = try? ControllerConfig.parse(text, source: "fuzz.yaml",
                                            baseDir: "/nonexistent", role: nil, environment: [:])
        case .agentConfig:
            _ = try? AgentConfig.parse(text, source: "fuzz.yaml",
                                       baseDir: "/nonexistent", environment: [:])
        case .authorizedKeys:
            _ = try? AccessList.parse(text, source: "authorized_keys")
        }
    }

    nonisolated(unsafe) static var chosen: FuzzTarget?
    static var fromEnvironment: FuzzTarget {
        if let t = chosen { return t }
        let name = ProcessInfo.processInfo.environment["GRID_FUZZ_TARGET"] ?? ""
        guard let t = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(Data("GRID_FUZZ_TARGET must be one of \(allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'\n".utf8))
            exit(2)
        }
        chosen = t
        return t
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafeRawPointer?, _ size: Int) -> CInt {
    FuzzTarget.fromEnvironment.run(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

#if FUZZING
// SwiftPM links an executable's entry point as `grid_fuzz_main`: hand it to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafeRawPointer?, Int) -> CInt) -> CInt

@_cdecl("grid_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    var count = argc
    var args: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return LLVMFuzzerRunDriver(&count, &args, fuzzOneInput)
}
#else
/// Replay: `grid-fuzz TARGET FILE...` runs each file through the target; exit 0 when none crashed.
@main
struct Replay {
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: grid-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE...  (fuzzing: scripts/fuzz.sh)")
            exit(2)
        }
        for path in args.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else { print("cannot read \(path)"); exit(1) }
            data.withUnsafeBytes { target.run($0) }
        }
        print("\(args.count - 1) input(s) through \(name): no crash")
    }
}
#endif

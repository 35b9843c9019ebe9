// swift-tools-version:6.0
// ComputeGrid: a hierarchical scheduler for a national network of AI accelerators.
import PackageDescription

let package = Package(
    name: "ComputeGrid",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "grid-agent", targets: ["grid-agent"]),
        .executable(name: "grid-controller", targets: ["grid-controller"]),
        .executable(name: "gridctl", targets: ["gridctl"]),
        .executable(name: "grid-bench", targets: ["grid-bench"]),
        .executable(name: "grid-job-shim", targets: ["grid-job-shim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.1.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        // HTTP client: the agent's replica probes and the region gateway's upstream connections.
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.24.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        // Ed25519 signatures of assignments (already built for AsyncHTTPClient's certificates).
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"6.0.0"),
        // Deque for the region's job queue (already built for SwiftNIO).
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        // The HTTPS listener's certificate, replaced per handshake on reload (already built for
        // AsyncHTTPClient and HummingbirdTLS).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.27.0"),
    ],
    targets: [
        // libzmq through pkg-config; the Swift layer on it lives in GridTransport.
        .systemLibrary(
            name: "CZeroMQ",
            pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]
        ),
        // Domain types shared by every role. No I/O.
        .target(name: "GridCore", dependencies: [.product(name: "Yams", package: "Yams")]),
        // Vendor-tool parsers (pure) and the probe runner (processes with deadlines).
        .target(name: "GridProbe", dependencies: ["GridCore"]),
        // Accelerator catalog, vendor-neutral compute units and grading. Pure.
        .target(name: "GridCatalog", dependencies: ["GridCore"], exclude: ["README.md"], resources: [.copy("Resources/accelerators.csv")]),
        // Wire protocol: protobuf schema, generated code, envelope codec.
        .target(
            name: "GridProtocol",
            dependencies: ["GridCore", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                           .product(name: "Crypto", package: "swift-crypto")],
            exclude: ["Proto"]
        ),
        // ZeroMQ sockets as Swift values.
        .target(name: "GridTransport", dependencies: ["CZeroMQ", .product(name: "Crypto", package: "swift-crypto")]),
        // Placement decisions: (snapshot, requests, policy) -> plan. Pure.
        .target(name: "GridScheduler", dependencies: ["GridCore", "GridCatalog"]),
        // SQLite persistence for controllers (GRDB).
        .target(
            name: "GridStore",
            dependencies: ["GridCore", "GridProtocol", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The node agent: pure instance + shell.
        .target(
            name: "GridAgent",
            dependencies: [
                "GridCore", "GridProbe", "GridCatalog", "GridProtocol", "GridTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                "GridHTTPServer",
            ]
        ),
        // The HTTP listener both daemons run (Hummingbird, HTTPS with reload, the Prometheus
        // registry): apart from the controller's API so an agent does not carry the controller.
        .target(
            name: "GridHTTPServer",
            dependencies: [
                "GridCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Regional controller and national scheduler: pure instances + shells.
        .target(
            name: "GridController",
            dependencies: [
                "GridCore", "GridProtocol", "GridTransport", "GridStore", "GridScheduler",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // What an operator reads over HTTP: the JSON API, Prometheus /metrics, the dashboard,
        // /healthz and /readyz, served next to a controller's or agent's socket loop.
        .target(
            name: "GridHTTP",
            dependencies: [
                "GridCore", "GridProtocol", "GridController", "GridCLI", "GridHTTPServer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Resources")]
        ),
        // Daemon manners shared by the executables: --version with the git commit (written by
        // BuildInfoPlugin), text or JSON logs at a level SIGHUP can change, SIGHUP as a service,
        // systemd readiness.
        .target(
            name: "GridDaemon",
            dependencies: [
                "GridCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            plugins: ["BuildInfoPlugin"]
        ),
        .plugin(name: "BuildInfoPlugin", capability: .buildTool()),
        // The operator's CLI logic (job files, requests, tables).
        .target(
            name: "GridCLI",
            dependencies: [
                "GridCore", "GridProtocol", "GridTransport", "GridScheduler",
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // A simulated fleet of agents (many logical nodes over a few connections) for the
        // benchmarks and the scale smoke tests.
        .target(
            name: "GridFleet",
            dependencies: ["GridCore", "GridProbe", "GridCatalog", "GridProtocol", "GridTransport"]
        ),
        .executableTarget(
            name: "grid-agent",
            dependencies: [
                "GridAgent", "GridProbe", "GridCore", "GridHTTPServer", "GridDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The parent of one job's processes (C; ~0.4 MB private memory each, the rest is shared
        // library pages): outlives agent restarts,
        // records the exit status, fences the job when the agent's lease lapses.
        .executableTarget(name: "grid-job-shim"),
        .executableTarget(
            name: "grid-controller",
            dependencies: [
                "GridController", "GridCore", "GridHTTP", "GridHTTPServer", "GridDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "gridctl",
            dependencies: [
                "GridCLI", "GridCore", "GridDaemon", "GridProtocol", "GridTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // Fuzz targets: replays inputs when built normally; libFuzzer drives it under scripts/fuzz.sh.
        .executableTarget(name: "grid-fuzz", dependencies: ["GridProtocol", "GridProbe", "GridCLI", "GridController", "GridAgent"]),
        .executableTarget(
            name: "grid-bench",
            dependencies: [
                "GridCore", "GridProbe", "GridCatalog", "GridProtocol", "GridScheduler", "GridTransport", "GridStore",
                "GridFleet", "GridCLI", "GridController", "GridDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(name: "GridCoreTests", dependencies: ["GridCore"]),
        .testTarget(name: "GridCatalogTests", dependencies: ["GridCatalog", "GridCore"]),
        .testTarget(name: "GridProbeTests", dependencies: ["GridProbe", "GridCore", "GridScheduler"]),
        .testTarget(name: "GridProtocolTests", dependencies: ["GridProtocol", "GridCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "GridTransportTests", dependencies: ["GridTransport"]),
        .testTarget(name: "GridStoreTests", dependencies: ["GridStore", "GridCore", "GridProtocol"]),
        .testTarget(
            name: "GridSchedulerTests",
            dependencies: ["GridScheduler", "GridCore", "GridCatalog", .product(name: "PropertyBased", package: "swift-property-based"),
                           .product(name: "Yams", package: "Yams")]
        ),
        .testTarget(
            name: "GridControllerTests",
            dependencies: ["GridController", "GridCore", "GridProtocol", "GridStore", "GridTransport",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(name: "GridAgentTests", dependencies: ["GridAgent", "GridCore", "GridProtocol"]),
        .testTarget(
            name: "GridHTTPTests",
            dependencies: ["GridHTTP", "GridHTTPServer", "GridController", "GridCore", "GridProtocol",
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "Yams", package: "Yams")]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["GridCore", "GridCLI", "GridProtocol", "GridTransport", "GridStore",
                           .product(name: "Yams", package: "Yams"),
                           "GridAgent", "GridController", "GridFleet",
                           "grid-agent", "grid-controller", "gridctl"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

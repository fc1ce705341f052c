// swift-tools-version:6.1
// Micro-benchmarks of callbridge's per-frame path (`make bench`, `make bench-check`). A package of its own so the
// benchmark dependency never enters the main build, and `make test` never compiles it.
import PackageDescription

let package = Package(
    name: "callbridge-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The root package by path: a local path dependency may use unsafe flags (`-target-cpu` for the core).
        // Named, because a path dependency's identity is otherwise its directory's name (the checkout's).
        .package(name: "callbridge", path: ".."),
        // With a Swift 6.3 toolchain, malloc counts come from ordo-one's malloc interposer: nothing to install.
        // Only that trait: the default set adds RuntimeInterposer (ARC counts, unused here), whose package
        // (ordo-one/swift-runtime-interposer) this build does not need to fetch.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CallBridgeBenchmarks",
            dependencies: [
                .product(name: "CallBridgeCore", package: "callbridge"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "CallBridgeBenchmarks",
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)

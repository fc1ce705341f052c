// swift-tools-version:6.2
import PackageDescription

import Foundation

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

// CPU tuning for the core's SIMD code (Silero VAD). On x86-64 the core is built for `haswell` (AVX2 + FMA: every
// x86 server CPU since 2015) by default: the portable SSE2 baseline cannot reach the 25 µs/window target.
// CALLBRIDGE_TARGET_CPU overrides it: `portable` for the plain x86-64 baseline, or any -target-cpu name (`native`,
// `znver4`, …). arm64 always has fused multiply-add.
let requestedCPU = ProcessInfo.processInfo.environment["CALLBRIDGE_TARGET_CPU"].flatMap { $0.isEmpty ? nil : $0 }
#if arch(x86_64)
let targetCPU: String? = requestedCPU == "portable" ? nil : (requestedCPU ?? "haswell")
let fusedMultiplyAdd = targetCPU != nil
#else
let targetCPU: String? = requestedCPU == "portable" ? nil : requestedCPU
let fusedMultiplyAdd = true
#endif
let coreSettings: [SwiftSetting] = strict
    + (targetCPU.map { [.unsafeFlags(["-target-cpu", $0])] } ?? [])
    + (fusedMultiplyAdd ? [.define("CALLBRIDGE_FMA")] : [])

let package = Package(
    name: "callbridge",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "callbridge", targets: ["CallBridgeServer"]),
        .library(name: "CallBridgeCore", targets: ["CallBridgeCore"]),
        .library(name: "CallBridge", targets: ["CallBridge"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // Already in the graph through Hummingbird; named for NIOHTTPTypes (a refused upgrade's own response).
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // Latency percentiles of the load generator (`callbridge load`).
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // Pure core: no I/O, no clock reads, no Foundation networking.
        // The HdrHistogram package is a pure value type (no I/O); the load report's percentiles are built on it.
        .target(
            name: "CallBridgeCore",
            dependencies: [.product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: coreSettings
        ),
        // Imperative shell: server, WebSocket legs, pacing ticker, echo agent, dial client.
        .target(
            name: "CallBridge",
            dependencies: [
                "CallBridgeCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            resources: [
                // Silero VAD v6, 8 kHz weights (MIT, Silero Team), from scripts/silero/export_weights.py.
                .copy("Resources/silero_vad_v6_8k.f32"),
                .copy("Resources/LICENSE.silero-vad"),
                // The default fallback prompt (scripts/make-fallback-prompt.sh: espeak-ng + sox), 8 kHz μ-law.
                .copy("Resources/fallback-prompt.ulaw"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "CallBridgeServer",
            dependencies: [
                "CallBridge",
                "CallBridgeCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Benchmarks: `make bench` builds this in release and runs it (never part of the tests).
        .executableTarget(name: "CallBridgeBench", dependencies: ["CallBridgeCore"], swiftSettings: strict),
        .testTarget(
            name: "CallBridgeCoreTests",
            dependencies: ["CallBridgeCore", .product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CallBridgeTests",
            dependencies: [
                "CallBridge",
                "CallBridgeCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ]
)

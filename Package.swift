// swift-tools-version:6.0
import PackageDescription

let strictSwift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "Gatehouse",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "gatehouse", targets: ["gatehouse"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk.git", exact: "0.12.1"),
        // Test client only: the integration tests drive PostgresNIO through the gateway.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        .target(
            name: "GatehouseCore",
            swiftSettings: strictSwift6
        ),
        .target(
            name: "GatehouseConfig",
            dependencies: [
                "GatehouseCore",
                "Policy",
                "Masking",
                "SQLInspection",
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strictSwift6
        ),
        .target(
            name: "Identity",
            dependencies: [
                "GatehouseCore",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ],
            swiftSettings: strictSwift6
        ),
        .target(
            name: "Audit",
            dependencies: [
                "GatehouseCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSwift6
        ),
        // Detectors and masking strategies for sensitive values; pure.
        .target(
            name: "Masking",
            dependencies: [
                "GatehouseCore",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSwift6
        ),
        .target(
            name: "Policy",
            dependencies: ["GatehouseCore", "SQLInspection", "Masking"],
            swiftSettings: strictSwift6
        ),
        // PostgreSQL's own parser (libpg_query, Debian `libpg-query-dev`), seen from Swift.
        .systemLibrary(name: "CPgQuery"),
        // Statement classification on that parser: kinds, relations, functions, risk flags. Pure.
        .target(
            name: "SQLInspection",
            dependencies: ["GatehouseCore", "CPgQuery"],
            swiftSettings: strictSwift6,
            // libpg_query frees each thread's parser memory through pthread keys; the static
            // library does not name libpthread itself (needed wherever glibc is older than 2.34).
            linkerSettings: [.linkedLibrary("pthread")]
        ),
        // Runs command-line tools: no shell, own process group, bounded output and time.
        .target(
            name: "Commands",
            swiftSettings: strictSwift6
        ),
        // The approval lifecycle: held operations, access grants, their store. No network.
        .target(
            name: "Reviews",
            dependencies: [
                "GatehouseCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: strictSwift6
        ),
        .target(
            name: "PostgresGateway",
            dependencies: [
                "GatehouseCore",
                "Reviews",
                "PostgresWire",
                "Identity",
                "Audit",
                "Policy",
                "SQLInspection",
                "Masking",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift6
        ),
        .target(
            name: "HTTPGateway",
            dependencies: [
                "GatehouseCore",
                "Reviews",
                "Commands",
                "Identity",
                "Audit",
                "Policy",
                "Masking",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift6
        ),
        // The MCP server: tools that send what they do through the gateway's own listeners.
        .target(
            name: "MCPGateway",
            dependencies: [
                "GatehouseCore",
                "Identity",
                "Audit",
                "Policy",
                "Reviews",
                "HTTPGateway",
                "PostgresWire",
                .product(name: "MCP", package: "swift-sdk"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift6
        ),
        .target(
            name: "PostgresWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSwift6
        ),
        .target(
            name: "GatehouseServer",
            dependencies: [
                "GatehouseCore",
                "GatehouseConfig",
                "Identity",
                "Audit",
                "Policy",
                "PostgresGateway",
                "HTTPGateway",
                "Masking",
                "Reviews",
                "MCPGateway",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSwift6
        ),
        .executableTarget(
            name: "gatehouse",
            dependencies: [
                "GatehouseServer",
                "Policy",
                "SQLInspection",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSwift6
        ),
        // The benchmarks' floor: a bare SwiftNIO relay and a bare Hummingbird + AsyncHTTPClient
        // proxy, measured next to the gateway (benchmarks/README.md). Not shipped.
        .executableTarget(
            name: "gatehouse-baseline",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "benchmarks/baseline",
            swiftSettings: strictSwift6
        ),
        .executableTarget(
            name: "PostgresNIOProbe",
            dependencies: [
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/Probes/PostgresNIOProbe",
            swiftSettings: strictSwift6
        ),
        .testTarget(
            name: "PostgresWireTests",
            dependencies: [
                "PostgresWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: strictSwift6
        ),
        .testTarget(
            name: "PostgresGatewayTests",
            dependencies: ["PostgresGateway", "PostgresWire", "Policy", "Masking", "SQLInspection", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strictSwift6
        ),
        .testTarget(
            name: "HTTPGatewayTests",
            dependencies: ["HTTPGateway", "Policy", "GatehouseCore", .product(name: "NIOEmbedded", package: "swift-nio")],
            swiftSettings: strictSwift6
        ),
        .testTarget(name: "SQLInspectionTests", dependencies: ["SQLInspection"], swiftSettings: strictSwift6),
        .testTarget(name: "CommandsTests", dependencies: ["Commands"], swiftSettings: strictSwift6),
        .testTarget(
            name: "ReviewsTests",
            dependencies: ["Reviews", "GatehouseCore", .product(name: "Logging", package: "swift-log"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: strictSwift6
        ),
        .testTarget(name: "MaskingTests", dependencies: ["Masking"], swiftSettings: strictSwift6),
        .testTarget(name: "PolicyTests", dependencies: ["Policy", "GatehouseCore", "SQLInspection", "Masking"], swiftSettings: strictSwift6),
        .testTarget(name: "GatehouseConfigTests", dependencies: ["GatehouseConfig"], swiftSettings: strictSwift6),
        .testTarget(
            name: "IdentityTests",
            dependencies: [
                "Identity",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strictSwift6
        ),
        .testTarget(
            name: "AuditTests",
            dependencies: [
                "Audit",
                "GatehouseCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift6
        ),
    ]
)

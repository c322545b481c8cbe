import Metrics
import Prometheus

/// The process-wide Prometheus registry behind swift-metrics. swift-metrics can be bootstrapped
/// once per process, so this happens on first use and every server in the process shares it.
public enum GatehouseMetrics {
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10),
        ]
        factory.defaultValueHistogramBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    public static func bootstrap() {
        _ = registry
    }

    public static func exposition() -> String {
        registry.emitToString()
    }
}

//! Prometheus metrics the engine updates (filled in with the engine loop).

pub struct EngineMetrics {
    pub registry: prometheus::Registry,
}

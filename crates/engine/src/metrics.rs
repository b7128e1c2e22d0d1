//! Prometheus metrics the engine updates, named after vLLM's under `glimp:`.

use prometheus::{
    exponential_buckets, linear_buckets, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use glimprouter_core::Model;

const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Distinct tenant label values before the rest are folded into "other".
const MAX_TENANT_LABELS: usize = 64;

pub struct EngineMetrics {
    pub registry: Registry,
    pub requests_running: IntGaugeVecByModel,
    pub requests_waiting: IntGauge,
    pub kv_cache_usage: GaugeVec,
    pub prefix_cache_queries: IntCounterVec,
    pub prefix_cache_hits: IntCounterVec,
    pub preemptions: IntCounter,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounterVec,
    pub tenant_generation_tokens: IntCounterVec,
    pub request_success: IntCounterVec,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    pub queue_time: Histogram,
    pub iteration_tokens: HistogramVec,
    pub forward_seconds: HistogramVec,
    pub steps: IntCounterVec,
    pub llm_step_ratio: Gauge,
    pub h_init: Histogram,
    pub spec_drafts: IntCounter,
    pub spec_draft_tokens: IntCounter,
    pub spec_accepted_tokens: IntCounter,
    /// Remote tier calls by model and outcome (`ok` / `error` after retries).
    pub remote_requests: IntCounterVec,
    /// Failed remote attempts by model and kind (timeout, connect, status_5xx,
    /// status_4xx, decode); retried ones count too.
    pub remote_errors: IntCounterVec,
    pub remote_seconds: HistogramVec,
    tenants_seen: parking_lot::Mutex<std::collections::HashSet<String>>,
}

/// `glimp:num_requests_running{queue}`.
pub type IntGaugeVecByModel = prometheus::IntGaugeVec;

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl EngineMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let requests_running = prometheus::IntGaugeVec::new(
            Opts::new(
                "glimp:num_requests_running",
                "Requests running, by the queue (model) writing their current step.",
            ),
            &["queue"],
        )
        .expect("valid metric");
        r.register(Box::new(requests_running.clone()))
            .expect("unique metric");
        let requests_waiting = IntGauge::new(
            "glimp:num_requests_waiting",
            "Requests waiting for admission.",
        )
        .expect("valid metric");
        r.register(Box::new(requests_waiting.clone()))
            .expect("unique metric");
        let kv_cache_usage = GaugeVec::new(
            Opts::new(
                "glimp:kv_cache_usage_perc",
                "KV-cache usage per model pool (0 to 1).",
            ),
            &["model"],
        )
        .expect("valid metric");
        r.register(Box::new(kv_cache_usage.clone()))
            .expect("unique metric");
        let llm_step_ratio = Gauge::new(
            "glimp:routing_llm_step_ratio",
            "Share of reasoning steps written by the LLM since start.",
        )
        .expect("valid metric");
        r.register(Box::new(llm_step_ratio.clone()))
            .expect("unique metric");
        let m = Self {
            requests_running,
            requests_waiting,
            kv_cache_usage,
            prefix_cache_queries: counter_vec(
                &r,
                "glimp:prefix_cache_queries_total",
                "Tokens looked up in the prefix cache (a prompt at admission, or what a request holds when a model joins it).",
                &["model"],
            ),
            prefix_cache_hits: counter_vec(
                &r,
                "glimp:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache.",
                &["model"],
            ),
            preemptions: counter(
                &r,
                "glimp:num_preemptions_total",
                "Sequences preempted by recompute.",
            ),
            prompt_tokens: counter(
                &r,
                "glimp:prompt_tokens_total",
                "Prompt tokens of admitted requests.",
            ),
            generation_tokens: counter_vec(
                &r,
                "glimp:generation_tokens_total",
                "Output tokens, by the model that wrote them.",
                &["model"],
            ),
            tenant_generation_tokens: counter_vec(
                &r,
                "glimp:tenant_generation_tokens_total",
                "Output tokens by tenant.",
                &["tenant"],
            ),
            request_success: counter_vec(
                &r,
                "glimp:request_success_total",
                "Finished requests by reason.",
                &["finished_reason"],
            ),
            ttft: histogram(
                &r,
                "glimp:time_to_first_token_seconds",
                "Time to first token.",
                TTFT_BUCKETS.to_vec(),
            ),
            itl: histogram(
                &r,
                "glimp:inter_token_latency_seconds",
                "Time between output deltas.",
                ITL_BUCKETS.to_vec(),
            ),
            e2e: histogram(
                &r,
                "glimp:e2e_request_latency_seconds",
                "Arrival to finish.",
                REQUEST_BUCKETS.to_vec(),
            ),
            queue_time: histogram(
                &r,
                "glimp:request_queue_time_seconds",
                "Arrival to first scheduling.",
                REQUEST_BUCKETS.to_vec(),
            ),
            iteration_tokens: histogram_vec(
                &r,
                "glimp:iteration_tokens_total",
                "Tokens per model forward.",
                &["model"],
                exponential_buckets(1.0, 2.0, 14).expect("buckets"),
            ),
            forward_seconds: histogram_vec(
                &r,
                "glimp:forward_seconds",
                "Duration of one model forward.",
                &["model"],
                exponential_buckets(0.0005, 2.0, 16).expect("buckets"),
            ),
            steps: counter_vec(
                &r,
                "glimp:steps_total",
                "Reasoning steps by the model that wrote them.",
                &["route"],
            ),
            llm_step_ratio,
            h_init: histogram(
                &r,
                "glimp:h_init_nats",
                "Entropy of the SLM's first-token distribution at each glimpse.",
                linear_buckets(0.0, 0.25, 25).expect("buckets"),
            ),
            spec_drafts: counter(
                &r,
                "glimp:spec_decode_num_drafts_total",
                "Speculative verify passes.",
            ),
            spec_draft_tokens: counter(
                &r,
                "glimp:spec_decode_num_draft_tokens_total",
                "Draft tokens proposed.",
            ),
            spec_accepted_tokens: counter(
                &r,
                "glimp:spec_decode_num_accepted_tokens_total",
                "Draft tokens accepted.",
            ),
            remote_requests: counter_vec(
                &r,
                "glimp:remote_requests_total",
                "Steps sent to a remote model tier, by outcome after retries.",
                &["model", "outcome"],
            ),
            remote_errors: counter_vec(
                &r,
                "glimp:remote_errors_total",
                "Failed attempts to reach a remote model tier, by kind.",
                &["model", "kind"],
            ),
            remote_seconds: histogram_vec(
                &r,
                "glimp:remote_step_seconds",
                "Duration of one remote step call, retries included.",
                &["model"],
                exponential_buckets(0.005, 2.0, 16).expect("buckets"),
            ),
            registry: r,
            tenants_seen: parking_lot::Mutex::new(Default::default()),
        };
        for model in Model::BOTH {
            m.requests_running
                .with_label_values(&[model.as_str()])
                .set(0);
            m.kv_cache_usage
                .with_label_values(&[model.as_str()])
                .set(0.0);
            m.generation_tokens.with_label_values(&[model.as_str()]);
            m.steps.with_label_values(&[model.as_str()]);
        }
        m
    }

    /// A bounded tenant label: the first tenants seen keep their name.
    pub fn tenant_label(&self, tenant: &str) -> String {
        let mut seen = self.tenants_seen.lock();
        if seen.contains(tenant) {
            return tenant.to_string();
        }
        if seen.len() < MAX_TENANT_LABELS {
            seen.insert(tenant.to_string());
            return tenant.to_string();
        }
        "other".to_string()
    }

    pub fn record_step(&self, model: Model) {
        self.steps.with_label_values(&[model.as_str()]).inc();
        let slm = self.steps.with_label_values(&["slm"]).get() as f64;
        let llm = self.steps.with_label_values(&["llm"]).get() as f64;
        if slm + llm > 0.0 {
            self.llm_step_ratio.set(llm / (slm + llm));
        }
    }
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

//! `glimp generate`: one prompt through the engine, printed with SLM- and
//! LLM-written text told apart, then the routing stats.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context};
use glimprouter_core::params::Policy;
use glimprouter_core::{Model, SamplingParams};
use glimprouter_engine::info::rest_of_context;
use glimprouter_engine::{Engine, GenerateRequest, StreamEvent};
use glimprouter_models::ChatMessage;

use crate::config_file::ConfigArgs;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The prompt: raw text, or with `--chat` one user message.
    #[arg(long)]
    pub prompt: String,
    /// Render the prompt as one user message through the checkpoint's chat
    /// template, as `/v1/chat/completions` does (for the bundled task: the
    /// problem followed by the blank line the models expect).
    #[arg(long)]
    pub chat: bool,
    /// Tokens to generate at most; by default the rest of the context, as
    /// vLLM's (and our server's) chat endpoint does.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Routing policy (glimp, glimp-llm-first, slm, llm, random, step-entropy, step-ppl, specreason).
    #[arg(long)]
    pub policy: Option<String>,
    #[arg(long)]
    pub tau: Option<f32>,
    /// Draft tokens per LLM verify (0 = off).
    #[arg(long)]
    pub speculative_k: Option<usize>,
    /// Plain output: no colours.
    #[arg(long)]
    pub no_color: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let engine =
        Engine::start(&config.engine, Default::default()).context("starting the engine")?;
    let mut routing = config.engine.default_routing();
    if let Some(p) = &args.policy {
        routing.policy = serde_json::from_value::<Policy>(serde_json::Value::String(p.clone()))
            .with_context(|| format!("unknown policy `{p}`"))?;
    }
    if let Some(t) = args.tau {
        routing.tau = t;
    }
    if let Some(k) = args.speculative_k {
        routing.speculative_k = k;
    }
    let tokenizer = &engine.info().tokenizer;
    let prompt_ids = if args.chat {
        let user = ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        };
        let text = tokenizer.apply_chat_template(&[user], true)?;
        // The template already wrote the special tokens it wants.
        tokenizer.encode(&text, false)?
    } else {
        tokenizer.encode(&args.prompt, true)?
    };
    let max_tokens = args
        .max_tokens
        .unwrap_or_else(|| rest_of_context(engine.info().max_model_len, prompt_ids.len()));
    let request = GenerateRequest {
        request_id: "generate-0".into(),
        tenant: "cli".into(),
        prompt_ids,
        sampling: SamplingParams {
            temperature: args.temperature,
            seed: args.seed,
            max_tokens,
            ..SamplingParams::default()
        },
        routing,
        arrival: Instant::now(),
    };
    let mut rx = engine.submit(request)?;
    let (slm_style, llm_style, reset) = if args.no_color {
        ("", "", "")
    } else {
        ("\x1b[36m", "\x1b[1;33m", "\x1b[0m")
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", args.prompt)?;
    let started = Instant::now();
    loop {
        match rx.blocking_recv() {
            Some(StreamEvent::Token(delta)) => {
                let style = if delta.writer == Model::Llm {
                    llm_style
                } else {
                    slm_style
                };
                write!(out, "{style}{}{reset}", delta.text)?;
                out.flush()?;
            }
            Some(StreamEvent::Finished(f)) => {
                let r = &f.routing;
                writeln!(out)?;
                writeln!(out, "---")?;
                writeln!(
                    out,
                    "{slm_style}SLM text{reset} / {llm_style}LLM text{reset}"
                )?;
                writeln!(
                    out,
                    "finish: {}   tokens: {} (slm {}, llm {})   steps: {} (llm {}, ratio {:.2})   drafts accepted: {}/{}   {:.2}s",
                    f.reason.as_str(),
                    f.usage.completion_tokens,
                    r.slm_tokens,
                    r.llm_tokens,
                    r.steps,
                    r.llm_steps,
                    r.llm_step_ratio,
                    r.accepted_draft_tokens,
                    r.draft_tokens,
                    started.elapsed().as_secs_f64()
                )?;
                let h: Vec<String> = r.h_init.iter().map(|h| format!("{h:.2}")).collect();
                writeln!(out, "H_init per glimpse: [{}]", h.join(", "))?;
                break;
            }
            Some(StreamEvent::Error(e)) => bail!("{e}"),
            None => bail!("the engine stopped"),
        }
    }
    engine.shutdown();
    Ok(())
}

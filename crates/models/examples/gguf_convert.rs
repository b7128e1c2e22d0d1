//! Writes GGUF files with the models crate's converter (`gguf_convert`):
//!
//! cargo run --release -p glimprouter-models --example gguf_convert -- retype IN.gguf OUT.gguf f32
//!     IN.gguf with every matrix dequantized / requantized to the type given
//!     (metadata, tokenizer included, unchanged): e.g. the f32 copy of a
//!     quantized file, so two engines can serve the same unquantized weights.
//! cargo run --release -p glimprouter-models --example gguf_convert -- from-folder DIR OUT.gguf f32|f16|q8_0|q4_0|q4_k
//!     The Hugging Face checkpoint folder DIR as GGUF, every matrix in the
//!     type given. No tokenizer metadata is written: serve the file with the
//!     folder's tokenizer.json beside it.

use std::path::Path;
use std::process::ExitCode;

use candle_core::quantized::GgmlDType;
use glimprouter_models::gguf_convert::{retype_gguf, write_gguf, GgufTypes};

const USAGE: &str = "usage:
  gguf_convert retype IN.gguf OUT.gguf TYPE
  gguf_convert from-folder DIR OUT.gguf TYPE
TYPE: f32, f16, q8_0, q4_0 or q4_k";

/// The tensor type a command-line name stands for.
fn parse_dtype(name: &str) -> Result<GgmlDType, String> {
    match name.to_ascii_lowercase().as_str() {
        "f32" => Ok(GgmlDType::F32),
        "f16" => Ok(GgmlDType::F16),
        "q8_0" => Ok(GgmlDType::Q8_0),
        "q4_0" => Ok(GgmlDType::Q4_0),
        "q4_k" | "q4k" => Ok(GgmlDType::Q4K),
        other => Err(format!("unknown tensor type `{other}`\n{USAGE}")),
    }
}

/// Runs the command `args` (program name excluded) names.
fn run(args: &[String]) -> Result<(), String> {
    let [command, input, output, dtype] = args else {
        return Err(format!("expected 4 arguments, got {}\n{USAGE}", args.len()));
    };
    let dtype = parse_dtype(dtype)?;
    let (input, output) = (Path::new(input), Path::new(output));
    match command.as_str() {
        "retype" => {
            if !input.is_file() {
                return Err(format!("{}: not a file", input.display()));
            }
            retype_gguf(input, output, dtype).map_err(|e| e.to_string())
        }
        "from-folder" => {
            if !input.is_dir() {
                return Err(format!("{}: not a folder", input.display()));
            }
            write_gguf(input, output, GgufTypes::all(dtype)).map_err(|e| e.to_string())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    }?;
    println!("wrote {} ({dtype:?})", output.display());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

//! Device names as configs and tests write them: `"cpu"`, `"cuda"` or
//! `"cuda:N"`.

use candle_core::Device;

/// The candle device `name` names; the error says what is accepted, or why
/// the CUDA device could not be opened (a build without the `cuda` feature
/// has none).
pub fn parse_device(name: &str) -> Result<Device, String> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Some(0),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    let Some(ordinal) = ordinal else {
        return Err(format!(
            "must be \"cpu\", \"cuda\" or \"cuda:N\", got {name:?}"
        ));
    };
    Device::new_cuda(ordinal)
        .map_err(|e| format!("{name:?}: {e} (CUDA needs a build with `--features cuda`)"))
}

/// The device the model and engine tests run their models on:
/// `GLIMP_TEST_DEVICE` (default `cpu`), so that `benches/gpu_check.sh` runs
/// the same equivalence and invariance tests on a GPU.
pub fn test_device_name() -> String {
    std::env::var("GLIMP_TEST_DEVICE").unwrap_or_else(|_| "cpu".to_string())
}

/// [`test_device_name`] opened; panics (a test set-up error) if it cannot be.
pub fn test_device() -> Device {
    let name = test_device_name();
    parse_device(&name).unwrap_or_else(|e| panic!("GLIMP_TEST_DEVICE {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cpu_or_a_cuda_ordinal() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("gpu").unwrap_err().contains("\"cuda:N\""));
        assert!(parse_device("cuda:x").unwrap_err().contains("\"cuda:N\""));
        if !candle_core::utils::cuda_is_available() {
            let err = parse_device("cuda:1").unwrap_err();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}

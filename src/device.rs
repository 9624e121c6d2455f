//! `--device` parsing.

use candle_core::Device;

use crate::error::input_error;

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| {
                    input_error(format!("--device {s}: expected cuda:N with N a GPU index"))
                })?,
                None => 0,
            };
            cuda(ordinal)
        }
        other => Err(input_error(format!(
            "--device {other}: expected cpu or cuda:N"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> anyhow::Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| input_error(format!("--device cuda:{ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(ordinal: usize) -> anyhow::Result<Device> {
    Err(input_error(format!(
        "--device cuda:{ordinal}: this filtermon was built without the `cuda` feature"
    )))
}

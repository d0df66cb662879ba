//! Device choice: the CPU by default; with the `cuda` feature, candle's CUDA device when present.

use candle_core::Device;

use super::ModelError;

/// The device models run on unless the user names one: the first CUDA GPU when the crate is
/// built with `cuda` and one is present, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

/// A device by name: `cpu`, `cuda` or `cuda:N` (the latter two need the `cuda` feature).
pub fn by_name(name: &str) -> Result<Device, ModelError> {
    let name = name.trim().to_ascii_lowercase();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(rest) = name.strip_prefix("cuda") {
        let ordinal = match rest.strip_prefix(':') {
            Some(n) => n.parse::<usize>().map_err(|_| ModelError::BadDevice(name.clone()))?,
            None if rest.is_empty() => 0,
            None => return Err(ModelError::BadDevice(name.clone())),
        };
        if !cfg!(feature = "cuda") {
            return Err(ModelError::NoCuda);
        }
        return Ok(Device::new_cuda(ordinal)?);
    }
    Err(ModelError::BadDevice(name))
}

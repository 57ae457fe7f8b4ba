//! How a backend's llama-server is started, as far as the GPU planner and the
//! supervisor need: its model file, context, offload and KV cache settings. Unset
//! values are llama-server's own defaults.

use std::path::PathBuf;

use super::ConfigError;

/// Cache types llama-server accepts for `--cache-type-k` / `--cache-type-v`.
pub const CACHE_TYPES: [&str; 9] = [
    "f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "iq4_nl", "q4_0",
];

/// `--flash-attn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlashAttn {
    /// llama-server decides (on, on a GPU that supports it).
    #[default]
    Auto,
    /// On.
    On,
    /// Off.
    Off,
}

impl FlashAttn {
    /// The flag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            FlashAttn::Auto => "auto",
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
        }
    }
}

/// A backend's start-up settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchConfig {
    /// The GGUF file (`-m`), relative to the working directory unless absolute.
    pub model_file: Option<PathBuf>,
    /// `-c`; unset: 4096 for planning, as llama-server's default.
    pub context: Option<u64>,
    /// `-ngl`; unset: every layer.
    pub gpu_layers: Option<u32>,
    /// `--cache-type-k`; unset: f16.
    pub cache_type_k: Option<String>,
    /// `--cache-type-v`; unset: f16.
    pub cache_type_v: Option<String>,
    /// `--flash-attn`.
    pub flash_attn: FlashAttn,
    /// The planner must keep it on its `gpu`.
    pub gpu_pinned: bool,
    /// `-t` and `-tb`: CPU threads for generation and prompt processing; unset:
    /// llama-server's default (every core).
    pub threads: Option<u32>,
    /// `-np`: request slots; unset: llama-server's default.
    pub parallel: Option<u32>,
    /// Further llama-server arguments, passed as given (never an API key: those
    /// are refused).
    pub extra_args: Vec<String>,
}

/// The raw keys, on each `[[backends]]` table.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct RawLaunch {
    pub(super) model_file: Option<PathBuf>,
    pub(super) ctx_size: Option<u64>,
    pub(super) gpu_layers: Option<u32>,
    pub(super) cache_type_k: Option<String>,
    pub(super) cache_type_v: Option<String>,
    pub(super) flash_attn: Option<String>,
    pub(super) gpu_pinned: Option<bool>,
    pub(super) threads: Option<u32>,
    pub(super) parallel: Option<u32>,
    pub(super) extra_args: Vec<String>,
}

/// Arguments that would have llama-server keep prompts and answers: verbose
/// logging, its own log file, saved slots.
const PATIENT_TEXT_ARGS: [&str; 8] = [
    "-v",
    "--verbose",
    "-lv",
    "--verbosity",
    "--log-verbosity",
    "--log-verbose",
    "--log-file",
    "--slot-save-path",
];

/// Arguments that would put a key where `ps` shows it, or fight the supervisor
/// over what it sets itself.
const REFUSED_ARGS: [&str; 19] = [
    "--api-key",
    "--api-key-file",
    "-m",
    "--model",
    "-mu",
    "--model-url",
    "--host",
    "--port",
    "--alias",
    "-a",
    "-hf",
    "-hfr",
    "--hf-repo",
    "-hff",
    "--hf-file",
    "-hft",
    "--hf-token",
    "-hfv",
    "--hf-repo-v",
];

impl RawLaunch {
    pub(super) fn validate(self, prefix: &str, source: &str) -> Result<LaunchConfig, ConfigError> {
        let key = |field: &str| format!("{prefix}.{field}");
        if let Some(ctx) = self.ctx_size
            && !(256..=4_194_304).contains(&ctx)
        {
            return Err(ConfigError::new(
                source,
                key("ctx_size"),
                format!("expected 256 to 4194304 tokens, got {ctx}"),
            ));
        }
        for (field, value) in [
            ("cache_type_k", &self.cache_type_k),
            ("cache_type_v", &self.cache_type_v),
        ] {
            if let Some(value) = value
                && !CACHE_TYPES.contains(&value.as_str())
            {
                return Err(ConfigError::new(
                    source,
                    key(field),
                    format!("expected one of {}", CACHE_TYPES.join(", ")),
                ));
            }
        }
        for (field, value) in [("threads", self.threads), ("parallel", self.parallel)] {
            if let Some(value) = value
                && !(1..=1024).contains(&value)
            {
                return Err(ConfigError::new(
                    source,
                    key(field),
                    format!("expected 1 to 1024, got {value}"),
                ));
            }
        }
        for arg in &self.extra_args {
            let flag = arg.split('=').next().unwrap_or(arg);
            if PATIENT_TEXT_ARGS.contains(&flag) {
                return Err(ConfigError::new(
                    source,
                    key("extra_args"),
                    format!(
                        "`{flag}` would have llama-server write prompts and answers to its \
                         logs or to disk; patient text must not be kept there"
                    ),
                ));
            }
            if REFUSED_ARGS.contains(&flag) {
                return Err(ConfigError::new(
                    source,
                    key("extra_args"),
                    format!(
                        "`{flag}` is set by the supervisor from the backend's own keys \
                         (an API key goes in api_key, never on a command line)"
                    ),
                ));
            }
        }
        let flash_attn = match self.flash_attn.as_deref() {
            None | Some("auto") => FlashAttn::Auto,
            Some("on") => FlashAttn::On,
            Some("off") => FlashAttn::Off,
            Some(_) => {
                return Err(ConfigError::new(
                    source,
                    key("flash_attn"),
                    "expected \"auto\", \"on\" or \"off\"",
                ));
            }
        };
        let quantized_v = self
            .cache_type_v
            .as_deref()
            .is_some_and(|t| !matches!(t, "f32" | "f16" | "bf16"));
        if quantized_v && flash_attn == FlashAttn::Off {
            return Err(ConfigError::new(
                source,
                key("cache_type_v"),
                "a quantised V cache needs flash attention; set flash_attn = \"on\" or \"auto\"",
            ));
        }
        Ok(LaunchConfig {
            model_file: self.model_file,
            context: self.ctx_size,
            gpu_layers: self.gpu_layers,
            cache_type_k: self.cache_type_k,
            cache_type_v: self.cache_type_v,
            flash_attn,
            gpu_pinned: self.gpu_pinned.unwrap_or(false),
            threads: self.threads,
            parallel: self.parallel,
            extra_args: self.extra_args,
        })
    }
}

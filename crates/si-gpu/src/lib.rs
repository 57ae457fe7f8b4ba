//! GPUs and what runs on them. It knows nothing about HTTP or users.
//!
//! - [`gguf`]: reading (and, for fixtures, writing) GGUF model headers.
//! - [`profile`]: a model's shape and weight bytes, from its header.
//! - [`estimate`]: one llama-server's GPU memory, by part.
//! - [`plan`]: placing servers on GPUs with a margin, and the least harmful
//!   changes when they do not fit.
//! - [`deployment`]: the planner's inputs from a configuration.
//! - [`inventory`]: live readings through NVML, or the GPUs the configuration
//!   declares.

pub mod deployment;
pub mod estimate;
pub mod gguf;
pub mod inventory;
pub mod plan;
pub mod profile;

pub use inventory::{GpuError, GpuInventory, GpuProcess, GpuReading};

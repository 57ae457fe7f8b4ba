//! Writes header-only GGUF files with the real shapes of the original deployment's
//! models (a few hundred KB each, no weights) where the built-in configuration
//! expects them, so that `si-cli gpu plan` can plan that deployment without
//! downloading 40 GB.
//!
//! ```sh
//! cargo run --example original_models            # into ./models
//! cargo run -p si-cli -- gpu plan
//! ```

use std::path::PathBuf;

use si::si_gpu::gguf::write::{llama_header, shapes};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "models".into()));
    std::fs::create_dir_all(&dir)?;
    for (file, shape) in shapes::original_deployment() {
        let path = dir.join(file);
        if path.exists() {
            // Never overwrite what may be a real model.
            println!("kept     {} (already there)", path.display());
            continue;
        }
        std::fs::write(&path, llama_header(&shape))?;
        println!("wrote    {} ({}, header only)", path.display(), shape.name);
    }
    Ok(())
}

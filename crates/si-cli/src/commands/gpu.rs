//! `si-cli gpu`: one server's memory (`estimate`), the GPUs now (`status`), and a
//! placement of every configured server that fits (`plan`).

use std::io::Write;
use std::path::Path;

use bytesize::ByteSize;
use serde_json::json;
use si_core::Config;
use si_gpu::estimate::{ServerSettings, VramEstimate, estimate as estimate_vram};
use si_gpu::gguf::Gguf;
use si_gpu::inventory::{GpuInventory, GpuReading};
use si_gpu::plan::{GpuLoad, Placement, Plan, Verdict};
use si_gpu::profile::ModelProfile;

use crate::CliError;
use crate::args::GpuCommand;
use crate::commands::table;

fn io(e: std::io::Error) -> CliError {
    CliError::Message(format!("cannot write output: {e}"))
}

fn json_out(out: &mut impl Write, value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Message(e.to_string()))?;
    writeln!(out, "{text}").map_err(io)
}

/// `8.25 GiB` or `590 MiB`: two decimals from a GiB on, whole numbers below.
pub fn size(bytes: u64) -> String {
    let precision = if bytes >= 1 << 30 { 2 } else { 0 };
    format!("{:.precision$}", ByteSize::b(bytes).display().iec())
}

fn signed_size(bytes: i64) -> String {
    if bytes < 0 {
        format!("-{}", size(bytes.unsigned_abs()))
    } else {
        size(bytes as u64)
    }
}

/// The model in `path` started with `settings`: its memory, by part, as a table or
/// as JSON (bytes under `weights`, `kv_cache`, `compute`, `overhead`, `total`).
pub fn estimate(
    path: &Path,
    settings: &ServerSettings,
    overhead: u64,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let gguf = Gguf::open(path).map_err(|e| CliError::Message(e.to_string()))?;
    let profile = ModelProfile::from_gguf(&gguf)
        .map_err(|e| CliError::Message(format!("{}: {e}", path.display())))?;
    let e = estimate_vram(&profile, settings, overhead);
    if json {
        return json_out(
            out,
            &json!({
                "model": path.display().to_string(),
                "architecture": profile.architecture,
                "layers": profile.layers,
                "quantization": profile.quantization,
                "parameters": profile.parameters,
                "context": settings.context,
                "cache_type_k": settings.cache_type_k,
                "cache_type_v": settings.cache_type_v,
                "flash_attn": settings.flash_attn,
                "layers_on_gpu": e.layers_on_gpu,
                "weights": e.weights,
                "kv_cache": e.kv_cache,
                "compute": e.compute,
                "overhead": e.overhead,
                "total": e.total,
            }),
        );
    }
    writeln!(
        out,
        "{}: {} ({}), {} layers, {:.2} B parameters, {} of weights",
        path.display(),
        profile.name.as_deref().unwrap_or(&profile.architecture),
        profile.quantization,
        profile.layers,
        profile.parameters as f64 / 1e9,
        size(profile.weights_bytes)
    )
    .map_err(io)?;
    writeln!(
        out,
        "-c {}, K cache {}, V cache {}, flash attention {}, {} of {} layers{} on the GPU\n",
        settings.context,
        settings.cache_type_k,
        settings.cache_type_v,
        if settings.flash_attn { "on" } else { "off" },
        e.layers_on_gpu,
        profile.layers,
        if e.output_on_gpu {
            " and the output"
        } else {
            ""
        }
    )
    .map_err(io)?;
    let parts = [
        ("weights on GPU", e.weights),
        ("KV cache", e.kv_cache),
        ("compute buffer", e.compute),
        ("per-process overhead", e.overhead),
        ("total", e.total),
    ]
    .map(|(part, bytes)| [part.to_owned(), size(bytes)]);
    table::write(out, &table::plain(&[], parts, &[1]), "").map_err(io)
}

/// The GPUs now, and each compute process with the backend it serves where its
/// listening port says.
pub fn status(
    config: &Config,
    inventory: &dyn GpuInventory,
    note: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let readings = inventory
        .read()
        .map_err(|e| CliError::Message(format!("cannot read the GPUs: {e}")))?;
    let owner = |pid: u32| crate::commands::ports::backend_of(config, pid);
    if json {
        let gpus: Vec<_> = readings
            .iter()
            .map(|g| {
                json!({
                    "index": g.index, "name": g.name,
                    "memory_total": g.memory_total_bytes, "memory_used": g.memory_used_bytes,
                    "utilization": g.utilization, "temperature_celsius": g.temperature_celsius,
                    "processes": g.processes.iter().map(|p| json!({
                        "pid": p.pid, "memory": p.memory_bytes, "backend": owner(p.pid),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return json_out(
            out,
            &json!({"source": inventory.source(), "note": note, "gpus": gpus}),
        );
    }
    if let Some(note) = note {
        writeln!(out, "note: {note}\n").map_err(io)?;
    }
    let mut rows = Vec::new();
    for gpu in &readings {
        rows.push(gpu_row(gpu));
        // Each process goes under its GPU, its memory in the memory column.
        rows.extend(gpu.processes.iter().map(|process| {
            let backend = owner(process.pid).unwrap_or_else(|| "(not a configured backend)".into());
            let memory = process.memory_bytes.map_or("-".into(), size);
            let name = format!("  pid {} {backend}", process.pid);
            [String::new(), name, memory, String::new(), String::new()]
        }));
    }
    let header = ["GPU", "NAME", "MEMORY USED", "UTIL", "TEMP"];
    table::write(out, &table::plain(&header, rows, &[2, 3, 4]), "").map_err(io)
}

fn gpu_row(gpu: &GpuReading) -> [String; 5] {
    let used = match gpu.memory_used_bytes {
        Some(used) => format!("{} / {}", size(used), size(gpu.memory_total_bytes)),
        None => format!("? / {}", size(gpu.memory_total_bytes)),
    };
    [
        gpu.index.to_string(),
        gpu.name.clone(),
        used,
        gpu.utilization
            .map_or("-".into(), |u| format!("{:.0}%", u * 100.0)),
        gpu.temperature_celsius
            .map_or("-".into(), |t| format!("{t}°C")),
    ]
}

/// Writes `plan`; returns whether every server is placed.
pub fn write_plan(
    config: &Config,
    plan: &Plan,
    json: bool,
    out: &mut impl Write,
) -> Result<bool, CliError> {
    let placed = plan.verdict != Verdict::DoesNotFit;
    if json {
        let launch: Vec<_> = plan
            .placements
            .iter()
            .map(|p| json!({"server": p.server, "command": launch_line(config, p)}))
            .collect();
        let mut value = serde_json::to_value(plan).map_err(|e| CliError::Message(e.to_string()))?;
        value["launch"] = json!(launch);
        value["costs"] = json!(plan.remedies.iter().map(|r| r.cost()).collect::<Vec<_>>());
        json_out(out, &value)?;
        return Ok(placed);
    }
    writeln!(out, "As configured:").map_err(io)?;
    write_loads(out, &plan.declared, &plan.declared_placements)?;
    let verdict = match plan.verdict {
        Verdict::Fits => "fits as configured",
        Verdict::FitsWithChanges => "does not fit as configured; fits with the changes below",
        Verdict::DoesNotFit => "does not fit, even with every change below",
    };
    writeln!(out, "\nVerdict: {verdict}").map_err(io)?;
    if plan.verdict == Verdict::Fits {
        write_launch(out, config, plan)?;
        return Ok(true);
    }
    writeln!(out, "\nChanges, least harmful first:").map_err(io)?;
    for (i, remedy) in plan.remedies.iter().enumerate() {
        writeln!(out, "{:>2}. {}: {}", i + 1, remedy.server(), remedy.cost()).map_err(io)?;
    }
    if !plan.unplaced.is_empty() {
        writeln!(out, "\nFits nowhere: {}", plan.unplaced.join(", ")).map_err(io)?;
    }
    writeln!(out, "\nPlanned:").map_err(io)?;
    write_loads(out, &plan.gpus, &plan.placements)?;
    write_launch(out, config, plan)?;
    Ok(placed)
}

fn write_loads(
    out: &mut impl Write,
    loads: &[GpuLoad],
    placements: &[Placement],
) -> Result<(), CliError> {
    for load in loads {
        writeln!(
            out,
            "  GPU {} {} ({}), margin {}",
            load.gpu.index,
            load.gpu.name,
            size(load.gpu.capacity),
            size(load.margin)
        )
        .map_err(io)?;
        let mut rows: Vec<[String; 7]> = placements
            .iter()
            .filter(|p| p.gpu == Some(load.gpu.index))
            .map(|p| estimate_row(&p.server, &p.estimate))
            .collect();
        let room = load.free - load.margin as i64;
        let state = if room >= 0 {
            "ok"
        } else if load.free >= 0 {
            "inside the margin"
        } else {
            "OVER CAPACITY"
        };
        // The GPU's total goes under the servers' totals.
        let (planned, free) = (size(load.planned), signed_size(load.free));
        let free = format!("free {free} ({state})");
        rows.push(["", "", "", "", "", &planned, &free].map(String::from));
        let header = [
            "server", "weights", "KV cache", "compute", "overhead", "total", "",
        ];
        let table = table::plain(&header, rows, &[1, 2, 3, 4, 5]);
        table::write(out, &table, "    ").map_err(io)?;
    }
    Ok(())
}

/// A server's row: its name, its memory by part, and nothing under `free`.
fn estimate_row(server: &str, e: &VramEstimate) -> [String; 7] {
    let parts = [e.weights, e.kv_cache, e.compute, e.overhead, e.total];
    let [weights, kv_cache, compute, overhead, total] = parts.map(size);
    let server = server.to_owned();
    [
        server,
        weights,
        kv_cache,
        compute,
        overhead,
        total,
        String::new(),
    ]
}

fn write_launch(out: &mut impl Write, config: &Config, plan: &Plan) -> Result<(), CliError> {
    writeln!(out, "\nLaunch settings:").map_err(io)?;
    for p in &plan.placements {
        writeln!(out, "  {}", launch_line(config, p)).map_err(io)?;
    }
    Ok(())
}

/// `CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=N llama-server -m FILE -c …
/// --port …` for a placement. PCI bus order is NVML's, whose indices the plan uses;
/// CUDA's own default order (fastest first) can differ on mixed cards.
pub fn launch_line(config: &Config, p: &Placement) -> String {
    let backend = config.backends.iter().find(|b| b.name == p.server);
    let model = backend
        .and_then(|b| b.launch.model_file.as_ref())
        .map_or_else(|| "MODEL.gguf".into(), |m| m.display().to_string());
    let port = backend.map_or(0, |b| b.url.port);
    let gpu = p.gpu.map_or_else(|| "none".into(), |g| g.to_string());
    let ngl = p.gpu_layers.map_or_else(|| "999".into(), |n| n.to_string());
    format!(
        "CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES={gpu} llama-server -m {model} -c {} -ngl {ngl} --cache-type-k {} --cache-type-v {} --flash-attn {} --port {port}",
        p.context,
        p.cache_type_k,
        p.cache_type_v,
        if p.flash_attn { "on" } else { "off" },
    )
}

/// `si-cli gpu ...`; returns whether everything fits (for `plan`).
pub fn run(command: GpuCommand, config: &Config, out: &mut impl Write) -> Result<bool, CliError> {
    let overhead = config.gpu.process_overhead_bytes;
    let inventory = || {
        si_gpu::inventory::open(&config.gpu)
            .map_err(|e| CliError::Message(format!("cannot read the GPUs: {e}")))
    };
    match command {
        GpuCommand::Estimate {
            model,
            ctx,
            cache_type_k,
            cache_type_v,
            flash_attn,
            ngl,
            json,
        } => {
            let settings = si_gpu::estimate::ServerSettings {
                context: ctx,
                cache_type_k,
                cache_type_v,
                flash_attn: flash_attn != "off",
                gpu_layers: ngl,
                ubatch: si_gpu::estimate::DEFAULT_UBATCH,
            };
            if cache_type_v.is_quantized() && !settings.flash_attn {
                return Err(CliError::Message(
                    "a quantised V cache needs flash attention (--flash-attn on)".into(),
                ));
            }
            estimate(&model, &settings, overhead, json, out)?;
        }
        GpuCommand::Status { json } => {
            let (inventory, note) = inventory()?;
            status(config, inventory.as_ref(), note.as_deref(), json, out)?;
        }
        GpuCommand::Plan { json, host } => {
            let placed;
            let config = match host {
                Some(host) => {
                    placed = super::on_host(config, &host)?;
                    &placed
                }
                None => config,
            };
            let servers = si_gpu::deployment::servers(config, Path::new("."))
                .map_err(|e| CliError::Message(e.to_string()))?;
            let (inventory, note) = inventory()?;
            if let (Some(note), false) = (&note, json) {
                writeln!(out, "note: {note}\n")
                    .map_err(|e| CliError::Message(format!("cannot write output: {e}")))?;
            }
            let readings = inventory
                .read()
                .map_err(|e| CliError::Message(format!("cannot read the GPUs: {e}")))?;
            let gpus = si_gpu::deployment::gpu_specs(&readings);
            let plan = si_gpu::plan::plan(&servers, &gpus, config.gpu.margin_bytes, overhead);
            return write_plan(config, &plan, json, out);
        }
    }
    Ok(true)
}

/// `si-cli tiny-model`: writes the tiny random-weight model to `path`.
pub fn write_tiny_model(path: &Path, seed: u64, out: &mut impl Write) -> Result<(), CliError> {
    let bytes = si_gpu::gguf::write::tiny_llama(seed);
    std::fs::write(path, &bytes)
        .map_err(|e| CliError::Message(format!("cannot write {}: {e}", path.display())))?;
    writeln!(out, "wrote {} ({} bytes)", path.display(), bytes.len())
        .map_err(|e| CliError::Message(format!("cannot write output: {e}")))
}

#[cfg(test)]
mod tests {
    use si_gpu::GpuError;
    use si_gpu::inventory::GpuProcess;

    use super::*;

    #[derive(Debug)]
    struct OneBusyGpu;

    impl GpuInventory for OneBusyGpu {
        fn source(&self) -> &'static str {
            "test"
        }

        fn read(&self) -> Result<Vec<GpuReading>, GpuError> {
            Ok(vec![GpuReading {
                index: 0,
                name: "NVIDIA H200".into(),
                memory_total_bytes: 141 << 30,
                memory_used_bytes: Some(624 << 20),
                utilization: Some(0.25),
                temperature_celsius: Some(41),
                processes: vec![GpuProcess {
                    pid: u32::MAX,
                    memory_bytes: Some(590 << 20),
                }],
            }])
        }
    }

    #[test]
    fn status_lists_each_process_under_its_gpu() {
        let config = Config::builtin().unwrap();
        let mut out = Vec::new();
        status(&config, &OneBusyGpu, None, false, &mut out).unwrap();
        let shown = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert!(lines[0].starts_with("GPU  NAME"), "{shown}");
        assert!(lines[1].contains("624 MiB / 141.00 GiB"), "{shown}");
        assert!(lines[1].ends_with("25%  41°C"), "{shown}");
        assert!(lines[2].contains("pid 4294967295 (not a configured backend)"));
        // The process's memory is in the memory column.
        let column = |line: &str, text: &str| line.find(text).map(|at| at + text.len());
        assert_eq!(column(lines[2], "590 MiB"), column(lines[1], "141.00 GiB"));
    }
}

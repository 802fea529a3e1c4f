//! Where a process' CPU goes: `perf script` output (sampled call stacks of one process)
//! folded into stacks, drawn as a flame graph, and summed by area of the code into
//! microseconds per request.
//!
//! `bench/run.sh profile` records the gateway and the consumers with `perf record` (the CPU
//! clock at a fixed frequency, DWARF call graphs) while a scenario runs. A sample stands for
//! `1 / hz` seconds of CPU, so samples per request are CPU time per request without relying
//! on the (noisy) throughput. Written here rather than taken from a flame-graph tool: the
//! parsing is a few lines, and the per-area table is what BENCHMARKS.md reports.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// `perf script` output of one process.
    #[arg(long)]
    pub perf_script: PathBuf,
    /// The process' name in titles and file names (`gateway`, `consumers`).
    #[arg(long)]
    pub name: String,
    /// The sampling frequency `perf record -F` ran with.
    #[arg(long)]
    pub hz: f64,
    /// What the CPU is divided by (requests, or accepted orders).
    #[arg(long)]
    pub per: u64,
    /// What `--per` counts, for the table's heading.
    #[arg(long, default_value = "request")]
    pub per_what: String,
    /// Where `<name>.folded`, `<name>.svg` and `<name>.md` go.
    #[arg(long)]
    pub out: PathBuf,
}

/// Call stacks, root first, with how many samples each had.
#[derive(Debug, Default)]
pub struct Folded {
    pub stacks: BTreeMap<Vec<String>, u64>,
}

impl Folded {
    pub fn samples(&self) -> u64 {
        self.stacks.values().sum()
    }

    /// `perf script` text: per sample a header line, then one frame per line (leaf first),
    /// then a blank line.
    pub fn from_perf_script(text: &str) -> Self {
        let mut folded = Folded::default();
        let mut frames: Vec<String> = Vec::new();
        let mut in_sample = false;
        for line in text.lines().chain(std::iter::once("")) {
            if line.trim().is_empty() {
                if in_sample {
                    frames.reverse();
                    if frames.is_empty() {
                        frames.push("[no stack]".to_owned());
                    }
                    *folded.stacks.entry(std::mem::take(&mut frames)).or_default() += 1;
                }
                in_sample = false;
            } else if line.starts_with(char::is_whitespace) {
                if in_sample {
                    frames.push(frame_name(line));
                }
            } else {
                in_sample = true;
                frames.clear();
            }
        }
        folded
    }

    /// One line per stack: `root;…;leaf count` (the format flame-graph tools read).
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (stack, n) in &self.stacks {
            let _ = writeln!(text, "{} {n}", stack.join(";"));
        }
        text
    }

    /// Samples whose leaf frame falls in each area.
    pub fn self_by_area(&self) -> BTreeMap<&'static str, u64> {
        let mut areas = BTreeMap::new();
        for (stack, n) in &self.stacks {
            let leaf = stack.last().map_or("", String::as_str);
            *areas.entry(area(leaf)).or_default() += n;
        }
        areas
    }

    /// Samples per leaf function, most first.
    pub fn self_by_function(&self) -> Vec<(String, u64)> {
        let mut by: HashMap<&str, u64> = HashMap::new();
        for (stack, n) in &self.stacks {
            *by.entry(stack.last().map_or("", String::as_str)).or_default() += n;
        }
        ranked(by)
    }

    /// Samples with each of our functions (the workspace's crates) on the stack, counted
    /// once per sample: the time spent in it and what it called.
    pub fn inclusive_of_our_functions(&self) -> Vec<(String, u64)> {
        let mut by: HashMap<&str, u64> = HashMap::new();
        for (stack, n) in &self.stacks {
            let mut seen: Vec<&str> = stack.iter().map(String::as_str).filter(|f| is_ours(f)).collect();
            seen.sort_unstable();
            seen.dedup();
            for f in seen {
                *by.entry(f).or_default() += n;
            }
        }
        ranked(by)
    }
}

/// Most samples first, then by name.
fn ranked(by: HashMap<&str, u64>) -> Vec<(String, u64)> {
    let mut list: Vec<(String, u64)> = by.into_iter().map(|(f, n)| (f.to_owned(), n)).collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list
}

/// A frame line's function: `  7f3a… name+0x1c (/path)` → `name`, without Rust's hash
/// suffix; `[unknown]` frames keep their library's file name.
fn frame_name(line: &str) -> String {
    let line = line.trim();
    let rest = line.split_once(' ').map_or("", |(_, r)| r);
    let (symbol, object) = match rest.rfind(" (") {
        Some(i) => (&rest[..i], rest[i + 2..].trim_end_matches(')')),
        None => (rest, ""),
    };
    let symbol = symbol.rsplit_once("+0x").map_or(symbol, |(s, _)| s);
    let file = object.rsplit('/').next().unwrap_or(object);
    if symbol.is_empty() || symbol == "[unknown]" {
        return format!("[{}]", if file.is_empty() { "unknown" } else { file });
    }
    if file == "[kernel.kallsyms]" {
        return format!("[k] {symbol}");
    }
    strip_hash(symbol).to_owned()
}

/// `path::to::fn::h0123456789abcdef` → `path::to::fn`.
fn strip_hash(symbol: &str) -> &str {
    match symbol.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => symbol,
    }
}

const OUR_CRATES: [&str; 4] = ["gateway::", "order_core::", "consumers::", "bench::"];

fn is_ours(frame: &str) -> bool {
    let frame = subject(frame);
    OUR_CRATES.iter().any(|c| frame.starts_with(c))
}

/// The path a frame's crate is read from: `<T as tower::Service>::call` is tower's,
/// `<axum::FromFn<…> as tower::Service>::call` axum's.
fn subject(frame: &str) -> &str {
    let f = frame
        .trim_start_matches('<')
        .trim_start_matches("&mut ")
        .trim_start_matches('&');
    match f.split_once(" as ") {
        Some((head, tail)) if !head.contains("::") => tail,
        _ => f,
    }
}

/// The area of the code a leaf frame belongs to, by its crate (or the kernel).
pub fn area(frame: &str) -> &'static str {
    let f = subject(frame);
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| f.starts_with(p));
    if f.starts_with("[k] ") || f == "[kernel.kallsyms]" {
        "kernel (network, scheduling, syscalls)"
    } else if starts(&["hyper::", "hyper_util::", "http::", "httparse::", "http_body"]) {
        "HTTP (hyper, httparse)"
    } else if starts(&[
        "axum::",
        "axum_core::",
        "tower::",
        "tower_http::",
        "tower_service::",
        "matchit::",
    ]) {
        "routing and middleware (axum, tower)"
    } else if starts(&["governor::", "dashmap::"]) {
        "rate limiting (governor)"
    } else if starts(&[
        "tokio::",
        "mio::",
        "futures_",
        "futures::",
        "parking_lot",
        "crossbeam",
    ]) {
        "async runtime (tokio, futures)"
    } else if starts(&["serde_json::", "serde::", "serde_core::"]) {
        "JSON (serde_json)"
    } else if starts(&[
        "ring::",
        "jsonwebtoken::",
        "hmac::",
        "sha2::",
        "base64::",
        "ring_core",
    ]) {
        "crypto and tokens (ring, jsonwebtoken, base64)"
    } else if starts(&["redis::", "combine::", "deadpool"]) {
        "Redis client (redis)"
    } else if starts(&["pulsar::", "prost::", "crc32c::", "asynchronous_codec"]) {
        "broker client (pulsar, prost)"
    } else if starts(&["sqlx", "tokio_postgres"]) {
        "PostgreSQL client (sqlx)"
    } else if starts(&["tracing", "tracing_subscriber::", "sharded_slab::"]) {
        "tracing"
    } else if starts(&["metrics::", "metrics_exporter_prometheus::", "metrics_util::"]) {
        "metrics"
    } else if starts(&[
        "mi_",
        "_mi_",
        "mimalloc",
        "__mem",
        "memcpy",
        "memmove",
        "__rustc::",
        "bytes::",
        "smallvec::",
        "__vdso",
    ]) || f.contains("alloc::")
        || f.contains("libc.so")
    {
        "allocation, buffers, copies, libc"
    } else if is_ours(f) {
        "our code (gateway, order-core, consumers)"
    } else if starts(&["core::", "std::"]) {
        "Rust std (formatting, hashing, collections)"
    } else {
        "other"
    }
}

/// The flame graph of `folded` as a standalone SVG: the root at the bottom, a frame's width
/// its share of the samples; hovering a frame shows its name and share.
pub fn flame_graph_svg(title: &str, folded: &Folded) -> String {
    #[derive(Default)]
    struct Node {
        samples: u64,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for (stack, n) in &folded.stacks {
        root.samples += n;
        let mut node = &mut root;
        for frame in stack {
            node = node.children.entry(frame.clone()).or_default();
            node.samples += n;
        }
    }
    fn depth(node: &Node) -> usize {
        1 + node.children.values().map(depth).max().unwrap_or(0)
    }
    const WIDTH: f64 = 1200.0;
    const ROW: f64 = 16.0;
    const TOP: f64 = 40.0;
    let rows = depth(&root);
    let height = TOP + rows as f64 * ROW + 10.0;
    let total = root.samples.max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="15" font-family="sans-serif">{} ({} samples)</text>"#,
        escape(title),
        root.samples
    );
    #[allow(clippy::too_many_arguments)]
    fn draw(svg: &mut String, name: &str, node: &Node, x: f64, level: usize, total: f64, height: f64) {
        let width = node.samples as f64 / total * WIDTH;
        if width < 0.3 {
            return;
        }
        let y = height - 10.0 - (level + 1) as f64 * ROW;
        let color = area_color(area(name));
        let share = node.samples as f64 / total * 100.0;
        let _ = writeln!(
            svg,
            r#"<g><title>{} ({:.2} %)</title><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}" stroke="white" stroke-width="0.3"/>"#,
            escape(name),
            share,
            width,
            ROW - 1.0
        );
        let chars = ((width - 4.0) / 6.6).floor() as usize;
        if chars >= 3 {
            let label: String = if name.chars().count() > chars {
                name.chars().take(chars.saturating_sub(1)).chain(['…']).collect()
            } else {
                name.to_owned()
            };
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x + 2.0,
                y + ROW - 4.0,
                escape(&label)
            );
        }
        let _ = writeln!(svg, "</g>");
        let mut cx = x;
        for (child_name, child) in &node.children {
            draw(svg, child_name, child, cx, level + 1, total, height);
            cx += child.samples as f64 / total * WIDTH;
        }
    }
    draw(&mut svg, "all", &root, 0.0, 0, total, height);
    let _ = writeln!(svg, "</svg>");
    svg
}

fn area_color(area: &str) -> &'static str {
    match area {
        a if a.starts_with("kernel") => "#e8a087",
        a if a.starts_with("HTTP") => "#f2c46d",
        a if a.starts_with("routing") => "#f0d98a",
        a if a.starts_with("async") => "#a7c7e7",
        a if a.starts_with("JSON") => "#c7a7e7",
        a if a.starts_with("crypto") => "#e7a7c7",
        a if a.starts_with("Redis") => "#e77b7b",
        a if a.starts_with("broker") => "#7bc8a4",
        a if a.starts_with("PostgreSQL") => "#7ba4c8",
        a if a.starts_with("tracing") | a.starts_with("metrics") => "#b5d99c",
        a if a.starts_with("allocation") => "#d9c29c",
        a if a.starts_with("rate") => "#9cd9d2",
        a if a.starts_with("our code") => "#f7936f",
        _ => "#cccccc",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The per-area and per-function tables (Markdown), in µs per `per_what`.
pub fn tables(folded: &Folded, a: &Args) -> String {
    let us = |samples: u64| samples as f64 / a.hz * 1e6 / a.per.max(1) as f64;
    let total = folded.samples();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### {}: {:.1} µs of CPU per {} ({} samples at {} Hz over {} {}s)\n",
        a.name,
        us(total),
        a.per_what,
        total,
        a.hz,
        a.per,
        a.per_what
    );
    let _ = writeln!(
        md,
        "| area (where the time is spent, by leaf frame) | µs per {} | share |",
        a.per_what
    );
    let _ = writeln!(md, "|---|---|---|");
    let mut areas: Vec<(&str, u64)> = folded.self_by_area().into_iter().collect();
    areas.sort_by_key(|a| std::cmp::Reverse(a.1));
    for (area, n) in areas {
        let _ = writeln!(md, "| {area} | {:.2} | {:.1} % |", us(n), share(n, total));
    }
    let functions = |md: &mut String, heading: &str, rows: Vec<(String, u64)>, most: usize| {
        let _ = writeln!(
            md,
            "\n| {heading} | µs per {} | share |\n|---|---|---|",
            a.per_what
        );
        for (f, n) in rows.into_iter().take(most) {
            let _ = writeln!(
                md,
                "| `{}` | {:.2} | {:.1} % |",
                short(&f),
                us(n),
                share(n, total)
            );
        }
    };
    functions(
        &mut md,
        "our function (with what it calls)",
        folded.inclusive_of_our_functions(),
        15,
    );
    functions(&mut md, "leaf function", folded.self_by_function(), 20);
    md
}

fn share(n: u64, total: u64) -> f64 {
    n as f64 * 100.0 / total.max(1) as f64
}

/// Long generic names cut to something a table can hold.
fn short(name: &str) -> String {
    let name = name.replace('|', "/");
    if name.chars().count() > 110 {
        name.chars().take(109).chain(['…']).collect()
    } else {
        name
    }
}

/// `bench profile`: fold one process' `perf script`, write the folded stacks, the flame
/// graph and the tables; print the tables.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.perf_script)
        .with_context(|| format!("read {}", a.perf_script.display()))?;
    let folded = Folded::from_perf_script(&text);
    anyhow::ensure!(folded.samples() > 0, "no samples in {}", a.perf_script.display());
    std::fs::create_dir_all(&a.out)?;
    let write = |file: &str, body: &str| -> anyhow::Result<()> {
        let path: PathBuf = Path::new(&a.out).join(file);
        std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))
    };
    write(&format!("{}.folded", a.name), &folded.to_text())?;
    write(
        &format!("{}.svg", a.name),
        &flame_graph_svg(&format!("{}: CPU by call stack", a.name), &folded),
    )?;
    let md = tables(&folded, a);
    write(&format!("{}.md", a.name), &md)?;
    println!("{md}");
    Ok(())
}

/// Variables naming perf control FIFOs (`perf record --control fifo:…`, started with its
/// events disabled): those in `BENCH_PERF_LOAD` record while a load runs (the processes that
/// answer its requests), those in `BENCH_PERF_FROM_LOAD` from a load's start on (the
/// processes whose work follows it, until `bench/run.sh` stops perf).
const DURING_LOAD: &str = "BENCH_PERF_LOAD";
const FROM_LOAD: &str = "BENCH_PERF_FROM_LOAD";

/// Turn recording on as a load starts (`true`) or off for the load's own processes as it
/// ends; nothing unless `bench/run.sh profile` set the variables.
pub fn at_load(starts: bool) {
    let fifos = |var: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_default()
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let command = if starts { "enable" } else { "disable" };
    for fifo in fifos(DURING_LOAD) {
        tell_perf(&fifo, command);
    }
    if starts {
        for fifo in fifos(FROM_LOAD) {
            tell_perf(&fifo, command);
        }
    }
}

fn tell_perf(fifo: &str, command: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a perf that exited must not hang the bench (the open fails instead).
    const O_NONBLOCK: i32 = 0o4000;
    let sent = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_NONBLOCK)
        .open(fifo)
        .and_then(|mut f| f.write_all(format!("{command}\n").as_bytes()));
    if let Err(e) = sent {
        eprintln!("perf control {fifo}: {command} not sent: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "gateway 100 1.000: 3367003 cpu-clock:\n\
        \t    55d0 hyper::proto::h1::role::parse_headers::h0123456789abcdef+0x1c (/bin/gateway)\n\
        \t    55d1 gateway::routes::seckill::place_seckill_order::h1111111111111111+0x2 (/bin/gateway)\n\
        \t    55d2 tokio::runtime::task::harness::poll::h2222222222222222+0x9 (/bin/gateway)\n\
        \n\
        gateway 100 1.001: 3367003 cpu-clock:\n\
        \t    ffff tcp_sendmsg+0x4 ([kernel.kallsyms])\n\
        \t    55d2 tokio::runtime::task::harness::poll::h2222222222222222+0x9 (/bin/gateway)\n\
        \n\
        gateway 100 1.002: 3367003 cpu-clock:\n\
        \t    55d0 hyper::proto::h1::role::parse_headers::h0123456789abcdef+0x10 (/bin/gateway)\n\
        \t    55d1 gateway::routes::seckill::place_seckill_order::h1111111111111111+0x2 (/bin/gateway)\n\
        \t    55d2 tokio::runtime::task::harness::poll::h2222222222222222+0x9 (/bin/gateway)\n";

    #[test]
    fn samples_fold_into_stacks_root_first_without_hashes_or_offsets() {
        let folded = Folded::from_perf_script(SCRIPT);
        assert_eq!(folded.samples(), 3);
        assert_eq!(
            folded.to_text(),
            "tokio::runtime::task::harness::poll;[k] tcp_sendmsg 1\n\
             tokio::runtime::task::harness::poll;gateway::routes::seckill::place_seckill_order;hyper::proto::h1::role::parse_headers 2\n"
        );
    }

    #[test]
    fn time_is_counted_by_the_leafs_area_and_under_each_of_our_functions() {
        let folded = Folded::from_perf_script(SCRIPT);
        let areas = folded.self_by_area();
        assert_eq!(areas.get("HTTP (hyper, httparse)"), Some(&2));
        assert_eq!(areas.get("kernel (network, scheduling, syscalls)"), Some(&1));
        assert_eq!(
            folded.inclusive_of_our_functions(),
            vec![("gateway::routes::seckill::place_seckill_order".to_owned(), 2)]
        );
        assert_eq!(
            area("<T as tower::util::boxed_clone_sync::CloneService<R>>::clone_box"),
            "routing and middleware (axum, tower)"
        );
        assert_eq!(
            area("<gateway::error::ApiError as axum_core::response::IntoResponse>::into_response"),
            "our code (gateway, order-core, consumers)"
        );
        // 3 samples at 1,000 Hz over 10 requests: 300 µs each.
        let md = tables(
            &folded,
            &Args {
                perf_script: PathBuf::new(),
                name: "gateway".into(),
                hz: 1000.0,
                per: 10,
                per_what: "request".into(),
                out: PathBuf::new(),
            },
        );
        assert!(md.contains("300.0 µs of CPU per request"), "{md}");
        assert!(
            md.contains("| HTTP (hyper, httparse) | 200.00 | 66.7 % |"),
            "{md}"
        );
    }

    #[test]
    fn the_flame_graph_draws_every_frame_wide_enough_to_see() {
        let svg = flame_graph_svg("t", &Folded::from_perf_script(SCRIPT));
        assert!(svg.contains("<title>all (100.00 %)</title>"), "{svg}");
        assert!(
            svg.contains("hyper::proto::h1::role::parse_headers (66.67 %)"),
            "{svg}"
        );
        assert!(svg.contains("[k] tcp_sendmsg (33.33 %)"), "{svg}");
    }
}

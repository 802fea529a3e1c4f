//! CPU time per process over a measured window, from `/proc`: what each part of the system
//! spends per request. Requests per second move by a third between runs on a shared machine;
//! CPU time per request moves far less, so capacity is planned from it.
//!
//! A process is counted with everything below it: its own user + system time, what its
//! exited children left in `cutime`/`cstime`, and its live descendants. PostgreSQL's backends
//! come and go during a run; a backend that exits inside the window is reaped by the
//! postmaster, so its whole life moves into the postmaster's children time and the
//! difference over the window stays right.
//!
//! Which processes: `BENCH_PROCESSES="gateway=<pid> consumers=<pid> redis=<pid> …"` (set by
//! `bench/run.sh` from the stack's pid files), plus this load generator itself.

use std::collections::HashMap;

use serde::Serialize;

/// Names and root pids of the processes to measure.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    roots: Vec<(String, u32)>,
}

impl Processes {
    /// From `BENCH_PROCESSES`; empty (only the load generator) when unset.
    pub fn from_env() -> anyhow::Result<Self> {
        let Ok(raw) = std::env::var("BENCH_PROCESSES") else {
            return Ok(Self::default());
        };
        let mut roots = Vec::new();
        for part in raw.split_whitespace() {
            let (name, pid) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("BENCH_PROCESSES: expected name=pid, got {part:?}"))?;
            let pid: u32 = pid
                .parse()
                .map_err(|_| anyhow::anyhow!("BENCH_PROCESSES: {name}: not a pid: {pid:?}"))?;
            roots.push((name.to_owned(), pid));
        }
        Ok(Self { roots })
    }

    /// CPU time of each process tree now, and of the bench's child servers alive now.
    pub fn sample(&self) -> Sample {
        let table = ProcTable::read();
        let children: Vec<(String, u32)> = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut ticks: Vec<(String, Option<u64>)> = children
            .iter()
            .chain(&self.roots)
            .map(|(name, pid)| (name.clone(), table.tree_ticks(*pid)))
            .collect();
        // The load generator alone: its own time only (a child server it reaped would land
        // in its children's time; live ones are measured as themselves).
        ticks.push(("load generator".to_owned(), table.own_ticks(std::process::id())));
        Sample { ticks }
    }
}

/// The bench's own child servers (trivial handler, baseline), measured as themselves while
/// they live.
static CHILDREN: std::sync::Mutex<Vec<(String, u32)>> = std::sync::Mutex::new(Vec::new());

/// Measures a child server until dropped.
#[derive(Debug)]
pub struct ChildMeasured {
    pid: u32,
}

/// Measure the child server `pid` as `name` from the next sample on.
pub fn measure_child(name: &str, pid: u32) -> ChildMeasured {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_owned(), pid));
    ChildMeasured { pid }
}

impl Drop for ChildMeasured {
    fn drop(&mut self) {
        CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, pid)| *pid != self.pid);
    }
}

/// CPU ticks of each process tree at one instant (`None`: the process was gone).
#[derive(Debug, Clone)]
pub struct Sample {
    ticks: Vec<(String, Option<u64>)>,
}

/// One process tree's CPU over a window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    pub process: String,
    pub cpu_secs: f64,
    /// Per request sent in the window.
    pub us_per_request: f64,
    /// Per order accepted in the window (`None` when none was).
    pub us_per_accepted: Option<f64>,
}

impl Sample {
    /// CPU spent between `self` and `later`, per request and per accepted order.
    pub fn until(&self, later: &Sample, requests: u64, accepted: u64) -> Vec<ProcessCpu> {
        let hz = clock_ticks_per_sec();
        let end: HashMap<&str, Option<u64>> = later.ticks.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        self.ticks
            .iter()
            .filter_map(|(name, start)| {
                let (start, end) = ((*start)?, (*end.get(name.as_str())?)?);
                let secs = end.saturating_sub(start) as f64 / hz;
                Some(ProcessCpu {
                    process: name.clone(),
                    cpu_secs: secs,
                    us_per_request: secs * 1e6 / requests.max(1) as f64,
                    us_per_accepted: (accepted > 0).then(|| secs * 1e6 / accepted as f64),
                })
            })
            .collect()
    }
}

/// `/proc/<pid>/stat` of every process, read once.
struct ProcTable {
    /// pid → (parent pid, own ticks, reaped children's ticks)
    stats: HashMap<u32, (u32, u64, u64)>,
}

impl ProcTable {
    fn read() -> Self {
        let mut stats = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
                    .ok()
                    .and_then(|s| parse_stat(&s))
                {
                    stats.insert(pid, stat);
                }
            }
        }
        Self { stats }
    }

    /// One process' own ticks (all its threads), without its children.
    fn own_ticks(&self, pid: u32) -> Option<u64> {
        self.stats.get(&pid).map(|(_, own, _)| *own)
    }

    /// The tree's ticks: the root's own and reaped children's, plus every live descendant's.
    fn tree_ticks(&self, root: u32) -> Option<u64> {
        let (_, own, reaped) = *self.stats.get(&root)?;
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, (ppid, _, _)) in &self.stats {
            children.entry(*ppid).or_default().push(*pid);
        }
        let mut total = own + reaped;
        let mut stack = children.get(&root).cloned().unwrap_or_default();
        while let Some(pid) = stack.pop() {
            if let Some((_, own, reaped)) = self.stats.get(&pid) {
                total += own + reaped;
            }
            if let Some(more) = children.get(&pid) {
                stack.extend(more);
            }
        }
        Some(total)
    }
}

/// (parent pid, utime + stime, cutime + cstime) from one `/proc/<pid>/stat` line. The command
/// name may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(line: &str) -> Option<(u32, u64, u64)> {
    let rest = line.get(line.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let ppid = fields.get(1)?.parse().ok()?;
    Some((ppid, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// `/proc` counts in USER_HZ ticks: 100 on every Linux this runs on, asked once anyway.
fn clock_ticks_per_sec() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|hz| *hz > 0.0)
            .unwrap_or(100.0)
    })
}

/// Processes whose work follows the accepted orders (the writer's inserts go on after the
/// load ends): measured until the drain ends, not only over the load.
const PIPELINE: [&str; 2] = ["consumers", "postgres"];

/// The figures of one run: front processes over the load (`start` → `load_end`), pipeline
/// processes until the drain ended (`drained`, when the run waited for it).
pub fn run_figures(
    start: &Sample,
    load_end: &Sample,
    drained: Option<&Sample>,
    requests: u64,
    accepted: u64,
) -> Vec<ProcessCpu> {
    let front = start.until(load_end, requests, accepted);
    let Some(drained) = drained else {
        return front;
    };
    let through_drain = start.until(drained, requests, accepted);
    front
        .into_iter()
        .map(|f| {
            if PIPELINE.contains(&f.process.as_str()) {
                through_drain
                    .iter()
                    .find(|d| d.process == f.process)
                    .cloned()
                    .unwrap_or(f)
            } else {
                f
            }
        })
        .collect()
}

/// The CPU figures of several runs as one Markdown table.
pub fn table(runs: &[(&str, &[ProcessCpu])]) -> String {
    let mut out = String::from(
        "| run | process | CPU s | µs per request | µs per accepted order |\n|---|---|---|---|---|\n",
    );
    for (run, figures) in runs {
        for f in figures.iter() {
            out.push_str(&format!(
                "| {run} | {} | {:.2} | {:.1} | {} |\n",
                f.process,
                f.cpu_secs,
                f.us_per_request,
                f.us_per_accepted
                    .map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_a_name_holding_spaces_and_parentheses() {
        let line = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 4 0 12345";
        assert_eq!(parse_stat(line), Some((17, 300, 10)));
        assert_eq!(parse_stat("12 (x)"), None, "a cut line is no reading");
    }

    #[test]
    fn this_process_is_measured_and_its_time_only_grows() {
        let processes = Processes::default();
        let before = processes.sample();
        // Burn some CPU so the tick counter moves.
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = processes.sample();
        let figures = before.until(&after, 1000, 0);
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].process, "load generator");
        assert!(figures[0].cpu_secs > 0.05, "{figures:?}");
        assert!(figures[0].us_per_accepted.is_none());
    }
}

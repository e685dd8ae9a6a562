//! What the reports of `bench` and `chaos` say about the machine they ran on (Linux `/proc`;
//! `None` where a file or line is missing).

/// The first `fields` load averages (1, 5, 15 minutes) from `/proc/loadavg`, space-separated.
pub fn load_average(fields: usize) -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(fields)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The CPU's model name from `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
}

/// Total memory in MB from `/proc/meminfo`.
pub fn memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// The unit of the CPU times in `/proc`.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// User + system CPU seconds process `pid` has used so far (`/proc/<pid>/stat`).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks_per_second())
}

/// The whole machine's CPU time, in seconds, from the first line of `/proc/stat`.
pub struct CpuTimes {
    pub busy_s: f64,
    /// iowait included.
    pub idle_s: f64,
}

impl CpuTimes {
    /// The CPU time spent between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            busy_s: self.busy_s - earlier.busy_s,
            idle_s: self.idle_s - earlier.idle_s,
        }
    }
}

/// The machine's CPU time so far.
pub fn cpu_times() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0.0);
    let per_second = clock_ticks_per_second();
    Some(CpuTimes {
        busy_s: (total - idle) / per_second,
        idle_s: idle / per_second,
    })
}

/// A mounted filesystem, from `/proc/mounts`.
pub struct Mount {
    pub point: String,
    pub fs_type: String,
    pub options: String,
}

/// The filesystem `path` lives on: the longest mount point that contains it.
pub fn mount_of(path: &std::path::Path) -> Option<Mount> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4 && path.starts_with(fields[1])).then_some(fields)
        })
        .max_by_key(|fields| fields[1].len())
        .map(|fields| Mount {
            point: fields[1].to_string(),
            fs_type: fields[2].to_string(),
            options: fields[3].to_string(),
        })
}

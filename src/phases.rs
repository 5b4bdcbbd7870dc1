//! `DETRC_PHASES=1`: one stderr line per phase of a command with its wall time and the peak
//! memory reached in it, for finding where a benchmark's time and memory go. Off by default;
//! costs one environment lookup per phase when off.

use std::sync::Mutex;
use std::time::Instant;

static LAST: Mutex<Option<Instant>> = Mutex::new(None);

fn enabled() -> bool {
    std::env::var_os("DETRC_PHASES").is_some_and(|v| v != "0")
}

/// Ends the phase `name` (begun at the previous call, or at the first call) and starts the next.
pub fn end(name: &str) {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let secs = last.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    *last = Some(now);
    let (peak, rss) = memory_kb();
    eprintln!(
        "phase {name:<28} {secs:6.3} s  peak {:6.0} MB  now {:6.0} MB",
        peak / 1024.0,
        rss / 1024.0
    );
    reset_peak();
}

/// (VmHWM, VmRSS) in KB from /proc/self/status; zeros where that is not available.
fn memory_kb() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets the peak so the next phase reports its own (Linux: `5` into clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

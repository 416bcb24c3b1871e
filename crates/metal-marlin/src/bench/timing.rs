//! Timing: warm up, then the median of repeated calls.
//!
//! Each op is timed in its own steady state (calls back to back). Interleaving two ops call by
//! call was tried and rejected: on this VM an op that follows a long one pays to wake idle
//! threads and cores (up to 2x for a 0.2 ms streaming read), which biases the comparison.

use std::time::{Duration, Instant};

/// Warm-up before timing: faults pages in, fills caches, wakes the rayon pool.
const WARM_UP: Duration = Duration::from_millis(50);
/// Timed repetitions last about this long unless the user fixes their number.
const TARGET: Duration = Duration::from_millis(200);
/// The median of fewer calls than this is too noisy to report.
const MIN_REPS: usize = 5;
/// Bounds the bookkeeping for very fast calls.
const MAX_REPS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
pub struct Timer {
    /// Fixed number of timed calls; `None` aims at [`TARGET`].
    iters: Option<usize>,
}

impl Timer {
    pub fn new(iters: Option<usize>) -> Self {
        Timer { iters }
    }

    /// The median duration of `f`, after a warm-up; the first error stops the measurement.
    pub fn median<E>(&self, mut f: impl FnMut() -> Result<(), E>) -> Result<Duration, E> {
        let start = Instant::now();
        let mut calls = 0u32;
        while calls < 2 || start.elapsed() < WARM_UP {
            f()?;
            calls += 1;
        }
        let per_call = start.elapsed().as_secs_f64() / f64::from(calls);
        let reps = self.iters.unwrap_or_else(|| {
            ((TARGET.as_secs_f64() / per_call).ceil() as usize).clamp(MIN_REPS, MAX_REPS)
        });
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            f()?;
            times.push(t.elapsed());
        }
        times.sort_unstable();
        Ok(times[reps / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_iterations_call_warm_up_plus_iters() {
        let mut calls = 0;
        let t = Timer::new(Some(3))
            .median(|| {
                calls += 1;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert!(calls >= 2 + 3);
        assert!(t < Duration::from_millis(50));
    }

    #[test]
    fn the_median_ignores_outliers() {
        let mut calls = 0;
        let t = Timer::new(Some(5))
            .median(|| {
                calls += 1;
                // One slow call among the timed ones.
                if calls == 4 {
                    std::thread::sleep(Duration::from_millis(30));
                }
                Ok::<(), ()>(())
            })
            .unwrap();
        assert!(t < Duration::from_millis(5), "{t:?}");
    }

    #[test]
    fn errors_stop_the_measurement() {
        let mut calls = 0;
        let r = Timer::new(None).median(|| {
            calls += 1;
            if calls == 2 { Err("boom") } else { Ok(()) }
        });
        assert_eq!(r, Err("boom"));
        assert_eq!(calls, 2);
    }
}

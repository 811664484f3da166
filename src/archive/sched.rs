//! Scheduling of bulk work against the API. Packing, compressing,
//! hashing, unpacking, streaming and removing trees run as `SCHED_BATCH`
//! at nice 0; the API threads (`http::server`) run at a raised
//! priority when the daemon may set one (root). On a node whose cores are
//! all busy with transfers, a request then waits for the CPU for a
//! fraction of a time slice instead of queueing behind a dozen CPU-bound
//! transfer threads, while transfers keep their share of the machine.
//! Threads spawned while a class is set inherit it.

use super::sys;

/// Restores the calling thread's previous policy and nice value when dropped.
pub struct BatchGuard {
    policy: Option<libc::c_int>,
    nice: Option<libc::c_int>,
}

/// The calling thread's nice value.
pub fn nice() -> Option<libc::c_int> {
    sys::thread_nice()
}

/// Sets the calling thread's nice value; false if not permitted.
pub fn set_nice(n: libc::c_int) -> bool {
    sys::set_thread_nice(n)
}

/// Puts the calling thread (and the threads it spawns from now on) in
/// `SCHED_BATCH` at nice 0. Needs no privilege; what cannot be set stays.
pub fn batch() -> BatchGuard {
    let mut guard = BatchGuard {
        policy: None,
        nice: None,
    };
    let policy = sys::thread_policy();
    if policy == libc::SCHED_OTHER && sys::set_thread_policy(libc::SCHED_BATCH) {
        guard.policy = Some(policy);
    }
    if let Some(n) = nice().filter(|&n| n < 0) {
        if set_nice(0) {
            guard.nice = Some(n);
        }
    }
    guard
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        if let Some(policy) = self.policy {
            sys::set_thread_policy(policy);
        }
        if let Some(n) = self.nice {
            set_nice(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_applies_to_the_thread_and_its_children_and_is_undone() {
        std::thread::spawn(|| {
            let policy = sys::thread_policy;
            let before = (policy(), nice());
            // Raising works only with privilege; test the reset when it does.
            let raised = set_nice(-1);
            let start = (policy(), nice());
            {
                let _guard = batch();
                if start.0 == libc::SCHED_OTHER {
                    assert_eq!(policy(), libc::SCHED_BATCH);
                    let child = std::thread::spawn(move || (policy(), nice()))
                        .join()
                        .unwrap();
                    assert_eq!(child.0, libc::SCHED_BATCH);
                    if raised {
                        assert_eq!(child.1, Some(0));
                    }
                }
            }
            assert_eq!((policy(), nice()), start);
            if raised {
                set_nice(before.1.unwrap_or(0));
            }
        })
        .join()
        .unwrap();
    }
}

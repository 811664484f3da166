//! Scheduling of bulk work against the API. Packing, compressing,
//! hashing, unpacking, streaming and removing trees run as `SCHED_BATCH`
//! at nice 0; the API threads (`http::server`) run at a raised
//! priority when the daemon may set one (root). On a node whose cores are
//! all busy with transfers, a request then waits for the CPU for a
//! fraction of a time slice instead of queueing behind a dozen CPU-bound
//! transfer threads, while transfers keep their share of the machine.
//! Threads spawned while a class is set inherit it.

/// Restores the calling thread's previous policy and nice value when dropped.
pub struct BatchGuard {
    policy: Option<libc::c_int>,
    nice: Option<libc::c_int>,
}

fn tid() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as libc::id_t }
}

/// The calling thread's nice value.
pub fn nice() -> Option<libc::c_int> {
    // getpriority may legitimately return -1: tell it from an error by errno.
    // SAFETY: errno is thread-local; getpriority only reads its arguments.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, tid());
        (n != -1 || *libc::__errno_location() == 0).then_some(n)
    }
}

/// Sets the calling thread's nice value; false if not permitted.
pub fn set_nice(n: libc::c_int) -> bool {
    // SAFETY: setpriority only reads its arguments.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid(), n) == 0 }
}

/// Puts the calling thread (and the threads it spawns from now on) in
/// `SCHED_BATCH` at nice 0. Needs no privilege; what cannot be set stays.
pub fn batch() -> BatchGuard {
    let mut guard = BatchGuard {
        policy: None,
        nice: None,
    };
    // SAFETY: pid 0 is the calling thread; the calls only read `param`.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy == libc::SCHED_OTHER {
        let param = libc::sched_param { sched_priority: 0 };
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
            guard.policy = Some(policy);
        }
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
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; `param` is valid.
            unsafe { libc::sched_setscheduler(0, policy, &param) };
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
            // SAFETY: reads the calling thread's policy.
            let policy = || unsafe { libc::sched_getscheduler(0) };
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

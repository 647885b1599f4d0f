//! Crash points for tests. An armed point panics once when reached, so everything after it in
//! the request (including the middleware's bookkeeping) is skipped, as if the process died
//! there. Unarmed, a point costs one atomic load.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultPoint {
    /// The session's address index is taken; its row (and reply) not yet written.
    IndexTaken = 1,
    /// The session's statement has committed; the response is not yet sent.
    SessionCommitted = 2,
    /// A payment changed the session's status; its event is not yet written.
    StatusChanged = 4,
}

#[derive(Debug, Default)]
pub struct Faults(AtomicU8);

impl Faults {
    pub fn arm(&self, point: FaultPoint) {
        self.0.fetch_or(point as u8, Ordering::SeqCst);
    }

    pub fn hit(&self, point: FaultPoint) {
        let bit = point as u8;
        if self.0.load(Ordering::Relaxed) & bit != 0
            && self.0.fetch_and(!bit, Ordering::SeqCst) & bit != 0
        {
            panic!("injected fault at {point:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_point_fires_once_and_only_itself() {
        let faults = Faults::default();
        faults.hit(FaultPoint::IndexTaken);
        faults.arm(FaultPoint::SessionCommitted);
        faults.hit(FaultPoint::IndexTaken);
        let fired = std::panic::catch_unwind(|| faults.hit(FaultPoint::SessionCommitted));
        assert!(fired.is_err());
        faults.hit(FaultPoint::SessionCommitted);
    }
}

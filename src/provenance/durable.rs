//! The ledger's fsync, off the capture workers. A worker writes each group of captures to the
//! ledger without an fsync (in the operating system's hands: a `kill -9` loses none of it) and
//! hands their outcome records here. This thread fsyncs the ledger at most once every
//! [`SYNC_EVERY`], then writes the outcome records that waited for it. So an outcome record that
//! says `captured` still never reaches the audit log before its entry is on disk, after a power
//! cut too, while the fsyncs a busy gateway pays fall from one per group commit (hundreds a
//! second) to ten a second. Those fsyncs' disk interrupts cost the forwarding a few points of
//! throughput on a two-core machine (docs/provenance.md, "Capture cost").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SendError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::capture::{Hold, Recorder};
use crate::audit::record::ProvenanceMark;
use crate::audit::{AuditLog, AuditRecord};
use crate::metrics::Metrics;

/// The shortest time between two fsyncs of the ledger. A lone capture on an idle gateway is
/// synced at once; under load a sync covers every commit of the last 100 ms, and an outcome
/// record waits at most this long (plus the fsync) after its capture was recorded.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

pub(super) enum Msg {
    /// Outcome records of captures the ledger has (unsynced), with those of the same group
    /// commit that have no entry (nothing captured, or the write failed).
    Outcomes(Vec<AuditRecord>),
    /// Sync what is waiting, write it, and end.
    Stop,
}

/// The sync thread, as the capture pipeline holds it.
pub(super) struct SyncThread {
    tx: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SyncThread {
    /// Start the thread; `on_start` runs on it first (the capture workers' priority).
    pub(super) fn start(
        recorder: Arc<dyn Recorder>,
        audit: AuditLog,
        metrics: Arc<Metrics>,
        ending: Arc<AtomicUsize>,
        hold: Arc<Hold>,
        on_start: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<SyncThread> {
        let (tx, rx) = channel();
        let syncer = Syncer {
            rx,
            recorder,
            audit,
            metrics,
            ending,
            hold,
        };
        let thread = std::thread::Builder::new()
            .name("ledger-sync".into())
            .spawn(move || {
                on_start();
                syncer.run()
            })?;
        Ok(SyncThread {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A queue for a worker to hand its outcome records in.
    pub(super) fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
    }

    /// Ask the thread to sync what is waiting, write it and end; its handle, to join.
    pub(super) fn stop(&self) -> Option<JoinHandle<()>> {
        let _ = self.tx.send(Msg::Stop);
        self.thread.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Hand a commit's outcome records to the sync thread; back if it is gone.
pub(super) fn hand_over(
    tx: &Sender<Msg>,
    records: Vec<AuditRecord>,
) -> Result<(), Vec<AuditRecord>> {
    match tx.send(Msg::Outcomes(records)) {
        Ok(()) => Ok(()),
        Err(SendError(Msg::Outcomes(back))) => Err(back),
        Err(SendError(Msg::Stop)) => Ok(()),
    }
}

struct Syncer {
    rx: Receiver<Msg>,
    recorder: Arc<dyn Recorder>,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    /// Outcome records handed to a worker and not yet written (the capture's own count).
    ending: Arc<AtomicUsize>,
    hold: Arc<Hold>,
}

impl Syncer {
    fn run(self) {
        let mut last: Option<Instant> = None;
        loop {
            let mut waiting = match self.rx.recv() {
                Ok(Msg::Outcomes(records)) => records,
                Ok(Msg::Stop) | Err(_) => return,
            };
            // Sleep out the rest of the window since the last sync, then take what came
            // meanwhile, rather than wake for each commit's records (hundreds a second).
            if let Some(left) =
                last.and_then(|t| (t + SYNC_EVERY).checked_duration_since(Instant::now()))
            {
                std::thread::sleep(left);
            }
            let mut stop = false;
            while !stop {
                match self.rx.try_recv() {
                    Ok(Msg::Outcomes(more)) => waiting.extend(more),
                    Ok(Msg::Stop) => stop = true,
                    Err(_) => break,
                }
            }
            self.hold.wait();
            last = Some(Instant::now());
            self.sync_and_write(waiting);
            if stop {
                return;
            }
        }
    }

    /// One fsync for every record waiting, then the records.
    fn sync_and_write(&self, records: Vec<AuditRecord>) {
        let synced = self.recorder.sync();
        self.metrics
            .provenance_ledger_syncs
            .fetch_add(1, Ordering::Relaxed);
        write(records, synced, &self.audit, &self.metrics, &self.ending);
    }
}

/// Writes the outcome records a sync covered. Should the fsync have failed, the captures may
/// not be on disk: their outcomes say `unrecorded`, as for a failed write.
pub(super) fn write(
    records: Vec<AuditRecord>,
    synced: Result<(), String>,
    audit: &AuditLog,
    metrics: &Metrics,
    ending: &AtomicUsize,
) {
    if let Err(e) = &synced {
        tracing::warn!(error = %e, records = records.len(), "provenance ledger fsync failed; the captures it covered are marked unrecorded");
    }
    for mut record in records {
        if synced.is_err() && record.provenance == Some(ProvenanceMark::Captured) {
            record.provenance = Some(ProvenanceMark::Unrecorded);
            record.provenance_fingerprints = None;
            metrics.provenance_captured.fetch_sub(1, Ordering::Relaxed);
        }
        audit.submit_deferred(record);
        ending.fetch_sub(1, Ordering::AcqRel);
    }
}

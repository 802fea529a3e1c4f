//! Analytics export: every order event as one JSON line in hourly files
//! (`order-events-YYYYMMDDTHH.jsonl`) a data team can load.
//!
//! Exactly one line per event, across redelivery and crashes: an event already marked
//! processed is skipped; an event found in the two newest files (written, then the process
//! died before marking it) is only marked; otherwise the line is appended and synced to disk
//! before the event is marked processed.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use chrono::Utc;
use order_core::app::post_payment::JobLedger;
use order_core::domain::events::OrderEvent;
use order_core::postgres::Pool;

use super::{BoxFuture, Handler};

/// The job's subscription, and its name in `processed_events`.
const NAME: &str = "analytics";

#[derive(Debug)]
pub struct Analytics {
    done: JobLedger,
    dir: PathBuf,
    /// Event ids in the newest files, as found at start plus what this process wrote.
    written: Mutex<HashSet<String>>,
}

impl Analytics {
    pub fn new(db: Pool, dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let written = recent_event_ids(&dir)?;
        Ok(Self {
            done: JobLedger::new(db, NAME),
            dir,
            written: Mutex::new(written),
        })
    }

    fn append(&self, event: &OrderEvent) -> anyhow::Result<()> {
        let path = self
            .dir
            .join(format!("order-events-{}.jsonl", Utc::now().format("%Y%m%dT%H")));
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        file.write_all(&line)?;
        file.sync_data()?;
        Ok(())
    }
}

/// Event ids in the two newest export files.
fn recent_event_ids(dir: &Path) -> anyhow::Result<HashSet<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut ids = HashSet::new();
    for file in files.iter().rev().take(2) {
        for line in std::io::BufReader::new(std::fs::File::open(file)?).lines() {
            if let Ok(event) = serde_json::from_str::<OrderEvent>(&line?) {
                ids.insert(event.event_id);
            }
        }
    }
    Ok(ids)
}

impl Handler for Analytics {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handle<'a>(&'a self, event: &'a OrderEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if self.done.is_done(event).await? {
                return Ok(());
            }
            let already_written = self
                .written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&event.event_id);
            if !already_written {
                self.append(event)?;
                self.written
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(event.event_id.clone());
            }
            self.done.mark_done(event).await?;
            Ok(())
        })
    }
}

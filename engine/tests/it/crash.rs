//! Proves that the engine keeps its durability contract through crashes and I/O errors, using
//! `FaultStorage`, an in-memory file system that keeps written bytes apart from synced bytes and
//! directory entries apart from synced directory entries (the model of redb's crash tests and of
//! ALICE):
//!
//! - a crash at **every** storage operation of a scripted workload (ingest from 3 buoys on 2
//!   lanes, flush, overwrite, delete, flush, compaction, more ingest and a delete), reopened after
//!   a power loss, a torn write and a process kill: every acknowledged batch and delete is there
//!   exactly once, nothing else is there except the one write in flight, every catalog file
//!   decodes, every committed file's minute rollup (written beside it before the commit) is
//!   there and equals its readings while no uncommitted rollup survives the reopen, acknowledged batches retried after the restart are answered `Duplicate`, and the
//!   recovered state survives a further power loss;
//! - a failed WAL fsync or write fails its batch with `WriterFailed`, stops the lane for good
//!   (never retried then acked) while other lanes go on, and a reopen recovers every acked batch;
//! - a failed partition or rollup fsync fails the flush alone; the data stays readable and a
//!   later flush and a reopen lose nothing;
//! - a crash at every operation of a retention pass keeps every row within retention;
//! - directories the engine creates are themselves made durable (their parent is synced) before
//!   anything inside them is acknowledged or committed.
//!
//! `catalog.redb` lives on the real disk (redb does its own I/O): the tests give the engine a
//! real temporary data dir, and `FaultStorage` copies the catalog file at the instant of a
//! simulated crash, which the test writes back before reopening, so catalog commits made by the
//! doomed engine after the crash point never count.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bluewave_engine::{
    BuoyId, DeleteRange, Engine, EngineConfig, Error, IngestOutcome, MetricName, NANOS_PER_SECOND,
    ReadingBatch, Storage, StorageFile, lane_for_buoy,
};

use crate::common::{
    RowMap, assert_stored_once, batch, buoy, check_rollups, decode_catalog_files, read_map, register,
};

// ---------------------------------------------------------------------------------------------
// FaultStorage
// ---------------------------------------------------------------------------------------------

/// What survives a simulated crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Power loss: each file keeps exactly the bytes of its last `sync_data`, each directory the
    /// entry set of its last `sync_dir` (a file created or renamed since then vanishes, a file
    /// removed since then comes back).
    PowerLoss,
    /// Power loss in the middle of the last writes: directories as in `PowerLoss`, and each file
    /// keeps its synced bytes plus the first half of the bytes written after them.
    TornWrite,
    /// Only the process died; the operating system keeps everything written.
    ProcessKill,
}

/// The storage operations that change state; only these are counted and can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    CreateDir,
    Create,
    Write,
    SyncData,
    Rename,
    Remove,
    RemoveDir,
    SyncDir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(usize),
    Dir,
}

type Entries = BTreeMap<OsString, Node>;

#[derive(Debug, Default)]
struct Inode {
    written: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Trigger {
    /// The nth state-changing operation (1-based, counted from arming).
    Op(u64),
    /// The nth state-changing operation (from arming) made by the thread of this name.
    ThreadOp(String, u64),
    /// The nth `write_all` to a file under the path.
    Write(PathBuf, u64),
    /// The nth `sync_data` or `sync_dir` of a path under the path.
    Sync(PathBuf, u64),
}

#[derive(Debug)]
struct Fault {
    trigger: Trigger,
    seen: u64,
    /// Crash (everything fails from here on) rather than fail this one operation.
    crash: bool,
}

#[derive(Debug)]
struct FsState {
    root: PathBuf,
    /// Directories created are durable only once their parent is synced.
    strict_directories: bool,
    inodes: Vec<Inode>,
    /// The directory tree as the running process sees it.
    dirs: BTreeMap<PathBuf, Entries>,
    /// Each directory's entries as of its last `sync_dir`.
    durable_dirs: BTreeMap<PathBuf, Entries>,
    ops: u64,
    log: Vec<String>,
    faults: Vec<Fault>,
    crashed: bool,
    catalog: Option<PathBuf>,
    catalog_at_crash: Option<Vec<u8>>,
}

/// An in-memory [`Storage`] that keeps written and durable state apart and fails or crashes on
/// demand. Clones share one file system.
#[derive(Clone, Debug)]
pub struct FaultStorage {
    state: Arc<Mutex<FsState>>,
}

/// The durable state left by a crash: what a reopened engine finds.
#[derive(Clone, Debug)]
pub struct CrashImage {
    root: PathBuf,
    dirs: BTreeSet<PathBuf>,
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// `catalog.redb` as it was at the crash (or when the image was taken).
    catalog: Option<Vec<u8>>,
}

impl CrashImage {
    /// Writes the image's catalog back to the real disk (no engine may have it open).
    pub fn restore_catalog(&self) {
        if let Some(bytes) = &self.catalog {
            std::fs::write(self.root.join("catalog.redb"), bytes).unwrap();
        }
    }

    /// Paths of the files in the image, relative to the root.
    pub fn file_names(&self) -> Vec<String> {
        self.files.keys().map(|p| p.strip_prefix(&self.root).unwrap().display().to_string()).collect()
    }
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: the machine is down")
}

/// What a failing disk answers: EIO.
fn injected_error() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or directory", path.display()))
}

fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_os_string())),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad path {}", path.display()))),
    }
}

impl FsState {
    fn new(root: &Path) -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(root.to_path_buf(), Entries::new());
        Self {
            root: root.to_path_buf(),
            strict_directories: false,
            inodes: Vec::new(),
            durable_dirs: dirs.clone(),
            dirs,
            ops: 0,
            log: Vec::new(),
            faults: Vec::new(),
            crashed: false,
            catalog: None,
            catalog_at_crash: None,
        }
    }

    /// Counts a state-changing operation and applies the armed faults to it.
    fn begin(&mut self, op: Op, path: &Path) -> io::Result<()> {
        if self.crashed {
            return Err(crashed_error());
        }
        self.ops += 1;
        let n = self.ops;
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.log.push(format!("#{n} {op:?} {} @{thread}", path.display()));
        let mut outcome = None;
        for fault in &mut self.faults {
            let hit = match &fault.trigger {
                Trigger::Op(nth) => n == *nth,
                Trigger::ThreadOp(name, nth) => {
                    std::thread::current().name() == Some(name.as_str()) && {
                        fault.seen += 1;
                        fault.seen == *nth
                    }
                }
                Trigger::Write(under, nth) => {
                    op == Op::Write && path.starts_with(under) && {
                        fault.seen += 1;
                        fault.seen == *nth
                    }
                }
                Trigger::Sync(under, nth) => {
                    matches!(op, Op::SyncData | Op::SyncDir) && path.starts_with(under) && {
                        fault.seen += 1;
                        fault.seen == *nth
                    }
                }
            };
            if hit && outcome.is_none() {
                outcome = Some(fault.crash);
            }
        }
        match outcome {
            None => Ok(()),
            Some(false) => {
                self.log.push(format!("#{n} failed (injected EIO)"));
                Err(injected_error())
            }
            Some(true) => {
                self.crashed = true;
                self.log.push(format!("#{n} CRASH"));
                // Nothing else writes the catalog while a storage operation of the sequential
                // workload runs, so this copy is the catalog's state at the crash.
                self.catalog_at_crash = self.catalog.as_ref().and_then(|p| std::fs::read(p).ok());
                Err(crashed_error())
            }
        }
    }

    fn readable(&self) -> io::Result<()> {
        if self.crashed { Err(crashed_error()) } else { Ok(()) }
    }

    fn lookup(&self, path: &Path) -> Option<Node> {
        if path == self.root {
            return Some(Node::Dir);
        }
        let (parent, name) = split(path).ok()?;
        self.dirs.get(&parent)?.get(&name).copied()
    }

    fn entries_mut(&mut self, dir: &Path) -> io::Result<&mut Entries> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        if self.root.starts_with(path) {
            return Ok(()); // The root and its ancestors exist.
        }
        let rel = path.strip_prefix(&self.root).map_err(|_| {
            io::Error::new(io::ErrorKind::PermissionDenied, format!("{} is outside the root", path.display()))
        })?;
        let mut current = self.root.clone();
        for component in rel.components() {
            let next = current.join(component);
            match self.lookup(&next) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", next.display()),
                    ));
                }
                None => {
                    let name = component.as_os_str().to_os_string();
                    self.entries_mut(&current)?.insert(name.clone(), Node::Dir);
                    self.dirs.insert(next.clone(), Entries::new());
                    if !self.strict_directories {
                        // Lenient model: a new directory is durable at once.
                        self.durable_dirs.entry(current.clone()).or_default().insert(name, Node::Dir);
                        self.durable_dirs.entry(next.clone()).or_default();
                    }
                }
            }
            current = next;
        }
        Ok(())
    }

    fn image(&self, mode: CrashMode) -> CrashImage {
        let mut image = CrashImage {
            root: self.root.clone(),
            dirs: BTreeSet::new(),
            files: BTreeMap::new(),
            // At a crash, the catalog as of that instant; otherwise the real file as it is now
            // (take such images only while no engine has the data dir open).
            catalog: self
                .catalog_at_crash
                .clone()
                .or_else(|| self.catalog.as_ref().and_then(|p| std::fs::read(p).ok())),
        };
        let mut stack = vec![self.root.clone()];
        image.dirs.insert(self.root.clone());
        while let Some(dir) = stack.pop() {
            let entries = match mode {
                CrashMode::ProcessKill => self.dirs.get(&dir).cloned().unwrap_or_default(),
                CrashMode::PowerLoss | CrashMode::TornWrite => {
                    self.durable_dirs.get(&dir).cloned().unwrap_or_default()
                }
            };
            for (name, node) in entries {
                let path = dir.join(&name);
                match node {
                    Node::Dir => {
                        image.dirs.insert(path.clone());
                        stack.push(path);
                    }
                    Node::File(id) => {
                        let inode = &self.inodes[id];
                        let bytes = match mode {
                            CrashMode::PowerLoss => inode.synced.clone(),
                            CrashMode::ProcessKill => inode.written.clone(),
                            CrashMode::TornWrite => {
                                // Files are append-only, so the synced bytes are a prefix.
                                assert!(inode.written.starts_with(&inode.synced));
                                let torn = (inode.written.len() - inode.synced.len()) / 2;
                                inode.written[..inode.synced.len() + torn].to_vec()
                            }
                        };
                        image.files.insert(path, bytes);
                    }
                }
            }
        }
        image
    }
}

struct FaultFile {
    state: Arc<Mutex<FsState>>,
    inode: usize,
    path: PathBuf,
}

impl StorageFile for FaultFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(Op::Write, &self.path)?;
        s.inodes[self.inode].written.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(Op::SyncData, &self.path)?;
        let inode = &mut s.inodes[self.inode];
        inode.synced = inode.written.clone();
        Ok(())
    }
}

fn lock(state: &Mutex<FsState>) -> MutexGuard<'_, FsState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultStorage {
    /// An empty file system whose root is `root` (a real directory: the engine's data dir, where
    /// redb keeps `catalog.redb` on the real disk).
    pub fn new(root: &Path) -> Self {
        let mut state = FsState::new(root);
        state.catalog = Some(root.join("catalog.redb"));
        Self { state: Arc::new(Mutex::new(state)) }
    }

    /// A file system holding exactly a crash image, all of it durable.
    pub fn from_image(image: &CrashImage) -> Self {
        let storage = Self::new(&image.root);
        {
            let mut s = lock(&storage.state);
            for dir in &image.dirs {
                s.dirs.entry(dir.clone()).or_default();
                if dir != &image.root {
                    let (parent, name) = split(dir).unwrap();
                    s.dirs.entry(parent).or_default().insert(name, Node::Dir);
                }
            }
            for (path, bytes) in &image.files {
                let id = s.inodes.len();
                s.inodes.push(Inode { written: bytes.clone(), synced: bytes.clone() });
                let (parent, name) = split(path).unwrap();
                s.dirs.get_mut(&parent).unwrap().insert(name, Node::File(id));
            }
            s.durable_dirs = s.dirs.clone();
        }
        storage
    }

    /// Directories created from now on are durable only once their parent directory is synced
    /// (POSIX; the default model treats `mkdir` as durable at once).
    pub fn strict_directories(self) -> Self {
        lock(&self.state).strict_directories = true;
        self
    }

    /// The nth state-changing operation from now (1-based) and every operation after it fail:
    /// the machine is down.
    pub fn crash_at_op(&self, nth: u64) {
        let mut s = lock(&self.state);
        let trigger = Trigger::Op(s.ops + nth);
        s.faults.push(Fault { trigger, seen: 0, crash: true });
    }

    /// Crash at the nth state-changing operation (from now, 1-based) made by the thread named
    /// `thread`; other threads go on until their next operation, which fails.
    pub fn crash_at_thread_op(&self, thread: &str, nth: u64) {
        let trigger = Trigger::ThreadOp(thread.into(), nth);
        lock(&self.state).faults.push(Fault { trigger, seen: 0, crash: true });
    }

    /// State-changing operations so far made by the thread named `thread`.
    pub fn thread_ops(&self, thread: &str) -> u64 {
        let suffix = format!("@{thread}");
        lock(&self.state).log.iter().filter(|l| l.ends_with(&suffix)).count() as u64
    }

    /// The nth `sync_data`/`sync_dir` (from now, 1-based) of a path under `under` fails with EIO.
    pub fn fail_sync(&self, under: &Path, nth: u64) {
        lock(&self.state).faults.push(Fault {
            trigger: Trigger::Sync(under.into(), nth),
            seen: 0,
            crash: false,
        });
    }

    /// The nth `write_all` (from now, 1-based) to a file under `under` fails with EIO.
    pub fn fail_write(&self, under: &Path, nth: u64) {
        lock(&self.state).faults.push(Fault {
            trigger: Trigger::Write(under.into(), nth),
            seen: 0,
            crash: false,
        });
    }

    /// State-changing operations so far.
    pub fn ops(&self) -> u64 {
        lock(&self.state).ops
    }

    /// True once a `crash_at_op` fired.
    pub fn crashed(&self) -> bool {
        lock(&self.state).crashed
    }

    /// The operation log (one line per state-changing operation).
    pub fn log(&self) -> Vec<String> {
        lock(&self.state).log.clone()
    }

    /// What survives if the machine goes down now (or went down at the armed crash).
    pub fn crash_image(&self, mode: CrashMode) -> CrashImage {
        lock(&self.state).image(mode)
    }
}

impl Storage for FaultStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(Op::CreateDir, path)?;
        s.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let s = lock(&self.state);
        s.readable()?;
        let entries = s.dirs.get(path).ok_or_else(|| not_found(path))?;
        Ok(entries.keys().map(|name| path.join(name)).collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = lock(&self.state);
        s.readable()?;
        match s.lookup(path) {
            Some(Node::File(id)) => Ok(s.inodes[id].written.clone()),
            Some(Node::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, path.display().to_string())),
            None => Err(not_found(path)),
        }
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut s = lock(&self.state);
        s.begin(Op::Create, path)?;
        let (parent, name) = split(path)?;
        if s.lookup(path) == Some(Node::Dir) {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, path.display().to_string()));
        }
        let id = s.inodes.len();
        s.entries_mut(&parent)?.insert(name, Node::File(id));
        s.inodes.push(Inode::default());
        Ok(Box::new(FaultFile { state: self.state.clone(), inode: id, path: path.to_path_buf() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(Op::Rename, from)?;
        let node = match s.lookup(from) {
            Some(Node::File(id)) => Node::File(id),
            Some(Node::Dir) => return Err(io::Error::other("renaming directories is not modelled")),
            None => return Err(not_found(from)),
        };
        let (to_parent, to_name) = split(to)?;
        if !s.dirs.contains_key(&to_parent) {
            return Err(not_found(&to_parent));
        }
        let (from_parent, from_name) = split(from)?;
        s.entries_mut(&from_parent)?.remove(&from_name);
        s.entries_mut(&to_parent)?.insert(to_name, node);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(Op::Remove, path)?;
        match s.lookup(path) {
            Some(Node::File(_)) => {
                let (parent, name) = split(path)?;
                s.entries_mut(&parent)?.remove(&name);
                Ok(())
            }
            Some(Node::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, path.display().to_string())),
            None => Err(not_found(path)),
        }
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(Op::RemoveDir, path)?;
        if path == s.root || s.lookup(path) != Some(Node::Dir) {
            return Err(not_found(path));
        }
        if !s.dirs.get(path).is_none_or(Entries::is_empty) {
            return Err(io::Error::new(io::ErrorKind::DirectoryNotEmpty, path.display().to_string()));
        }
        let (parent, name) = split(path)?;
        s.entries_mut(&parent)?.remove(&name);
        s.dirs.remove(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.begin(Op::SyncDir, path)?;
        let entries = s.dirs.get(path).cloned().ok_or_else(|| not_found(path))?;
        s.durable_dirs.insert(path.to_path_buf(), entries);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = lock(&self.state);
        !s.crashed && s.lookup(path).is_some()
    }

    fn is_dir(&self, path: &Path) -> bool {
        let s = lock(&self.state);
        !s.crashed && s.lookup(path) == Some(Node::Dir)
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted workload and its model
// ---------------------------------------------------------------------------------------------

/// A real directory for `catalog.redb` (everything else lives in `FaultStorage`). On tmpfs when
/// there is one: redb's fsyncs are then free, and durability is modelled by `FaultStorage` and
/// the catalog copy taken at the crash, not by the real disk.
fn data_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

const MINUTE: i64 = 60 * NANOS_PER_SECOND;
const HOUR: i64 = 60 * MINUTE;
/// 2026-06-01T13:00:00Z, the start of an hour partition.
const T0: i64 = 1_780_318_800 * NANOS_PER_SECOND;
const BUOYS: [&str; 3] = ["b-1", "b-2", "b-3"];

/// Small buffers, two lanes, and WAL segments of a few records so segments roll and are trimmed.
fn crash_config(dir: &Path) -> EngineConfig {
    let mut c = crate::common::config(dir);
    c.wal_segment_bytes = 512;
    // The sweeps count the operations of a scripted run and crash at each: compaction runs
    // where the script says (`Step::Compact`), so every run performs the same operations. The
    // background compactor has a sweep of its own below.
    c.compaction_background = false;
    c
}

#[derive(Clone, Debug)]
enum Step {
    Write { buoy: &'static str, batch_seq: u64, rows: Vec<(&'static str, i64, f64)> },
    Delete { buoy: &'static str, metric: Option<&'static str>, start: i64, end: i64 },
    Flush,
    Compact,
}

impl Step {
    fn is_data(&self) -> bool {
        matches!(self, Self::Write { .. } | Self::Delete { .. })
    }
}

/// A decimal at sensor precision (millis), as a sensor would report it.
fn milli(v: i64) -> f64 {
    v as f64 / 1_000.0
}

/// One round of batches, one per buoy; each batch spans two hour partitions.
fn round(r: i64, seqs: &mut BTreeMap<&'static str, u64>) -> Vec<Step> {
    BUOYS
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let i = i as i64;
            let seq = seqs.entry(b).or_insert(0);
            let batch_seq = *seq;
            *seq += 1;
            Step::Write {
                buoy: b,
                batch_seq,
                rows: vec![
                    ("ph", T0 + r * MINUTE, milli(7_000 + i * 250 + r * 10)),
                    ("salinity_psu", T0 + r * MINUTE, milli(35_000 + i * 100 + r)),
                    ("water_temp_c", T0 + HOUR + r * MINUTE, milli(12_000 + i * 500 + r * 25)),
                ],
            }
        })
        .collect()
}

fn workload() -> Vec<Step> {
    let mut seqs = BTreeMap::new();
    let mut steps = Vec::new();
    for r in 0..3 {
        steps.extend(round(r, &mut seqs));
    }
    steps.push(Step::Flush);
    for r in 3..5 {
        steps.extend(round(r, &mut seqs));
    }
    // Overwrite a key that is already in a file: last write wins.
    steps.push(Step::Write { buoy: "b-1", batch_seq: 100, rows: vec![("ph", T0, 7.777)] });
    // Delete b-2's pH of rounds 0..4: three of them are in files, one is buffered.
    steps.push(Step::Delete { buoy: "b-2", metric: Some("ph"), start: T0, end: T0 + 4 * MINUTE });
    // Written after the delete, inside its range: must survive it.
    steps.push(Step::Write { buoy: "b-2", batch_seq: 100, rows: vec![("ph", T0 + 2 * MINUTE, 7.5)] });
    steps.push(Step::Flush);
    steps.push(Step::Compact);
    steps.extend(round(5, &mut seqs));
    // A delete of every metric of b-3 that stays in the WAL (never flushed).
    steps.push(Step::Delete { buoy: "b-3", metric: None, start: T0 + HOUR, end: T0 + HOUR + 2 * MINUTE });
    steps
}

/// The readings the first `data_steps` data steps of `steps` leave.
fn model(steps: &[Step], data_steps: usize) -> RowMap {
    let mut rows = RowMap::new();
    for step in steps.iter().filter(|s| s.is_data()).take(data_steps) {
        match step {
            Step::Write { buoy, rows: readings, .. } => {
                for &(m, ts, v) in readings {
                    // Every value here is in its metric's physical range: quality 0.
                    rows.insert((buoy.to_string(), m.to_string(), ts), (v, 0));
                }
            }
            Step::Delete { buoy, metric, start, end } => rows.retain(|(b, m, ts), _| {
                !(b == buoy && metric.is_none_or(|x| x == m.as_str()) && *start <= *ts && *ts < *end)
            }),
            Step::Flush | Step::Compact => {}
        }
    }
    rows
}

fn delete_range(buoy_name: &str, metric: Option<&str>, start: i64, end: i64) -> DeleteRange {
    DeleteRange { buoy: buoy(buoy_name), metric: metric.map(|m| MetricName::new(m).unwrap()), start, end }
}

/// Runs the workload; returns, per step, whether it was acknowledged (flushes and compactions:
/// whether they returned `Ok`).
fn run(engine: &Engine, steps: &[Step]) -> Vec<bool> {
    steps
        .iter()
        .map(|step| match step {
            Step::Write { buoy: b, batch_seq, rows } => {
                match engine.ingest(&buoy(b), *batch_seq, batch(rows)) {
                    Ok(ticket) => match ticket.wait() {
                        Ok(IngestOutcome::Stored { .. }) => true,
                        Ok(IngestOutcome::Duplicate) => {
                            panic!("{b}/{batch_seq}: a new batch answered Duplicate")
                        }
                        Err(Error::WriterFailed { .. }) => false,
                        Err(e) => panic!("{b}/{batch_seq}: unexpected error {e:?}"),
                    },
                    Err(e) => panic!("{b}/{batch_seq}: ingest refused: {e:?}"),
                }
            }
            Step::Delete { buoy: b, metric, start, end } => {
                match engine.delete(&delete_range(b, *metric, *start, *end)).unwrap().wait() {
                    Ok(_) => true,
                    Err(Error::WriterFailed { .. }) => false,
                    Err(e) => panic!("delete: unexpected error {e:?}"),
                }
            }
            Step::Flush => engine.flush().is_ok(),
            Step::Compact => engine.compact().is_ok(),
        })
        .collect()
}

fn open_fresh(dir: &Path, storage: &FaultStorage) -> Engine {
    let engine = Engine::open_with_storage(crash_config(dir), Arc::new(storage.clone())).unwrap();
    register(&engine, &BUOYS);
    engine
}

/// Checks a reopened engine against the workload: `acked` data steps are all there, and at most
/// the one in flight at the crash besides (only when it may have reached the disk).
fn check_recovered(engine: &Engine, steps: &[Step], acked: usize, in_flight_may_survive: bool, what: &str) {
    let report = engine.recovery_report();
    assert_eq!(report.missing_files, Vec::<String>::new(), "{what}: catalog files missing");
    assert_eq!(report.missing_rollups, Vec::<String>::new(), "{what}: catalog rollups missing");
    // Every committed file's rollup is whole and equals its readings; no rollup written
    // before the crash outlives the reopen without a catalog entry.
    check_rollups(engine, true, what);
    let got = read_map(engine);
    let expected = model(steps, acked);
    let data_steps = steps.iter().filter(|s| s.is_data()).count();
    if got != expected {
        let with_in_flight = model(steps, acked + 1);
        assert!(
            in_flight_may_survive && acked < data_steps && got == with_in_flight,
            "{what}: recovered rows differ from the {acked} acknowledged data steps\n got: {got:?}\n want: \
             {expected:?}"
        );
    }
    // Acknowledged batches retried after the restart are recognised, never stored twice.
    for step in steps.iter().filter(|s| s.is_data()).take(acked) {
        if let Step::Write { buoy: b, batch_seq, rows } = step {
            let outcome = engine.ingest(&buoy(b), *batch_seq, batch(rows)).unwrap().wait().unwrap();
            assert_eq!(outcome, IngestOutcome::Duplicate, "{what}: retry of {b}/{batch_seq}");
        }
    }
    assert_eq!(assert_stored_once(engine), got, "{what}: rows changed by flush and compaction");
    assert!(check_rollups(engine, true, what) > 0 || got.is_empty(), "{what}: no rollup after compaction");
}

#[test]
fn buoys_of_the_workload_use_both_lanes() {
    let lanes: BTreeSet<usize> = BUOYS.iter().map(|b| lane_for_buoy(&buoy(b), 2)).collect();
    assert_eq!(lanes.len(), 2, "the crash workload must exercise both WAL lanes");
}

/// The heart of the crash tests: crash at every operation index, recover, check. New
/// directories count as durable at once here (ext4's behaviour in practice); the strict POSIX
/// model is checked by the two directory tests at the end of this file.
#[test]
fn a_crash_at_any_operation_loses_no_acknowledged_write() {
    let steps = workload();
    let data_steps = steps.iter().filter(|s| s.is_data()).count();
    // A dry run counts the operations (the sequential workload is deterministic).
    let total_ops = {
        let dir = data_dir();
        let storage = FaultStorage::new(dir.path());
        let engine = open_fresh(dir.path(), &storage);
        let start = storage.ops();
        let acks = run(&engine, &steps);
        assert!(acks.iter().all(|&a| a), "dry run: every step succeeds");
        storage.ops() - start
    };
    assert!(total_ops > 50, "the workload performs {total_ops} operations");
    eprintln!("crash sweep: {total_ops} operations, {} cases", (total_ops + 1) * 3);
    let mut failures = Vec::new();
    for n in 1..=total_ops + 1 {
        let dir = data_dir();
        let storage = FaultStorage::new(dir.path());
        let engine = open_fresh(dir.path(), &storage);
        let start = storage.ops() as usize;
        storage.crash_at_op(n);
        let acks = run(&engine, &steps);
        drop(engine);
        assert_eq!(storage.crashed(), n <= total_ops, "crash at op {n}");
        let data_acks: Vec<bool> =
            steps.iter().zip(&acks).filter(|(s, _)| s.is_data()).map(|(_, &a)| a).collect();
        let acked = data_acks.iter().take_while(|&&a| a).count();
        assert!(data_acks[acked..].iter().all(|&a| !a), "crash at op {n}: an ack after a failure");
        let log = storage.log();
        let crash_op = log.get(start + n as usize - 1).cloned().unwrap_or_else(|| "(no crash)".into());
        // All images first: the catalog of a no-crash image is the real file as it is now.
        let modes = [CrashMode::PowerLoss, CrashMode::TornWrite, CrashMode::ProcessKill];
        let images: Vec<CrashImage> = modes.iter().map(|&m| storage.crash_image(m)).collect();
        for (mode, image) in modes.into_iter().zip(images) {
            let what =
                format!("crash at op {n} of {total_ops} [{crash_op}], {mode:?}, {acked}/{data_steps} acked");
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                image.restore_catalog();
                let reopened = FaultStorage::from_image(&image);
                let engine = Engine::open_with_storage(crash_config(dir.path()), Arc::new(reopened.clone()))
                    .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
                check_recovered(&engine, &steps, acked, mode == CrashMode::ProcessKill, &what);
                let expected = read_map(&engine);
                drop(engine);
                // What recovery did is itself durable: lose power again and reopen.
                let again = reopened.crash_image(CrashMode::PowerLoss);
                again.restore_catalog();
                let engine = Engine::open_with_storage(
                    crash_config(dir.path()),
                    Arc::new(FaultStorage::from_image(&again)),
                )
                .unwrap_or_else(|e| panic!("{what}: second reopen failed: {e}"));
                assert_eq!(
                    read_map(&engine),
                    expected,
                    "{what}: rows changed by a power loss after recovery"
                );
            }));
            if let Err(panic) = outcome {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(message);
            }
        }
    }
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n---\n"));
}

/// Batches per buoy of the concurrent workload.
const CONCURRENT_BATCHES: u64 = 24;

/// The batch `batch_seq` of buoy number `i` in the concurrent workload: two readings with keys of
/// its own (no two batches share a key), so presence is checked batch by batch.
fn concurrent_rows(i: usize, batch_seq: u64) -> Vec<(&'static str, i64, f64)> {
    let (i, s) = (i as i64, batch_seq as i64);
    // 10 minutes apart: the batches of a buoy spread over four hour partitions.
    let ts = T0 + s * 10 * MINUTE;
    vec![("ph", ts, milli(7_000 + i * 300 + s)), ("salinity_psu", ts, milli(35_000 + i * 300 + s))]
}

/// Ingests from one thread per buoy while the test thread flushes in a loop; returns the acked
/// batch sequences per buoy.
fn run_concurrent(engine: &Engine) -> Vec<Vec<u64>> {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = BUOYS
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let engine = engine.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for batch_seq in 0..CONCURRENT_BATCHES {
                    let ticket = engine.ingest(&buoy(name), batch_seq, batch(&concurrent_rows(i, batch_seq)));
                    match ticket.unwrap().wait() {
                        Ok(IngestOutcome::Stored { .. }) => acked.push(batch_seq),
                        Err(Error::WriterFailed { .. }) => break,
                        other => panic!("{name}/{batch_seq}: {other:?}"),
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                acked
            })
        })
        .collect();
    while done.load(std::sync::atomic::Ordering::SeqCst) < BUOYS.len() {
        if engine.flush().is_err() {
            break;
        }
    }
    let _ = engine.flush();
    let _ = engine.compact();
    writers.into_iter().map(|w| w.join().unwrap()).collect()
}

/// Every acked batch is there; every batch is there whole or not at all, with its values;
/// nothing else is there.
fn check_concurrent(engine: &Engine, acked: &[Vec<u64>], what: &str) {
    assert_eq!(engine.recovery_report().missing_files, Vec::<String>::new(), "{what}: catalog files missing");
    decode_catalog_files(engine);
    let mut got = read_map(engine);
    for (i, &name) in BUOYS.iter().enumerate() {
        for batch_seq in 0..CONCURRENT_BATCHES {
            let rows = concurrent_rows(i, batch_seq);
            let present: Vec<bool> = rows
                .iter()
                .map(|&(m, ts, v)| match got.remove(&(name.to_string(), m.to_string(), ts)) {
                    Some(found) => {
                        assert_eq!(found, (v, 0), "{what}: {name}/{batch_seq} {m} has a value never written");
                        true
                    }
                    None => false,
                })
                .collect();
            let is_acked = acked[i].contains(&batch_seq);
            assert!(
                present.iter().all(|&p| p) || (!is_acked && present.iter().all(|&p| !p)),
                "{what}: batch {name}/{batch_seq} (acked: {is_acked}) present as {present:?}"
            );
            if is_acked {
                let outcome = engine.ingest(&buoy(name), batch_seq, batch(&rows)).unwrap().wait().unwrap();
                assert_eq!(outcome, IngestOutcome::Duplicate, "{what}: retry of {name}/{batch_seq}");
            }
        }
    }
    assert!(got.is_empty(), "{what}: rows nobody wrote: {got:?}");
    assert_stored_once(engine);
}

/// Ingest runs on three threads while the flusher flushes and compacts; the machine goes down
/// at every operation of the flusher in turn (while the lanes are busy appending). The flusher
/// is the crashing thread, so the catalog copy taken at the crash is never torn by a commit.
/// Unlike the sequential sweep, the operation order varies from run to run.
#[test]
fn a_crash_in_a_flush_racing_with_ingest_loses_no_acknowledged_write() {
    const FLUSHER: &str = "bluewave-flush";
    let flusher_ops = {
        let dir = data_dir();
        let storage = FaultStorage::new(dir.path());
        let engine = open_fresh(dir.path(), &storage);
        let acked = run_concurrent(&engine);
        assert!(acked.iter().all(|a| a.len() == CONCURRENT_BATCHES as usize));
        storage.thread_ops(FLUSHER)
    };
    assert!(flusher_ops > 20, "the flusher performs {flusher_ops} operations");
    eprintln!("concurrent crash sweep: {flusher_ops} flusher operations");
    let mut failures = Vec::new();
    for n in 1..=flusher_ops {
        let dir = data_dir();
        let storage = FaultStorage::new(dir.path());
        let engine = open_fresh(dir.path(), &storage);
        storage.crash_at_thread_op(FLUSHER, n);
        let acked = run_concurrent(&engine);
        drop(engine);
        let modes = [CrashMode::PowerLoss, CrashMode::TornWrite, CrashMode::ProcessKill];
        let images: Vec<CrashImage> = modes.iter().map(|&m| storage.crash_image(m)).collect();
        for (mode, image) in modes.into_iter().zip(images) {
            let what = format!("crash at flusher op {n}, {mode:?}");
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                image.restore_catalog();
                let engine = Engine::open_with_storage(
                    crash_config(dir.path()),
                    Arc::new(FaultStorage::from_image(&image)),
                )
                .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
                check_concurrent(&engine, &acked, &what);
            }));
            if let Err(panic) = outcome {
                let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                failures.push(format!(
                    "{message}\nlog tail: {:?}",
                    storage.log().iter().rev().take(12).collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n---\n"));
}

/// Data with compaction debt (two flush generations in a closed hour, three in the open one),
/// written with the background compactor off; returns the rows.
fn write_compaction_debt(engine: &Engine) -> RowMap {
    let mut expected = RowMap::new();
    for (flush, r) in [0i64, 1, 2].into_iter().enumerate() {
        for (i, &b) in BUOYS.iter().enumerate() {
            let i = i as i64;
            let mut rows = vec![("water_temp_c", T0 + HOUR + r * MINUTE, milli(12_000 + i * 500 + r))];
            if flush < 2 {
                rows.push(("ph", T0 + r * MINUTE, milli(7_000 + i * 250 + r)));
            }
            let outcome = engine.ingest(&buoy(b), r as u64, batch(&rows)).unwrap().wait().unwrap();
            assert!(matches!(outcome, IngestOutcome::Stored { .. }));
            for (m, ts, v) in rows {
                expected.insert((b.to_string(), m.to_string(), ts), (v, 0));
            }
        }
        engine.flush().unwrap();
    }
    expected
}

/// The compactor thread folds a closed hour and merges the open one's generations on its own,
/// and the machine goes down at every one of its operations in turn. Nothing else writes while
/// it works (the data was flushed before it started), so each run performs the same operations
/// and the catalog copy taken at the crash is never torn by another thread's commit. After each
/// crash every row is there exactly once, and the reopened engine compacts what is left.
#[test]
fn a_crash_during_background_compaction_loses_no_acknowledged_write() {
    const COMPACTOR: &str = "bluewave-compact";
    let compacting = |dir: &Path| {
        let mut c = crash_config(dir);
        c.compaction_background = true;
        c.compaction_files_min = 2;
        c
    };
    // Runs the compactor over the debt until it is done or the machine is down.
    let compact_in_background = |dir: &Path, storage: &FaultStorage, crash_at: Option<u64>| {
        if let Some(n) = crash_at {
            storage.crash_at_thread_op(COMPACTOR, n);
        }
        let engine = Engine::open_with_storage(compacting(dir), Arc::new(storage.clone())).unwrap();
        let started = std::time::Instant::now();
        while !storage.crashed() && engine.metrics().compaction_generations_max > 1 {
            assert!(started.elapsed() < std::time::Duration::from_secs(120), "the compactor hung");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(engine);
    };
    let (compactor_ops, expected) = {
        let dir = data_dir();
        let storage = FaultStorage::new(dir.path());
        let engine = open_fresh(dir.path(), &storage);
        let expected = write_compaction_debt(&engine);
        drop(engine);
        compact_in_background(dir.path(), &storage, None);
        (storage.thread_ops(COMPACTOR), expected)
    };
    assert!(compactor_ops > 10, "the compactor performs {compactor_ops} operations");
    eprintln!("background compaction crash sweep: {compactor_ops} compactor operations");
    let mut failures = Vec::new();
    for n in 1..=compactor_ops {
        let dir = data_dir();
        let storage = FaultStorage::new(dir.path());
        let engine = open_fresh(dir.path(), &storage);
        assert_eq!(write_compaction_debt(&engine), expected);
        drop(engine);
        compact_in_background(dir.path(), &storage, Some(n));
        assert!(storage.crashed(), "crash at compactor op {n}: no crash");
        let modes = [CrashMode::PowerLoss, CrashMode::TornWrite, CrashMode::ProcessKill];
        let images: Vec<CrashImage> = modes.iter().map(|&m| storage.crash_image(m)).collect();
        for (mode, image) in modes.into_iter().zip(images) {
            let what = format!("crash at compactor op {n} of {compactor_ops}, {mode:?}");
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                image.restore_catalog();
                let engine = Engine::open_with_storage(
                    crash_config(dir.path()),
                    Arc::new(FaultStorage::from_image(&image)),
                )
                .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
                assert_eq!(
                    engine.recovery_report().missing_files,
                    Vec::<String>::new(),
                    "{what}: files missing"
                );
                decode_catalog_files(&engine);
                assert_eq!(read_map(&engine), expected, "{what}: rows differ");
                assert_eq!(assert_stored_once(&engine), expected, "{what}: rows changed by compaction");
                for files in engine.snapshot().view.partitions.values() {
                    let generations: BTreeSet<u64> = files.iter().map(|f| f.generation).collect();
                    assert_eq!(generations.len(), 1, "{what}: a partition left uncompacted");
                }
            }));
            if let Err(panic) = outcome {
                let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                failures.push(format!(
                    "{message}\nlog tail: {:?}",
                    storage.log().iter().rev().take(12).collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n---\n"));
}

/// A retention pass (one file dropped whole, one rewritten without its expired metric) with the
/// machine going down at each of its operations in turn: after every crash the rows within
/// retention are all there exactly once, and the expired ones are either all there (the pass
/// had not committed) or all gone; the reopened engine's pass then finishes the job.
#[test]
fn a_crash_during_a_retention_pass_loses_nothing_within_retention() {
    use crate::retention::{retention, this_hour, write_aged_data};
    const COMPACTOR: &str = "bluewave-compact";
    let hour = this_hour();
    let retaining = |dir: &Path| {
        let mut c = crash_config(dir);
        c.retention = retention();
        c
    };
    // Opens with retention and applies it (the compactor thread does the work) until done or
    // the machine is down.
    let apply = |dir: &Path, storage: &FaultStorage, crash_at: Option<u64>| {
        if let Some(n) = crash_at {
            storage.crash_at_thread_op(COMPACTOR, n);
        }
        let engine = Engine::open_with_storage(retaining(dir), Arc::new(storage.clone())).unwrap();
        let _ = engine.apply_retention();
        drop(engine);
    };
    let (ops, all, kept) = {
        let dir = data_dir();
        let storage = FaultStorage::new(dir.path());
        let engine = open_fresh(dir.path(), &storage);
        let (all, kept) = write_aged_data(&engine, &BUOYS, hour);
        drop(engine);
        apply(dir.path(), &storage, None);
        (storage.thread_ops(COMPACTOR), all, kept)
    };
    assert!(ops > 3, "the retention pass performs {ops} operations");
    assert!(all.len() > kept.len());
    let mut failures = Vec::new();
    let mut crashes = 0;
    for n in 1..=ops {
        let dir = data_dir();
        let storage = FaultStorage::new(dir.path());
        let engine = open_fresh(dir.path(), &storage);
        assert_eq!(write_aged_data(&engine, &BUOYS, hour), (all.clone(), kept.clone()));
        drop(engine);
        apply(dir.path(), &storage, Some(n));
        if !storage.crashed() {
            // The last operations may be the deletes of replaced files, done after the pass
            // answered; nothing is left to crash in.
            continue;
        }
        crashes += 1;
        let modes = [CrashMode::PowerLoss, CrashMode::TornWrite, CrashMode::ProcessKill];
        let images: Vec<CrashImage> = modes.iter().map(|&m| storage.crash_image(m)).collect();
        for (mode, image) in modes.into_iter().zip(images) {
            let what = format!("crash at retention op {n} of {ops}, {mode:?}");
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                image.restore_catalog();
                let storage = FaultStorage::from_image(&image);
                let engine = Engine::open_with_storage(crash_config(dir.path()), Arc::new(storage.clone()))
                    .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
                assert_eq!(
                    engine.recovery_report().missing_files,
                    Vec::<String>::new(),
                    "{what}: files missing"
                );
                decode_catalog_files(&engine);
                let got = read_map(&engine);
                assert!(
                    got == all || got == kept,
                    "{what}: rows are neither all nor those within retention: {got:?}"
                );
                drop(engine);
                let engine = Engine::open_with_storage(retaining(dir.path()), Arc::new(storage))
                    .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
                engine.apply_retention().unwrap_or_else(|e| panic!("{what}: retention after the crash: {e}"));
                assert_eq!(read_map(&engine), kept, "{what}: rows after the next pass");
                assert_eq!(assert_stored_once(&engine), kept, "{what}: rows changed by compaction");
            }));
            if let Err(panic) = outcome {
                let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                failures.push(message);
            }
        }
    }
    eprintln!("retention crash sweep: {ops} compactor operations, {crashes} crashed the pass");
    assert!(crashes * 2 >= ops, "only {crashes} of {ops} crash points fell inside the pass");
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n---\n"));
}

// ---------------------------------------------------------------------------------------------
// Injected I/O errors
// ---------------------------------------------------------------------------------------------

/// Three buoys: `a` and `b` on one lane, `c` on the other (of two).
fn lane_mates() -> (BuoyId, BuoyId, BuoyId) {
    let names: Vec<BuoyId> = (0..64).map(|i| buoy(&format!("buoy-{i:02}"))).collect();
    let a = names[0].clone();
    let lane = lane_for_buoy(&a, 2);
    let b = names[1..].iter().find(|n| lane_for_buoy(n, 2) == lane).unwrap().clone();
    let c = names[1..].iter().find(|n| lane_for_buoy(n, 2) != lane).unwrap().clone();
    (a, b, c)
}

fn one_row(ts: i64, value: f64) -> ReadingBatch {
    batch(&[("ph", T0 + ts * MINUTE, value)])
}

fn row_of(buoy: &BuoyId, ts: i64, value: f64) -> ((String, String, i64), (f64, u8)) {
    ((buoy.to_string(), "ph".to_string(), T0 + ts * MINUTE), (value, 0))
}

enum WalFault {
    Write,
    Sync,
}

fn wal_fault_is_fatal_to_its_lane(fault: WalFault) {
    let dir = data_dir();
    let storage = FaultStorage::new(dir.path());
    let engine = Engine::open_with_storage(crash_config(dir.path()), Arc::new(storage.clone())).unwrap();
    let (a, b, c) = lane_mates();
    for id in [&a, &b, &c] {
        engine.register_buoy(bluewave_engine::BuoyInfo::new(id)).unwrap();
    }
    let lane = lane_for_buoy(&a, 2);
    assert!(matches!(
        engine.ingest(&a, 0, one_row(0, 8.0)).unwrap().wait(),
        Ok(IngestOutcome::Stored { .. })
    ));
    let lane_dir = dir.path().join("wal").join(format!("lane-{lane:02}"));
    match fault {
        WalFault::Write => storage.fail_write(&lane_dir, 1),
        WalFault::Sync => storage.fail_sync(&lane_dir, 1),
    }
    let failed = engine.ingest(&a, 1, one_row(1, 8.1)).unwrap().wait();
    match failed {
        Err(Error::WriterFailed { lane: l, reason, .. }) => {
            assert_eq!(l, lane);
            assert!(reason.starts_with("WAL append failed: "), "reason {reason:?}");
        }
        other => panic!("the batch whose WAL I/O failed must fail, got {other:?}"),
    }
    // The lane stays down: new batches, retries of acked ones and deletes all fail; the disk is
    // not touched again, so nothing can be acked after a lost fsync.
    let ops = storage.ops();
    for (id, seq) in [(&a, 2), (&b, 0), (&a, 0), (&a, 1)] {
        let outcome = engine.ingest(id, seq, one_row(2, 8.2)).unwrap().wait();
        assert!(
            matches!(outcome, Err(Error::WriterFailed { lane: l, .. }) if l == lane),
            "{id}/{seq}: {outcome:?}"
        );
    }
    let delete =
        engine.delete(&DeleteRange { buoy: a.clone(), metric: None, start: 0, end: i64::MAX }).unwrap();
    assert!(matches!(delete.wait(), Err(Error::WriterFailed { lane: l, .. }) if l == lane));
    assert_eq!(storage.ops(), ops, "a failed lane writes nothing more");
    // The other lane goes on.
    assert!(matches!(
        engine.ingest(&c, 0, one_row(3, 8.3)).unwrap().wait(),
        Ok(IngestOutcome::Stored { .. })
    ));
    let acked: RowMap = [row_of(&a, 0, 8.0), row_of(&c, 3, 8.3)].into_iter().collect();
    assert_eq!(read_map(&engine), acked, "only acknowledged batches are visible");
    drop(engine);

    let modes = [CrashMode::PowerLoss, CrashMode::ProcessKill];
    let images: Vec<CrashImage> = modes.iter().map(|&m| storage.crash_image(m)).collect();
    for (mode, image) in modes.into_iter().zip(images) {
        image.restore_catalog();
        let engine =
            Engine::open_with_storage(crash_config(dir.path()), Arc::new(FaultStorage::from_image(&image)))
                .unwrap();
        let mut expected = acked.clone();
        // A failed fsync leaves the record's bytes in the page cache: after a process kill they
        // are read back (durable but never acked); after a power loss they are gone. A failed
        // write leaves nothing.
        let in_wal = matches!((&fault, mode), (WalFault::Sync, CrashMode::ProcessKill));
        if in_wal {
            expected.extend([row_of(&a, 1, 8.1)]);
        }
        assert_eq!(read_map(&engine), expected, "{mode:?}");
        let retry = engine.ingest(&a, 1, one_row(1, 8.1)).unwrap().wait().unwrap();
        if in_wal {
            assert_eq!(retry, IngestOutcome::Duplicate);
        } else {
            assert!(matches!(retry, IngestOutcome::Stored { .. }), "{mode:?}: {retry:?}");
        }
        assert_eq!(engine.ingest(&a, 0, one_row(0, 8.0)).unwrap().wait().unwrap(), IngestOutcome::Duplicate);
        assert_eq!(engine.ingest(&c, 0, one_row(3, 8.3)).unwrap().wait().unwrap(), IngestOutcome::Duplicate);
        drop(engine);
    }
}

#[test]
fn a_failed_wal_fsync_fails_the_batch_and_stops_the_lane() {
    wal_fault_is_fatal_to_its_lane(WalFault::Sync);
}

#[test]
fn a_failed_wal_write_fails_the_batch_and_stops_the_lane() {
    wal_fault_is_fatal_to_its_lane(WalFault::Write);
}

/// A stopped lane's answer keeps the OS error behind it as its source (EIO here), so a failed or
/// full disk can be told from damaged data, which has none.
#[test]
fn a_failed_wal_write_keeps_its_os_error_as_the_source() {
    let dir = data_dir();
    let storage = FaultStorage::new(dir.path());
    let engine = Engine::open_with_storage(crash_config(dir.path()), Arc::new(storage.clone())).unwrap();
    let (a, _, _) = lane_mates();
    engine.register_buoy(bluewave_engine::BuoyInfo::new(&a)).unwrap();
    let lane = lane_for_buoy(&a, 2);
    storage.fail_write(&dir.path().join("wal").join(format!("lane-{lane:02}")), 1);
    let error = match engine.ingest(&a, 0, one_row(0, 8.0)).unwrap().wait() {
        Err(e @ Error::WriterFailed { .. }) => e,
        other => panic!("the batch whose WAL write failed must fail, got {other:?}"),
    };
    assert!(std::error::Error::source(&error).is_some(), "no source kept");
    assert_eq!(error.io_error().and_then(io::Error::raw_os_error), Some(5));
}

/// A batch whose WAL append failed was answered `WriterFailed`: the buoy will send it again
/// after the restart, and that retry must be stored, not answered `Duplicate`. Here the engine
/// is shut down gracefully after the failure (its final flush persists the dedup windows), then
/// the machine loses power.
#[test]
fn a_batch_whose_wal_append_failed_is_stored_when_retried_after_a_restart() {
    let dir = data_dir();
    let storage = FaultStorage::new(dir.path());
    let engine = Engine::open_with_storage(crash_config(dir.path()), Arc::new(storage.clone())).unwrap();
    let (a, _, c) = lane_mates();
    for id in [&a, &c] {
        engine.register_buoy(bluewave_engine::BuoyInfo::new(id)).unwrap();
    }
    let lane = lane_for_buoy(&a, 2);
    assert!(matches!(
        engine.ingest(&a, 0, one_row(0, 8.0)).unwrap().wait(),
        Ok(IngestOutcome::Stored { .. })
    ));
    storage.fail_sync(&dir.path().join("wal").join(format!("lane-{lane:02}")), 1);
    let failed = engine.ingest(&a, 1, one_row(1, 8.1)).unwrap().wait();
    assert!(matches!(failed, Err(Error::WriterFailed { lane: l, .. }) if l == lane), "{failed:?}");
    engine.shutdown().unwrap();
    drop(engine);
    let image = storage.crash_image(CrashMode::PowerLoss);
    let engine =
        Engine::open_with_storage(crash_config(dir.path()), Arc::new(FaultStorage::from_image(&image)))
            .unwrap();
    assert_eq!(read_map(&engine), [row_of(&a, 0, 8.0)].into_iter().collect::<RowMap>());
    let retry = engine.ingest(&a, 1, one_row(1, 8.1)).unwrap().wait().unwrap();
    assert!(
        matches!(retry, IngestOutcome::Stored { .. }),
        "the retry of a batch that was never stored was answered {retry:?}: the buoy now drops it, and \
         its readings are lost"
    );
    assert_eq!(read_map(&engine), [row_of(&a, 0, 8.0), row_of(&a, 1, 8.1)].into_iter().collect::<RowMap>());
}

#[test]
fn a_failed_partition_fsync_fails_the_flush_alone() {
    // A flush writes each file's rollup first, then the file. Under `parquet/readings` it
    // makes two new directory levels durable (`date=…` synced into `readings`, `hour=…` into
    // `date=…`); the third sync there is the file's.
    a_failed_fsync_fails_the_flush_alone("readings", 3, "fsync partition file");
}

#[test]
fn a_failed_rollup_fsync_fails_the_flush_alone() {
    a_failed_fsync_fails_the_flush_alone(bluewave_engine::rollup::ROLLUPS_TABLE, 3, "fsync rollup file");
}

/// The `nth` sync under `parquet/<table>` fails with EIO: the flush fails with `op` on a temp
/// file, commits nothing, the buffer serves every row, the next flush succeeds and the next
/// open removes the temp file (the flush removed what it had renamed already).
fn a_failed_fsync_fails_the_flush_alone(table: &str, nth: u64, expected_op: &str) {
    let dir = data_dir();
    let storage = FaultStorage::new(dir.path());
    let engine = open_fresh(dir.path(), &storage);
    let mut seqs = BTreeMap::new();
    let steps: Vec<Step> = (0..2).flat_map(|r| round(r, &mut seqs)).collect();
    assert!(run(&engine, &steps).iter().all(|&a| a));
    let expected = model(&steps, steps.len());
    storage.fail_sync(&dir.path().join("parquet").join(table), nth);
    match engine.flush() {
        Err(Error::Io { op, path, .. }) => {
            assert_eq!(op, expected_op);
            assert!(path.to_string_lossy().ends_with(".parquet.tmp"), "{}", path.display());
        }
        other => panic!("flush over a failing fsync must fail, got {other:?}"),
    }
    assert!(engine.files().is_empty(), "nothing committed");
    assert_eq!(read_map(&engine), expected, "the buffer still serves every row");
    // Ingest goes on, and the next flush succeeds.
    let more = round(2, &mut seqs);
    assert!(run(&engine, &more).iter().all(|&a| a));
    let all: Vec<Step> = steps.iter().chain(&more).cloned().collect();
    let expected = model(&all, all.len());
    let report = engine.flush().unwrap();
    // Two partitions; one of them holds values of two decimal scales, stored in two files.
    assert_eq!((report.files, report.rows), (3, expected.len() as u64));
    assert_eq!(read_map(&engine), expected);
    drop(engine);
    // The failed flush's temp file is left behind and removed at the next open.
    let image = storage.crash_image(CrashMode::ProcessKill);
    let engine =
        Engine::open_with_storage(crash_config(dir.path()), Arc::new(FaultStorage::from_image(&image)))
            .unwrap();
    assert_eq!(engine.recovery_report().temp_files_removed, 1);
    assert_eq!(engine.recovery_report().orphan_files_removed, 0);
    assert_eq!(read_map(&engine), expected);
    check_rollups(&engine, true, "after a failed fsync");
    assert_eq!(assert_stored_once(&engine), expected);
}

// ---------------------------------------------------------------------------------------------
// Directory durability (POSIX: a new directory entry is durable once its parent is synced)
// ---------------------------------------------------------------------------------------------

#[test]
fn an_acked_batch_survives_power_loss_when_new_directories_need_a_parent_sync() {
    let dir = data_dir();
    let storage = FaultStorage::new(dir.path()).strict_directories();
    let engine = open_fresh(dir.path(), &storage);
    let mut seqs = BTreeMap::new();
    let steps = round(0, &mut seqs);
    assert!(run(&engine, &steps).iter().all(|&a| a));
    drop(engine);
    let image = storage.crash_image(CrashMode::PowerLoss);
    let engine =
        Engine::open_with_storage(crash_config(dir.path()), Arc::new(FaultStorage::from_image(&image)))
            .unwrap();
    assert_eq!(
        read_map(&engine),
        model(&steps, steps.len()),
        "acked batches lost: the WAL directories were never synced into their parents; durable files: {:?}",
        image.file_names()
    );
}

#[test]
fn a_committed_file_survives_power_loss_when_new_directories_need_a_parent_sync() {
    let dir = data_dir();
    let storage = FaultStorage::new(dir.path()).strict_directories();
    let engine = open_fresh(dir.path(), &storage);
    let mut seqs = BTreeMap::new();
    let steps = round(0, &mut seqs);
    assert!(run(&engine, &steps).iter().all(|&a| a));
    // Two partitions; one of them holds values of two decimal scales, stored in two files.
    assert_eq!(engine.flush().unwrap().files, 3);
    drop(engine);
    let image = storage.crash_image(CrashMode::PowerLoss);
    let engine =
        Engine::open_with_storage(crash_config(dir.path()), Arc::new(FaultStorage::from_image(&image)))
            .unwrap();
    assert_eq!(
        engine.recovery_report().missing_files,
        Vec::<String>::new(),
        "committed partition files lost: their new directories were never synced into their parents; \
         durable files: {:?}",
        image.file_names()
    );
    assert_eq!(read_map(&engine), model(&steps, steps.len()));
}

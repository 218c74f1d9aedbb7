//! TEMPORARY stub until partition.rs lands.
use crate::error::{Error, Result};
use std::sync::Arc;
#[derive(Debug, Clone, Default)]
pub struct PartitionRows {
    pub buoy_names: Vec<Arc<str>>,
    pub metric_names: Vec<Arc<str>>,
    pub buoy_keys: Vec<u32>,
    pub metric_keys: Vec<u32>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
    pub quality: Vec<u8>,
}
impl PartitionRows {
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }
}
#[derive(Debug, Clone, Default)]
pub struct PartitionWriteOptions {
    pub zstd_level: i32,
}
pub struct EncodedPartition {
    pub bytes: Vec<u8>,
}
pub fn encode_partition(rows: &PartitionRows, _o: &PartitionWriteOptions) -> Result<EncodedPartition> {
    let mut out = Vec::new();
    for (n, list) in [(0u8, &rows.buoy_names), (1, &rows.metric_names)] {
        out.push(n);
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for s in list.iter() {
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
    }
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for i in 0..rows.len() {
        out.extend_from_slice(&rows.buoy_keys[i].to_le_bytes());
        out.extend_from_slice(&rows.metric_keys[i].to_le_bytes());
        out.extend_from_slice(&rows.timestamps[i].to_le_bytes());
        out.extend_from_slice(&rows.values[i].to_le_bytes());
        out.push(rows.quality[i]);
    }
    Ok(EncodedPartition { bytes: out })
}
pub fn decode_partition(bytes: bytes::Bytes) -> Result<PartitionRows> {
    let b = &bytes[..];
    let mut p = 0usize;
    let err = || Error::Parquet("bad stub".into());
    let mut r = PartitionRows::default();
    for _ in 0..2 {
        let which = *b.get(p).ok_or_else(err)?;
        p += 1;
        let n = u32::from_le_bytes(b.get(p..p + 4).ok_or_else(err)?.try_into().map_err(|_| err())?);
        p += 4;
        for _ in 0..n {
            let l = *b.get(p).ok_or_else(err)? as usize;
            p += 1;
            let s = std::str::from_utf8(b.get(p..p + l).ok_or_else(err)?).map_err(|_| err())?;
            p += l;
            if which == 0 { r.buoy_names.push(Arc::from(s)) } else { r.metric_names.push(Arc::from(s)) }
        }
    }
    let n = u32::from_le_bytes(b.get(p..p + 4).ok_or_else(err)?.try_into().map_err(|_| err())?);
    p += 4;
    for _ in 0..n {
        let g = |p: usize, l: usize| b.get(p..p + l).ok_or_else(err);
        r.buoy_keys.push(u32::from_le_bytes(g(p, 4)?.try_into().map_err(|_| err())?));
        p += 4;
        r.metric_keys.push(u32::from_le_bytes(g(p, 4)?.try_into().map_err(|_| err())?));
        p += 4;
        r.timestamps.push(i64::from_le_bytes(g(p, 8)?.try_into().map_err(|_| err())?));
        p += 8;
        r.values.push(f64::from_le_bytes(g(p, 8)?.try_into().map_err(|_| err())?));
        p += 8;
        r.quality.push(g(p, 1)?[0]);
        p += 1;
    }
    Ok(r)
}

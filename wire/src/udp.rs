//! UDP sockets for QUIC endpoints, with receive and send buffers sized for bursts.
//!
//! An endpoint reads its socket from one task. While that task waits for a core (a flush
//! encoding on both cores of a small machine), arriving datagrams queue in the kernel's receive
//! buffer, and those that do not fit are dropped: QUIC then recovers them by loss detection,
//! which for the last packets of a batch means a probe timeout (the peer's max ack delay,
//! 25 ms, plus the RTT variance) before the resend. At 2 million readings/s (22 MB/s of
//! frames) a 10 ms wait is 220 KB of datagrams, more than Linux's default buffer
//! (`net.core.rmem_default`, 208 KiB): measured on loopback, 4 % of the server's datagrams were
//! dropped, recovered 25+ ms late (BENCHMARKS.md, sixth session).
//!
//! Linux caps a request at `net.core.rmem_max` / `net.core.wmem_max` (and reports twice the
//! granted size: the kernel's bookkeeping); [`bind`] reports what was granted so the server can
//! warn when the cap is below its setting.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

/// Default receive and send buffer request of a QUIC endpoint's UDP socket: 4 MiB, room for
/// about 0.2 s of frames at 2 million readings/s (Linux grants twice it for its bookkeeping
/// where `net.core.rmem_max` allows). The memory is the kernel's, taken only while datagrams
/// wait.
pub const UDP_BUFFER_BYTES_DEFAULT: usize = 4 << 20;

/// Least accepted buffer request (64 KiB): below it a single GSO burst may not fit.
pub const UDP_BUFFER_BYTES_MIN: usize = 64 << 10;

/// Largest accepted buffer request (1 GiB).
pub const UDP_BUFFER_BYTES_MAX: usize = 1 << 30;

/// Checks a `udp_buffer_bytes` setting (server or client) against
/// [`UDP_BUFFER_BYTES_MIN`]`..=`[`UDP_BUFFER_BYTES_MAX`].
pub(crate) fn check_buffer_bytes(bytes: usize) -> Result<(), &'static str> {
    if (UDP_BUFFER_BYTES_MIN..=UDP_BUFFER_BYTES_MAX).contains(&bytes) {
        Ok(())
    } else {
        Err("udp_buffer_bytes must be within 65536..=1073741824")
    }
}

/// Socket buffer sizes the kernel granted, as it reports them (Linux: twice the payload bytes
/// granted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpBuffers {
    /// `SO_RCVBUF` after the request.
    pub recv_bytes: usize,
    /// `SO_SNDBUF` after the request.
    pub send_bytes: usize,
}

impl UdpBuffers {
    /// True when the kernel granted less than `requested` for either buffer (on Linux, which
    /// reports twice what it grants: the `net.core.rmem_max` / `wmem_max` cap is below
    /// `requested`).
    pub fn below(&self, requested: usize) -> bool {
        let reported = if cfg!(target_os = "linux") { requested.saturating_mul(2) } else { requested };
        self.recv_bytes < reported || self.send_bytes < reported
    }
}

/// Binds a UDP socket on `addr` (an IPv6 one dual-stack where the system allows, as quinn's
/// own constructors do) and asks for `buffer_bytes` of receive and send buffer. A refused
/// resize is not an error (the socket keeps the kernel's default; the returned sizes show it).
pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> io::Result<(std::net::UdpSocket, UdpBuffers)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6()
        && let Err(e) = socket.set_only_v6(false)
    {
        tracing::debug!(%e, "UDP socket not made dual-stack");
    }
    if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
        tracing::debug!(%e, buffer_bytes, "UDP receive buffer not resized");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
        tracing::debug!(%e, buffer_bytes, "UDP send buffer not resized");
    }
    socket.bind(&addr.into())?;
    let buffers =
        UdpBuffers { recv_bytes: socket.recv_buffer_size()?, send_bytes: socket.send_buffer_size()? };
    Ok((socket.into(), buffers))
}

/// A quinn endpoint on a socket from [`bind`] (a server when `server` is given), on the current
/// async runtime (an error outside one).
pub fn endpoint(
    addr: SocketAddr,
    buffer_bytes: usize,
    server: Option<quinn::ServerConfig>,
) -> io::Result<(quinn::Endpoint, UdpBuffers)> {
    endpoint_with(addr, buffer_bytes, server, quinn::EndpointConfig::default())
}

/// [`endpoint`] with an endpoint configuration (the server's persisted stateless-reset key).
pub(crate) fn endpoint_with(
    addr: SocketAddr,
    buffer_bytes: usize,
    server: Option<quinn::ServerConfig>,
    config: quinn::EndpointConfig,
) -> io::Result<(quinn::Endpoint, UdpBuffers)> {
    let runtime: Arc<dyn quinn::Runtime> =
        quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime found"))?;
    let (socket, buffers) = bind(addr, buffer_bytes)?;
    let endpoint = quinn::Endpoint::new(config, server, socket, runtime)?;
    Ok((endpoint, buffers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_request_is_granted_and_reported() {
        // 64 KiB is under Linux's default caps (`rmem_max` and `wmem_max` are 208 KiB unless an
        // operator lowered them), so the request is granted: Linux reports twice it, other
        // systems at least it.
        let (_socket, buffers) = bind(SocketAddr::from(([127, 0, 0, 1], 0)), UDP_BUFFER_BYTES_MIN)
            .unwrap_or_else(|e| panic!("bind: {e}"));
        assert!(!buffers.below(UDP_BUFFER_BYTES_MIN), "{buffers:?}");
        if cfg!(target_os = "linux") {
            assert_eq!(
                buffers,
                UdpBuffers { recv_bytes: 2 * UDP_BUFFER_BYTES_MIN, send_bytes: 2 * UDP_BUFFER_BYTES_MIN }
            );
        }
    }
}

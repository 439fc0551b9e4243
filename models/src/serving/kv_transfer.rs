//! KV transfer: the prompt's KV cache (bytes per token from the model)
//! goes from the prefill GPU's NIC to the decode GPU's NIC once decode
//! admitted the request; each NIC carries one transfer at a time. When it
//! has arrived the request joins its decode unit.

use moesim_sim::SimTime;

use super::server::{Event, Server};
use super::ServingConfig;

/// When each NIC is free: one per prefill GPU and one per decode GPU, each
/// indexed unit * GPUs per unit + GPU.
#[derive(Debug, Clone)]
pub(super) struct Nics {
    prefill: Vec<SimTime>,
    decode: Vec<SimTime>,
}

impl Nics {
    /// Every NIC free from the start.
    pub(super) fn new(config: &ServingConfig) -> Nics {
        let dg = config.decode_gpus_per_unit.max(1);
        Nics {
            prefill: vec![SimTime::ZERO; (config.prefill_units * config.prefill_gpus_per_unit) as usize],
            decode: vec![SimTime::ZERO; (config.decode_units * dg) as usize],
        }
    }
}

impl Server<'_> {
    /// Sends request `r`'s prompt KV from its prefill GPU's NIC to the NIC
    /// of decode GPU `g` of unit `u`, starting when both are free; it
    /// arrives after the transfer and the latency.
    pub(super) fn send_kv(&mut self, r: u32, u: u32, g: u32) {
        let req = *self.live.req(r);
        let o = self.live.out(r);
        let idx = (u * self.config.decode_gpus_per_unit + g) as usize;
        let src = (o.prefill_unit * self.config.prefill_gpus_per_unit + o.prefill_gpu) as usize;
        let bytes = req.input_len as f64 * self.config.kv_bytes_per_token;
        let start = self.now.max(self.nics.prefill[src]).max(self.nics.decode[idx]);
        let busy = moesim_sim::SimDuration::from_secs_f64(bytes / self.config.kv_transfer_bytes_per_s.max(1.0));
        self.nics.prefill[src] = start + busy;
        self.nics.decode[idx] = start + busy;
        let done = start + busy + moesim_sim::SimDuration::from_secs_f64(self.config.kv_transfer_latency_s);
        self.push(done, Event::TransferDone { request: r });
    }

    /// Request `r`'s KV has arrived: it joins its decode unit at the next
    /// iteration start (now, if the unit is idle).
    pub(super) fn transfer_done(&mut self, r: u32) {
        let u = self.live.out(r).decode_unit;
        self.decode[u as usize].joining.push(r);
        if !self.decode[u as usize].busy {
            self.start_decode(u);
        }
    }
}

//! Parallel plans: how a model is split over a cluster (tensor, pipeline,
//! data and expert parallelism, ZeRO stage, pipeline schedule) and the rank
//! layout that follows from it.
//!
//! Ranks are laid out pipeline-major: the `tp x cp x dp` ranks of pipeline
//! device `d` are `d * tp * cp * dp ..`, data-parallel replicas next to each
//! other, the context-parallel ranks of a replica next (Megatron's order,
//! tp-cp-dp-pp) and the tensor-parallel ranks of one adjacent (inside a node). Expert
//! parallelism groups `ep` consecutive ranks of one pipeline device, so with
//! DeepSeek-V3's plan (PP16, EP64, DP128 on 8-GPU nodes) an EP group spans 8
//! nodes of one pipeline stage.

use moesim_topologies::ConfigProblem;

use crate::hardware::ops::gemm_kernels::GemmKernels;
use crate::network::moe_comm::DeepEpRdma;
use crate::transformer::model::ModelConfig;
use crate::transformer::schedule::{check_interleaved, check_sizes, ScheduleKind};

/// A resolved plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelPlan {
    pub tp: u32,
    /// Context parallelism: each sequence's tokens split over this many
    /// ranks, attention exchanging keys and values among them.
    pub cp: u32,
    /// How context-parallel ranks exchange keys and values.
    pub cp_comm: CpComm,
    /// Pipeline devices (for DualPipeV the model has `2 * pp` stages).
    pub pp: u32,
    pub dp: u32,
    pub ep: u32,
    /// ZeRO stage: 0 (replicated optimizer), 1 (optimizer states sharded over
    /// data parallelism), 2 (gradients too) or 3 (parameters too, gathered
    /// per layer: FSDP).
    pub zero: u32,
    pub schedule: ScheduleKind,
    /// Model chunks per pipeline device for `interleaved-1f1b` (1 otherwise).
    pub virtual_stages: u32,
    /// Megatron sequence parallelism beside TP (Korthikanti et al. 2022).
    pub sequence_parallel: bool,
    /// Sequences per micro-batch.
    pub micro_batch: u32,
    /// SMs an expert-parallel communication kernel holds while it runs.
    pub comm_sms: u32,
    /// How DeepEP's normal kernels drive RDMA (their channels bound them
    /// with IBRC).
    pub deepep_rdma: DeepEpRdma,
    /// Which FP8 GEMM kernels run.
    pub gemm_kernels: GemmKernels,
}

/// How context-parallel ranks exchange keys and values (each rank holds
/// two load-balanced chunks of every sequence, so causal attention costs
/// every rank the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CpComm {
    /// Ring attention as Megatron-LM / Transformer Engine run it: `cp`
    /// steps, each computing attention over the key/value chunk in hand
    /// while the next chunk travels from the ring predecessor; the backward
    /// passes keys, values and their gradients.
    #[default]
    Ring,
    /// Llama 3's variant (arXiv 2407.21783 §3.3.2): keys and values are
    /// all-gathered before attention (blocking) and their gradients
    /// reduce-scattered after the backward.
    AllGather,
}

impl CpComm {
    pub fn as_str(self) -> &'static str {
        match self {
            CpComm::Ring => "ring",
            CpComm::AllGather => "all-gather",
        }
    }
}

impl ParallelPlan {
    pub fn world(&self) -> u64 {
        self.tp as u64 * self.cp as u64 * self.pp as u64 * self.dp as u64
    }

    /// Model stages of the schedule.
    pub fn stages(&self) -> u32 {
        match self.schedule {
            ScheduleKind::DualPipeV => 2 * self.pp,
            ScheduleKind::Interleaved1F1B => self.pp * self.virtual_stages.max(1),
            _ => self.pp,
        }
    }

    /// Ranks of one pipeline device.
    pub fn ranks_per_device(&self) -> u32 {
        self.tp * self.cp * self.dp
    }

    /// Global rank of pipeline device `d`, data-parallel replica `i`,
    /// context-parallel rank `c`, tensor rank `t`.
    pub fn rank(&self, d: u32, i: u32, c: u32, t: u32) -> u32 {
        d * self.ranks_per_device() + (i * self.cp + c) * self.tp + t
    }

    /// Ranks that hold the same (dense) parameters of a stage and reduce
    /// their gradients together: data- and context-parallel ranks alike.
    pub fn grad_replicas(&self) -> u32 {
        self.dp * self.cp
    }

    /// Ranks sharing each expert's parameters (expert data parallelism).
    pub fn expert_dp(&self) -> u32 {
        self.ranks_per_device() / self.ep.max(1)
    }

    /// Micro-batches each pipeline runs per step for a global batch of
    /// `global_batch` sequences, or a problem.
    pub fn microbatches(&self, global_batch: u64) -> Result<u32, ConfigProblem> {
        let per_step = self.dp as u64 * self.micro_batch as u64;
        if per_step == 0 || !global_batch.is_multiple_of(per_step) {
            let lo = (global_batch / per_step.max(1)).max(1) * per_step;
            return Err(ConfigProblem {
                key: "workload.global_batch".into(),
                message: format!(
                    "expected a multiple of dp x micro_batch = {} x {} = {per_step} sequences (e.g. {lo} or {}), found {global_batch}",
                    self.dp,
                    self.micro_batch,
                    lo + per_step
                ),
            });
        }
        Ok((global_batch / per_step) as u32)
    }

    /// Every inconsistency of the plan with the cluster, the model and the
    /// batch, keys as in the scenario file, each saying what would work.
    pub fn problems(
        &self,
        gpus: u64,
        gpus_per_node: u32,
        model: &ModelConfig,
        global_batch: u64,
    ) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (k, v) in [
            ("parallel.tp", self.tp),
            ("parallel.cp", self.cp),
            ("parallel.pp", self.pp),
            ("parallel.dp", self.dp),
            ("parallel.ep", self.ep),
            ("parallel.micro_batch", self.micro_batch),
        ] {
            if v == 0 {
                out.push(ConfigProblem { key: k.into(), message: "expected an integer >= 1, found 0".into() });
            }
        }
        if !out.is_empty() {
            return out;
        }
        let mut push = |key: &str, message: String| out.push(ConfigProblem { key: key.into(), message });
        if self.world() != gpus {
            let split = self.tp as u64 * self.cp as u64 * self.pp as u64;
            let fit = gpus / split.max(1);
            let (names, sizes) = if self.cp > 1 {
                ("tp x cp x pp x dp", format!("{} x {} x {} x {}", self.tp, self.cp, self.pp, self.dp))
            } else {
                ("tp x pp x dp", format!("{} x {} x {}", self.tp, self.pp, self.dp))
            };
            push(
                "parallel",
                format!(
                    "{names} = {sizes} = {} ranks, but the cluster has {gpus} GPUs; {}",
                    self.world(),
                    if fit > 0 && gpus.is_multiple_of(split) {
                        format!("dp = {fit} would fill it")
                    } else {
                        format!("choose {} dividing {gpus}", if self.cp > 1 { "tp x cp x pp" } else { "tp x pp" })
                    }
                ),
            );
        }
        if self.tp > gpus_per_node {
            push("parallel.tp", format!("expected at most the {gpus_per_node} GPUs of a node, found {}", self.tp));
        }
        let heads = model.attention.heads;
        if !heads.is_multiple_of(self.tp) {
            push(
                "parallel.tp",
                format!("expected a divisor of the model's {heads} attention heads, found {}", self.tp),
            );
        }
        let rpd = self.ranks_per_device();
        if !rpd.is_multiple_of(self.ep) {
            push(
                "parallel.ep",
                format!(
                    "expected a divisor of tp x cp x dp = {rpd} (expert groups tile one pipeline stage), found {}",
                    self.ep
                ),
            );
        }
        match &model.moe {
            Some(moe) => {
                if self.ep > moe.routed_experts {
                    push(
                        "parallel.ep",
                        format!(
                            "expected at most the model's {} routed experts, found {}",
                            moe.routed_experts, self.ep
                        ),
                    );
                } else if !moe.routed_experts.is_multiple_of(self.ep) {
                    push(
                        "parallel.ep",
                        format!("expected a divisor of the {} routed experts, found {}", moe.routed_experts, self.ep),
                    );
                }
                if self.ep > gpus_per_node && !self.ep.is_multiple_of(gpus_per_node) {
                    push(
                        "parallel.ep",
                        format!(
                            "expected whole nodes ({gpus_per_node} GPUs each) or at most one node, found {}",
                            self.ep
                        ),
                    );
                }
            }
            None if self.ep > 1 => {
                push("parallel.ep", format!("the model has no experts: expected 1, found {}", self.ep))
            }
            None => {}
        }
        if self.zero > 3 {
            push("parallel.zero", format!("expected 0, 1, 2 or 3, found {}", self.zero));
        }
        if self.virtual_stages == 0 {
            push("parallel.virtual_stages", "expected an integer >= 1, found 0".into());
        } else if self.virtual_stages > 1 && self.schedule != ScheduleKind::Interleaved1F1B {
            push(
                "parallel.virtual_stages",
                format!(
                    "model chunks per device are for schedule = \"interleaved-1f1b\"; found {} with {}",
                    self.virtual_stages,
                    self.schedule.as_str()
                ),
            );
        }
        let stages = self.stages();
        // Embedding and head need a stage each only with one layer per stage.
        if stages > model.layers {
            push(
                "parallel.pp",
                format!("expected at most one stage per layer ({} layers), found {stages} stages", model.layers),
            );
        }
        match self.microbatches(global_batch) {
            Ok(m) if self.schedule == ScheduleKind::Interleaved1F1B => {
                if let Err(e) = check_interleaved(self.pp, self.virtual_stages.max(1), m) {
                    push("parallel.schedule", format!("{e} (micro-batches = global_batch / (dp x micro_batch) = {m})"));
                }
            }
            Ok(m) => {
                if let Err(e) = check_sizes(self.schedule, stages, m) {
                    push("parallel.schedule", format!("{e} (micro-batches = global_batch / (dp x micro_batch) = {m})"));
                }
            }
            Err(p) => push(&p.key, p.message),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3_plan() -> ParallelPlan {
        ParallelPlan {
            tp: 1,
            cp: 1,
            cp_comm: CpComm::Ring,
            pp: 16,
            dp: 128,
            ep: 64,
            zero: 1,
            schedule: ScheduleKind::DualPipe,
            virtual_stages: 1,
            sequence_parallel: false,
            micro_batch: 1,
            comm_sms: 20,
            deepep_rdma: DeepEpRdma::Ibgda,
            gemm_kernels: GemmKernels::Deepgemm,
        }
    }

    #[test]
    fn deepseek_v3_plan_is_consistent() {
        let m = ModelConfig::preset("deepseek-v3").unwrap();
        let p = v3_plan();
        assert!(p.problems(2048, 8, &m, 15360).is_empty(), "{:?}", p.problems(2048, 8, &m, 15360));
        assert_eq!(p.microbatches(15360).unwrap(), 120);
        assert_eq!(p.expert_dp(), 2);
        assert_eq!(p.rank(3, 5, 0, 0), 3 * 128 + 5);
    }

    #[test]
    fn context_parallel_ranks_sit_between_tensor_and_data_ranks() {
        let m = ModelConfig::preset("llama-3.1-405b").unwrap();
        // Llama 3's long-context plan: TP8 CP16 PP16 DP8 on 16,384 GPUs.
        let p = ParallelPlan { tp: 8, cp: 16, pp: 16, dp: 8, ep: 1, schedule: ScheduleKind::OneFOneB, ..v3_plan() };
        assert!(p.problems(16_384, 8, &m, 128).is_empty(), "{:?}", p.problems(16_384, 8, &m, 128));
        assert_eq!(p.world(), 16_384);
        assert_eq!(p.ranks_per_device(), 1024);
        assert_eq!(p.grad_replicas(), 128);
        // Tensor ranks adjacent, then the CP ranks of a replica, then replicas.
        assert_eq!(p.rank(0, 0, 1, 0), 8);
        assert_eq!(p.rank(0, 1, 0, 0), 128);
        assert_eq!(p.rank(2, 1, 3, 5), 2 * 1024 + 128 + 24 + 5);
        let wrong = p.problems(8192, 8, &m, 128);
        assert!(wrong.iter().any(|q| q.key == "parallel" && q.message.contains("tp x cp x pp x dp")), "{wrong:?}");
        let zero = ParallelPlan { cp: 0, ..p };
        assert!(zero.problems(16_384, 8, &m, 128).iter().any(|q| q.key == "parallel.cp"));
    }

    #[test]
    fn impossible_plans_say_what_would_work() {
        let m = ModelConfig::preset("deepseek-v3").unwrap();
        let bad = ParallelPlan { dp: 100, ep: 300, ..v3_plan() };
        let text: Vec<String> =
            bad.problems(2048, 8, &m, 15360).iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
        let all = text.join("\n");
        assert!(all.contains("dp = 128 would fill it"), "{all}");
        assert!(all.contains("at most the model's 256 routed experts"), "{all}");
        let odd = ParallelPlan { dp: 128, ..v3_plan() };
        let text: Vec<String> = odd.problems(2048, 8, &m, 15000).iter().map(|p| p.message.clone()).collect();
        assert!(text.iter().any(|t| t.contains("multiple of dp x micro_batch")), "{text:?}");
        // DualPipe needs >= 2 * PP micro-batches: 16 sequences over DP128 is 0.125 per replica.
        let few = v3_plan();
        let text: Vec<String> = few.problems(2048, 8, &m, 128 * 8).iter().map(|p| p.message.clone()).collect();
        assert!(text.iter().any(|t| t.contains("micro-batches")), "{text:?}");
    }
}

"""GPT-NeoX / DeepSpeed checkpoint import, tested on checkpoints DeepSpeed itself writes.

Run as a script (under torchrun) this file *writes* such a checkpoint: a tiny GPT-NeoX built as a
DeepSpeed PipelineModule with GPT-NeoX's layer layout and parameter names, trained for a few
steps with ZeRO stage 1 over data-parallel ranks, saved with `engine.save_checkpoint`. The tests
replay the same steps with a plain torch AdamW on our model and compare.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from debias.errors import UserError
from debias.model import GPTNeoX, GPTNeoXConfig
from debias.model.gpt_neox import Block, rotary_tables
from debias.model.neox_import import adamw_state_dict, import_checkpoint, load_neox_model, read_zero_state
from debias.train.loop import skip_cpu_shm_op

# Odd widths so that ZeRO has to pad its flat groups.
CONFIG = GPTNeoXConfig(vocab_size=61, hidden_size=24, num_layers=2, num_heads=3, intermediate_size=91)
RANKS, MICRO_BATCH, STEPS, LENGTH = 2, 2, 3, 9
LR, BETAS, EPS, WEIGHT_DECAY, CLIP = 1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0


# --- the writer: GPT-NeoX's pipeline layout as a DeepSpeed PipelineModule ------------------------


class EmbeddingPipe(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(CONFIG.vocab_size, CONFIG.hidden_size)

    def forward(self, ids):
        return self.word_embeddings(ids)


class BlockPipe(Block):
    def forward(self, x):
        cos, sin = rotary_tables(CONFIG, x.shape[1], x.device)
        return super().forward(x, cos, sin)


class NormPipe(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(CONFIG.hidden_size, eps=CONFIG.layer_norm_eps)

    def forward(self, x):
        return self.norm(x)


class OutputPipe(nn.Module):
    def __init__(self):
        super().__init__()
        self.final_linear = nn.Linear(CONFIG.hidden_size, CONFIG.vocab_size, bias=False)

    def forward(self, x):
        return self.final_linear(x)


def passthrough(x):  # GPT-NeoX's weightless layers 1 and L+2
    return x


def next_token_loss(logits, labels):
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def batches() -> torch.Tensor:
    """[steps, ranks * micro_batch, length] token ids, the same in every process."""
    return torch.randint(0, CONFIG.vocab_size, (STEPS, RANKS * MICRO_BATCH, LENGTH), generator=torch.Generator().manual_seed(7))


def is_decayed(name: str) -> bool:  # GPT-NeoX's rule: no decay on LayerNorms and biases
    return "norm" not in name.split(".")[-2] and not name.endswith("bias")


def write_checkpoint(out: Path) -> None:
    import deepspeed
    from deepspeed.pipe import LayerSpec, PipelineModule
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    skip_cpu_shm_op()  # its C++ op would JIT-compile for minutes on CPU
    deepspeed.init_distributed(dist_backend="gloo")
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)  # identical initial weights on every rank
    layers = [LayerSpec(EmbeddingPipe), passthrough]
    layers += [LayerSpec(BlockPipe, CONFIG) for _ in range(CONFIG.num_layers)]
    layers += [passthrough, LayerSpec(NormPipe), LayerSpec(OutputPipe)]
    topology = PipeModelDataParallelTopology(num_pp=1, num_mp=1, num_dp=RANKS)
    model = PipelineModule(layers=layers, loss_fn=next_token_loss, topology=topology, partition_method="uniform")
    if rank == 0:
        torch.save({name: p.detach().clone() for name, p in model.named_parameters()}, out / "initial.pt")
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if is_decayed(n)], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in named if not is_decayed(n)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    config = {
        "train_batch_size": RANKS * MICRO_BATCH,
        "train_micro_batch_size_per_gpu": MICRO_BATCH,
        "zero_optimization": {"stage": 1},
        "gradient_clipping": CLIP,
        "steps_per_print": 10**9,
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    mine = batches()[:, rank * MICRO_BATCH : (rank + 1) * MICRO_BATCH]
    data = iter([(rows[:, :-1], rows[:, 1:]) for rows in mine])
    for _ in range(STEPS):
        engine.train_batch(data)
    engine.save_checkpoint(str(out), tag="global_step3")


# --- the reference: the same steps with plain torch AdamW on our model ----------------------------


def pipeline_to_ours(name: str) -> str:
    layer, key = name.split(".", 1)
    layer = int(layer)
    if layer == 0:
        return "embed_in.weight"
    if layer == CONFIG.num_layers + 3:
        return key.replace("norm.", "final_layer_norm.")
    if layer == CONFIG.num_layers + 4:
        return "embed_out.weight"
    return f"layers.{layer - 2}.{key}"


def reference_run(initial: dict[str, torch.Tensor], steps: int = STEPS):
    model = GPTNeoX(CONFIG)
    model.load_state_dict({pipeline_to_ours(n): t for n, t in initial.items()})
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if is_decayed(n)], "weight_decay": WEIGHT_DECAY},
            {"params": [p for n, p in named if not is_decayed(n)], "weight_decay": 0.0},
        ],
        lr=LR, betas=BETAS, eps=EPS,
    )
    train(model, optimizer, batches()[:steps])
    return model, optimizer


def train(model, optimizer, steps_of_rows):
    for rows in steps_of_rows:
        optimizer.zero_grad()
        next_token_loss(model(rows[:, :-1]), rows[:, 1:]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def deepspeed_checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("neox")
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={RANKS}",
        f"--master_port={free_port()}", __file__, str(out),
    ]
    env = os.environ | {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# --- tests -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deepspeed_zero1_shards_import_to_the_same_adam_state(deepspeed_checkpoint):
    folder = deepspeed_checkpoint / "global_step3"
    assert sorted(p.name for p in folder.glob("zero_pp_rank_*")) == [
        f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(RANKS)
    ]
    reference, reference_optimizer = reference_run(torch.load(deepspeed_checkpoint / "initial.pt"))

    zero = read_zero_state(folder, CONFIG)
    assert zero.step == STEPS and zero.ranks == RANKS
    for name, param in reference.named_parameters():
        state = reference_optimizer.state[param]
        assert_same_moment(zero.exp_avg[name], state["exp_avg"], name)
        assert_same_moment(zero.exp_avg_sq[name], state["exp_avg_sq"], name)
        assert_same_weights(zero.master[name], param, name)

    # the layer files hold the same weights
    from_layers = dict(load_neox_model(folder, CONFIG).named_parameters())
    for name, param in reference.named_parameters():
        assert_same_weights(from_layers[name], param, name)

    # resuming from the import continues exactly like the uninterrupted reference
    resumed = build_resumed(zero)
    resumed_optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in resumed.named_parameters() if not is_decayed(n)], "weight_decay": 0.0},
         {"params": [p for n, p in resumed.named_parameters() if is_decayed(n)], "weight_decay": WEIGHT_DECAY}],
        lr=LR, betas=BETAS, eps=EPS,
    )  # groups in another order than DeepSpeed's: matching is by name
    resumed_optimizer.load_state_dict(adamw_state_dict(resumed_optimizer, resumed, zero))
    extra = torch.randint(0, CONFIG.vocab_size, (1, 4, LENGTH), generator=torch.Generator().manual_seed(8))
    train(reference, reference_optimizer, extra)
    train(resumed, resumed_optimizer, extra)
    for (name, a), b in zip(reference.named_parameters(), resumed.parameters()):
        assert_same_weights(b, a, name)


def assert_same_moment(actual, expected, name):
    """Adam moments equal within fp32 round-off *of the tensor's scale*: DeepSpeed averages the
    ranks' gradients in another order than one full-batch backward, which moves every element by
    ~1e-5 of the largest one (measured: at most 1.3e-5); an element-wise tolerance fails on the
    small elements of a tensor. A wrong shard slice or name mapping is off by O(1) of the scale."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=1e-4 * scale, rtol=1e-4, msg=name)


def assert_same_weights(actual, expected, name):
    """Equal within float round-off, except the key part of QKV: its bias gets exactly zero
    gradient (softmax ignores a shift shared by all keys) and, at initialisation, its weight a
    gradient near round-off size (near-uniform attention), so Adam blows round-off noise up into
    steps of up to lr. The key bias is skipped; the key weight must agree within 1% of one step
    (measured: 0.6%); queries and values are compared at round-off tolerance."""
    actual, expected = actual.detach(), expected.detach()
    if "query_key_value" in name:  # laid out per head as [q, k, v]
        split = [t.view(CONFIG.num_heads, 3, -1) for t in (actual, expected)]
        if name.endswith("weight"):
            torch.testing.assert_close(split[0][:, 1], split[1][:, 1], atol=1e-2 * LR, rtol=0, msg=name)
        actual, expected = (t[:, [0, 2]] for t in split)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4, msg=name)


def build_resumed(zero):
    model = GPTNeoX(CONFIG)
    model.load_state_dict(zero.master)
    return model


@pytest.mark.slow
def test_import_checkpoint_writes_a_model_folder_and_optimizer_state(deepspeed_checkpoint, tmp_path):
    from debias.train.optim import build_optimizer, load_optimizer_state

    summary = import_checkpoint(deepspeed_checkpoint / "global_step3", CONFIG, tmp_path / "imported")
    assert summary["adam_step"] == STEPS and summary["step"] == STEPS and summary["weights"] == "fp32 master weights"
    model = GPTNeoX.from_pretrained(tmp_path / "imported" / "model")
    optimizer = build_optimizer(model)
    load_optimizer_state(optimizer, tmp_path / "imported" / "optimizer_state.pt")
    assert all(int(optimizer.state[p]["step"]) == STEPS for p in model.parameters())
    assert json.loads((tmp_path / "imported" / "import.json").read_text())["ranks"] == RANKS


def extra_batches() -> torch.Tensor:
    """[2 steps, ranks * micro_batch rows, length] ids that continue the run after the checkpoint."""
    return torch.randint(0, CONFIG.vocab_size, (2, RANKS * MICRO_BATCH, LENGTH), generator=torch.Generator().manual_seed(8))


@pytest.mark.slow
def test_trainer_resumes_from_imported_moments_with_optimizer_state_shards(deepspeed_checkpoint, tmp_path):
    """`trainer.optimizer_state=<global_step3>`: launch_training imports the shards itself and the
    next two steps continue the DeepSpeed run as an uninterrupted AdamW would."""
    import numpy as np

    from debias.stream import StreamWriter
    from debias.train import TrainerConfig, TrainJob, launch_training

    folder = deepspeed_checkpoint / "global_step3"
    import_checkpoint(folder, CONFIG, tmp_path / "imported")  # its model/ is the step-3 fp32 master weights
    extra = extra_batches()
    with StreamWriter(tmp_path / "stream" / "document", np.uint16) as writer:
        writer.append_rows(extra.flatten(0, 1).numpy().astype(np.uint16))

    def job(start_step: int = STEPS) -> TrainJob:  # a constant lr of LR: no warm-up, floor = peak
        return TrainJob(init=str(tmp_path / "imported" / "model"), stream=str(tmp_path / "stream" / "document"),
                        first_row=0, start_step=start_step, end_step=start_step + 2, init_step=start_step, peak_lr=LR,
                        batch_size=RANKS * MICRO_BATCH, row_length=LENGTH, total_steps=100, warmup_steps=0,
                        min_lr_ratio=1.0)

    trainer = TrainerConfig(progress=False, tensorboard=False, micro_batch=RANKS * MICRO_BATCH, grad_clip=CLIP,
                            optimizer={"betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY})
    summary = launch_training(job(), replace(trainer, optimizer_state=str(folder)), tmp_path / "resumed")
    assert summary["optimizer_state"] == {"treatment": "imported", "source": str(folder), "checkpoint_step": STEPS,
                                          "adam_step": STEPS}
    fresh = launch_training(job(), trainer, tmp_path / "fresh")
    assert fresh["optimizer_state"] == {"treatment": "fresh"}

    reference, reference_optimizer = reference_run(torch.load(deepspeed_checkpoint / "initial.pt"))
    train(reference, reference_optimizer, extra)
    resumed = GPTNeoX.from_pretrained(tmp_path / "resumed" / "model")
    for (name, expected), actual in zip(reference.named_parameters(), resumed.parameters()):
        assert_same_weights(actual, expected, name)
    # a fresh Adam takes other steps: the imported moments are what made the difference
    fresh_model = dict(GPTNeoX.from_pretrained(tmp_path / "fresh" / "model").named_parameters())
    moved = max(float((fresh_model[n].detach() - p.detach()).abs().max()) for n, p in reference.named_parameters())
    assert moved > 0.1 * LR

    with pytest.raises(UserError, match=r"the shards are from step 3, the window starts at step 4"):
        launch_training(job(start_step=4), replace(trainer, optimizer_state=str(folder)), tmp_path / "mismatch")
    assert not (tmp_path / "mismatch").exists()


@pytest.mark.slow
def test_wrong_preset_and_missing_rank_are_clear_errors(deepspeed_checkpoint, tmp_path):
    folder = deepspeed_checkpoint / "global_step3"
    deeper = GPTNeoXConfig(**(CONFIG.to_dict() | {"num_layers": 3}))
    with pytest.raises(UserError, match="a 3-layer model ends at layer_07"):
        load_neox_model(folder, deeper)
    wider = GPTNeoXConfig(**(CONFIG.to_dict() | {"intermediate_size": 92}))
    with pytest.raises(UserError, match=r"'layers\.0\.mlp\.dense_h_to_4h\.weight' has shape \(91, 24\)"):
        load_neox_model(folder, wider)

    partial = tmp_path / "partial"
    partial.mkdir()
    for path in folder.iterdir():
        if "zero_pp_rank_0_" not in path.name:
            (partial / path.name).symlink_to(path)
    with pytest.raises(UserError, match=r"ZeRO shards of ranks \[0\] are missing"):
        read_zero_state(partial, CONFIG)


# --- DeepSpeed < 0.5 (DeeperSpeed, what GPT-NeoX ran for Pythia): the stage-1 sub-partition layout


class DynamicLossScaler:
    """A non-tensor object in the shard, as DeepSpeed pickles its loss scaler; must never run."""

    def __init__(self):
        self.cur_scale = 2.0**16

    def __setstate__(self, state):  # pragma: no cover - executing this would be the bug
        raise AssertionError("the importer ran code from the checkpoint")


def write_legacy_stage1_shards(folder: Path, model: GPTNeoX, optimizer, ranks: int, intervals: int) -> None:
    """Shards in the layout of DeepSpeed 0.3's FP16_DeepSpeedZeroOptimizer_Stage1 (elastic):
    each group flattened in model order, padded to ranks x intervals equal sub-partitions;
    rank r keeps sub-partition (interval * ranks + r) of each interval, its padding cut."""
    def pipeline_name(name):
        if name == "embed_in.weight":
            return "0.word_embeddings.weight"
        if name == "embed_out.weight":
            return f"{CONFIG.num_layers + 4}.final_linear.weight"
        if name.startswith("final_layer_norm."):
            return f"{CONFIG.num_layers + 3}.{name.replace('final_layer_norm.', 'norm.')}"
        _, layer, key = name.split(".", 2)
        return f"{int(layer) + 2}.{key}"

    named = list(model.named_parameters())
    shards = [{"base_optimizer_state": [], "local_sub_partitions_of_fp32_groups": []} for _ in range(ranks)]
    for group in ([p for n, p in named if is_decayed(n)], [p for n, p in named if not is_decayed(n)]):
        flats = {
            "master": torch.cat([p.detach().flatten() for p in group]),
            "exp_avg": torch.cat([optimizer.state[p]["exp_avg"].flatten() for p in group]),
            "exp_avg_sq": torch.cat([optimizer.state[p]["exp_avg_sq"].flatten() for p in group]),
        }
        lean = flats["master"].numel()
        size = -(-lean // (ranks * intervals))
        for shard in shards:
            shard["base_optimizer_state"].append([None] * intervals)
            shard["local_sub_partitions_of_fp32_groups"].append([None] * intervals)
        for interval in range(intervals):
            for rank in range(ranks):
                start = (interval * ranks + rank) * size
                piece = {kind: flat[start : min(start + size, lean)].clone() for kind, flat in flats.items()}
                shards[rank]["local_sub_partitions_of_fp32_groups"][-1][interval] = piece.pop("master")
                shards[rank]["base_optimizer_state"][-1][interval] = piece | {"step": STEPS}
    shapes = OrderedDict((pipeline_name(n), p.shape) for n, p in named)
    for rank, shard in enumerate(shards):
        state = shard | {"loss_scaler": DynamicLossScaler(), "dynamic_loss_scale": True, "overflow": False,
                         "zero_stage": 1, "partition_count": ranks, "num_comm_intervals_per_group": [intervals] * 2}
        torch.save({"optimizer_state_dict": state, "param_shapes": shapes}, folder / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")


def test_legacy_stage1_sub_partitions(tmp_path):
    torch.manual_seed(0)
    initial = {f"{n}": p for n, p in GPTNeoX(CONFIG).state_dict().items()}
    model = GPTNeoX(CONFIG)
    model.load_state_dict(initial)
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if is_decayed(n)], "weight_decay": WEIGHT_DECAY},
         {"params": [p for n, p in named if not is_decayed(n)], "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=EPS,
    )
    train(model, optimizer, batches())
    write_legacy_stage1_shards(tmp_path, model, optimizer, ranks=3, intervals=2)

    zero = read_zero_state(tmp_path, CONFIG)
    assert zero.step == STEPS and zero.ranks == 3
    for name, param in model.named_parameters():
        assert torch.equal(zero.master[name], param.detach())
        assert torch.equal(zero.exp_avg[name], optimizer.state[param]["exp_avg"])
        assert torch.equal(zero.exp_avg_sq[name], optimizer.state[param]["exp_avg_sq"])


def test_malicious_global_in_a_shard_is_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"optimizer_state_dict": {"loss_scaler": Payload()}}, tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(UserError, match="neither single_partition_of_fp32_groups nor local_sub_partitions"):
        read_zero_state(tmp_path, CONFIG)
    assert not marker.exists()


def test_command_line_bad_input_exits_2(tmp_path):
    preset = Path(__file__).resolve().parents[1] / "conf" / "model" / "pythia-70m-deduped.yaml"
    command = [sys.executable, "-m", "debias.model.neox_import", str(tmp_path / "absent"), "--preset", str(preset), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'absent'}: not a folder")
    assert not (tmp_path / "out").exists()


if __name__ == "__main__":
    write_checkpoint(Path(sys.argv[1]))

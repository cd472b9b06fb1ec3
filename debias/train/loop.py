"""The train loop: continue a model on a window of a stream, composing the small parts of
`debias.train` (data, engine, checkpoints, metrics) in one function that reads top to bottom."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from tqdm import tqdm

from debias.errors import UserError
from debias.io import write_json_atomic
from debias.model import GPTNeoX, GPTNeoXConfig, flops_per_token
from debias.tokenizer import load_tokenizer
from debias.train.config import TrainerConfig, TrainJob
from debias.train.data import BatchLayout, StepPrefetcher, WindowBatches, open_stream, split_micro_batches
from debias.train.engine import DeepSpeedEngine, TorchEngine, resolve_device
from debias.train.memory import StepMemory, choose_micro_batch, measure_step_memory, optimizer_state_bytes
from debias.train.optim import build_optimizer, import_optimizer_state
from debias.train.precision import autocast, loss_scale_settings, resolve_precision
from debias.train.resume import (claim_run_dir, fingerprint, latest_checkpoint, load_checkpoint, read_meta,
                                 save_checkpoint)
from debias.train.run_log import Metrics, peak_flops, read_metrics
from debias.train.schedule import lr_at

log = logging.getLogger("debias.train")


EXIT_DIVERGED = 3  # exit status of a worker whose loss diverged (bad input is 2)
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class TrainingDiverged(UserError):
    """The loss or the gradient norm became NaN or infinite; the last good checkpoint is kept. Not
    bad input, but reported the same way: one line (the step, the run folder) wherever it surfaces;
    a worker process exits with EXIT_DIVERGED."""


def run_training(job: TrainJob, trainer_cfg: TrainerConfig | None = None, run_dir: str | Path = ".",
                 on_batch: Callable | None = None) -> dict:
    """Train `job` in this process (one rank of a launch when torchrun/deepspeed env vars are set).

    Resumes from the newest checkpoint in `<run_dir>/checkpoints` when one exists for the same
    configuration; refuses (UserError) a run dir that holds another configuration's run.
    `on_batch(step, input_ids, labels)` is called with every micro-batch fed to the model
    (CPU tensors, before the step's forward passes); tests use it to check what each arm consumed.
    Returns the summary also written to `<run_dir>/summary.json`.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    environment = set(os.environ)
    try:
        return _train(job, trainer_cfg, run_dir, on_batch)
    finally:  # process-wide settings: give the caller back its own
        torch.use_deterministic_algorithms(deterministic)
        for key in DISTRIBUTED_ENV:  # set for an in-process DeepSpeed run; child processes must not inherit them
            if key not in environment:
                os.environ.pop(key, None)


def _train(job, trainer_cfg, run_dir, on_batch) -> dict:
    started = time.time()
    cfg = trainer_cfg or TrainerConfig()
    run_dir = Path(run_dir)
    check_job(job, cfg)
    rank, local_rank, world_size = init_distributed(cfg)
    device = resolve_device(cfg.device, local_rank)
    precision = resolve_precision(cfg.precision, device)
    if cfg.deterministic is True or (cfg.deterministic == "auto" and device.type == "cpu"):
        torch.use_deterministic_algorithms(True)

    job_dict, cfg_dict = job.to_dict(), cfg.to_dict()
    record = {"fingerprint": fingerprint(job_dict, cfg_dict, world_size), "job": job_dict, "trainer": cfg_dict,
              "world_size": world_size}

    torch.manual_seed(job.seed)  # a random init (pretraining from step 0) is seeded by the job
    model, init_identity = build_model(job)
    check_tokenizer(job, model)
    resume = latest_checkpoint(run_dir)
    model.to(device).train()
    seq_len = job.row_length - 1

    # How many rows per forward pass, and whether to recompute activations (measured on GPU)
    choice = choose_layout(cfg, job, model, device, precision, world_size, seq_len, resume)
    model.gradient_checkpointing = choice.activation_checkpointing
    layout = BatchLayout.resolve(job.batch_size, choice.micro_batch, cfg.grad_accum, world_size, cfg.allow_batch_override)
    if layout.rows_per_step != job.batch_size and rank == 0:
        log.warning("BATCH OVERRIDE: training on %d of the %d rows of every step (allow_batch_override=true); "
                    "this is NOT the recipe's batch", layout.rows_per_step, job.batch_size)
    stream = open_stream(job.stream)
    batches = WindowBatches(stream, job.first_row, job.start_step, layout, rank=rank,
                            vocab_size=model.config.vocab_size, name=job.stream)
    batches.check_covers(job.end_step, job.row_length)
    if cfg.check_token_ids:
        check_token_ids(batches, resume[0] if resume else job.start_step, job.end_step)
    hf_dir = Path(job.hf_dir) if job.hf_dir else run_dir / "checkpoints_hf"
    save_hf_steps = {s for s in job.save_hf_at_steps if job.start_step <= s <= job.end_step}
    initial_weights = None
    if resume is None and job.start_step in save_hf_steps:  # e.g. step0 of a pretraining, before any wrapping
        initial_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    optimizer = build_optimizer(model, **dataclasses.asdict(cfg.optimizer), fused=device.type == "cuda")  # one fused kernel per step on GPU
    optimizer_state = {"treatment": "warmup" if cfg.optimizer_state == "warmup" else "fresh"}
    if cfg.imports_optimizer_state and resume is None:  # engine=torch: TrainerConfig.validate refuses deepspeed
        optimizer_state = import_optimizer_state(optimizer, model, cfg.optimizer_state, job.start_step)
    compile_status = compile_blocks(model, cfg, device)
    if cfg.engine == "deepspeed":
        engine = DeepSpeedEngine(model, optimizer, device, precision, cfg.grad_clip, layout.micro_batch,
                                 layout.grad_accum, world_size, cfg.zero_stage, cfg.deepspeed)
    else:
        engine = TorchEngine(model, optimizer, device, precision, cfg.grad_clip, layout.grad_accum)
    if compile_status == "compiled":  # compile now, at the step's shape: a failure falls back to eager here
        compile_status = warm_up_compiled(engine, layout.micro_batch, seq_len)

    # Where to start: the newest checkpoint of this run, else the window start. Everything is checked
    # before the run dir is claimed; a run dir of another configuration is refused untouched.
    step, loss_sum, loss_count = job.start_step, 0.0, 0
    adam_state = "imported" if optimizer_state["treatment"] == "imported" else "fresh"
    on_rank0(lambda: claim_run_dir(run_dir, record), rank)
    setup = {"engine": engine.name, "precision": precision, "device": str(device), "world_size": world_size,
             "micro_batch": layout.micro_batch, "grad_accum": layout.grad_accum, "micro_batch_choice": choice.reason,
             "activation_checkpointing": model.gradient_checkpointing, "compile": compile_status}
    if rank == 0:  # what the `auto` settings became, readable while the run goes on
        write_json_atomic(run_dir / "setup.json", setup)
    if resume is not None:
        meta = load_checkpoint(resume[1], engine, rank, record["fingerprint"])
        step, loss_sum, loss_count = meta["step"], meta["loss_sum"], meta["loss_count"]
        if step > job.end_step:
            raise UserError(f"{resume[1]}: this run dir is already trained to step {step}, past end_step "
                            f"{job.end_step}; use a new run dir for a shorter run")
        adam_state = meta["adam_state"]
        optimizer_state = meta.get("optimizer_state", optimizer_state)
        log.info("resuming from %s (step %d)", resume[1], step)

    if initial_weights is not None and rank == 0:
        save_hf_folder(model.config, initial_weights, hf_dir / f"step{job.start_step}",
                       job.tokenizer or model.tokenizer_file)
    del initial_weights

    metrics = Metrics(run_dir, job.start_step, job.end_step, step, layout.rows_per_step * seq_len,
                      flops_per_token(model.config, seq_len), peak_flops(cfg.peak_tflops, device), enabled=rank == 0,
                      progress=cfg.progress, tensorboard=cfg.tensorboard)
    metrics.forget_after(step)
    pin = device.type == "cuda"

    def train_step(global_step: int, tokens: torch.Tensor, lr: float, phase: str) -> tuple[float, float]:
        """Forward/backward over the step's micro-batches, then one update at `lr`."""
        if on_batch is not None and phase == "train":
            for input_ids, labels in split_micro_batches(tokens, layout.micro_batch):
                on_batch(global_step, input_ids, labels)
        tokens = tokens.to(device, non_blocking=True)  # from pinned memory: asynchronous
        loss = torch.zeros((), device=device)
        for index, (input_ids, labels) in enumerate(split_micro_batches(tokens, layout.micro_batch)):
            loss += engine.forward_backward(input_ids, labels, index == layout.grad_accum - 1)
        loss = all_reduce_mean(loss / layout.grad_accum).item()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss} at step {global_step} ({phase}) of the run in {run_dir}; it stopped "
                                   f"there, {describe_latest(run_dir)}; lower the learning rate, or check the data "
                                   "and the starting checkpoint's weights")
        try:
            grad_norm = engine.step(lr)
        except FloatingPointError as err:
            raise TrainingDiverged(f"{err} at step {global_step} of the run in {run_dir}; it stopped before updating, "
                                   f"{describe_latest(run_dir)}") from None
        return loss, grad_norm

    def checkpoint(at_step: int) -> Path:
        meta = {"fingerprint": record["fingerprint"], "engine": engine.name, "world_size": world_size,
                "next_row": job.first_row + (at_step - job.start_step) * job.batch_size,
                "loss_sum": loss_sum, "loss_count": loss_count, "adam_state": adam_state,
                "optimizer_state": optimizer_state, "micro_batch": layout.micro_batch,
                "activation_checkpointing": model.gradient_checkpointing}
        return save_checkpoint(run_dir, at_step, engine, meta, rank, barrier, cfg.keep_last)

    def save_hf(folder: Path) -> None:
        weights = engine.full_state_dict()  # collective under DeepSpeed
        if rank == 0:
            save_hf_folder(model.config, weights, folder, job.tokenizer or model.tokenizer_file)
        barrier()

    try:
        # optimizer_state=warmup: zero-lr steps on the window's first batches warm Adam's moments.
        # lr = 0 leaves every weight exactly as it was (AdamW's decay is lr * wd * w too), so the
        # window is then trained from its first row: both arms still train on every row once.
        if resume is None and cfg.optimizer_state == "warmup":
            warmup_steps = range(job.start_step, job.start_step + cfg.adam_warmup_steps)
            with StepPrefetcher(batches, warmup_steps, pin) as prefetched:
                for warm_step, tokens in prefetched:
                    tick = time.perf_counter()
                    loss, grad_norm = train_step(warm_step, tokens, 0.0, "adam_warmup")
                    metrics.log("adam_warmup", warm_step, loss, 0.0, grad_norm, time.perf_counter() - tick, write=True)
            adam_state = f"fresh, warmed by {cfg.adam_warmup_steps} zero-lr steps"
            optimizer_state = {"treatment": "warmup", "warmup_steps": cfg.adam_warmup_steps}

        run_tokens, run_seconds = 0, 0.0
        last_checkpoint = resume[1] if resume else None
        with StepPrefetcher(batches, range(step, job.end_step), pin) as prefetched:
            for step, tokens in prefetched:
                tick = time.perf_counter()
                lr = lr_at(step, job.peak_lr, job.total_steps, job.warmup_steps, job.min_lr_ratio)
                loss, grad_norm = train_step(step, tokens, lr, "train")
                seconds = time.perf_counter() - tick
                loss_sum, loss_count = loss_sum + loss, loss_count + 1
                run_tokens, run_seconds = run_tokens + layout.rows_per_step * seq_len, run_seconds + seconds
                seen = step + 1  # steps the model has now seen
                metrics.log("train", step, loss, lr, grad_norm, seconds,
                            write=(seen - job.start_step) % cfg.log_every == 0 or seen == job.end_step)
                if seen % cfg.checkpoint_every == 0 or seen == job.end_step:
                    last_checkpoint = checkpoint(seen)
                if seen in save_hf_steps:
                    save_hf(hf_dir / f"step{seen}")
        save_hf(run_dir / "model")
    finally:
        metrics.close()

    loss_scale = loss_scale_settings(precision)
    if loss_scale is not None:
        loss_scale["final"] = engine.loss_scale_state()
    summary = {
        "start_step": job.start_step, "end_step": job.end_step, "steps": job.num_steps,
        # tokens as the stream counts them (rows x row_length); predicted = positions trained (and per s)
        "rows": job.num_steps * layout.rows_per_step, "rows_per_step": layout.rows_per_step,
        "tokens": job.num_steps * layout.rows_per_step * job.row_length,
        "predicted_tokens": job.num_steps * layout.rows_per_step * seq_len,
        "final_loss": last_loss(run_dir),
        "mean_loss": loss_sum / loss_count if loss_count else None,
        "wall_seconds": time.time() - started,
        "tokens_per_s": run_tokens / run_seconds if run_seconds else None,
        **setup, "loss_scale": loss_scale,
        "lr_first": lr_at(job.start_step, job.peak_lr, job.total_steps, job.warmup_steps, job.min_lr_ratio),
        "lr_last": lr_at(job.end_step - 1, job.peak_lr, job.total_steps, job.warmup_steps, job.min_lr_ratio),
        "adam_state": adam_state, "optimizer_state": optimizer_state, "init": init_identity, "gelu": model.config.gelu,
        "stream": job.stream, "first_row": job.first_row, "fingerprint": record["fingerprint"],
        "checkpoint": str(last_checkpoint), "model": str(run_dir / "model"),
    }
    if rank == 0:
        write_json_atomic(run_dir / "summary.json", summary)
    barrier()
    return summary


# --- speed: micro-batch, activation checkpointing, compilation --------------------------------

def choose_layout(cfg: TrainerConfig, job: TrainJob, model: GPTNeoX, device: torch.device, precision: str,
                  world_size: int, seq_len: int, resume):
    """micro_batch / activation_checkpointing from the settings: a resumed run keeps its own; `auto`
    is measured on GPU (debias.train.memory) and a CPU default elsewhere."""
    micro_batch, checkpointing = cfg.micro_batch, cfg.activation_checkpointing
    if resume is not None:
        meta = read_meta(resume[1])
        if micro_batch == "auto" and "micro_batch" in meta:
            micro_batch = meta["micro_batch"]
        if checkpointing == "auto" and "activation_checkpointing" in meta:
            checkpointing = meta["activation_checkpointing"]
    if job.batch_size % world_size:
        raise UserError(f"train job: batch_size {job.batch_size} does not divide over {world_size} processes; "
                        "use a number of processes that divides it")
    rows_per_rank = job.batch_size // world_size
    if micro_batch == "auto" and cfg.grad_accum != "auto":
        if rows_per_rank % cfg.grad_accum:
            raise UserError(f"trainer.grad_accum={cfg.grad_accum} does not divide the {rows_per_rank} rows per process; "
                            "set grad_accum=auto or a divisor")
        micro_batch = rows_per_rank // cfg.grad_accum
    memory = None
    if device.type == "cuda" and "auto" in (micro_batch, checkpointing):
        num_params = sum(p.numel() for p in model.parameters())
        memory = agree_across_ranks(measure_step_memory(model, seq_len, lambda: autocast(device, precision), device,
                                                        optimizer_state_bytes(num_params, cfg.engine, precision, world_size)),
                                    device)
    choice = choose_micro_batch(rows_per_rank, micro_batch, checkpointing, memory)
    log.info("micro_batch %d, activation checkpointing %s (%s)", choice.micro_batch,
             "on" if choice.activation_checkpointing else "off", choice.reason)
    return choice


def agree_across_ranks(memory: StepMemory, device: torch.device) -> StepMemory:
    """Every rank must choose the same micro-batch: plan for the tightest GPU (smallest budget,
    largest costs)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return memory
    values = torch.tensor([-memory.budget, memory.fixed[False], memory.fixed[True], memory.per_row[False],
                           memory.per_row[True]], dtype=torch.float64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    budget, fixed0, fixed1, row0, row1 = (int(v) for v in values.tolist())
    return StepMemory(fixed={False: fixed0, True: fixed1}, per_row={False: row0, True: row1},
                      optimizer=memory.optimizer, budget=-budget)


def compile_blocks(model: GPTNeoX, cfg: TrainerConfig, device: torch.device) -> str:
    """Compile each block (compile=auto: on CUDA only). Returns what summary.json records."""
    wanted = cfg.compile is True or (cfg.compile == "auto" and device.type == "cuda")
    if not wanted:
        return "off"
    problem = compile_unavailable(device)
    if cfg.engine == "deepspeed" and cfg.zero_stage == 3:
        problem = "ZeRO-3 gathers parameters in hooks that compiled blocks would bypass"
    if problem:
        log.warning("torch.compile unavailable (%s); training eagerly", problem)
        return f"eager: {problem}"
    model.compile_blocks()
    return "compiled"


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run here, or None."""
    try:
        import torch._dynamo  # noqa: F401  (not on every platform / Python version)
    except Exception as err:  # pragma: no cover - depends on the installation
        return f"torch._dynamo does not import: {err}"
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:  # pragma: no cover
            return "triton is not installed"
        if not has_triton():
            return "triton is not installed or does not support this GPU"
    return None


def warm_up_compiled(engine, micro_batch: int, seq_len: int) -> str:
    """Compile the blocks at the step's shape with one forward + backward that touches no
    parameter's .grad (autograd.grad w.r.t. the input embedding's weight, nothing accumulated). If
    compilation fails, fall back to eager blocks with one log line."""
    model = engine.model
    ids = torch.zeros((micro_batch, seq_len), dtype=torch.long, device=engine.device)
    try:
        with engine.compute_context():
            loss = model(ids, ids)
        torch.autograd.grad(loss, [model.embed_in.weight])
    except Exception as err:  # any failure of dynamo / inductor / the compiler toolchain
        model.uncompile_blocks()
        torch._dynamo.reset()
        reason = first_line(root_cause(err))
        log.warning("torch.compile failed (%s); training eagerly", reason)
        return f"eager: compilation failed ({reason})"
    return "compiled"


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception (dynamo wraps a compiler's own error in its own)."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "inner_exception", None) or err.__cause__
        if inner is None:
            break
        err = inner
    return err


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__


# --- helpers ---------------------------------------------------------------------------------

def check_job(job: TrainJob, cfg: TrainerConfig) -> None:
    if job.init_step is not None and job.init_step != job.start_step:
        raise UserError(f"init {job.init}: the checkpoint is at step {job.init_step} but the window starts at step "
                        f"{job.start_step}; load the checkpoint of step {job.start_step}")
    if not job.start_step < job.end_step:
        raise UserError(f"train job: end_step {job.end_step} must be after start_step {job.start_step}")
    if job.end_step > job.total_steps:
        raise UserError(f"train job: end_step {job.end_step} is past the schedule's total_steps {job.total_steps}")
    if job.first_row < 0 or job.batch_size < 1 or job.row_length < 2:
        raise UserError(f"train job: first_row {job.first_row}, batch_size {job.batch_size}, row_length "
                        f"{job.row_length}: need first_row >= 0, batch_size >= 1, row_length >= 2")
    if cfg.optimizer_state == "warmup" and cfg.adam_warmup_steps > job.num_steps:
        raise UserError(f"trainer.adam_warmup_steps={cfg.adam_warmup_steps}: more than the window's "
                        f"{job.num_steps} steps; lower it")


def check_token_ids(batches: WindowBatches, start_step: int, end_step: int) -> None:
    """Every token id still to be trained on fits the model's vocabulary, checked before training
    starts (a few seconds per 10 GB; each rank scans its own rows)."""
    vocab_size, batches.vocab_size = batches.vocab_size, None  # scan here; per-batch checks stay as a guard
    largest = torch.tensor(-1)
    try:
        for step in tqdm(range(start_step, end_step), desc="checking token ids", unit="step", leave=False,
                         disable=end_step - start_step < 1000):
            largest = torch.maximum(largest, torch.tensor(int(batches.rows(step).max())))
    finally:
        batches.vocab_size = vocab_size
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    if int(largest) >= vocab_size:
        raise UserError(f"{batches.name}: holds token id {int(largest)} in steps {start_step}..{end_step - 1}, but the "
                        f"model's vocabulary has {vocab_size} ids; use the model that matches this stream's tokenizer")


def build_model(job: TrainJob):
    """A Hugging Face folder, or a seeded random initialisation from a model config."""
    if isinstance(job.init, str):
        model = GPTNeoX.from_pretrained(job.init, gelu=job.gelu)
        return model, {"folder": job.init, "step": job.init_step}
    hf_config = job.init.to_hf_dict() if isinstance(job.init, GPTNeoXConfig) else job.init.get("hf_config", job.init)
    config = GPTNeoXConfig.from_hf_dict(hf_config, source="train job init")
    return GPTNeoX(config), {"random_init": hf_config, "seed": job.seed}


def check_tokenizer(job: TrainJob, model) -> None:
    if not job.tokenizer:
        return
    size = load_tokenizer(job.tokenizer).get_vocab_size()
    if size > model.config.vocab_size:
        raise UserError(f"{job.tokenizer}: has {size} ids but the model's vocabulary has {model.config.vocab_size}; "
                        "use the tokenizer that belongs to this model")


def save_hf_folder(config, weights: dict, folder: Path, tokenizer) -> None:
    with torch.device("meta"):
        model = GPTNeoX(config)
    model.load_state_dict(weights, assign=True)
    model.save_pretrained(folder, tokenizer=tokenizer)


def last_loss(run_dir: Path) -> float | None:
    records = read_metrics(run_dir)
    return records[-1]["loss"] if records else None


def describe_latest(run_dir: Path) -> str:
    latest = latest_checkpoint(run_dir)
    return f"last good checkpoint: {latest[1]}" if latest else "no checkpoint was written yet (a rerun starts over)"


# --- torch.distributed ------------------------------------------------------------------------

def init_distributed(cfg: TrainerConfig) -> tuple[int, int, int]:
    """(rank, local_rank, world_size). DeepSpeed always runs in a process group (a one-process one
    when launched in-process); the torch engine runs in one process."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if cfg.engine == "torch":
        if world_size > 1:
            raise UserError(f"trainer.engine=torch runs in one process, but WORLD_SIZE={world_size}; "
                            "use trainer=deepspeed for several processes")
        return 0, 0, 1
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():  # one process
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(cfg.master_port or free_port()))
    import deepspeed

    skip_cpu_shm_op()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        deepspeed.init_distributed()
    return dist.get_rank(), int(os.environ["LOCAL_RANK"]), dist.get_world_size()


def skip_cpu_shm_op() -> None:
    """On CPU, keep DeepSpeed from JIT-compiling its shared-memory all-reduce op on first use (about
    a minute, and more on a busy machine); plain gloo collectives are enough for CPU runs."""
    import deepspeed

    if deepspeed.get_accelerator().device_name() == "cpu":
        builder = deepspeed.get_accelerator().create_op_builder("ShareMemCommBuilder")
        if builder is not None:
            deepspeed.ops.__compatible_ops__[builder.NAME] = False


def on_rank0(action: Callable[[], None], rank: int) -> None:
    """Run `action` on rank 0; a UserError it raises is raised on every rank (none hangs)."""
    error = None
    if rank == 0:
        try:
            action()
        except UserError as err:
            error = str(err)
    if dist.is_initialized() and dist.get_world_size() > 1:
        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error is not None:
        raise UserError(error)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

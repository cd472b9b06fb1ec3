"""Continue training a GPT-NeoX model on a window of a Pythia stream (treatment or control arm).

    from debias.train import TrainJob, launch_training
    job = TrainJob.for_window(init=folder, stream=result.stream, first_row=result.first_row,
                              window=window, geometry=geometry, peak_lr=1e-3, init_step=133000,
                              tokenizer=tokenizer_json)
    summary = launch_training(job, cfg.trainer, run_dir)   # in-process, or torchrun/deepspeed workers

The run dir then holds `checkpoints/step<N>/` (resumable), `metrics.jsonl`, `summary.json`,
`train_job.json` and the final Hugging Face folder `model/`. Rerunning the same job on the same
run dir resumes where it stopped; a run dir of another job is refused.

Parts, each small: `schedule` (Pythia's LR), `optim` (AdamW, fresh / warmed / imported state),
`precision` (bf16 / fp16 loss scaling), `data` (step -> rows, rank slices, micro-batches, prefetch),
`memory` (micro-batch and activation checkpointing for the device), `engine` (plain torch /
DeepSpeed), `resume` (run-dir claim, atomic checkpoints, keep last K), `run_log` (progress bar,
metrics.jsonl, TensorBoard, MFU), `loop` (the train loop), `launch` (multi-process launch), `plan`
(GPU-hours and wall time of a run before it starts: `python -m debias.train plan`).
"""

from debias.train.config import TrainerConfig, TrainJob
from debias.train.launch import launch_training
from debias.train.loop import TrainingDiverged, run_training
from debias.train.optim import build_optimizer
from debias.train.schedule import lr_at

__all__ = ["TrainJob", "TrainerConfig", "TrainingDiverged", "build_optimizer", "launch_training", "lr_at", "run_training"]

"""The training loop shared by every stage and every row of train.py.

    make_optimizer   AdamW, weight decay on weight matrices (not on biases, LayerNorms, embeddings)
    make_schedule    linear warm-up, then linear decay to zero
    train_step       one optimisation step: ground truth (+ MLM in the teacher's pre-training)
                     or the DiDE objective against a frozen teacher
    fit              steps, logging, validation, the best and last checkpoints, exact resume,
                     Ctrl-C, NaN guard, DistributedDataParallel

train.py decides what is trained, on which data, with which loss (the rows, the stages);
this file decides how a model takes its steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from checkpoint import forget_run, load_weights, save_checkpoint
from distill import dide_loss, ground_truth_loss
from pretrain import masked_language_loss
from runtime import Runtime, StopRequest, allow_compiled_variants, autocast_for, shard

if TYPE_CHECKING:   # type hints only: train.py imports this file
    from train import TrainConfig

def make_optimizer(model, cfg: TrainConfig, device):
    """AdamW (betas 0.9/0.98 as DiDE), decay on matrices only: biases, LayerNorms and embeddings are exempt."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.dim() < 2 or any(key in name for key in ("position", "token", "cls", "modality_type"))
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8, fused=device.type == "cuda")


def make_schedule(optimizer, cfg: TrainConfig, steps=None):
    """Linear warm-up to the peak learning rate, then linear decay to zero."""
    steps = steps or cfg.steps
    warmup_steps = max(1, int(cfg.warmup * steps))

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (steps - step) / max(1, steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -----------------------------------------------------------------------------
# The training loop, shared by every stage and row

def train_step(model, batch, task, optimizer, schedule, cfg: TrainConfig, device, teacher=None, weights=None,
               layers=(-1,)):
    """One optimisation step. Ground truth when `weights` is None, else the DiDE objective.
    Returns the loss terms as tensors and the gradient norm (no host-device sync)."""
    with autocast_for(cfg, device):
        if weights is None:
            out = model(batch, task)
            loss = ground_truth_loss(task, out.logits, batch)
            terms = {"ground_truth": loss}
            if out.mlm_logits is not None:    # the teacher's pre-training: ITM + MLM, 1:1 as in ViLT
                terms["mlm"] = masked_language_loss(out.mlm_logits, batch["mlm_labels"])
                loss = loss + terms["mlm"]
        else:
            loss, terms, _ = dide_loss(model, teacher, batch, task, weights, layers)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    optimizer.step()
    schedule.step()
    return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}, grad_norm


def fit(name, model, task, batches, validate, steps, cfg: TrainConfig, rt: Runtime, bench, teacher=None,
        weights=None, layers=(-1,), eval_every=None, stop_after=None):
    """Train `model` for `steps` steps on `batches` (.next(), .state_dict()); validate every `eval_every`
    steps (default cfg.eval_every) and at the end, keeping the best checkpoint apart from the last. A
    `-last.pt` left by an interrupted run is resumed exactly (model, optimiser, schedule, data order,
    random state). `stop_after` simulates a kill after that many steps (for tests). Returns the best
    checkpoint's path and validation accuracy."""
    device, eval_every = rt.device, eval_every or cfg.eval_every
    stepper = model
    # Gradients are averaged over processes; heads of other tasks get none, hence find_unused. (Not
    # static_graph=True: with our dataclass outputs DDP then skips the all-reduce and each process keeps
    # its own gradients, silently; pytorch/pytorch#106690, and measured here: tests/test_processes.py fails.)
    if rt.world > 1:
        stepper = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                          find_unused_parameters=True)
    if cfg.compile:
        allow_compiled_variants()
        stepper = torch.compile(stepper)   # checkpoints always hold the plain module
        if teacher is not None:            # the frozen teacher's forward: about a quarter of a distillation step
            teacher = torch.compile(teacher)
    optimizer = make_optimizer(model, cfg, device)
    schedule = make_schedule(optimizer, cfg, steps)
    ckpt_dir = os.path.join(cfg.out_dir, "checkpoints")
    best_path, last_path = (os.path.join(ckpt_dir, f"{name}-{kind}.pt") for kind in ("best", "last"))
    meta = dict(name=name, task=task, model_config=dataclasses.asdict(model.config),
                train_config=dataclasses.asdict(cfg), model_class=type(model).__name__,
                data_config=dataclasses.asdict(bench.config), tokenizer=bench.tokenizer.to_dict())
    best_val, start = -1.0, 1
    if cfg.resume and os.path.exists(last_path):
        state = load_weights(model, last_path, expect=model.config, tokenizer=bench.tokenizer)
        saved_on = "cuda" if state.get("cuda_rng") is not None else "cpu"
        if saved_on != device.type:   # CPU and CUDA random streams differ: the batch order cannot go on
            raise SystemExit(f"error: {last_path} was saved on {saved_on}, and this run is on {device.type}: "
                             f"resume it on {saved_on} (--device), or start again (--resume false)")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        try:
            batches.load_state_dict(state["batches"])
        except KeyError:   # e.g. the curriculum's batch order against a plain one
            raise SystemExit(f"error: {last_path} was saved with another batch order (--curriculum-steps "
                             f"changed?); use another --out-dir, or --resume false") from None
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        best_val, start = state["best_val"], state["step"] + 1
        rt.say(f"{name}: resuming at step {start} from {last_path}")
    elif rt.main:   # from step 1 (--resume false, or nothing to resume): nothing of an earlier run may pass for this one's
        forget_run(cfg.out_dir, name, best_path, last_path)

    last_saved = None

    def save_last(step):
        nonlocal last_saved
        if rt.main and step != last_saved:   # a step already saved (a validation step) is not saved twice
            save_checkpoint(last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            schedule=schedule.state_dict(), batches=batches.state_dict(), rng=torch.get_rng_state(),
                            cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                            step=step, best_val=best_val, **meta)
        last_saved = step

    sums, finite = {}, torch.ones((), dtype=torch.bool, device=device)

    def stop_if_not_finite(step, terms):
        """A NaN or inf loss since the start stops every process, before anything is saved over
        the last good checkpoint. One host-device sync."""
        everywhere = finite.int()
        if rt.world > 1:
            dist.all_reduce(everywhere, op=dist.ReduceOp.MIN)
        if not everywhere.item():
            saved = (f"last good checkpoint: {last_path}" if last_saved is not None or start > 1 else
                     "this run saved no checkpoint yet (try a lower --lr or loss weight)")
            raise SystemExit(f"error: {name}: the loss became NaN or inf before step {step}; terms "
                             f"{ {k: v.item() for k, v in terms.items()} }; {saved}")

    def stop_requested(step, stop):
        """A single process stops at this step. Several stop together at a logging step, where they
        already sync: a process that stopped alone would leave the others waiting in DDP's all-reduce."""
        wanted = stop.requested or (stop_after is not None and step >= stop_after)
        if rt.world == 1:
            return wanted
        if step % cfg.log_every and step != steps:
            return False
        anywhere = torch.tensor(int(wanted), device=device)
        dist.all_reduce(anywhere, op=dist.ReduceOp.MAX)
        return bool(anywhere.item())

    bar = tqdm(total=steps, initial=start - 1, desc=f"{name:<34}", disable=not (cfg.progress and rt.main),
               dynamic_ncols=True, leave=False)
    tick, logged_at = time.perf_counter(), start - 1      # logged_at: the step of the last train record

    def log_train(step, grad_norm):
        """A train record: each loss term's mean over the steps since the last record, over the global
        batch (under DDP each process's term is its shard's sum over the global count / processes, so
        their mean over processes is the global batch's mean). Host-device syncs."""
        nonlocal sums, tick, logged_at
        elapsed, done = time.perf_counter() - tick, step - logged_at
        totals = torch.stack(list(sums.values()))                               # (terms,) summed over steps
        if rt.world > 1:
            dist.all_reduce(totals)
            totals = totals / rt.world
        means = {key: total / done for key, total in zip(sums, totals.tolist())}
        rate = done * cfg.batch_size / elapsed
        bar.set_postfix(loss=f"{means['loss']:.4f}", samples_s=f"{rate:,.0f}")
        rt.write(kind="train", run=name, step=step, lr=schedule.get_last_lr()[0], grad_norm=grad_norm.item(),
                 ms_per_step=1000 * elapsed / done, samples_per_s=rate, **means)
        sums, tick, logged_at = {}, time.perf_counter(), step

    with StopRequest() as stop:
        for step in range(start, steps + 1):
            batch = batches.next() if getattr(batches, "per_process", False) else shard(batches.next(), rt)
            terms, grad_norm = train_step(stepper, batch, task, optimizer, schedule, cfg, device, teacher, weights,
                                          layers)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            finite &= torch.isfinite(terms["loss"])
            bar.update(1)

            if step % cfg.log_every == 0 or step == steps:   # host-device syncs only here (and at a stop check)
                stop_if_not_finite(step, terms)
                log_train(step, grad_norm)

            if step % eval_every == 0 or step == steps:
                stop_if_not_finite(step, terms)
                validating_since = time.perf_counter()
                metrics = validate(model)
                rt.write(kind="val", run=name, step=step, **metrics)
                if rt.main:
                    masked = f", masked words {metrics['mlm_accuracy']:.2f}" if "mlm_accuracy" in metrics else ""
                    if "mlm_per_kind" in metrics:
                        masked += " (" + ", ".join(f"{kind} {a:.1f}" for kind, a in metrics["mlm_per_kind"].items()) + ")"
                    if "colours_together" in metrics:
                        masked += (f", every colour masked {metrics['colours_together']:.2f}"
                                   f" (without binding {metrics['colours_without_binding']:.2f})")
                    bar.write(f"{name} step {step}: val accuracy {metrics['accuracy']:.2f}{masked}")
                if metrics["accuracy"] > best_val:
                    best_val = metrics["accuracy"]
                    if rt.main:
                        save_checkpoint(best_path, model=model.state_dict(), step=step, val=metrics, **meta)
                save_last(step)
                tick += time.perf_counter() - validating_since   # the next record's speed counts training only

            if stop_requested(step, stop):
                stop_if_not_finite(step, terms)
                if step > logged_at:   # the steps since the last record are logged, not lost
                    log_train(step, grad_norm)
                save_last(step)
                bar.close()
                rt.barrier()   # no process leaves before the checkpoint is on disk
                raise SystemExit(f"\nstopped after step {step} of {name}; saved {last_path}. "
                                 f"Run the same command again to continue from there." if rt.main else 1)
    bar.close()
    rt.barrier()   # the checkpoints are on disk before any process reads them
    return best_path, best_val

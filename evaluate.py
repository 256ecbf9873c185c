"""Evaluation: accuracy on a whole split, overall and broken down.

The built-in benchmark reports accuracy per family of questions (which families the dual
encoder solves and which need fusion). Real data sets report what their papers do:
VQA v2 the VQA score per answer type, NLVR2 accuracy and consistency, SNLI-VE accuracy.
"""

import os

import torch
import torch.distributed as dist

from data import fit_images, make_batch, vqa_accuracy
from loader import RealSplit, eval_batches
from metrics import nlvr2_consistency
from realdata import write_vqa_results
from runtime import autocast_for


def benchmark_batches(split, batch_size, device, image_size):
    """The benchmark split in order, as batches with their positions in `batch["index"]`."""
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)), device=device)
        yield {**fit_images(make_batch(split, index), image_size), "index": index}


def shard_of(split: RealSplit, rt):
    """This process's share of a real split, every world-th example from its rank on, and the
    positions of those examples in the whole split: long (n,)."""
    positions = torch.arange(rt.rank, len(split), rt.world)
    return (split.subset(positions.tolist()) if rt.world > 1 else split), positions


@torch.no_grad()
def evaluate(model, split, task, cfg, rt):
    """Accuracy on a whole split (VQA: the VQA score of the arg-max answer, the official formula over
    the ten annotators), in %: {"accuracy", "per_family"}. Examples whose images could not be read
    (real data, --missing-images skip) are left out of both. Real data is shared out among the
    processes (photographs are slow to decode); the benchmark, on the device, is not."""
    model.eval()
    device, real = rt.device, isinstance(split, RealSplit)
    correct = torch.zeros(len(split), device=device)           # (N,) score of each example
    seen = torch.zeros(len(split), dtype=torch.bool, device=device)
    if real:
        mine, positions = shard_of(split, rt)
        batches = eval_batches(mine, cfg.eval_batch_size, device)
    else:
        positions = torch.arange(len(split))
        batches = benchmark_batches(split, cfg.eval_batch_size, device, model.config.image_size)
    positions = positions.to(device)
    for batch in batches:
        with autocast_for(cfg, device):
            logits = model(batch, task).logits.float()
        index = positions[batch["index"]]
        if task == "vqa":
            correct[index] = vqa_accuracy(logits, batch["vqa_scores"])
        else:
            correct[index] = (logits.argmax(-1) == batch["labels"]).float()
        seen[index] = True
    if real and rt.world > 1:                                 # every process gets the whole split's scores
        seen = seen.int()
        for tensor in (correct, seen):
            dist.all_reduce(tensor)
        seen = seen.bool()
    model.train()
    if not seen.any():
        raise SystemExit(f"error: no example of the {task} split could be evaluated (no image was readable)")
    if real and task == "reasoning":   # NLVR2: consistency over the sentences evaluated
        ids = [split.ids[i] for i in seen.nonzero().flatten().tolist()]
        per_family = {"consistency": 100 * nlvr2_consistency(ids, correct[seen].tolist())}
    else:                              # benchmark: per family; VQA v2: per answer type
        family = split.family.to(device)
        per_family = {name: 100 * correct[seen & (family == i)].mean().item()
                      for i, name in enumerate(split.family_names) if (seen & (family == i)).any()}
    return {"accuracy": 100 * correct[seen].mean().item(), "per_family": per_family}


@torch.no_grad()
def evaluate_itm(model, batches, cfg, device):
    """Image-text matching accuracy on fixed validation batches; with masked captions (the teacher),
    also the accuracy of its masked-word predictions."""
    model.eval()
    correct, total, mlm_correct, mlm_total = 0.0, 0, 0, 0
    for batch in batches:
        with autocast_for(cfg, device):
            out = model(fit_images(batch, model.config.image_size), "itm")
        correct += (out.logits.argmax(-1) == batch["labels"]).sum().item()
        total += len(batch["labels"])
        if out.mlm_logits is not None:
            masked = batch["mlm_labels"] != -100                        # (B, L)
            mlm_correct += (out.mlm_logits.argmax(-1)[masked] == batch["mlm_labels"][masked]).sum().item()
            mlm_total += masked.sum().item()
    model.train()
    metrics = {"accuracy": 100 * correct / total, "per_family": {}}
    if mlm_total:
        metrics["mlm_accuracy"] = 100 * mlm_correct / mlm_total
    return metrics


@torch.no_grad()
def predict_vqa(model, split: RealSplit, answers: list[str], cfg, rt, path: str) -> None:
    """The arg-max answer to every question of `split`, written by rank 0 as the evaluation server's
    results file ([{"question_id", "answer"}]). Every process answers its share of the questions."""
    model.eval()
    mine, _ = shard_of(split, rt)
    predictions = []                                          # (question_id, answer) pairs
    for batch in eval_batches(mine, cfg.eval_batch_size, rt.device):
        with autocast_for(cfg, rt.device):
            best = model(batch, "vqa").logits.argmax(-1).tolist()
        predictions += [(mine.ids[i], answers[a]) for i, a in zip(batch["index"].tolist(), best)]
    model.train()
    if rt.world > 1:
        shares = [None] * rt.world
        dist.all_gather_object(shares, predictions)
        predictions = [p for share in shares for p in share]
    if rt.main:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_vqa_results(path, [q for q, _ in predictions], [a for _, a in predictions])

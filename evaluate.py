"""Evaluation: accuracy on a whole split, overall and broken down.

The built-in benchmark reports accuracy per family of questions (which families the dual
encoder solves and which need fusion). Real data sets report what their papers do:
VQA v2 the VQA score per answer type, NLVR2 accuracy and consistency, SNLI-VE accuracy.
"""

import torch

from data import fit_images, make_batch, vqa_accuracy
from loader import RealSplit, breakdown, eval_batches
from realdata import write_vqa_results
from runtime import autocast_for


def benchmark_batches(split, batch_size, device, image_size):
    """The benchmark split in order, as batches with their positions in `batch["index"]`."""
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)), device=device)
        yield {**fit_images(make_batch(split, index), image_size), "index": index}


@torch.no_grad()
def evaluate(model, split, task, cfg, device):
    """Accuracy on a whole split (VQA: the VQA score of the arg-max answer, the official formula over
    the ten annotators), in %: {"accuracy", "per_family"}. Examples whose images could not be read
    (real data, --missing-images skip) are left out of both."""
    model.eval()
    real = isinstance(split, RealSplit)
    batches = (eval_batches(split, cfg.eval_batch_size, device) if real
               else benchmark_batches(split, cfg.eval_batch_size, device, model.config.image_size))
    correct = torch.zeros(len(split), device=device)           # (N,) score of each example
    seen = torch.zeros(len(split), dtype=torch.bool, device=device)
    for batch in batches:
        with autocast_for(cfg, device):
            logits = model(batch, task).logits.float()
        index = batch["index"]
        if task == "vqa":
            correct[index] = vqa_accuracy(logits, batch["vqa_scores"])
        else:
            correct[index] = (logits.argmax(-1) == batch["labels"]).float()
        seen[index] = True
    model.train()
    if not seen.any():
        raise SystemExit(f"error: no example of the {task} split could be evaluated (no image was readable)")
    if real:
        per_family = breakdown(split, correct.cpu(), seen.cpu())
    else:
        family = split.family.to(device)
        per_family = {name: 100 * correct[family == i].mean().item()
                      for i, name in enumerate(split.family_names) if (family == i).any()}
    return {"accuracy": 100 * correct[seen].mean().item(), "per_family": per_family}


@torch.no_grad()
def evaluate_itm(model, batches, cfg, device):
    """Image-text matching accuracy on fixed validation batches."""
    model.eval()
    correct, total = 0.0, 0
    for batch in batches:
        with autocast_for(cfg, device):
            logits = model(fit_images(batch, model.config.image_size), "itm").logits
        correct += (logits.argmax(-1) == batch["labels"]).sum().item()
        total += len(batch["labels"])
    model.train()
    return {"accuracy": 100 * correct / total, "per_family": {}}


@torch.no_grad()
def predict_vqa(model, split: RealSplit, answers: list[str], cfg, device, path: str) -> int:
    """The arg-max answer to every question of `split`, written as the evaluation server's results
    file ([{"question_id", "answer"}]). Returns how many questions were answered."""
    model.eval()
    question_ids, predicted = [], []
    for batch in eval_batches(split, cfg.eval_batch_size, device):
        with autocast_for(cfg, device):
            best = model(batch, "vqa").logits.argmax(-1).tolist()
        question_ids += [split.ids[i] for i in batch["index"].tolist()]
        predicted += [answers[a] for a in best]
    model.train()
    if len(question_ids) < len(split):   # the server wants every question: say so, do not hide it
        print(f"warning: {len(split) - len(question_ids)} questions have unreadable images and are missing "
              f"from {path}; the evaluation server will refuse it")
    write_vqa_results(path, question_ids, predicted)
    return len(question_ids)

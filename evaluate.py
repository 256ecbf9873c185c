"""Evaluation: accuracy on a whole split, overall and broken down; and the cross-modal attention.

The built-in benchmark reports accuracy per family of questions (which families the dual
encoder solves and which need fusion) and, for entailment, on images with and without a
curtain (without one only entailment and contradiction are possible: does the model read the
image?). Real data sets report what their papers do: VQA v2 the VQA score per answer type,
NLVR2 accuracy and consistency, SNLI-VE accuracy. `attention_agreement` says how diffuse the
teacher's cross-modal attention is and how close a student's virtual attention comes to it,
on test examples.
"""

import os

import torch
import torch.distributed as dist

from batches import fit_images, make_batch
from distill import kl_rows, student_cross_modal_attention
from loader import RealSplit, eval_batches
from metrics import nlvr2_consistency
from pretrain import ITM_KINDS, WORD_KINDS
from realdata import write_vqa_results
from runtime import autocast_for, eval_mode
from teacher import teacher_cross_modal_attention


def vqa_accuracy(logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The soft score of the arg-max answer, float [B]; for ten annotators it equals the official VQA
    accuracy (the mean over the ten leave-one-annotator-out subsets of min(1, matches / 3)), but for
    one quirk of the official script: it skips normalising the answers when all ten agree
    (metrics.vqa_official_accuracy keeps it; README, "VQA v2")."""
    return scores.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)


def benchmark_batches(split, batch_size, device, image_size, limit=None):
    """The benchmark split in order (its first `limit` examples), as batches with their positions in `batch["index"]`."""
    end = len(split) if limit is None else min(limit, len(split))
    for start in range(0, end, batch_size):
        index = torch.arange(start, min(start + batch_size, end), device=device)
        yield {**fit_images(make_batch(split, index), image_size), "index": index}


def shard_of(split: RealSplit, rt):
    """This process's share of a real split, every world-th example from its rank on, and the
    positions of those examples in the whole split: long (n,)."""
    positions = torch.arange(rt.rank, len(split), rt.world)
    return (split.subset(positions.tolist()) if rt.world > 1 else split), positions


@torch.no_grad()
def evaluate(model, split, task, cfg, rt):
    """Accuracy on a whole split (VQA: the VQA score of the arg-max answer, the official formula over
    the ten annotators), in %: {"accuracy", "per_family"}; per_family also holds, for benchmark
    entailment, "image without curtain" and "image with curtain". Examples whose images could not be read
    (real data, --missing-images skip) are left out of both. Real data is shared out among the
    processes (photographs are slow to decode); the benchmark, on the device, is not."""
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
    with eval_mode(model):   # a frozen teacher stays in eval mode
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
    if not seen.any():
        raise SystemExit(f"error: no example of the {task} split could be evaluated (no image was readable)")
    if real and task == "reasoning":   # NLVR2: consistency over the sentences evaluated
        ids = [split.ids[i] for i in seen.nonzero().flatten().tolist()]
        per_family = {"consistency": 100 * nlvr2_consistency(ids, correct[seen].tolist())}
    else:                              # benchmark: per family; VQA v2: per answer type
        family = split.family.to(device)
        per_family = {name: 100 * correct[seen & (family == i)].mean().item()
                      for i, name in enumerate(split.family_names) if (seen & (family == i)).any()}
        if getattr(split, "curtain", None) is not None:   # entailment: without a curtain only E and C are possible
            curtain = split.curtain.to(device)            # bool (N,)
            for name, where in (("image without curtain", ~curtain), ("image with curtain", curtain)):
                if (seen & where).any():
                    per_family[name] = 100 * correct[seen & where].mean().item()
    return {"accuracy": 100 * correct[seen].mean().item(), "per_family": per_family}


ATTENTION_EXAMPLES = 1024   # test examples that attention_agreement reads
DIRECTIONS = ("text_to_image", "image_to_text")


def entropy_rows(log_p, key_mask):
    """Entropy in nats of every attention row over its valid keys: (B, nh, Q).

        H(p) = - sum_j p_j log p_j

    log_p: (B, nh, Q, K), -inf at padded keys (where p log p is taken as 0); key_mask: bool (B, K).
    """
    p_log_p = log_p.exp() * log_p                                                # (B, nh, Q, K)
    return -torch.where(key_mask[:, None, None, :], p_log_p, torch.zeros_like(p_log_p)).sum(-1)


@torch.no_grad()
def attention_agreement(teacher, student, split, task, cfg, device, examples=ATTENTION_EXAMPLES):
    """The teacher's last-layer cross-modal attention, and the student's virtual attention against it,
    on the first `examples` of `split`. For each direction (text_to_image: each real word over the
    image tokens; image_to_text: each image token over the real words):

      teacher_entropy, student_entropy   the rows' mean entropy over the mean entropy of uniform rows,
                                         log(valid keys): 1 is as diffuse as uniform, 0 all on one key
      kl                                 KL(teacher || student) per row, averaged over rows, heads and
                                         images: the attention loss term, on examples never trained on

    `student` None: the teacher's entropies only. Does not change either model's train/eval mode.
    """
    if isinstance(split, RealSplit):
        batches = eval_batches(split.subset(list(range(min(examples, len(split))))), cfg.eval_batch_size, device)
    else:
        batches = benchmark_batches(split, cfg.eval_batch_size, device, teacher.config.image_size, limit=examples)
    sums = {d: {"teacher": 0.0, "student": 0.0, "uniform": 0.0, "kl": 0.0, "rows": 0} for d in DIRECTIONS}
    with eval_mode(teacher, student):
        for batch in batches:
            text_mask = batch["text_mask"]                                                 # bool (B, Lt)
            with autocast_for(cfg, device):
                fusion = teacher(batch, task, details_from=(-1,)).fusion
                student_out = student(batch, task, details_from=(-1,)) if student is not None else None
            for k, fused in enumerate(fusion):                                             # one joint pass per image
                image_mask = fused.mask[:, text_mask.shape[1]:]                            # bool (B, Nv)
                maps = {"teacher": teacher_cross_modal_attention(fused, -1, text_mask)}
                if student_out is not None:
                    maps["student"] = student_cross_modal_attention(student_out, -1, k, text_mask)
                for direction, queries, keys in (("text_to_image", text_mask, image_mask),
                                                 ("image_to_text", image_mask, text_mask)):
                    log_p = {who: getattr(m, "log_" + direction) for who, m in maps.items()}  # (B, nh, Q, K) each
                    rows = queries[:, None, :].expand(log_p["teacher"].shape[:3])             # (B, nh, Q)
                    uniform = keys.sum(-1).float().log()[:, None, None].expand_as(rows)  # (B, nh, Q): log(valid keys)
                    total = sums[direction]
                    total["uniform"] += uniform[rows].sum().item()
                    total["rows"] += int(rows.sum())
                    for who, lp in log_p.items():
                        total[who] += entropy_rows(lp, keys)[rows].sum().item()
                    if "student" in log_p:
                        total["kl"] += kl_rows(log_p["teacher"], log_p["student"], keys)[rows].sum().item()
    report = {}
    for direction, total in sums.items():
        report[direction] = {"teacher_entropy": total["teacher"] / total["uniform"]}
        if student is not None:
            report[direction].update(student_entropy=total["student"] / total["uniform"], kl=total["kl"] / total["rows"])
    return report


def masked_right(mlm_logits, labels):
    """How many masked words the arg-max predicts, and how many there are: two ints.
    mlm_logits (B, L, vocab), labels (B, L) with -100 where nothing is masked."""
    masked = labels != -100                                             # (B, L)
    return (mlm_logits.argmax(-1)[masked] == labels[masked]).sum().item(), masked.sum().item()


def right_without_binding(labels):
    """The most masked words a caption-reader gets right that knows which words are masked but not
    where each one goes: per caption, the count of its most frequent masked word, summed (an int).
    labels (B, L) with -100 where nothing is masked."""
    masked = labels != -100                                             # (B, L)
    # same[b, i, j]: positions i and j of caption b hide the same word
    same = (labels[:, :, None] == labels[:, None, :]) & masked[:, :, None] & masked[:, None, :]   # (B, L, L)
    return same.sum(2).max(1).values.sum().item()


@torch.no_grad()
def evaluate_itm(model, batches, cfg, device):
    """Image-text matching accuracy on fixed validation batches, also per kind of pair (per_family:
    matched, another image's caption, colours exchanged: the last needs binding). With masked
    captions (the teacher), also the accuracy of its masked-word predictions ("mlm_accuracy"), and
    per kind of word ("mlm_per_kind": colour, size, shape, relation; pretrain.WORD_KINDS), and
    the binding probe: every colour of the caption masked at once ("colours_together"), against
    the best a model that sees which colours are in the picture, but not which object has which,
    can do ("colours_without_binding")."""
    correct, kinds = [], []
    mlm_right = mlm_total = probe_right = probe_total = unbound_right = 0
    kind_right, kind_total = [0] * len(WORD_KINDS), [0] * len(WORD_KINDS)
    with eval_mode(model):
        for batch in batches:
            batch = fit_images(batch, model.config.image_size)
            with autocast_for(cfg, device):
                out = model(batch, "itm")
                probe_logits = None
                if out.mlm_logits is not None and "colour_probe_ids" in batch:
                    probe_logits = model.masked_words({**batch, "mlm_text_ids": batch["colour_probe_ids"]}, "itm")
            correct.append(out.logits.argmax(-1) == batch["labels"])         # (B,) bool
            kinds.append(batch["itm_kind"])
            if out.mlm_logits is not None:
                right, total = masked_right(out.mlm_logits, batch["mlm_labels"])
                mlm_right, mlm_total = mlm_right + right, mlm_total + total
                if "mlm_word_kind" in batch:
                    hit = out.mlm_logits.argmax(-1) == batch["mlm_labels"]          # (B, L) bool
                    for k in range(len(WORD_KINDS)):
                        of_kind = batch["mlm_word_kind"] == k                       # (B, L): masked words of kind k
                        kind_right[k] += (hit & of_kind).sum().item()
                        kind_total[k] += of_kind.sum().item()
            if probe_logits is not None:
                right, total = masked_right(probe_logits, batch["colour_probe_labels"])
                probe_right, probe_total = probe_right + right, probe_total + total
                unbound_right += right_without_binding(batch["colour_probe_labels"])
    correct, kinds = torch.cat(correct).float(), torch.cat(kinds)
    per_kind = {name: 100 * correct[kinds == k].mean().item() for k, name in enumerate(ITM_KINDS) if (kinds == k).any()}
    metrics = {"accuracy": 100 * correct.mean().item(), "per_family": per_kind}
    if mlm_total:
        metrics["mlm_accuracy"] = 100 * mlm_right / mlm_total
    if any(kind_total):
        metrics["mlm_per_kind"] = {name: 100 * kind_right[k] / kind_total[k]
                                   for k, name in enumerate(WORD_KINDS) if kind_total[k]}
    if probe_total:
        metrics["colours_together"] = 100 * probe_right / probe_total
        metrics["colours_without_binding"] = 100 * unbound_right / probe_total
    return metrics


@torch.no_grad()
def predict_vqa(model, split: RealSplit, answers: list[str], cfg, rt, path: str) -> None:
    """The arg-max answer to every question of `split`, written by rank 0 as the evaluation server's
    results file ([{"question_id", "answer"}]). Every process answers its share of the questions."""
    mine, _ = shard_of(split, rt)
    predictions = []                                          # (question_id, answer) pairs
    with eval_mode(model):
        for batch in eval_batches(mine, cfg.eval_batch_size, rt.device):
            with autocast_for(cfg, rt.device):
                best = model(batch, "vqa").logits.argmax(-1).tolist()
            predictions += [(mine.ids[i], answers[a]) for i, a in zip(batch["index"].tolist(), best)]
    if rt.world > 1:
        shares = [None] * rt.world
        dist.all_gather_object(shares, predictions)
        predictions = [p for share in shares for p in share]
    if rt.main:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_vqa_results(path, [q for q, _ in predictions], [a for _, a in predictions])

"""Every distillation loss, in plain PyTorch.

DiDE (Wang et al. 2022; README, "The method"): the dual-encoder student learns from the
fusion teacher's predictions (soft labels) and from its cross-modal attention (CAD):

    L = w_soft * L_soft + w_attention * L_CAD + w_gt * L_gt      (released recipe: 1, 1, 0)

All soft-max, log and KL maths run in fp32, also under bf16 autocast (their inputs, the
models' queries and keys, come from bf16 projections there: about 3 significant digits).
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from teacher import CrossModalAttention, cross_modal_attention, teacher_cross_modal_attention


def ground_truth_loss(task, logits, batch):
    """The baseline's loss. Cross entropy for reasoning and entailment; for VQA, ViLT's binary
    cross entropy against soft scores, summed over answers. Averaged over the batch's examples;
    under DDP over the global batch's (mean_over_global_batch), as real data's shards may differ
    in size when images are skipped."""
    logits, examples = logits.float(), logits.shape[0]
    if task == "vqa":
        total = F.binary_cross_entropy_with_logits(logits, batch["vqa_scores"], reduction="sum")
    else:
        total = F.cross_entropy(logits, batch["labels"], reduction="sum")
    return mean_over_global_batch(total, examples)


@dataclass
class DistillWeights:
    soft_label: float = 1.0     # weight of the soft-label loss
    attention: float = 1.0      # weight of the cross-modal attention loss
    ground_truth: float = 0.0   # weight of the ground-truth loss (0 in DiDE's released recipe)
    temperature: float = 1.0    # soft-label temperature T (the paper: 1)


def kl_rows(teacher_log, student_log, key_mask):
    """KL(teacher || student) of every attention row, summed over valid keys: (B, nh, Q).

        KL(p || q) = sum_j p_j (log p_j - log q_j)

    teacher_log, student_log: (B, nh, Q, K) log-probabilities, -inf at padded keys; key_mask: bool
    (B, K). Padded keys are excluded with torch.where rather than multiplied by zero: there
    -inf - -inf is NaN, and 0 * NaN is NaN, in the loss and in the gradients of both arguments.
    """
    valid_keys = key_mask[:, None, None, :]                                      # (B, 1, 1, K)
    log_ratio = torch.where(valid_keys, teacher_log - student_log, 0.0)          # (B, nh, Q, K), 0 at padded keys
    return (teacher_log.exp() * log_ratio).sum(-1)                               # (B, nh, Q)


def mean_over_global_batch(total, count):
    """total / count, for a loss averaged over a number of items that may vary per shard of a batch
    (examples, where real data skips unreadable images; real words; masked words). count: a tensor or an int.

    Under DistributedDataParallel each process holds a shard of the global batch, and DDP averages the
    processes' gradients. Each dividing by its own count would weight the items of a shard that has
    fewer of them more; dividing by the global count over the number of processes makes that average
    the mean over the whole global batch, as one process computes it. (all_reduce: no host-device sync.)
    Every process must call it the same number of times in the same order, so call it in training
    steps only. A global count of 0 counts as 1.
    """
    if not torch.is_tensor(count):   # a number of examples: torch.full is a fill kernel, not a host-to-device copy
        count = torch.full((), count, device=total.device)
    count, world = count.float(), 1                                              # () items in this shard
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        count, world = count.clone(), dist.get_world_size()
        dist.all_reduce(count)                                                   # items in the global batch
    return total / (count.clamp(min=1) / world)


def kl_over_keys(teacher_log, student_log, key_mask, query_mask):
    """KL(teacher || student) of attention rows, averaged over valid rows (query_mask: bool (B, Q));
    under DDP over the valid rows of the global batch (mean_over_global_batch)."""
    kl = kl_rows(teacher_log, student_log, key_mask)                             # (B, nh, Q)
    rows = query_mask[:, None, :].expand_as(kl)                                  # (B, nh, Q)
    # mean over batch, heads and real queries (kl[rows].mean() would make the CPU wait for the GPU to count rows)
    return mean_over_global_batch(torch.where(rows, kl, 0.0).sum(), rows.sum())


def cross_modal_attention_loss(teacher: CrossModalAttention, student: CrossModalAttention, text_mask,
                               image_mask=None):
    """L_CAD = KL_T2I + KL_I2T: text-to-image rows of real words, image-to-text rows of real image tokens.

    text_mask: bool (B, Lt); image_mask: bool (B, Nv), False at padded patches (None: none padded).
    """
    if image_mask is None:
        B, _, Nv, _ = teacher.log_image_to_text.shape
        image_mask = torch.ones(B, Nv, dtype=torch.bool, device=text_mask.device)   # (B, Nv)
    text_to_image = kl_over_keys(teacher.log_text_to_image, student.log_text_to_image, image_mask, text_mask)
    image_to_text = kl_over_keys(teacher.log_image_to_text, student.log_image_to_text, text_mask, image_mask)
    return text_to_image + image_to_text


def soft_label_loss(task, student_logits, teacher_logits, temperature=1.0):
    """Prediction distillation.

    Classification: T^2 * KL( softmax(z_T / T) || softmax(z_S / T) ), averaged over the batch.
    VQA (multi-label): binary cross entropy of the student's logits against the teacher's
    sigmoids, summed over answers, like the ground-truth VQA loss.
    Both are averaged over the examples of the global batch, as ground_truth_loss.
    """
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    examples = student_logits.shape[0]
    if task == "vqa":
        target = torch.sigmoid(teacher_logits)                                           # (B, A)
        total = F.binary_cross_entropy_with_logits(student_logits, target, reduction="sum")
        return mean_over_global_batch(total, examples)
    T = temperature
    teacher_log = F.log_softmax(teacher_logits / T, dim=-1)                              # (B, classes)
    student_log = F.log_softmax(student_logits / T, dim=-1)                              # (B, classes)
    total = F.kl_div(student_log, teacher_log, log_target=True, reduction="sum")   # summed over examples and classes
    return mean_over_global_batch(total, examples) * T * T


def student_cross_modal_attention(student_out, layer, image, text_mask) -> CrossModalAttention:
    """The student's "virtual" cross attention: text-tower queries against image-tower keys, and the reverse.

    student_out.image holds the K images of each example flattened to (B*K, ...); `image` picks one.
    """
    text = student_out.text.attention_at(layer)
    vision = student_out.image.attention_at(layer)
    B, K = text.queries.shape[0], student_out.images_per_example   # K named, not -1: B may be 0 (an empty DDP shard)
    image_queries = vision.queries.unflatten(0, (B, K))[:, image]    # (B, nh, Nv, hs)
    image_keys = vision.keys.unflatten(0, (B, K))[:, image]          # (B, nh, Nv, hs)
    image_mask = student_out.image.mask.unflatten(0, (B, K))[:, image]   # bool (B, Nv)
    return cross_modal_attention(text.queries, text.keys, image_queries, image_keys, text_mask, image_mask)


def dide_loss(student, teacher, batch, task, weights: DistillWeights, attention_layers=(-1,)):
    """One DiDE objective on one batch: the teacher (frozen) and the student run on the same inputs.

    Returns (total, terms, student_output); terms maps each loss name to its unweighted value.
    L_CAD is averaged over the distilled layers and summed over the images of an example.
    """
    wants_attention = weights.attention > 0
    details = {"details_from": tuple(attention_layers)} if wants_attention else {}
    with torch.no_grad():
        teacher_out = teacher(batch, task, **details)
    student_out = student(batch, task, **details)
    terms = {}
    if weights.ground_truth > 0:
        terms["ground_truth"] = ground_truth_loss(task, student_out.logits, batch)
    if weights.soft_label > 0:
        terms["soft_label"] = soft_label_loss(task, student_out.logits, teacher_out.logits, weights.temperature)
    if wants_attention:
        text_mask = batch["text_mask"]
        per_layer = []
        for layer in attention_layers:
            per_image = [cross_modal_attention_loss(teacher_cross_modal_attention(fused, layer, text_mask),
                                                    student_cross_modal_attention(student_out, layer, k, text_mask),
                                                    text_mask, fused.mask[:, text_mask.shape[1]:])
                         for k, fused in enumerate(teacher_out.fusion)]
            per_layer.append(sum(per_image))
        terms["attention"] = sum(per_layer) / len(per_layer)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, terms, student_out
